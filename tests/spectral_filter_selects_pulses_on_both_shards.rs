//! Subscribers on both shards with different spectral filters each get exactly the pulses their
//! filter admits, in order — live, with wildcards, and through replay-then-live; a bad filter is
//! refused with INVALID_REQUEST naming the byte of the error; refusals are counted in
//! `pulses_filtered` and exposed on /metrics.

mod common;

use std::time::Duration;

use arqonbus::config::SyncMode;
use arqonbus::proto::v1::{start_position::Position, ArqonMessage, ErrorCode, StartPosition};
use arqonbus_client::{Client, Outgoing, SubscribeOptions, Subscription};
use common::{client_on_shard, retain, TestBus};
use futures::StreamExt;

/// What the test publishes, and decides with plain Rust (not the filter module).
#[derive(Debug, Clone)]
struct Sent {
    index: u64,
    topic: &'static str,
    producer: &'static str,
    coherence: f64,
    criticality: f64,
    eigenvalues: Vec<f64>,
}

const TOPICS: [&str; 3] = ["rig.a.spectra", "rig.b.spectra", "rig.a.noise"];
const PRODUCERS: [&str; 3] = ["omega-7", "omega-8", ""];

/// Random pulses on a grid of values, so that comparisons hit their boundaries (18/20 is
/// exactly the literal 0.9).
fn random_pulses(rng: &mut fastrand::Rng, n: u64) -> Vec<Sent> {
    (0..n)
        .map(|index| Sent {
            index,
            topic: TOPICS[rng.usize(..TOPICS.len())],
            producer: PRODUCERS[rng.usize(..PRODUCERS.len())],
            coherence: f64::from(rng.u8(0..=20)) / 20.0,
            criticality: f64::from(rng.u8(0..=20)) / 40.0,
            eigenvalues: (0..rng.usize(0..5))
                .map(|_| f64::from(rng.u8(0..=12)) / 4.0)
                .collect(),
        })
        .collect()
}

/// A subscription under test: its pattern, its filter, and the same rule in Rust.
struct Case {
    shard: u32,
    pattern: &'static str,
    filter: &'static str,
    expect: fn(&Sent) -> bool,
}

fn pattern_matches(pattern: &str, topic: &str) -> bool {
    match pattern {
        ">" => true,
        "rig.*.spectra" => topic.ends_with(".spectra"),
        other => panic!("no rule for pattern {other}"),
    }
}

const CASES: &[Case] = &[
    Case {
        shard: 0,
        pattern: ">",
        filter: "coherence >= 0.9 && criticality < 0.1",
        expect: |p| p.coherence >= 0.9 && p.criticality < 0.1,
    },
    Case {
        shard: 1,
        pattern: ">",
        filter: "!(coherence >= 0.9 && criticality < 0.1)",
        expect: |p| !(p.coherence >= 0.9 && p.criticality < 0.1),
    },
    Case {
        shard: 1,
        pattern: ">",
        filter: "eigenvalues[0] > 1.5 || len(eigenvalues) >= 3",
        expect: |p| p.eigenvalues.first().is_some_and(|e| *e > 1.5) || p.eigenvalues.len() >= 3,
    },
    Case {
        shard: 0,
        pattern: "rig.*.spectra",
        filter: "producer == \"omega-7\" && eigenvalues[2] != 0",
        expect: |p| p.producer == "omega-7" && p.eigenvalues.get(2).is_some_and(|e| *e != 0.0),
    },
    Case {
        shard: 1,
        pattern: ">",
        filter: "topic != \"rig.a.noise\" && (criticality == 0.25 || coherence <= 0.1)",
        expect: |p| p.topic != "rig.a.noise" && (p.criticality == 0.25 || p.coherence <= 0.1),
    },
    Case {
        shard: 0,
        pattern: ">",
        filter: "",
        expect: |_| true,
    },
];

fn outgoing(reality: &str, p: &Sent) -> Outgoing {
    Outgoing::new(reality, p.topic)
        .producer(p.producer)
        .spectral(p.coherence, p.criticality, p.eigenvalues.clone())
        .bytes(p.index.to_be_bytes().to_vec())
}

fn index_of(m: &ArqonMessage) -> u64 {
    let value = &m.payload.as_ref().expect("payload").value;
    u64::from_be_bytes(value[..8].try_into().expect("8-byte index"))
}

