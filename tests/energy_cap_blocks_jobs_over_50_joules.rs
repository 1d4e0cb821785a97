//! The example configuration (policy/example.toml) caps jobs at 50 J: a 49 J job passes (and is
//! delivered), a 51 J job is blocked with POLICY_DENIED and never reaches a subscriber, whatever
//! shard the publisher is on; pulses the policy is not bound to pass untouched.

mod common;

use std::time::Duration;

use arqonbus::config::Config;
use arqonbus::proto::v1::ErrorCode;
use arqonbus_client::Outgoing;
use common::guest::guest_wasm;
use common::policy::nvm_job;
use common::{client_on_shard, TestBus};
use futures::StreamExt;

fn example_config(data_dir: &std::path::Path) -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/policy/example.toml");
    let mut config = Config::from_file(std::path::Path::new(path)).expect("example config");
    for p in &mut config.policies {
        // The example points at the same build output; make it absolute and built.
        p.wasm_path = guest_wasm(&p.name);
    }
    config.data_dir = data_dir.to_owned();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn energy_cap_blocks_jobs_over_50_joules() {
    let dir = tempfile::tempdir().unwrap();
    let example = example_config(dir.path());
    let cap = &example.policies[0];
    assert_eq!(cap.name, "energy_cap");
    assert_eq!(cap.params["max_energy_joules"], "50");
    let bus = TestBus::start(move |c| {
        let (listen, shards, admin_listen) = (c.listen, c.shards, c.admin_listen);
        *c = example;
        c.listen = listen;
        c.shards = shards;
        c.admin_listen = admin_listen;
    });

    let subscriber = client_on_shard(bus.addr, 0).await;
    let mut jobs = subscriber.subscribe("lab-1", "nvm.job.>").await.unwrap();
    for shard in [0, 1] {
        let publisher = client_on_shard(bus.addr, shard).await;
        let ack = publisher
            .publish_acked(nvm_job("lab-1", 49.0, 200))
            .await
            .expect("a 49 J job passes");
        assert!(ack.sequence > 0);
        publisher
            .publish_acked(nvm_job("lab-1", 50.0, 200))
            .await
            .expect("a 50 J job is at the cap, not over it");

        let err = publisher
            .publish_acked(nvm_job("lab-1", 51.0, 200))
            .await
            .expect_err("a 51 J job is blocked");
        assert_eq!(err.code(), Some(ErrorCode::PolicyDenied), "{err}");
        let text = err.to_string();
        assert!(text.contains("energy_cap"), "{text}");
        assert!(text.contains("51 J"), "{text}");
        assert!(text.contains("reason 1"), "{text}");

        let err = publisher
            .publish_acked(nvm_job("lab-1", f64::NAN, 200))
            .await
            .expect_err("NaN energy is refused");
        assert_eq!(err.code(), Some(ErrorCode::PolicyDenied), "{err}");

        // Not a job: the policy is bound to nvm.job.submit only.
        publisher
            .publish_acked(Outgoing::new("lab-1", "nvm.job.status").bytes(b"51 J".to_vec()))
            .await
            .expect("other topics pass");
    }

    // Exactly the allowed pulses arrive, in order.
    let mut energies = Vec::new();
    for _ in 0..6 {
        let m = tokio::time::timeout(Duration::from_secs(10), jobs.next())
            .await
            .expect("pulse arrives")
            .unwrap()
            .unwrap();
        energies.push(m.topic.clone());
        if m.topic == "nvm.job.submit" {
            let job: arqonbus::proto::nvm::v1::NvmJob =
                prost::Message::decode(&m.payload.unwrap().value[..]).unwrap();
            assert!(job.energy_joules <= 50.0, "{}", job.energy_joules);
        }
    }
    let nothing = tokio::time::timeout(Duration::from_millis(300), jobs.next()).await;
    assert!(nothing.is_err(), "a blocked job was delivered: {nothing:?}");

    let m = bus.metrics();
    assert_eq!(m.policy_denials, 4);
    assert_eq!(m.policy_faults, 0);
    // energy_cap runs on every nvm.job.submit (4 per shard), topic_denylist on every pulse.
    assert!(m.policy_evaluations >= 8, "{m:?}");
}
