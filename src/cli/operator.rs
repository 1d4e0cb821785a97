//! `arqonbus operator load|unload|param`: the controller's side of `sys.control.operator.*`.

use std::path::PathBuf;

use anyhow::Context;
use arqonbus_client::Outgoing;
use arqonbus_proto::operator::v1::{
    OperatorLimits, OperatorLoad, OperatorParamSet, OperatorUnload, RealityFork,
};
use arqonbus_proto::v1::{OperatorManifest, SchemaRef};

use super::policy::{parse_bindings, send_control};
use crate::operator::Param;

#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    #[arg(long, default_value = "127.0.0.1:4720", env = "ARQONBUS_SERVER")]
    pub server: String,
    /// A controller token (a signed token with role `controller`, or one of
    /// control.controller_tokens).
    #[arg(long, env = "ARQONBUS_CONTROLLER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The reality the control pulse is published in. For `param`, the reality whose operator
    /// instance changes (the change is sequenced there).
    #[arg(long, default_value = "sys")]
    pub reality: String,
    #[command(subcommand)]
    pub command: OperatorCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum OperatorCommand {
    /// Load an operator, or replace the one of the same name (its instances start afresh).
    Load {
        #[arg(long)]
        name: String,
        /// The module (.wasm, or .wat text).
        #[arg(long)]
        wasm: PathBuf,
        /// Inputs as `REALITY_GLOB:TOPIC_PATTERN`, e.g. `sim-*:sim.kuramoto.tick`; repeatable.
        #[arg(long = "bind", required = true)]
        bindings: Vec<String>,
        /// Parameters as `NAME=VALUE` (a number when it parses as one); repeatable.
        #[arg(long = "param")]
        params: Vec<String>,
        /// 0: the server's default ([operator]).
        #[arg(long, default_value_t = 0)]
        fuel_per_call: u64,
        #[arg(long, default_value_t = 0)]
        max_memory_pages: u32,
        #[arg(long, default_value_t = 0)]
        deadline_ms: u32,
        #[arg(long, default_value_t = 0)]
        max_emits_per_call: u32,
        #[arg(long, default_value_t = 0)]
        max_emit_bytes_per_call: u64,
        /// Declared input types as `TOPIC_PATTERN=TYPE_URL` (the SAM manifest); repeatable.
        #[arg(long = "input")]
        inputs: Vec<String>,
        /// Declared output types as `TOPIC_PATTERN=TYPE_URL`; repeatable. A circuit's stage can
        /// be served by a hosted operator only when it declares the stage's types.
        #[arg(long = "output")]
        outputs: Vec<String>,
        /// Strict mode: a serialized FileDescriptorSet (`protoc --descriptor_set_out`) holding
        /// the declared types; outputs must then decode as them.
        #[arg(long)]
        descriptor_set: Option<PathBuf>,
    },
    /// List the loaded operators (from the admin endpoint's /operators; no controller token
    /// needed, the admin token when the bus has one).
    List {
        /// The bus's admin listener.
        #[arg(long, default_value = "127.0.0.1:4721", env = "ARQONBUS_ADMIN")]
        admin: String,
        /// The bus's `admin_token`, when it has one.
        #[arg(long, env = "ARQONBUS_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Print the JSON as the bus gives it.
        #[arg(long)]
        json: bool,
    },
    /// Unload an operator by name.
    Unload {
        #[arg(long)]
        name: String,
    },
    /// Set a parameter of an operator in --reality: audited, then sequenced into the reality.
    Param {
        /// `OPERATOR.NAME=VALUE`, e.g. `kuramoto.k_c=0.7`.
        setting: String,
    },
    /// Fork --reality (retained) into `REALITY~NAME` on the live bus: replayed from --from-seq
    /// with the pinned parameters, retained, and live afterwards.
    Fork {
        name: String,
        /// The first sequence replayed with the pinned parameters (earlier ones are copied).
        #[arg(long)]
        from_seq: u64,
        /// `OPERATOR.NAME=VALUE`, repeatable.
        #[arg(long = "param")]
        params: Vec<String>,
    },
}

fn name_value(p: &str) -> anyhow::Result<(String, Param)> {
    let (k, v) = p
        .split_once('=')
        .with_context(|| format!("parameter `{p}` is not NAME=VALUE"))?;
    Ok((k.to_owned(), Param::parse_cli(v)))
}

