//! Key ids and audience: a token that names its key (`kid`) is checked against that key only —
//! signed by another trusted key, or naming a key the server does not have, it gets
//! UNAUTHENTICATED; a token without `kid` is checked against every trusted key, as before key
//! ids. With `auth.audience` set, a token must name it in `aud`. `arqonbus token issue
//! --key-id --audience` issues such tokens, each with its own `jti`.

mod common;

use arqonbus::auth::{token, Claims, Role};
use arqonbus::config::{NamedKeyConfig, TrustedKeyConfig};
use arqonbus::proto::v1::ErrorCode;
use common::*;

fn named(id: &str, key: &ed25519_dalek::SigningKey) -> TrustedKeyConfig {
    TrustedKeyConfig::Named(NamedKeyConfig {
        id: id.into(),
        key: token::encode_public(&key.verifying_key()),
    })
}

fn signed(key: &ed25519_dalek::SigningKey, kid: Option<&str>, aud: Option<&str>) -> String {
    token::issue(
        key,
        &Claims {
            tenant: "lab".into(),
            sub: "ada".into(),
            roles: vec![Role::Publisher],
            publish: vec!["*:>".into()],
            subscribe: vec![],
            exp: now_secs() + 3600,
            iat: now_secs(),
            capabilities: None,
            kid: kid.map(str::to_owned),
            jti: None,
            aud: aud.map(str::to_owned),
        },
    )
}

/// The error code answering Hello with `token` (None: Welcome) and the error's message.
fn hello(addr: std::net::SocketAddr, token: &str) -> (Option<ErrorCode>, String) {
    let mut raw = RawConn::connect(addr);
    let frame = raw.hello_with_token(token);
    let message = match &frame.kind {
        Some(arqonbus::proto::v1::server_frame::Kind::Error(e)) => e.message.clone(),
        _ => String::new(),
    };
    (error_code(&frame), message)
}

#[test]
fn a_token_is_checked_against_the_key_it_names_and_the_audience() {
    let a = token::generate_key().unwrap();
    let b = token::generate_key().unwrap();
    let bus = TestBus::start(|c| {
        c.auth.require_token = true;
        c.auth.trusted_keys = vec![named("key-a", &a), named("key-b", &b)];
        c.auth.audience = Some("bus-1".into());
        c.auth.max_failures = 100;
    });
    let welcome = |t: &str| hello(bus.addr, t).0.is_none();
    let refused = |t: &str, why: &str| {
        let (code, message) = hello(bus.addr, t);
        assert_eq!(code, Some(ErrorCode::Unauthenticated), "{why}");
        message
    };

    assert!(welcome(&signed(&b, Some("key-b"), Some("bus-1"))));
    assert!(welcome(&signed(&a, Some("key-a"), Some("bus-1"))));
    // Signed by b, trusted, but naming a: only a is tried.
    let why = refused(
        &signed(&b, Some("key-a"), Some("bus-1")),
        "another kid's key",
    );
    assert!(why.contains("signature"), "{why}");
    let why = refused(&signed(&b, Some("key-c"), Some("bus-1")), "an unknown kid");
    assert!(why.contains("key-c"), "{why}");
    // Without kid: every trusted key, as before key ids.
    assert!(welcome(&signed(&b, None, Some("bus-1"))));

    let why = refused(&signed(&a, Some("key-a"), Some("bus-2")), "wrong audience");
    assert!(why.contains("bus-2") && why.contains("bus-1"), "{why}");
    refused(&signed(&a, Some("key-a"), None), "no audience");
    assert_eq!(bus.metrics().auth_failures, 4);
}

#[test]
fn token_issue_names_the_key_and_the_audience() {
    let bin = env!("CARGO_BIN_EXE_arqonbus");
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("k.key");
    let keygen = std::process::Command::new(bin)
        .args(["token", "keygen", "--out"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let public = String::from_utf8(keygen.stdout).unwrap().trim().to_owned();
    let issue = |kid: &str| {
        let out = std::process::Command::new(bin)
            .args(["token", "issue", "--key"])
            .arg(&key_file)
            .args(["--key-id", kid, "--audience", "bus-1"])
            .args(["--tenant", "lab", "--subject", "ada", "--role", "publisher"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains("token id (jti): "), "{stderr}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (right, wrong) = (issue("2026-a"), issue("2025-z"));
    let bus = TestBus::start(|c| {
        c.auth.require_token = true;
        c.auth.trusted_keys = vec![TrustedKeyConfig::Named(NamedKeyConfig {
            id: "2026-a".into(),
            key: public,
        })];
        c.auth.audience = Some("bus-1".into());
    });
    assert_eq!(hello(bus.addr, &right).0, None);
    assert_eq!(hello(bus.addr, &wrong).0, Some(ErrorCode::Unauthenticated));
}
