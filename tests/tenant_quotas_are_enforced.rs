//! Tenant bulkheads: connections, subscriptions, publish rate and retained bytes per tenant.
//! Over a quota, that request gets QUOTA_EXCEEDED; the tenant's other traffic and other tenants
//! keep working.

mod common;

use arqonbus::auth::Role;
use arqonbus::config::TenantQuota;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::Outgoing;
use common::*;

fn code(r: Result<impl Sized, arqonbus_client::ClientError>) -> Option<ErrorCode> {
    r.err().and_then(|e| e.code())
}

fn quota(name: &str) -> TenantQuota {
    TenantQuota {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_subscriptions_are_bounded_across_shards() {
    let mut key = None;
    let bus = TestBus::start(|c| {
        key = Some(token_key(c, true));
        c.tenants.push(TenantQuota {
            max_connections: 3,
            max_subscriptions: 4,
            ..quota("small")
        });
    });
    let key = key.unwrap();
    let all = [Role::Publisher, Role::Subscriber];
    let small = token(&key, "small", &all, &["*:>"], &["*:>"]);
    let big = token(&key, "big", &all, &["*:>"], &["*:>"]);

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(client_with_token(bus.addr, &small).await.unwrap());
    }
    assert_eq!(
        code(client_with_token(bus.addr, &small).await),
        Some(ErrorCode::QuotaExceeded)
    );
    client_with_token(bus.addr, &big)
        .await
        .expect("another tenant is not affected");

    let mut subs = Vec::new();
    for (i, c) in held.iter().cycle().take(4).enumerate() {
        subs.push(c.subscribe("r", &format!("t.s{i}")).await.unwrap());
    }
    assert_eq!(
        code(held[0].subscribe("r", "t.more").await),
        Some(ErrorCode::QuotaExceeded)
    );
    held[0]
        .publish_acked(Outgoing::new("r", "t.s0"))
        .await
        .expect("publishing still works over the subscription quota");

    // Releasing a subscription and a connection frees room for another.
    subs.pop().unwrap().unsubscribe().await.unwrap();
    held[0].flush().await.unwrap();
    held[0].subscribe("r", "t.again").await.expect("room again");
    // Subscriptions hold their connection open: let them go first.
    drop(subs);
    let gone = held.pop().unwrap();
    gone.close().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match client_with_token(bus.addr, &small).await {
            Ok(_) => break,
            Err(e) if e.code() == Some(ErrorCode::QuotaExceeded) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "connection never released"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(bus.metrics().quota_exceeded >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_rate_is_a_token_bucket_per_tenant() {
    let mut key = None;
    let bus = TestBus::start(|c| {
        key = Some(token_key(c, true));
        // 2 shards: each holds 20 pulses/s and 20 KB/s of the tenant's rate.
        c.tenants.push(TenantQuota {
            publish_pulses_per_sec: 40,
            ..quota("slow")
        });
        c.tenants.push(TenantQuota {
            publish_bytes_per_sec: 40_000,
            ..quota("narrow")
        });
    });
    let key = key.unwrap();
    let slow = token(&key, "slow", &[Role::Publisher], &["*:>"], &[]);
    let c = client_with_token(bus.addr, &slow).await.unwrap();
    let mut ok = 0;
    let mut refused = 0;
    let started = std::time::Instant::now();
    for _ in 0..100 {
        match c.publish_acked(Outgoing::new("r", "a.b")).await {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded));
                refused += 1;
            }
        }
    }
    // The bucket starts with one second of the shard's share (20) and refills at 20/s while
    // the loop runs.
    let most = 20 + (20.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!((20..=most).contains(&ok), "passed {ok}, at most {most}");
    assert!(refused > 0);
    assert_eq!(ok + refused, 100);
    let fast = token(&key, "fast", &[Role::Publisher], &["*:>"], &[]);
    let other = client_with_token(bus.addr, &fast).await.unwrap();
    for _ in 0..100 {
        other
            .publish_acked(Outgoing::new("r", "a.b"))
            .await
            .expect("other tenants are not limited");
    }

    let narrow = token(&key, "narrow", &[Role::Publisher], &["*:>"], &[]);
    let n = client_with_token(bus.addr, &narrow).await.unwrap();
    let big = vec![7u8; 15_000];
    n.publish_acked(Outgoing::new("r", "a.b").bytes(big.clone()))
        .await
        .expect("the first 15 KB pass");
    n.publish_acked(Outgoing::new("r", "a.b").bytes(big.clone()))
        .await
        .expect("the bucket may go into debt once");
    assert_eq!(
        code(n.publish_acked(Outgoing::new("r", "a.b").bytes(big)).await),
        Some(ErrorCode::QuotaExceeded)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_bytes_are_bounded_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let mut key = None;
    let bus = TestBus::start(|c| {
        key = Some(token_key(c, true));
        retain(c, dir.path(), "kept-*", arqonbus::config::SyncMode::Os);
        c.tenants.push(TenantQuota {
            max_retained_bytes: 10_000,
            ..quota("lab")
        });
    });
    let key = key.unwrap();
    let t = token(&key, "lab", &[Role::Publisher], &["*:>"], &[]);
    let c = client_with_token(bus.addr, &t).await.unwrap();
    let body = vec![1u8; 3_000];
    for _ in 0..3 {
        c.publish_acked(Outgoing::new("kept-1", "a.b").bytes(body.clone()))
            .await
            .unwrap();
    }
    assert_eq!(
        code(
            c.publish_acked(Outgoing::new("kept-1", "a.b").bytes(body.clone()))
                .await
        ),
        Some(ErrorCode::QuotaExceeded)
    );
    c.publish_acked(Outgoing::new("ephemeral", "a.b").bytes(body))
        .await
        .expect("ephemeral realities do not count against retained bytes");
}

#[test]
fn a_flood_over_the_rate_is_throttled_and_its_refusals_coalesced() {
    use arqonbus::proto::v1::{client_frame, server_frame, ArqonMessage, Hello, Ping, Publish};
    let mut key = None;
    let bus = TestBus::start(|c| {
        key = Some(token_key(c, true));
        c.tenants.push(TenantQuota {
            publish_pulses_per_sec: 1000,
            ..quota("flood")
        });
    });
    let t = token(&key.unwrap(), "flood", &[Role::Publisher], &["*:>"], &[]);
    let mut raw = RawConn::connect(bus.addr);
    raw.send_kind(
        1,
        client_frame::Kind::Hello(Hello {
            protocol_version: 1,
            token: t,
            ..Default::default()
        }),
    );
    assert!(matches!(
        raw.recv().and_then(|f| f.kind),
        Some(server_frame::Kind::Welcome(_))
    ));
    let started = std::time::Instant::now();
    let flood = 2000u64;
    for i in 0..flood {
        raw.send_kind(
            10 + i,
            client_frame::Kind::Publish(Publish {
                message: Some(ArqonMessage {
                    topic: "a.b".into(),
                    reality_id: "r".into(),
                    ..Default::default()
                }),
                ack: false,
            }),
        );
    }
    raw.send_kind(5, client_frame::Kind::Ping(Ping { nonce: 5 }));
    let mut errors = 0;
    loop {
        let frame = raw.recv().expect("the session stays open");
        match frame.kind {
            Some(server_frame::Kind::Pong(_)) => break,
            Some(server_frame::Kind::Error(e)) => {
                assert_eq!(e.code, ErrorCode::QuotaExceeded as i32);
                errors += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let m = bus.metrics();
    // The connection sits on one shard, whose bucket holds 500/s. After a refusal the
    // connection is left unread for at least 10 ms, so however fast the client writes, the
    // shard refuses at most about 100 of its publishes a second...
    assert!(m.quota_exceeded >= 1);
    let most_refused = 2 + (elapsed.as_millis() / 10) as u64;
    assert!(
        m.quota_exceeded <= most_refused,
        "refused {} in {elapsed:?}",
        m.quota_exceeded
    );
    // ...and answers them at most every 100 ms...
    let most = 2 + (elapsed.as_millis() / 100) as u64;
    assert!(errors <= most, "{errors} error frames in {elapsed:?}");
    // ...and the flood was read no faster than the rate lets it through: what passed is about
    // the bucket's burst plus its refill.
    let passed = m.pulses_sequenced;
    assert!(
        passed as f64 <= 500.0 + 500.0 * elapsed.as_secs_f64() + 50.0,
        "{passed} passed in {elapsed:?}"
    );
}

/// `max_history_reads_per_shard`: a reader that does not drain keeps its read in flight, and
/// the tenant's next read on that shard is refused until the first one ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_in_flight_are_bounded_per_shard() {
    use arqonbus::proto::v1::{client_frame, server_frame};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let mut key = None;
    let bus = TestBus::start(|c| {
        key = Some(token_key(c, true));
        retain(c, &data_dir, "hist-*", arqonbus::config::SyncMode::Os);
        c.tenants.push(TenantQuota {
            max_history_reads_per_shard: 1,
            ..quota("reader")
        });
    });
    let key = key.unwrap();
    let all = [Role::Publisher, Role::Subscriber];
    let reader = token(&key, "reader", &all, &["*:>"], &["*:>"]);
    // 16 MiB of history: more than the socket buffers hold, so an undrained read stays open.
    let publisher = client_with_token(bus.addr, &reader).await.unwrap();
    for i in 0..4_000u32 {
        let pulse = Outgoing::new("hist-1", "lab.rig.log").bytes(vec![i as u8; 4096]);
        publisher.publish(pulse).await.unwrap();
    }
    publisher
        .publish_acked(Outgoing::new("hist-1", "lab.rig.log"))
        .await
        .unwrap();

    let addr = bus.addr;
    tokio::task::spawn_blocking(move || {
        let mut raw = RawConn::connect(addr);
        assert_eq!(error_code(&raw.hello_with_token(&reader)), None);
        let all = || client_frame::Kind::HistoryGet(history_query("hist-1", None, None, 0));
        raw.send_kind(1, all());
        std::thread::sleep(std::time::Duration::from_millis(300));
        raw.send_kind(2, all());
        let (mut ended, mut refused) = (false, None);
        while !(ended && refused.is_some()) {
            let frame = raw.recv().expect("the connection stays open");
            match (frame.correlation_id, &frame.kind) {
                (1, Some(server_frame::Kind::HistoryEnd(_))) => ended = true,
                (1, Some(server_frame::Kind::HistoryChunk(_))) => {}
                (2, Some(server_frame::Kind::Error(e))) => refused = Some(e.clone()),
                other => panic!("unexpected {other:?}"),
            }
        }
        let refused = refused.unwrap();
        assert_eq!(refused.code, ErrorCode::QuotaExceeded as i32, "{refused:?}");
        assert!(
            refused.message.contains("max_history_reads_per_shard"),
            "{refused:?}"
        );
        // The first read ended: its place is free again.
        let one = history_query("hist-1", None, None, 1);
        raw.send_kind(3, client_frame::Kind::HistoryGet(one));
        loop {
            let frame = raw.recv().expect("an answer");
            assert_eq!(frame.correlation_id, 3);
            match frame.kind {
                Some(server_frame::Kind::HistoryEnd(_)) => break,
                Some(server_frame::Kind::HistoryChunk(_)) => {}
                other => panic!("the third read was not served: {other:?}"),
            }
        }
    })
    .await
    .unwrap();
    let m = bus.metrics();
    let reads: u64 = m.lanes.iter().map(|l| l.history_reads).sum();
    assert_eq!(reads, 2, "two reads started, one refused");
}

/// `policy_fuel_per_sec`: fuel the tenant's policies burn is charged to the tenant; in debt,
/// its publishes are refused until the budget refills, and other tenants are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_fuel_is_a_budget_per_tenant() {
    use arqonbus::proto::policy::v1::PolicyLimits;
    use common::policy::{controller, fixture, Load, CONTROLLER_TOKEN};
    let mut key = None;
    let bus = TestBus::start(|c| {
        key = Some(token_key(c, true));
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
        // 2 shards: each holds 100,000 fuel a second of it.
        c.tenants.push(TenantQuota {
            policy_fuel_per_sec: 200_000,
            ..quota("thrifty")
        });
    });
    let key = key.unwrap();
    // Every call burns all of its 100,000 fuel (and faults).
    let load = Load {
        name: "burner",
        wasm: std::fs::read(fixture("infinite_loop")).unwrap(),
        reality_glob: "burn-*",
        topic_pattern: ">",
        params: vec![],
        limits: PolicyLimits {
            fuel_per_call: 100_000,
            max_memory_pages: 16,
            deadline_ms: 1000,
        },
    };
    controller(bus.addr)
        .await
        .publish_acked(load.pulse("ops"))
        .await
        .unwrap();
    let all = [Role::Publisher];
    let thrifty = token(&key, "thrifty", &all, &["*:>"], &[]);
    let other = token(&key, "other", &all, &["*:>"], &[]);
    let c = client_with_token(bus.addr, &thrifty).await.unwrap();
    let burn = || Outgoing::new("burn-1", "lab.rig.go");
    // The bucket starts with a second of the shard's share: two calls' worth, the second
    // leaving it in debt.
    for _ in 0..2 {
        assert_eq!(
            code(c.publish_acked(burn()).await),
            Some(ErrorCode::PolicyFault)
        );
    }
    let err = c.publish_acked(burn()).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::QuotaExceeded), "{err}");
    assert!(err.to_string().contains("policy_fuel_per_sec"), "{err}");
    // Tenant-wide: a pulse no policy inspects waits too.
    let calm = Outgoing::new("calm-1", "lab.rig.go");
    assert_eq!(
        code(c.publish_acked(calm).await),
        Some(ErrorCode::QuotaExceeded)
    );
    // Another tenant burning the same policy is not charged for this one's fuel.
    let o = client_with_token(bus.addr, &other).await.unwrap();
    assert_eq!(
        code(o.publish_acked(burn()).await),
        Some(ErrorCode::PolicyFault)
    );
    // A second later the debt (100,000) is paid and the budget has room again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let calm = Outgoing::new("calm-1", "lab.rig.go");
    c.publish_acked(calm).await.expect("the budget refilled");
}
