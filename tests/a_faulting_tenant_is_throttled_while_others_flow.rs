//! Crash containment (issue 25): a tenant whose pulses keep faulting its policy, or whose
//! clients keep breaking the protocol, is throttled on that shard — its sessions left unread,
//! its new sessions refused with QUOTA_EXCEEDED, counted in the tenant's metrics — while another
//! tenant on the same shard keeps publishing and getting its acks.

mod common;

use std::time::{Duration, Instant};

use arqonbus::auth::Role;
use arqonbus::config::TenantQuota;
use arqonbus::metrics::LaneSnapshot;
use arqonbus::proto::policy::v1::PolicyLimits;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::{Client, Outgoing};
use common::policy::{controller, fixture, Load, CONTROLLER_TOKEN};
use common::*;

const MAX_FAULTS: u64 = 20;
const THROTTLE: Duration = Duration::from_millis(1500);
/// The shard both tenants' clients are on.
const SHARD: u32 = 1;

fn tenant(name: &str) -> TenantQuota {
    TenantQuota {
        name: name.into(),
        ..Default::default()
    }
}

/// A bus with tenants `bad` and `good`, tokens for both, and the static controller token.
fn start(dir: &std::path::Path) -> (TestBus, String, String) {
    let data_dir = dir.to_owned();
    let mut key = None;
    let bus = TestBus::start(|c| {
        c.data_dir = data_dir;
        key = Some(token_key(c, true));
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
        c.tenants = vec![tenant("bad"), tenant("good")];
        c.tenancy.max_faults_per_sec = MAX_FAULTS;
        c.tenancy.throttle_ms = THROTTLE.as_millis() as u64;
    });
    let key = key.unwrap();
    let roles = [Role::Publisher, Role::Subscriber];
    let bad = token(&key, "bad", &roles, &["*:>"], &["*:>"]);
    let good = token(&key, "good", &roles, &["*:>"], &["*:>"]);
    (bus, bad, good)
}

/// A session of `token`'s tenant on `shard`; `Err` with the server's refusal if it refused one
/// that landed there.
async fn session_on(
    addr: std::net::SocketAddr,
    token: &str,
    shard: u32,
) -> Result<Client, arqonbus_client::ClientError> {
    for _ in 0..500 {
        let c = client_with_token(addr, token).await?;
        if c.welcome().shard == shard {
            return Ok(c);
        }
        let _ = c.close().await;
    }
    panic!("no session landed on shard {shard} in 500 tries");
}

/// Tries new sessions of a throttled tenant until one lands on `shard`, and returns what it got.
async fn refusal_on(addr: std::net::SocketAddr, token: &str, shard: u32) -> String {
    for _ in 0..500 {
        match client_with_token(addr, token).await {
            // Landed on the other shard, which does not throttle the tenant.
            Ok(c) if c.welcome().shard != shard => {
                let _ = c.close().await;
            }
            Ok(_) => panic!("a throttled tenant's new session on shard {shard} was accepted"),
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e}");
                return e.to_string();
            }
        }
    }
    panic!("no session landed on shard {shard} in 500 tries");
}