/// Takes exactly `expected` (by index, in order), then checks nothing more comes.
async fn expect_exactly(sub: &mut Subscription, expected: &[u64], what: &str) {
    for want in expected {
        let m = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{what}: stalled waiting for pulse {want}"))
            .expect("stream open")
            .expect("pulse");
        assert_eq!(index_of(&m), *want, "{what}");
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
    assert!(extra.is_err(), "{what}: unexpected {extra:?}");
}

/// Pulses each case refuses (its pattern matches, its filter does not).
fn refused(case: &Case, sent: &[Sent]) -> u64 {
    sent.iter()
        .filter(|p| pattern_matches(case.pattern, p.topic) && !(case.expect)(p))
        .count() as u64
}

async fn wait_for_filtered(bus: &TestBus, want: u64) {
    for _ in 0..200 {
        if bus.metrics().pulses_filtered >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(bus.metrics().pulses_filtered, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spectral_filter_selects_pulses_on_both_shards() {
    let seed = fastrand::u64(..);
    eprintln!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let bus = TestBus::start(|_| {});
    let a = client_on_shard(bus.addr, 0).await;
    let b = client_on_shard(bus.addr, 1).await;
    let mut subs = Vec::new();
    for case in CASES {
        let client = if case.shard == 0 { &a } else { &b };
        let options = SubscribeOptions::new().filter(case.filter);
        let sub = client
            .subscribe_with("spectra", case.pattern, options)
            .await
            .unwrap_or_else(|e| panic!("`{}`: {e}", case.filter));
        subs.push(sub);
    }

    let sent = random_pulses(&mut rng, 600);
    // Publishers on both shards, one half each; the last of a half is acked, so the first
    // half is sequenced before the second starts and indexes arrive in order.
    let publishers = [
        client_on_shard(bus.addr, 0).await,
        client_on_shard(bus.addr, 1).await,
    ];
    let (first, second) = sent.split_at(sent.len() / 2);
    for (publisher, half) in publishers.iter().zip([first, second]) {
        publish_all(publisher, "spectra", half).await;
    }

    let mut total_refused = 0;
    for (case, sub) in CASES.iter().zip(subs.iter_mut()) {
        let expected: Vec<u64> = sent
            .iter()
            .filter(|p| pattern_matches(case.pattern, p.topic) && (case.expect)(p))
            .map(|p| p.index)
            .collect();
        assert!(
            case.filter.is_empty() || (!expected.is_empty() && expected.len() < sent.len()),
            "`{}` selects {} of {}: the test would prove little (seed {seed})",
            case.filter,
            expected.len(),
            sent.len()
        );
        expect_exactly(sub, &expected, case.filter).await;
        total_refused += refused(case, &sent);
    }
    wait_for_filtered(&bus, total_refused).await;
    let (code, body) = common::http_get(bus.admin_addr(), "/metrics").unwrap();
    assert_eq!(code, 200);
    let line = format!("arqonbus_pulses_filtered_total {total_refused}");
    assert!(body.lines().any(|l| l == line), "no `{line}` in /metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_are_refused_naming_the_byte() {
    let bus = TestBus::start(|c| c.limits.max_filter_bytes = 64);
    let c = common::client(bus.addr).await;
    let cases = [
        ("coherence >= ", "at byte 13"),
        ("coherence > 1 & criticality < 1", "at byte 14"),
        ("producer < \"omega-7\"", "at byte 9"),
        ("eigenvalues[x] > 1", "at byte 12"),
    ];
    let long = format!("coherence > 0{}", " && coherence > 0".repeat(5));
    for (filter, position) in cases.iter().copied().chain([(&long[..], "at byte 64")]) {
        let options = SubscribeOptions::new().filter(filter);
        let err = match c.subscribe_with("spectra", ">", options).await {
            Ok(_) => panic!("`{filter}` was accepted"),
            Err(e) => e,
        };
        assert_eq!(
            err.code(),
            Some(ErrorCode::InvalidRequest),
            "`{filter}`: {err}"
        );
        assert!(err.to_string().contains(position), "`{filter}`: {err}");
    }
    // The connection still works, and a good filter is accepted on it.
    let options = SubscribeOptions::new().filter("coherence > 0.5");
    c.subscribe_with("spectra", ">", options).await.unwrap();
    assert!(bus.metrics().request_errors >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_then_live_applies_the_filter_to_both() {
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::start(|c| retain(c, dir.path(), "kept-*", SyncMode::Os));
    let reality = "kept-spectra";
    let mut rng = fastrand::Rng::with_seed(7);
    let sent = random_pulses(&mut rng, 400);
    let (old, new) = sent.split_at(250);
    let publisher = common::client(bus.addr).await;
    publish_all(&publisher, reality, old).await;

    let filter = "coherence > 0.5 && len(eigenvalues) >= 2";
    let admits = |p: &Sent| p.coherence > 0.5 && p.eigenvalues.len() >= 2;
    let mut subs = Vec::new();
    for shard in [0, 1] {
        let c = client_on_shard(bus.addr, shard).await;
        let options = SubscribeOptions::new().filter(filter).start(StartPosition {
            position: Some(Position::FromSequence(1)),
        });
        let sub = c.subscribe_with(reality, ">", options).await.unwrap();
        assert_eq!(sub.next_sequence(), 1);
        subs.push((c, sub));
    }
    publish_all(&publisher, reality, new).await;
    let expected: Vec<u64> = sent.iter().filter(|p| admits(p)).map(|p| p.index).collect();
    assert!(!expected.is_empty() && expected.len() < sent.len());
    for (_, sub) in &mut subs {
        expect_exactly(sub, &expected, filter).await;
    }
    // Each subscription refused every other pulse once, replayed or live.
    let refused = 2 * (sent.len() - expected.len()) as u64;
    wait_for_filtered(&bus, refused).await;
}

async fn publish_all(c: &Client, reality: &str, pulses: &[Sent]) {
    let (last, rest) = pulses.split_last().unwrap();
    for p in rest {
        c.publish(outgoing(reality, p)).await.unwrap();
    }
    c.publish_acked(outgoing(reality, last)).await.unwrap();
}
