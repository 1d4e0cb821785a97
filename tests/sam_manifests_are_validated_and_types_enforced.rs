//! The SAM handshake over real sockets: a Hello whose manifest is malformed is refused with
//! INVALID_REQUEST naming the field; an operator's publish on a topic its output schemas cover
//! must carry a declared type (TYPE_MISMATCH names topic, expected and actual type); its
//! subscriptions get, on topics its input schemas cover, only pulses of the declared types
//! (others counted as filtered), live and through replay; a token's `capabilities` bound what a
//! manifest may claim.

mod common;

use std::time::Duration;

use arqonbus::config::SyncMode;
use arqonbus::proto::v1::{
    start_position::Position, ErrorCode, OperatorManifest, SchemaRef, StartPosition,
};
use arqonbus_client::{Client, ClientError, ConnectOptions, Outgoing, SubscribeOptions};
use common::{client, retain, token_key, TestBus};
use futures::StreamExt;

const AUDIO: &str = "type.googleapis.com/lab.Audio";
const BOWL: &str = "type.googleapis.com/lab.Bowl";
const TEXT: &str = "type.googleapis.com/lab.Text";

fn schema(pattern: &str, type_url: &str) -> SchemaRef {
    SchemaRef {
        topic_pattern: pattern.into(),
        type_url: type_url.into(),
    }
}

fn bowlnet() -> OperatorManifest {
    OperatorManifest {
        name: "bowlnet".into(),
        version: "1.0.0".into(),
        capabilities: vec!["audio.features".into()],
        input_schemas: vec![schema("audio.raw.>", AUDIO)],
        output_schemas: vec![schema("audio.bowl.out", BOWL)],
        ..Default::default()
    }
}

async fn connect(
    addr: std::net::SocketAddr,
    manifest: OperatorManifest,
    token: &str,
) -> Result<Client, ClientError> {
    Client::connect(
        addr,
        ConnectOptions {
            manifest: Some(manifest),
            token: token.into(),
            ..ConnectOptions::default()
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sam_manifests_are_validated_and_types_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut key = None;
    let bus = TestBus::start(|c| {
        c.shards = 2;
        retain(c, dir.path(), "lab-*", SyncMode::Os);
        key = Some(token_key(c, false));
    });
    let key = key.unwrap();

    // Malformed manifests are refused at Hello, naming the field.
    let mut bad = bowlnet();
    bad.output_schemas[0].type_url = "no-slash".into();
    let err = connect(bus.addr, bad, "").await.err().expect("refused");
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(
        err.to_string()
            .contains("manifest.output_schemas[0].type_url"),
        "{err}"
    );
    let mut bad = bowlnet();
    bad.input_schemas[0].topic_pattern = "audio..raw".into();
    let err = connect(bus.addr, bad, "").await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("manifest.input_schemas[0].topic_pattern"),
        "{err}"
    );

    // Outputs: the declared type passes, another is TYPE_MISMATCH, uncovered topics are free.
    let op = connect(bus.addr, bowlnet(), "").await.unwrap();
    op.publish_acked(Outgoing::new("lab-1", "audio.bowl.out").payload(BOWL, b"b".to_vec()))
        .await
        .unwrap();
    let err = op
        .publish_acked(Outgoing::new("lab-1", "audio.bowl.out").payload(TEXT, b"t".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TypeMismatch), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("audio.bowl.out") && text.contains(BOWL) && text.contains(TEXT),
        "{text}"
    );
    op.publish_acked(Outgoing::new("lab-1", "audio.notes.x").payload(TEXT, b"t".to_vec()))
        .await
        .unwrap();
    assert_eq!(bus.metrics().type_mismatches, 1);
    // A plain client has no manifest: nothing is checked.
    let plain = client(bus.addr).await;
    plain
        .publish_acked(Outgoing::new("lab-1", "audio.bowl.out").payload(TEXT, b"t".to_vec()))
        .await
        .unwrap();

    // Inputs: on covered topics only the declared type arrives, live and replayed.
    let mut live = op.subscribe("lab-2", "audio.>").await.unwrap();
    let sent = [
        ("audio.raw.mic1", AUDIO, "a1"),
        ("audio.raw.mic1", TEXT, "t1"),
        ("audio.other.x", TEXT, "t2"),
        ("audio.raw.mic2", AUDIO, "a2"),
    ];
    let filtered_before = bus.metrics().pulses_filtered;
    for (topic, type_url, body) in sent {
        plain
            .publish_acked(
                Outgoing::new("lab-2", topic).payload(type_url, body.as_bytes().to_vec()),
            )
            .await
            .unwrap();
    }
    let expect = ["a1", "t2", "a2"];
    for want in expect {
        let m = tokio::time::timeout(Duration::from_secs(10), live.next())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        assert_eq!(m.payload.unwrap().value, want.as_bytes());
    }
    let options = SubscribeOptions::new().start(StartPosition {
        position: Some(Position::FromSequence(1)),
    });
    let mut replayed = op
        .subscribe_with("lab-2", "audio.>", options)
        .await
        .unwrap();
    for want in expect {
        let m = tokio::time::timeout(Duration::from_secs(10), replayed.next())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        assert_eq!(m.payload.unwrap().value, want.as_bytes());
    }
    assert_eq!(bus.metrics().pulses_filtered - filtered_before, 2);

    // A token's capabilities bound what a manifest may claim.
    let issue = |capabilities: Option<Vec<String>>| {
        arqonbus::auth::token::issue(
            &key,
            &arqonbus::auth::Claims {
                tenant: "lab".into(),
                sub: "bowlnet-1".into(),
                roles: vec![
                    arqonbus::auth::Role::Publisher,
                    arqonbus::auth::Role::Subscriber,
                ],
                publish: vec!["*".into()],
                subscribe: vec!["*".into()],
                exp: common::now_secs() + 3600,
                iat: common::now_secs(),
                capabilities,
                kid: None,
                jti: None,
                aud: None,
            },
        )
    };
    let narrow = issue(Some(vec!["rig.control".into()]));
    let err = connect(bus.addr, bowlnet(), &narrow)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Some(ErrorCode::PermissionDenied), "{err}");
    assert!(err.to_string().contains("audio.features"), "{err}");
    let fitting = issue(Some(vec!["audio.features".into(), "rig.control".into()]));
    connect(bus.addr, bowlnet(), &fitting).await.unwrap();
    connect(bus.addr, bowlnet(), &issue(None)).await.unwrap();
    bus.stop();
}
