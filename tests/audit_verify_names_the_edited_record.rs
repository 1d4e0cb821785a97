//! Records written by a running bus verify with `arqonbus audit verify`; editing one byte of one
//! record makes verify fail and name that record, `audit show` prints the records before it,
//! and the bus refuses to start on the broken chain.

mod common;

use arqonbus::proto::policy::v1::PolicyLimits;
use arqonbus::Server;
use common::policy::{arqonbus, controller, fixture, unload, Load, CONTROLLER_TOKEN};
use common::TestBus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_the_edited_record() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let configure = move |c: &mut arqonbus::Config| {
        c.data_dir = data_dir;
        c.control.controller_tokens = vec![CONTROLLER_TOKEN.into()];
    };
    let bus = TestBus::start(configure.clone());
    let ctl = controller(bus.addr).await;
    let load = Load {
        name: "open",
        wasm: std::fs::read(fixture("allow_all")).unwrap(),
        reality_glob: "*",
        topic_pattern: ">",
        params: vec![],
        limits: PolicyLimits::default(),
    };
    for _ in 0..2 {
        ctl.publish_acked(load.pulse("ops")).await.unwrap();
        ctl.publish_acked(unload("ops", "open")).await.unwrap();
    }
    bus.stop();

    let d = dir.path().to_str().unwrap();
    let out = arqonbus(&["audit", "verify", "--data-dir", d]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 records"));
    let out = arqonbus(&["audit", "show", "--data-dir", d]);
    assert!(out.status.success(), "{out:?}");
    let shown: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown.len(), 4);
    assert_eq!(shown[2]["seq"], 3);
    assert_eq!(shown[3]["prev_sha256"], shown[2]["sha256"]);

    // Change one byte in the middle of record 3: the policy name it loaded.
    let path = dir.path().join("audit.log");
    let original = std::fs::read(&path).unwrap();
    let text = String::from_utf8(original.clone()).unwrap();
    let third_start: usize = text.lines().take(2).map(|l| l.len() + 1).sum();
    let offset = third_start + text.lines().nth(2).unwrap().find("\"open\"").unwrap() + 1;
    let mut edited = original.clone();
    edited[offset] = b'O';
    std::fs::write(&path, &edited).unwrap();

    let out = arqonbus(&["audit", "verify", "--data-dir", d]);
    assert!(
        !out.status.success(),
        "verify passed an edited log: {out:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("record 3"), "{stderr}");
    assert!(stderr.contains("altered"), "{stderr}");
    let out = arqonbus(&["audit", "show", "--data-dir", d]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);

    // The bus will not append to a broken chain.
    let mut config = arqonbus::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: 1,
        admin_listen: None,
        ..Default::default()
    };
    configure(&mut config);
    let err = Server::start(config).err().expect("start refused");
    assert!(err.to_string().contains("record 3"), "{err}");

    // Put the byte back: intact again.
    std::fs::write(&path, &original).unwrap();
    let out = arqonbus(&["audit", "verify", "--data-dir", d]);
    assert!(out.status.success(), "{out:?}");
}
