//! A client that declares a large frame and stalls holds only the bytes it sent, and only until
//! `limits.frame_timeout_ms`: then it gets TIMED_OUT and is closed. An idle session is sent a
//! keepalive Ping after half of `limits.idle_timeout_ms` and closed (TIMED_OUT) at the whole of
//! it unless it answers; the Rust client answers by itself.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use arqonbus::proto::v1::{client_frame, server_frame, ErrorCode, Pong};
use common::{error_code, raise_fd_limit, RawConn, TestBus};

const STALLED: usize = 1000;
const MAX_FRAME_BYTES: u64 = 1 << 20;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn stalled_partial_frames_are_dropped_and_freed() {
    raise_fd_limit();
    let bus = TestBus::start(|c| {
        c.limits.max_frame_bytes = MAX_FRAME_BYTES;
        c.limits.frame_timeout_ms = 3000;
    });
    let before = rss_kib();
    let start = Instant::now();
    let mut conns: Vec<RawConn> = (0..STALLED)
        .map(|_| {
            let mut c = RawConn::connect(bus.addr);
            c.hello();
            // A length prefix of the largest frame, and a few bytes of it.
            let mut bytes = (MAX_FRAME_BYTES as u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0x0a; 16]);
            c.send_raw(&bytes);
            c
        })
        .collect();
    // One more that keeps trickling bytes of its frame: the deadline is the frame's, not a read's.
    let mut trickler = RawConn::connect(bus.addr);
    trickler.hello();
    trickler.send_raw(&1000u32.to_be_bytes());
    let trickle = std::thread::spawn(move || {
        for _ in 0..60 {
            if trickler.stream.write_all(&[0x0a]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        trickler
    });
    std::thread::sleep(Duration::from_millis(300));
    let held = rss_kib().saturating_sub(before);
    println!(
        "{STALLED} stalled partial frames of {MAX_FRAME_BYTES} declared bytes: RSS grew by {held} KiB \
         (set up in {:?})",
        start.elapsed()
    );
    // Before buffers grew as bytes arrive, each reserved the whole declared frame: over 1 GiB.
    assert!(
        held < 200 << 10,
        "{held} KiB held by {STALLED} stalled frames"
    );

    for c in &mut conns {
        let frame = c.recv().expect("an error before the close");
        assert_eq!(error_code(&frame), Some(ErrorCode::TimedOut), "{frame:?}");
        assert!(c.is_closed());
    }
    let all_closed = start.elapsed();
    assert!(all_closed < Duration::from_secs(10), "{all_closed:?}");
    let mut trickler = trickle.join().unwrap();
    let frame = trickler.recv().expect("an error before the close");
    assert_eq!(error_code(&frame), Some(ErrorCode::TimedOut), "{frame:?}");
    let m = bus.metrics();
    assert_eq!(m.frame_timeouts, STALLED as u64 + 1);
    // A well-behaved client on the same bus is unaffected.
    let mut ok = RawConn::connect(bus.addr);
    ok.hello();
}

#[test]
fn idle_sessions_are_pinged_then_closed_unless_they_answer() {
    let bus = TestBus::start(|c| c.limits.idle_timeout_ms = 1000);
    let mut silent = RawConn::connect(bus.addr);
    silent.hello();
    let mut answering = RawConn::connect(bus.addr);
    answering.hello();
    let start = Instant::now();

    let ping = answering.recv().expect("a keepalive Ping");
    assert_eq!(ping.correlation_id, 0);
    let Some(server_frame::Kind::Ping(p)) = ping.kind else {
        panic!("expected Ping, got {ping:?}");
    };
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    answering.send_kind(
        0,
        client_frame::Kind::Pong(Pong {
            nonce: p.nonce,
            server_time_unix_nanos: 0,
        }),
    );

    let ping = silent.recv().expect("a keepalive Ping");
    assert!(
        matches!(ping.kind, Some(server_frame::Kind::Ping(_))),
        "{ping:?}"
    );
    let closed = silent.recv().expect("an error before the close");
    assert_eq!(error_code(&closed), Some(ErrorCode::TimedOut), "{closed:?}");
    let at = start.elapsed();
    assert!(
        at >= Duration::from_millis(900) && at < Duration::from_secs(3),
        "{at:?}"
    );
    assert!(silent.is_closed());

    // The one that answered is still served, and pinged again when idle again.
    // On a loaded machine the next keepalive Ping may already be on its way: the Pong comes
    // after at most that one.
    answering.send_kind(7, client_frame::Kind::Ping(Default::default()));
    let mut pinged = false;
    loop {
        let frame = answering.recv().unwrap();
        match frame.kind {
            Some(server_frame::Kind::Pong(_)) => break,
            Some(server_frame::Kind::Ping(_)) if !pinged => pinged = true,
            _ => panic!("expected Pong, got {frame:?}"),
        }
    }
    if !pinged {
        let again = answering.recv().unwrap();
        assert!(
            matches!(again.kind, Some(server_frame::Kind::Ping(_))),
            "{again:?}"
        );
    }
    let m = bus.metrics();
    assert!(m.keepalive_pings >= 3, "{}", m.keepalive_pings);
    assert_eq!(m.idle_disconnects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_answers_keepalives_and_stays_connected() {
    let bus = TestBus::start(|c| c.limits.idle_timeout_ms = 600);
    let client = common::client(bus.addr).await;
    // Four idle limits with nothing of its own to send.
    tokio::time::sleep(Duration::from_millis(2400)).await;
    client.ping().await.expect("still connected");
    let m = bus.metrics();
    assert!(m.keepalive_pings >= 3, "{}", m.keepalive_pings);
    assert_eq!(m.idle_disconnects, 0);
}