fn lane<'a>(lanes: &'a [LaneSnapshot], shard: u32, tenant: &str) -> &'a LaneSnapshot {
    lanes
        .iter()
        .find(|l| l.shard == shard as usize && l.tenant.as_deref() == Some(tenant))
        .unwrap_or_else(|| panic!("no lane of `{tenant}` on shard {shard}: {lanes:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_policy_keeps_faulting_is_throttled_and_others_flow() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, bad_token, good_token) = start(dir.path());
    let load = Load {
        name: "burner",
        wasm: std::fs::read(fixture("infinite_loop")).unwrap(),
        reality_glob: "bad-*",
        topic_pattern: ">",
        params: vec![],
        limits: PolicyLimits {
            fuel_per_call: 100_000,
            max_memory_pages: 16,
            deadline_ms: 50,
        },
    };
    controller(bus.addr)
        .await
        .publish_acked(load.pulse("ops"))
        .await
        .expect("the controller loads the policy");

    let bad = session_on(bus.addr, &bad_token, SHARD).await.unwrap();
    let good = session_on(bus.addr, &good_token, SHARD).await.unwrap();
    let calm = bystander::start(good, "good-1");

    // Up to the limit, every pulse is refused at once; the one past it starts the throttle.
    for i in 0..=MAX_FAULTS {
        let err = bad
            .publish_acked(Outgoing::new("bad-1", "lab.rig.go").bytes(vec![i as u8; 16]))
            .await
            .expect_err("the policy blocks every pulse");
        assert_eq!(err.code(), Some(ErrorCode::PolicyFault), "{err}");
    }
    let throttled_at = Instant::now();
    // The bad tenant's next frame waits out the throttle, unread.
    let next = {
        let bad = bad.clone();
        tokio::spawn(async move {
            let err = bad
                .publish_acked(Outgoing::new("bad-1", "lab.rig.go").bytes(b"again".to_vec()))
                .await
                .expect_err("still blocked by the policy");
            (err.code(), Instant::now())
        })
    };
    let refused = refusal_on(bus.addr, &bad_token, SHARD).await;
    assert!(refused.contains("throttled"), "{refused}");
    assert!(refused.contains("tenancy.max_faults_per_sec"), "{refused}");

    let acks_before = calm.acks();
    tokio::time::sleep(THROTTLE / 2).await;
    let during = calm.acks() - acks_before;
    assert!(
        during >= 20,
        "the good tenant got {during} acks in {:?} while the bad one was throttled",
        THROTTLE / 2
    );

    let (code, answered_at) = next.await.unwrap();
    assert_eq!(code, Some(ErrorCode::PolicyFault));
    let waited = answered_at.duration_since(throttled_at);
    assert!(
        waited >= THROTTLE - Duration::from_millis(300),
        "the throttled session was read again after {waited:?}, before its throttle ended"
    );

    let (_, worst) = calm.stop().await;
    assert!(
        worst < Duration::from_millis(500),
        "a good ack took {worst:?}"
    );

    let m = bus.metrics();
    let bad_lane = lane(&m.lanes, SHARD, "bad");
    assert_eq!(bad_lane.throttles, 1, "{bad_lane:?}");
    assert_eq!(bad_lane.faults, MAX_FAULTS + 2, "{bad_lane:?}");
    assert!(bad_lane.quota_refusals >= 1, "the refused session counts");
    let good_lane = lane(&m.lanes, SHARD, "good");
    assert_eq!(good_lane.faults, 0);
    assert_eq!(good_lane.throttles, 0);
    assert!(good_lane.published_pulses >= during, "{good_lane:?}");
    let other_shard = lane(&m.lanes, 1 - SHARD, "bad");
    assert_eq!(
        other_shard.throttles, 0,
        "only the shard it faulted on throttles it"
    );

    // And /metrics says so, per tenant.
    let (status, body) = http_get(bus.admin_addr(), "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("arqonbus_tenant_throttles_total{tenant=\"bad\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("arqonbus_tenant_throttles_total{tenant=\"good\"} 0"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_whose_clients_keep_breaking_the_protocol_is_throttled() {
    let dir = tempfile::tempdir().unwrap();
    let (bus, bad_token, good_token) = start(dir.path());
    let good = session_on(bus.addr, &good_token, SHARD).await.unwrap();

    // Sessions of the bad tenant that send garbage after Hello: each one is a protocol error
    // that closes it, and a fault of its tenant on its shard.
    let mut welcomed = 0;
    let mut refused = None;
    for _ in 0..2_000 {
        let mut raw = RawConn::connect(bus.addr);
        let answer = raw.hello_with_token(&bad_token);
        match answer.kind {
            Some(arqonbus::proto::v1::server_frame::Kind::Welcome(_)) => {
                welcomed += 1;
                // A frame whose body is not a ClientFrame.
                raw.send_raw(&[0, 0, 0, 3, 0xff, 0xff, 0xff]);
                let reply = raw.recv().expect("an error before the close");
                assert_eq!(error_code(&reply), Some(ErrorCode::DecodeFailed));
                assert!(raw.is_closed());
            }
            _ => {
                assert_eq!(error_code(&answer), Some(ErrorCode::QuotaExceeded));
                refused = Some(format!("{answer:?}"));
                break;
            }
        }
    }
    let refused = refused.expect("the tenant was never throttled");
    assert!(refused.contains("throttled"), "{refused}");
    assert!(
        welcomed > MAX_FAULTS,
        "throttled after {welcomed} faults on both shards together"
    );

    // The other tenant on that shard is not affected.
    good.publish_acked(Outgoing::new("good-1", "calm.work.done"))
        .await
        .expect("the good tenant still publishes");
    assert!(session_on(bus.addr, &good_token, SHARD).await.is_ok());
    let m = bus.metrics();
    let throttled: u64 = m
        .lanes
        .iter()
        .filter(|l| l.tenant.as_deref() == Some("bad"))
        .map(|l| l.throttles)
        .sum();
    assert!(throttled >= 1, "{:?}", m.lanes);
    assert_eq!(lane(&m.lanes, SHARD, "good").throttles, 0);
}
