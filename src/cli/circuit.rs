//! `arqonbus circuit check|apply|remove|status`: typed circuits (US-02).

use std::path::PathBuf;

use anyhow::Context;
use arqonbus_client::Outgoing;
use arqonbus_proto::circuit::v1::CircuitRemove;

use super::operator::admin_get;
use super::policy::send_control;
use crate::circuit::{self, CircuitFile};

#[derive(Debug, clap::Args)]
pub struct CircuitArgs {
    #[arg(long, default_value = "127.0.0.1:4720", env = "ARQONBUS_SERVER")]
    pub server: String,
    /// A controller token, for `apply` and `remove`.
    #[arg(long, env = "ARQONBUS_CONTROLLER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The bus's admin listener, for `status`.
    #[arg(long, default_value = "127.0.0.1:4721", env = "ARQONBUS_ADMIN")]
    pub admin: String,
    /// The bus's `admin_token`, when it has one (for `status`).
    #[arg(long, env = "ARQONBUS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(subcommand)]
    pub command: CircuitCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CircuitCommand {
    /// Type-check a circuit file offline: every edge's producer and consumer types must agree.
    Check { file: PathBuf },
    /// Install a circuit (audited; replaces the one of its name). The bus checks it again,
    /// against the operators online now too.
    Apply { file: PathBuf },
    /// Remove a circuit by name.
    Remove { name: String },
    /// Each stage's presence, each edge's pulses and refusals, and each hop's latency (from
    /// the bus sequencing a pulse on the edge to writing it to the consuming stage).
    Status {
        /// Only this circuit.
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn read(file: &PathBuf) -> anyhow::Result<arqonbus_proto::circuit::v1::Circuit> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    CircuitFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

pub fn run(args: CircuitArgs) -> anyhow::Result<()> {
    match args.command {
        CircuitCommand::Check { file } => {
            let checked = circuit::check(read(&file)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            println!(
                "circuit `{}` in `{}`: {} stages, {} edges, types agree",
                checked.circuit.name,
                checked.circuit.reality_id,
                checked.circuit.stages.len(),
                checked.edges.len()
            );
            for e in &checked.edges {
                println!(
                    "  {} -> {}  on {}  ({})",
                    e.from.join(","),
                    e.to.join(","),
                    e.topic,
                    e.type_url
                );
            }
            Ok(())
        }
        CircuitCommand::Apply { file } => {
            let c = read(&file)?;
            let token = args
                .token
                .context("a controller token is needed: --token or ARQONBUS_CONTROLLER_TOKEN")?;
            let name = c.name.clone();
            let out = Outgoing::new(&c.reality_id, circuit::APPLY_TOPIC).message(&c);
            send_control(&args.server, &token, circuit::APPLY_TOPIC, out)?;
            println!("circuit `{name}` applied");
            Ok(())
        }
        CircuitCommand::Remove { name } => {
            let token = args
                .token
                .context("a controller token is needed: --token or ARQONBUS_CONTROLLER_TOKEN")?;
            let out = Outgoing::new("sys", circuit::REMOVE_TOPIC)
                .message(&CircuitRemove { name: name.clone() });
            send_control(&args.server, &token, circuit::REMOVE_TOPIC, out)?;
            println!("circuit `{name}` removed");
            Ok(())
        }
        CircuitCommand::Status { name, json } => {
            let body = admin_get(&args.admin, args.admin_token.as_deref(), "/circuits")?;
            let all: serde_json::Value = serde_json::from_str(&body)?;
            let chosen: Vec<&serde_json::Value> = all
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| name.as_deref().is_none_or(|n| c["name"] == n))
                .collect();
            if let Some(n) = &name {
                anyhow::ensure!(!chosen.is_empty(), "no circuit named `{n}` is installed");
            }
            for c in chosen {
                if json {
                    println!("{c}");
                    continue;
                }
                println!(
                    "circuit {} in {}: {}",
                    c["name"].as_str().unwrap_or(""),
                    c["reality_id"].as_str().unwrap_or(""),
                    if c["live"] == true { "live" } else { "pending" }
                );
                for s in c["stages"].as_array().into_iter().flatten() {
                    let online = s["online"].as_u64().unwrap_or(0);
                    println!(
                        "  stage {:<12} operator {:<12} {}",
                        s["name"].as_str().unwrap_or(""),
                        s["operator"].as_str().unwrap_or(""),
                        if online > 0 {
                            format!("online ({online})")
                        } else {
                            "pending".into()
                        }
                    );
                }
                for e in c["edges"].as_array().into_iter().flatten() {
                    let l = &e["latency"];
                    let us = |v: &serde_json::Value| match v.as_f64() {
                        Some(x) => format!("{x:.0}"),
                        None => "-".into(),
                    };
                    println!(
                        "  edge {:<24} pulses {:>8}  refused {:>6}  hop p50 <= {} µs  p99 <= {} µs  \
                         mean {} µs",
                        e["topic"].as_str().unwrap_or(""),
                        e["pulses"],
                        e["refusals"],
                        us(&l["p50_us_at_most"]),
                        us(&l["p99_us_at_most"]),
                        us(&l["mean_us"]),
                    );
                }
            }
            Ok(())
        }
    }
}
