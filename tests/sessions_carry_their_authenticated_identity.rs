//! Who published is what the bus authenticated, not what the client says: every pulse carries
//! its publisher's tenant and subject (from the token; `session-<id>` for a session without
//! one), overwriting whatever the client wrote there, while `producer_id` stays the client's
//! unverified claim. And a session lives no longer than its token: at `exp` it is sent
//! UNAUTHENTICATED and closed, so its subscription stops delivering.

mod common;

use std::time::{Duration, Instant};

use arqonbus::auth::{token, Claims, Role};
use arqonbus::proto::v1::{client_frame, server_frame, ErrorCode, Hello, Subscribe};
use arqonbus_client::Outgoing;
use common::operator::next;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulses_carry_the_authenticated_identity_not_the_claimed_one() {
    let mut key = None;
    let bus = TestBus::start(|c| key = Some(token_key(c, false)));
    let key = key.unwrap();
    let watcher = client(bus.addr).await;
    let mut sub = watcher.subscribe("lab-id", "rig.>").await.unwrap();

    let ada = token(&key, "lab", &[Role::Publisher], &["*:>"], &[]);
    let signed = client_with_token(bus.addr, &ada).await.unwrap();
    let mut forged = Outgoing::new("lab-id", "rig.a.temp")
        .bytes("21.5")
        .producer("admin")
        .into_message();
    forged.tenant = "root".into();
    forged.subject = "superuser".into();
    signed
        .publish_acked(Outgoing::from_message(forged))
        .await
        .unwrap();
    let got = next(&mut sub, 10).await;
    assert_eq!((&*got.tenant, &*got.subject), ("lab", "tester"));
    assert_eq!(got.producer_id, "admin", "the claim is kept, as a claim");

    let anonymous = client(bus.addr).await;
    let mut claim = Outgoing::new("lab-id", "rig.a.temp")
        .bytes("21.6")
        .into_message();
    claim.tenant = "lab".into();
    anonymous
        .publish_acked(Outgoing::from_message(claim))
        .await
        .unwrap();
    let got = next(&mut sub, 10).await;
    assert_eq!(
        got.tenant, "anonymous",
        "auth.anonymous_tenant, not the claim"
    );
    assert_eq!(
        got.subject,
        format!("session-{}", anonymous.welcome().session_id)
    );
    bus.stop();
}

#[test]
fn a_session_is_closed_when_its_token_expires() {
    let mut key = None;
    let bus = TestBus::start(|c| key = Some(token_key(c, true)));
    let key = key.unwrap();
    let exp = now_secs() + 2;
    let short = token::issue(
        &key,
        &Claims {
            tenant: "lab".into(),
            sub: "brief".into(),
            roles: vec![Role::Subscriber, Role::Publisher],
            publish: vec!["*:>".into()],
            subscribe: vec!["*:>".into()],
            exp,
            iat: now_secs(),
            capabilities: None,
            kid: None,
            jti: None,
            aud: None,
        },
    );
    let mut raw = RawConn::connect(bus.addr);
    raw.send_kind(
        1,
        client_frame::Kind::Hello(Hello {
            protocol_version: 1,
            token: short,
            ..Default::default()
        }),
    );
    assert!(matches!(
        raw.recv().and_then(|f| f.kind),
        Some(server_frame::Kind::Welcome(_))
    ));
    raw.send_kind(
        2,
        client_frame::Kind::Subscribe(Subscribe {
            subscription_id: 1,
            reality_id: "lab-exp".into(),
            pattern: ">".into(),
            ..Default::default()
        }),
    );
    // Until `exp` the session is served; then it gets UNAUTHENTICATED and is closed.
    let start = Instant::now();
    let mut expired_at = None;
    while let Some(frame) = raw.recv() {
        if let Some(code) = error_code(&frame) {
            assert_eq!(code, ErrorCode::Unauthenticated, "{frame:?}");
            expired_at = Some(now_secs());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never closed");
    }
    let at = expired_at.expect("an UNAUTHENTICATED error before the close");
    assert!(at >= exp, "closed at {at}, before the token's exp {exp}");
    assert!(raw.is_closed(), "the connection is closed after the error");
    assert_eq!(bus.metrics().sessions_expired, 1);
    bus.stop();
}
