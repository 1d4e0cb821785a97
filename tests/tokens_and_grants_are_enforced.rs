//! Signed tokens: a missing (when required), expired or forged token gets UNAUTHENTICATED and
//! the connection closes; grants are enforced per reality and topic pattern with
//! PERMISSION_DENIED for that request only; `sys.control.*` needs role `controller`; repeated
//! failures from one address get it refused for a while.

mod common;

use arqonbus::auth::{token, Claims, Role};
use arqonbus::proto::v1::ErrorCode;
use arqonbus::transport::Transport;
use arqonbus_client::{Client, ConnectOptions, Outgoing};
use common::*;

fn code(r: Result<impl Sized, arqonbus_client::ClientError>) -> Option<ErrorCode> {
    r.err().and_then(|e| e.code())
}

/// Sends Hello with `token` on a raw connection: the answer's error code, and whether the
/// server then closed.
fn raw_hello(addr: std::net::SocketAddr, token: &str) -> (Option<ErrorCode>, bool) {
    let mut raw = RawConn::connect(addr);
    let frame = raw.hello_with_token(token);
    (error_code(&frame), raw.is_closed())
}

#[test]
fn missing_expired_and_forged_tokens_are_refused() {
    let mut key = None;
    let bus = TestBus::start(|c| {
        key = Some(token_key(c, true));
        c.auth.max_failures = 100;
    });
    let key = key.unwrap();
    let good = token(&key, "lab", &[Role::Publisher], &["*:>"], &[]);
    assert_eq!(
        raw_hello(bus.addr, &good).0,
        None,
        "a valid token is welcome"
    );

    assert_eq!(
        raw_hello(bus.addr, ""),
        (Some(ErrorCode::Unauthenticated), true)
    );
    let expired = token::issue(
        &key,
        &Claims {
            tenant: "lab".into(),
            sub: "old".into(),
            roles: vec![Role::Publisher],
            publish: vec![],
            subscribe: vec![],
            exp: now_secs() - 1,
            iat: now_secs() - 3600,
            capabilities: None,
            kid: None,
            jti: None,
            aud: None,
        },
    );
    assert_eq!(
        raw_hello(bus.addr, &expired),
        (Some(ErrorCode::Unauthenticated), true)
    );
    let forger = token::generate_key().unwrap();
    let forged = token(&forger, "lab", &[Role::Admin], &[], &[]);
    assert_eq!(
        raw_hello(bus.addr, &forged),
        (Some(ErrorCode::Unauthenticated), true)
    );
    assert_eq!(
        raw_hello(bus.addr, "garbage"),
        (Some(ErrorCode::Unauthenticated), true)
    );
    assert_eq!(bus.metrics().auth_failures, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_enforced_per_reality_and_topic_pattern() {
    let mut key = None;
    let bus = TestBus::start(|c| key = Some(token_key(c, true)));
    let key = key.unwrap();
    let t = token(
        &key,
        "lab",
        &[Role::Publisher, Role::Subscriber],
        &["lab-*:rig.>"],
        &["lab-1:rig.*.temp"],
    );
    let c = client_with_token(bus.addr, &t).await.unwrap();

    c.publish_acked(Outgoing::new("lab-1", "rig.a.temp"))
        .await
        .expect("inside the publish grant");
    let denied = [
        c.publish_acked(Outgoing::new("prod", "rig.a.temp")).await,
        c.publish_acked(Outgoing::new("lab-1", "door.a.open")).await,
        c.publish_acked(Outgoing::new("lab-1", "sys.control.reload"))
            .await,
    ];
    for d in denied {
        assert_eq!(code(d), Some(ErrorCode::PermissionDenied));
    }
    c.subscribe("lab-1", "rig.*.temp").await.expect("granted");
    assert_eq!(
        code(c.subscribe("lab-1", "rig.>").await),
        Some(ErrorCode::PermissionDenied),
        "wider than the grant"
    );
    assert_eq!(
        code(c.subscribe("lab-2", "rig.a.temp").await),
        Some(ErrorCode::PermissionDenied),
        "another reality"
    );
    let history = c
        .history(history_query("lab-9", None, None, 0))
        .await
        .unwrap()
        .collect_all()
        .await;
    assert_eq!(code(history), Some(ErrorCode::PermissionDenied));
    // The refusals answered those requests only: the session still works.
    c.publish_acked(Outgoing::new("lab-2", "rig.b.temp"))
        .await
        .expect("the session survives refusals");
    // The sys.control.* refusal is counted by the control handler (control_refusals).
    assert!(bus.metrics().permission_denied >= 5);
    assert!(bus.metrics().control_refusals >= 1);

    // A subscriber-only token may not publish.
    let reader = token(&key, "lab", &[Role::Subscriber], &["*:>"], &["*:>"]);
    let r = client_with_token(bus.addr, &reader).await.unwrap();
    assert_eq!(
        code(r.publish_acked(Outgoing::new("lab-1", "rig.a.temp")).await),
        Some(ErrorCode::PermissionDenied)
    );
}

/// The signed token's `controller` role is what makes a session a controller: it may load a
/// policy (an audited `sys.control.*` pulse); a publisher with every grant may not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_role_in_a_signed_token_steers_the_bus() {
    use arqonbus::proto::policy::v1::PolicyLimits;
    use common::policy::{fixture, Load};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let mut key = None;
    let bus = TestBus::start(|c| {
        c.data_dir = data_dir;
        key = Some(token_key(c, true));
    });
    let key = key.unwrap();
    let deny_all = Load {
        name: "lockdown",
        wasm: std::fs::read(fixture("deny_all")).unwrap(),
        reality_glob: "locked-*",
        topic_pattern: ">",
        params: vec![],
        limits: PolicyLimits::default(),
    };
    let publisher = token(&key, "lab", &[Role::Publisher], &["*:>"], &[]);
    let p = client_with_token(bus.addr, &publisher).await.unwrap();
    assert_eq!(
        code(p.publish_acked(deny_all.pulse("ops")).await),
        Some(ErrorCode::PermissionDenied),
        "grants do not make a controller"
    );
    // A controller binds only realities its grants cover (the policy binds `locked-*`).
    let controller = token(&key, "ops", &[Role::Controller], &["locked-*:>"], &[]);
    let ctl = client_with_token(bus.addr, &controller).await.unwrap();
    ctl.publish_acked(deny_all.pulse("ops"))
        .await
        .expect("a controller token loads a policy");
    assert_eq!(
        code(p.publish_acked(Outgoing::new("locked-1", "a.b")).await),
        Some(ErrorCode::PolicyDenied),
        "the policy it loaded is in force"
    );
    p.publish_acked(Outgoing::new("open-1", "a.b"))
        .await
        .expect("other realities unaffected");
    let audited = common::policy::audit_records(dir.path());
    assert_eq!(audited.len(), 2, "both control pulses are audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_required_tokens_anonymous_sessions_work_but_cannot_steer() {
    let bus = TestBus::start(|_| {});
    let c = client(bus.addr).await;
    c.publish_acked(Outgoing::new("r", "a.b")).await.unwrap();
    assert_eq!(
        code(c.publish_acked(Outgoing::new("r", "sys.control.x")).await),
        Some(ErrorCode::PermissionDenied)
    );
}

#[test]
fn repeated_failures_from_one_address_are_refused_for_a_while() {
    let bus = TestBus::start(|c| {
        token_key(c, true);
        c.auth.max_failures = 3;
        c.auth.block_ms = 60_000;
    });
    for _ in 0..3 {
        assert_eq!(raw_hello(bus.addr, "").0, Some(ErrorCode::Unauthenticated));
    }
    // Now the address is refused before anything is read.
    let mut raw = RawConn::connect(bus.addr);
    assert!(raw.is_closed(), "blocked address is closed on arrival");
    assert!(bus.metrics().auth_blocked_connections >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_must_match_the_client_certificate() {
    let pki = TestPki::new();
    let mut key = None;
    let bus = TestBus::start(|c| {
        key = Some(token_key(c, false));
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls = Some(pki.tls_config(true, true));
    });
    let key = key.unwrap();
    let addr = bus.addr_of(Transport::Tls);
    let with = |token: String| ConnectOptions {
        token,
        ..pki.client_options(Some("lab/tester"))
    };
    let same = token(&key, "lab", &[Role::Publisher], &["*:>"], &[]);
    Client::connect(addr, with(same))
        .await
        .expect("token and certificate agree");
    let other = token(&key, "other", &[Role::Admin], &[], &[]);
    let refused = Client::connect(addr, with(other)).await;
    assert_eq!(code(refused), Some(ErrorCode::Unauthenticated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keygen_and_issue_make_tokens_the_server_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("lab.key");
    let bin = env!("CARGO_BIN_EXE_arqonbus");
    let keygen = std::process::Command::new(bin)
        .args(["token", "keygen", "--out"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");
    let public = String::from_utf8(keygen.stdout).unwrap().trim().to_owned();
    let issue = std::process::Command::new(bin)
        .args(["token", "issue", "--key"])
        .arg(&key_file)
        .args([
            "--tenant",
            "lab",
            "--subject",
            "ada",
            "--role",
            "publisher,subscriber",
            "--publish",
            "lab-*:rig.>",
            "--subscribe",
            "lab-1:rig.>",
            "--ttl",
            "600",
        ])
        .output()
        .unwrap();
    assert!(issue.status.success(), "{issue:?}");
    let t = String::from_utf8(issue.stdout).unwrap().trim().to_owned();

    let bus = TestBus::start(|c| {
        c.auth.require_token = true;
        c.auth.trusted_keys = vec![public.into()];
    });
    let c = client_with_token(bus.addr, &t).await.unwrap();
    c.publish_acked(Outgoing::new("lab-2", "rig.a.temp"))
        .await
        .unwrap();
    assert_eq!(
        code(c.subscribe("lab-2", "rig.>").await),
        Some(ErrorCode::PermissionDenied)
    );
    // The CLI's own client carries the token too.
    let out = std::process::Command::new(bin)
        .args(["pub", "--server", &bus.addr.to_string(), "--token", &t])
        .args([
            "--reality",
            "lab-1",
            "--topic",
            "rig.b.temp",
            "--data",
            "1",
            "--ack",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("lab-1 #1 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_does_not_outlive_its_token() {
    let mut key = None;
    let bus = TestBus::start(|c| key = Some(token_key(c, true)));
    let short = token::issue(
        &key.unwrap(),
        &Claims {
            tenant: "lab".into(),
            sub: "brief".into(),
            roles: vec![Role::Publisher, Role::Subscriber],
            publish: vec!["*:>".into()],
            subscribe: vec!["*:>".into()],
            exp: now_secs() + 2,
            iat: now_secs(),
            capabilities: None,
            kid: None,
            jti: None,
            aud: None,
        },
    );
    let c = client_with_token(bus.addr, &short).await.unwrap();
    c.publish_acked(Outgoing::new("r", "a.b")).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // The bus closed the session at `exp` (UNAUTHENTICATED; the frame itself is checked in
    // sessions_carry_their_authenticated_identity.rs): nothing more gets through it.
    let refused = c.publish_acked(Outgoing::new("r", "a.b")).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(c.subscribe("r", ">").await.is_err());
    assert_eq!(bus.metrics().sessions_expired, 1);
}
