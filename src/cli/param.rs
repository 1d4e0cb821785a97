//! `arqonbus param set|get`: a reality's parameters (`sys.control.param.set`, `ParamsGet`).

use anyhow::Context;
use arqonbus_client::{Client, ConnectOptions};
use arqonbus_proto::v1::param;

#[derive(Debug, clap::Args)]
pub struct ParamArgs {
    #[arg(long, default_value = "127.0.0.1:4720", env = "ARQONBUS_SERVER")]
    pub server: String,
    /// For `set`: a controller token (a signed token with role `controller`, or one of
    /// control.controller_tokens). For `get`: any token that may subscribe in the reality.
    #[arg(long, env = "ARQONBUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long)]
    pub reality: String,
    #[command(subcommand)]
    pub command: ParamCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ParamCommand {
    /// Set `NAME=VALUE` (a number when it parses as one; `--text` keeps it a string;
    /// `hex:0a0b` is bytes). Every session subscribed to the reality receives it.
    Set {
        setting: String,
        /// Send the value as text even when it looks like a number.
        #[arg(long)]
        text: bool,
    },
    /// Print the current parameters: name, value, version, who set it, at which sequence.
    Get {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// The value of `NAME=VALUE` as the CLI reads it.
pub fn parse_value(text: &str, force_text: bool) -> anyhow::Result<param::Value> {
    if force_text {
        return Ok(param::Value::Text(text.to_owned()));
    }
    if let Some(hex) = text.strip_prefix("hex:") {
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .with_context(|| format!("`{text}` is not hex:<pairs of hex digits>"))
            })
            .collect::<anyhow::Result<Vec<u8>>>()?;
        return Ok(param::Value::Binary(bytes.into()));
    }
    Ok(match text.parse::<f64>() {
        Ok(n) if n.is_finite() => param::Value::Number(n),
        _ => param::Value::Text(text.to_owned()),
    })
}

fn value_text(value: &Option<param::Value>) -> String {
    match value {
        Some(param::Value::Number(n)) => n.to_string(),
        Some(param::Value::Text(t)) => format!("{t:?}"),
        Some(param::Value::Binary(b)) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("hex:{hex}")
        }
        None => "(none)".into(),
    }
}

pub fn run(args: ParamArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the client runtime")?;
    runtime.block_on(async {
        let options = ConnectOptions {
            client_name: "arqonbus-cli".into(),
            token: args.token.clone().unwrap_or_default(),
            ..Default::default()
        };
        let client = Client::connect(args.server.as_str(), options)
            .await
            .with_context(|| format!("cannot connect to {}", args.server))?;
        match args.command {
            ParamCommand::Set { setting, text } => {
                let (name, value) = setting
                    .split_once('=')
                    .with_context(|| format!("`{setting}` is not NAME=VALUE"))?;
                let value = parse_value(value, text)?;
                let ack = client
                    .set_param(&args.reality, name, value)
                    .await
                    .with_context(|| format!("setting `{name}` was refused"))?;
                println!(
                    "{name} set in {} at sequence {}",
                    ack.reality_id, ack.sequence
                );
            }
            ParamCommand::Get { json } => {
                let params = client
                    .params(&args.reality)
                    .await
                    .context("the parameters could not be read")?;
                for entry in params.params {
                    let p = entry.param.unwrap_or_default();
                    if json {
                        let line = serde_json::json!({
                            "name": p.name,
                            "value": crate::param::value_json(&p.value),
                            "version": p.version,
                            "set_by": p.set_by,
                            "sequence": entry.sequence,
                            "timestamp_unix_nanos": entry.timestamp_unix_nanos,
                        });
                        println!("{line}");
                    } else {
                        println!(
                            "{} = {}  (version {}, sequence {}, set by {})",
                            p.name,
                            value_text(&p.value),
                            p.version,
                            entry.sequence,
                            p.set_by
                        );
                    }
                }
            }
        }
        client.close().await?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_numbers_text_or_bytes() {
        assert_eq!(
            parse_value("0.5", false).unwrap(),
            param::Value::Number(0.5)
        );
        assert_eq!(
            parse_value("0.5", true).unwrap(),
            param::Value::Text("0.5".into())
        );
        assert_eq!(
            parse_value("sweep", false).unwrap(),
            param::Value::Text("sweep".into())
        );
        assert_eq!(
            parse_value("inf", false).unwrap(),
            param::Value::Text("inf".into())
        );
        assert_eq!(
            parse_value("hex:00ff", false).unwrap(),
            param::Value::Binary(vec![0, 255].into())
        );
        assert!(parse_value("hex:0", false).is_err());
        assert!(parse_value("hex:zz", false).is_err());
    }
}