/// The manifest of `operator load --input/--output/--descriptor-set`; none without a schema.
fn manifest_of(
    name: &str,
    inputs: &[String],
    outputs: &[String],
    descriptor_set: Option<&std::path::Path>,
) -> anyhow::Result<Option<OperatorManifest>> {
    if inputs.is_empty() && outputs.is_empty() {
        anyhow::ensure!(
            descriptor_set.is_none(),
            "--descriptor-set needs --input or --output schemas to check"
        );
        return Ok(None);
    }
    let schemas = |list: &[String]| {
        list.iter()
            .map(|s| {
                let (topic, type_url) = s
                    .split_once('=')
                    .with_context(|| format!("schema `{s}` is not TOPIC_PATTERN=TYPE_URL"))?;
                Ok(SchemaRef {
                    topic_pattern: topic.to_owned(),
                    type_url: type_url.to_owned(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let descriptor_set = match descriptor_set {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .into(),
        None => Default::default(),
    };
    Ok(Some(OperatorManifest {
        name: name.to_owned(),
        input_schemas: schemas(inputs)?,
        output_schemas: schemas(outputs)?,
        descriptor_set,
        ..Default::default()
    }))
}

/// `GET path` on the admin listener (plain HTTP/1.0), with the admin token as a bearer token
/// when there is one; the body of a 200.
pub(crate) fn admin_get(admin: &str, token: Option<&str>, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(admin)
        .with_context(|| format!("cannot connect to the admin listener {admin} (--admin)"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {admin}\r\n{auth}\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("the admin listener sent no HTTP response")?;
    if head.starts_with("HTTP/1.1 401") || head.starts_with("HTTP/1.0 401") {
        anyhow::bail!(
            "{admin}{path}: 401 unauthorized: the bus has an admin_token; pass it with \
             --admin-token or ARQONBUS_ADMIN_TOKEN"
        );
    }
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        anyhow::bail!("{admin}{path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

fn list(admin: &str, token: Option<&str>, json: bool) -> anyhow::Result<()> {
    let body = admin_get(admin, token, "/operators")?;
    if json {
        print!("{body}");
        return Ok(());
    }
    let operators: serde_json::Value = serde_json::from_str(&body)?;
    for op in operators.as_array().into_iter().flatten() {
        let bindings: Vec<String> = op["spec"]["bindings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "{}:{}",
                    b["reality_glob"].as_str().unwrap_or(""),
                    b["topic_pattern"].as_str().unwrap_or("")
                )
            })
            .collect();
        let sha = op["sha256"].as_str().unwrap_or("");
        println!(
            "{}  sha256 {}  {}  params {}",
            op["name"].as_str().unwrap_or(""),
            sha.get(..12).unwrap_or(sha),
            bindings.join(","),
            op["spec"]["params"]
        );
    }
    Ok(())
}

pub fn run(args: OperatorArgs) -> anyhow::Result<()> {
    if let OperatorCommand::List {
        admin,
        admin_token,
        json,
    } = &args.command
    {
        return list(admin, admin_token.as_deref(), *json);
    }
    let token = args
        .token
        .clone()
        .context("a controller token is needed: --token or ARQONBUS_CONTROLLER_TOKEN")?;
    let (topic, outgoing) = match args.command {
        OperatorCommand::List { .. } => unreachable!("answered above"),
        OperatorCommand::Load {
            name,
            wasm,
            bindings,
            params,
            fuel_per_call,
            max_memory_pages,
            deadline_ms,
            max_emits_per_call,
            max_emit_bytes_per_call,
            inputs,
            outputs,
            descriptor_set,
        } => {
            let manifest = manifest_of(&name, &inputs, &outputs, descriptor_set.as_deref())?;
            let wasm =
                std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let params = params
                .iter()
                .map(|p| name_value(p).map(|(k, v)| (k, v.to_proto())))
                .collect::<anyhow::Result<_>>()?;
            let load = OperatorLoad {
                name,
                bindings: parse_bindings(&bindings)?,
                limits: Some(OperatorLimits {
                    fuel_per_call,
                    max_memory_pages,
                    deadline_ms,
                    max_emits_per_call,
                    max_emit_bytes_per_call,
                }),
                wasm: wasm.into(),
                params,
                manifest,
            };
            let topic = "sys.control.operator.load";
            (topic, Outgoing::new(&args.reality, topic).message(&load))
        }
        OperatorCommand::Unload { name } => {
            let topic = "sys.control.operator.unload";
            let out = Outgoing::new(&args.reality, topic).message(&OperatorUnload { name });
            (topic, out)
        }
        OperatorCommand::Fork {
            name,
            from_seq,
            params,
        } => {
            let params = params
                .iter()
                .map(|p| {
                    let pin: crate::replay::Pin = p.parse()?;
                    Ok((
                        format!("{}.{}", pin.operator, pin.name),
                        pin.value.to_proto(),
                    ))
                })
                .collect::<anyhow::Result<_>>()?;
            let fork = RealityFork {
                name,
                from_sequence: from_seq,
                params,
            };
            let topic = "sys.control.reality.fork";
            (topic, Outgoing::new(&args.reality, topic).message(&fork))
        }
        OperatorCommand::Param { setting } => {
            let pin: crate::replay::Pin = setting.parse()?;
            let set = OperatorParamSet {
                operator: pin.operator,
                name: pin.name,
                value: Some(pin.value.to_proto()),
            };
            let topic = "sys.control.operator.param";
            (topic, Outgoing::new(&args.reality, topic).message(&set))
        }
    };
    let ack = send_control(&args.server, &token, topic, outgoing)?;
    if topic == "sys.control.reality.fork" {
        println!(
            "ok: forked into {} (last sequence #{})",
            ack.reality_id, ack.sequence
        );
    } else if ack.sequence > 0 {
        println!(
            "ok: {topic} applied (and audited); sequenced in {} at #{}",
            ack.reality_id, ack.sequence
        );
    } else {
        println!("ok: {topic} applied (and audited)");
    }
    Ok(())
}
