//! The revocation list (`auth.revocation_file`): a token it names (by `jti`, or by its tenant and
//! subject) is refused at Hello with UNAUTHENTICATED; when the list is reloaded (the server's
//! reload flag, which SIGHUP raises) the sessions it now revokes are sent UNAUTHENTICATED and
//! closed (`sessions_revoked_total`) while every other session goes on; a reload of a file that
//! cannot be used keeps the previous list.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arqonbus::auth::{token, Claims, Role};
use arqonbus::proto::v1::{client_frame, server_frame, ErrorCode, Ping};
use common::*;

fn token_for(key: &ed25519_dalek::SigningKey, sub: &str, jti: Option<&str>) -> String {
    token::issue(
        key,
        &Claims {
            tenant: "lab".into(),
            sub: sub.into(),
            roles: vec![Role::Publisher, Role::Subscriber],
            publish: vec!["*:>".into()],
            subscribe: vec!["*:>".into()],
            exp: now_secs() + 3600,
            iat: now_secs(),
            capabilities: None,
            kid: None,
            jti: jti.map(str::to_owned),
            aud: None,
        },
    )
}

/// Says Hello with `token`: the connection and the answer's error code (None: Welcome).
fn hello(addr: std::net::SocketAddr, token: &str) -> (RawConn, Option<ErrorCode>) {
    let mut raw = RawConn::connect(addr);
    let frame = raw.hello_with_token(token);
    let code = error_code(&frame);
    if code.is_none() {
        assert!(matches!(frame.kind, Some(server_frame::Kind::Welcome(_))));
    }
    (raw, code)
}

/// Whether the session still answers a ping.
fn answers(raw: &mut RawConn) -> bool {
    raw.send_kind(7, client_frame::Kind::Ping(Ping::default()));
    matches!(
        raw.recv().and_then(|f| f.kind),
        Some(server_frame::Kind::Pong(_))
    )
}

/// Raises the reload flag as SIGHUP does and waits until the reload thread has taken it.
fn reload(bus: &TestBus) {
    let flag = bus.server().reload_flag();
    flag.store(true, Ordering::Release);
    let deadline = Instant::now() + Duration::from_secs(10);
    while flag.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "the reload flag was never taken");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn revoked_tokens_are_refused_and_their_sessions_closed() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("revoked.txt");
    std::fs::write(&list, "# revoked at start\njti t-old\n").unwrap();
    let mut key = None;
    let bus = TestBus::start(|c| {
        key = Some(token_key(c, true));
        c.auth.revocation_file = Some(list.clone());
        c.auth.max_failures = 100;
    });
    let key = key.unwrap();

    // At Hello: the token the list names is refused, others are welcome.
    let (mut old, code) = hello(bus.addr, &token_for(&key, "eve", Some("t-old")));
    assert_eq!(code, Some(ErrorCode::Unauthenticated));
    assert!(old.is_closed());
    let (mut live, code) = hello(bus.addr, &token_for(&key, "ada", Some("t-live")));
    assert_eq!(code, None);
    let (mut by_subject, code) = hello(bus.addr, &token_for(&key, "cy", None));
    assert_eq!(code, None);
    let (mut other, code) = hello(bus.addr, &token_for(&key, "bob", Some("t-bob")));
    assert_eq!(code, None);
    assert!(answers(&mut live) && answers(&mut by_subject) && answers(&mut other));

    // Revoked while open: closed after the reload, with UNAUTHENTICATED and the reason.
    std::fs::write(&list, "jti t-old\njti t-live\nsubject lab/cy\n").unwrap();
    reload(&bus);
    for (raw, why) in [
        (&mut live, "token `t-live` is revoked"),
        (&mut by_subject, "the tokens of `lab/cy` are revoked"),
    ] {
        let frame = raw.recv().expect("told why before the close");
        assert_eq!(error_code(&frame), Some(ErrorCode::Unauthenticated));
        let Some(server_frame::Kind::Error(e)) = frame.kind else {
            unreachable!()
        };
        assert!(e.message.contains(why), "{}", e.message);
        assert!(raw.is_closed());
    }
    assert!(
        answers(&mut other),
        "a session the list does not name goes on"
    );
    assert_eq!(bus.metrics().sessions_revoked, 2);
    assert_eq!(
        hello(bus.addr, &token_for(&key, "ada", Some("t-live"))).1,
        Some(ErrorCode::Unauthenticated)
    );

    // A file that cannot be used: the previous list stays.
    std::fs::write(&list, "this is not a revocation list\n").unwrap();
    reload(&bus);
    std::thread::sleep(Duration::from_millis(200));
    assert!(answers(&mut other));
    assert_eq!(
        hello(bus.addr, &token_for(&key, "cy", None)).1,
        Some(ErrorCode::Unauthenticated)
    );
    // Taken off the list: welcome again.
    std::fs::write(&list, "").unwrap();
    reload(&bus);
    let deadline = Instant::now() + Duration::from_secs(10);
    while hello(bus.addr, &token_for(&key, "cy", None)).1.is_some() {
        assert!(
            Instant::now() < deadline,
            "the shorter list was never taken"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(bus.metrics().sessions_revoked, 2);
}

#[test]
fn a_revocation_file_that_cannot_be_read_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = arqonbus::config::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        data_dir: dir.path().join("data"),
        shards: 1,
        ..Default::default()
    };
    config.auth.revocation_file = Some(dir.path().join("missing.txt"));
    let err = arqonbus::Server::start(config).err().expect("refused");
    assert!(err.to_string().contains("auth.revocation_file"), "{err}");
}
