//! US-01 with no hardware: the `nvm_rig` operator of `operator/example.toml` answers every
//! `nvm.job.submit` with `steps` streamed `NvmJobResult`s on the job's `reply_to` topic — progress
//! results, then a final one with the measurement — and a job it cannot read with one final
//! result carrying the error.

mod common;

use arqonbus::config::Config;
use arqonbus::proto::nvm::v1::{NvmJob, NvmJobResult};
use arqonbus_client::Outgoing;
use common::guest::operator_wasm;
use common::operator::next;
use common::{client_on_shard, TestBus};
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvm_rig_operator_answers_jobs_with_streamed_results() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/operator/example.toml");
    let example = Config::from_file(std::path::Path::new(path)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let bus = TestBus::start(move |c| {
        c.data_dir = data_dir;
        c.operators = example.operators.clone();
        for op in &mut c.operators {
            op.wasm_path = operator_wasm(&op.name);
        }
    });
    let researcher = client_on_shard(bus.addr, 0).await;
    let mut results = researcher
        .subscribe("lab-7", "nvm.job.result.>")
        .await
        .unwrap();
    let job = NvmJob {
        job_id: "anneal-42".into(),
        program: "anneal".into(),
        energy_joules: 12.5,
        ..Default::default()
    };
    researcher
        .publish_acked(
            Outgoing::new("lab-7", "nvm.job.submit")
                .message(&job)
                .reply_to("nvm.job.result.alice"),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = next(&mut results, 10).await;
        assert_eq!(m.topic, "nvm.job.result.alice");
        assert_eq!(m.emitted_by, "nvm_rig");
        got.push(NvmJobResult::decode(&m.payload.unwrap().value[..]).unwrap());
    }
    assert!(got
        .iter()
        .all(|r| r.job_id == "anneal-42" && r.error.is_empty()));
    assert_eq!(
        got.iter().map(|r| r.r#final).collect::<Vec<_>>(),
        [false, false, false, true]
    );
    assert_eq!(
        got.iter().map(|r| r.progress).collect::<Vec<_>>(),
        [0.25, 0.5, 0.75, 1.0]
    );
    let samples: Vec<f64> = got[3]
        .data
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(samples.len(), 4);
    assert_eq!(samples[0], 1.0, "exp(0) * cos(0)");
    assert!((samples[1] - (-0.25f64).exp() * 12.5f64.cos()).abs() < 1e-12);

    // A payload that is not a job: one final result with the error.
    researcher
        .publish_acked(
            Outgoing::new("lab-7", "nvm.job.submit")
                .bytes("not a job")
                .reply_to("nvm.job.result.alice"),
        )
        .await
        .unwrap();
    let m = next(&mut results, 10).await;
    let r = NvmJobResult::decode(&m.payload.unwrap().value[..]).unwrap();
    assert!(r.r#final);
    assert!(
        r.error.contains("not an arqon.nvm.v1.NvmJob"),
        "{}",
        r.error
    );
}
