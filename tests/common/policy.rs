//! Helpers for the CASIL tests: the example policies built for wasm32 once per test binary,
//! the hostile fixtures, controller clients, NvmJob pulses and control pulses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use arqonbus::audit::{self, Record};
use arqonbus::proto::nvm::v1::NvmJob;
use arqonbus::proto::policy::v1::{PolicyBinding, PolicyLimits, PolicyLoad, PolicyUnload};
use arqonbus_client::{Client, ConnectOptions, Outgoing};

/// The controller token the CASIL tests configure.
pub const CONTROLLER_TOKEN: &str = "test-controller-token-0123456789";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A hostile or trivial fixture in text format.
pub fn fixture(name: &str) -> PathBuf {
    root().join(format!("tests/fixtures/policy/{name}.wat"))
}

pub async fn connect_with_token(addr: SocketAddr, token: &str) -> Client {
    let options = ConnectOptions {
        client_name: "casil-test".into(),
        token: token.into(),
        ..Default::default()
    };
    Client::connect(addr, options)
        .await
        .expect("client connects")
}

pub async fn controller(addr: SocketAddr) -> Client {
    connect_with_token(addr, CONTROLLER_TOKEN).await
}

/// An `nvm.job.submit` pulse asking for `energy_joules`, padded with a parameter so that the
/// payload is about `payload_bytes` long.
pub fn nvm_job(reality: &str, energy_joules: f64, payload_bytes: usize) -> Outgoing {
    let mut job = NvmJob {
        job_id: "job-1".into(),
        program: "anneal".into(),
        energy_joules,
        parameters: BTreeMap::new(),
    };
    let base = prost::Message::encoded_len(&job);
    if payload_bytes > base + 8 {
        job.parameters
            .insert("pad".into(), "x".repeat(payload_bytes - base - 8));
    }
    Outgoing::new(reality, "nvm.job.submit").message(&job)
}

pub struct Load<'a> {
    pub name: &'a str,
    pub wasm: Vec<u8>,
    pub reality_glob: &'a str,
    pub topic_pattern: &'a str,
    pub params: Vec<(&'a str, &'a str)>,
    pub limits: PolicyLimits,
}

impl Load<'_> {
    pub fn pulse(&self, reality: &str) -> Outgoing {
        let load = PolicyLoad {
            name: self.name.into(),
            bindings: vec![PolicyBinding {
                reality_glob: self.reality_glob.into(),
                topic_pattern: self.topic_pattern.into(),
            }],
            limits: Some(self.limits),
            wasm: self.wasm.clone().into(),
            params: self
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            order: 0,
        };
        Outgoing::new(reality, "sys.control.policy.load").message(&load)
    }
}

pub fn unload(reality: &str, name: &str) -> Outgoing {
    Outgoing::new(reality, "sys.control.policy.unload").message(&PolicyUnload { name: name.into() })
}

/// Every record of the audit log in `data_dir`, after checking the chain.
pub fn audit_records(data_dir: &Path) -> Vec<Record> {
    let path = data_dir.join(audit::FILE_NAME);
    let bytes = std::fs::read(&path).expect("audit log exists");
    let mut records = Vec::new();
    audit::check_chain(&path, &bytes, |r, _| records.push(r.clone())).expect("chain intact");
    records
}

/// Runs the `arqonbus` binary.
pub fn arqonbus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .args(args)
        .output()
        .expect("arqonbus runs")
}
