//! `arqonbus policy load|unload`: the controller's side of `sys.control.policy.*`; `arqonbus
//! policy test`: a policy against a table of pulses and their expected verdicts, no bus needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use arqonbus_client::{Client, ConnectOptions, Outgoing};
use arqonbus_proto::policy::v1::{PolicyBinding, PolicyLimits, PolicyLoad, PolicyUnload};

use crate::config::Config;
use crate::policy::cases::{describe_outcome, mismatch, CaseTable};
use crate::policy::probe::Probe;

#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[arg(long, default_value = "127.0.0.1:4720", env = "ARQONBUS_SERVER")]
    pub server: String,
    /// A controller token (one of the server's control.controller_tokens); load and unload
    /// need it.
    #[arg(long, env = "ARQONBUS_CONTROLLER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The reality the control pulse is published in (recorded in the audit log).
    #[arg(long, default_value = "sys")]
    pub reality: String,
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Load a policy, or replace the one of the same name.
    Load {
        #[arg(long)]
        name: String,
        /// The module (.wasm, or .wat text).
        #[arg(long)]
        wasm: PathBuf,
        /// Bindings as `REALITY_GLOB:TOPIC_PATTERN`, e.g. `*:nvm.job.submit`; repeatable.
        #[arg(long = "bind", required = true)]
        bindings: Vec<String>,
        /// Parameters as `KEY=VALUE`; repeatable.
        #[arg(long = "param")]
        params: Vec<String>,
        #[arg(long, default_value_t = 0)]
        order: i32,
        /// 0: the server's default.
        #[arg(long, default_value_t = 0)]
        fuel_per_call: u64,
        #[arg(long, default_value_t = 0)]
        max_memory_pages: u32,
        #[arg(long, default_value_t = 0)]
        deadline_ms: u32,
    },
    /// Unload a policy by name.
    Unload {
        #[arg(long)]
        name: String,
    },
    /// Run a policy, exactly as the shield would, against a table of pulses and the verdict
    /// each must get (see policy/cases/); exit 1 when any case gets another. No bus needed.
    Test {
        /// The module (.wasm, or .wat text).
        wasm: PathBuf,
        /// The case table (TOML).
        #[arg(long)]
        cases: PathBuf,
        /// A bus configuration whose [policy] defaults and ceilings apply (else the embedded
        /// defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// `--bind REALITY_GLOB:TOPIC_PATTERN` values (policies and operators).
pub fn parse_bindings(bindings: &[String]) -> anyhow::Result<Vec<PolicyBinding>> {
    bindings
        .iter()
        .map(|b| {
            let (reality_glob, topic_pattern) = b
                .split_once(':')
                .with_context(|| format!("binding `{b}` is not REALITY_GLOB:TOPIC_PATTERN"))?;
            Ok(PolicyBinding {
                reality_glob: reality_glob.to_owned(),
                topic_pattern: topic_pattern.to_owned(),
            })
        })
        .collect()
}

/// Publishes one control pulse as a controller and waits for it to be applied.
pub fn send_control(
    server: &str,
    token: &str,
    topic: &str,
    outgoing: Outgoing,
) -> anyhow::Result<arqonbus_proto::v1::PubAck> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the client runtime")?;
    runtime.block_on(async {
        let options = ConnectOptions {
            client_name: "arqonbus-cli".into(),
            token: token.to_owned(),
            ..Default::default()
        };
        let client = Client::connect(server, options)
            .await
            .with_context(|| format!("cannot connect to {server}"))?;
        let ack = client
            .publish_acked(outgoing)
            .await
            .with_context(|| format!("{topic} was refused"))?;
        client.close().await?;
        Ok(ack)
    })
}

pub fn run(args: PolicyArgs) -> anyhow::Result<()> {
    let (topic, outgoing) = match args.command {
        PolicyCommand::Test {
            wasm,
            cases,
            config,
        } => return test(&wasm, &cases, config.as_deref()),
        PolicyCommand::Load {
            name,
            wasm,
            bindings,
            params,
            order,
            fuel_per_call,
            max_memory_pages,
            deadline_ms,
        } => {
            let wasm =
                std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let bindings = parse_bindings(&bindings)?;
            let params = params
                .iter()
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("parameter `{p}` is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
            let load = PolicyLoad {
                name,
                bindings,
                limits: Some(PolicyLimits {
                    fuel_per_call,
                    max_memory_pages,
                    deadline_ms,
                }),
                wasm: wasm.into(),
                params,
                order,
            };
            let topic = "sys.control.policy.load";
            (topic, Outgoing::new(&args.reality, topic).message(&load))
        }
        PolicyCommand::Unload { name } => {
            let topic = "sys.control.policy.unload";
            let out = Outgoing::new(&args.reality, topic).message(&PolicyUnload { name });
            (topic, out)
        }
    };
    let token = args.token.context(
        "policy load and unload need a controller token: --token or ARQONBUS_CONTROLLER_TOKEN",
    )?;
    send_control(&args.server, &token, topic, outgoing)?;
    println!("ok: {topic} applied (and audited)");
    Ok(())
}

/// `arqonbus policy test`: one line per case, then a summary; an error when any case fails.
fn test(wasm: &Path, cases: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let config = match config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let table = CaseTable::read(cases, wasm, &config.policy).map_err(anyhow::Error::msg)?;
    let module = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let name = table.spec.name.clone();
    let limits = table.spec.limits;
    let mut probe = Probe::new(&config.policy, table.spec, &module)?;
    println!(
        "policy {name} ({}): fuel_per_call {}, max_memory_pages {}, deadline_ms {}",
        wasm.display(),
        limits.fuel_per_call,
        limits.max_memory_pages,
        limits.deadline_ms
    );
    let width = table.cases.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut failed = 0;
    for case in &table.cases {
        let outcome = probe.run(&case.message);
        let verdict = describe_outcome(&outcome);
        let timing = format!(
            "fuel {:>9}  {:>9.1} µs",
            outcome.fuel_used,
            outcome.elapsed.as_secs_f64() * 1e6
        );
        match mismatch(case, &outcome) {
            None => println!("  ok    {:width$}  {timing}  {verdict}", case.name),
            Some(why) => {
                failed += 1;
                println!(
                    "  FAIL  {:width$}  {timing}  {verdict}  <- {why}",
                    case.name
                );
            }
        }
    }
    let total = table.cases.len();
    let passed = total - failed;
    if failed == 0 {
        println!(
            "{name}: {total} cases, {passed} passed ({})",
            cases.display()
        );
        Ok(())
    } else {
        println!(
            "{name}: {total} cases, {passed} passed, {failed} failed ({})",
            cases.display()
        );
        anyhow::bail!("{failed} of {total} cases of {} failed", cases.display())
    }
}
