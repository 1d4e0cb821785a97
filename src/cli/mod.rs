//! The client subcommands: `arqonbus pub`, `sub` and `history` on the Rust client; `arqonbus
//! policy load|unload` for controllers; `arqonbus audit verify|show` for the audit log;
//! `arqonbus token keygen|issue` for signed tokens.

pub mod audit;
pub mod circuit;
pub mod operator;
pub mod param;
pub mod policy;
pub mod replay;
pub mod token;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use arqonbus_client::{Client, ConnectOptions, Outgoing};
use arqonbus_proto::v1::ArqonMessage;
use base64::Engine;
use futures::StreamExt;

/// Where the bus is and how to prove who we are.
#[derive(Debug, clap::Args)]
pub struct ConnArgs {
    /// Server address: `host:port` or `tcp://host:port`, or `tls://host:port` with --ca.
    #[arg(long, default_value = "127.0.0.1:4720", env = "ARQONBUS_SERVER")]
    pub server: String,
    /// A token from `arqonbus token issue`.
    #[arg(long, env = "ARQONBUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificate to trust for tls:// (the server's CA).
    #[arg(long, env = "ARQONBUS_CA")]
    pub ca: Option<PathBuf>,
    /// PEM client certificate for mTLS (with --key).
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// The name the server's certificate carries, when it is not the host in --server.
    #[arg(long)]
    pub server_name: Option<String>,
}

/// `arqonbus pub`.
#[derive(Debug, clap::Args)]
pub struct PubArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[arg(long)]
    pub reality: String,
    #[arg(long)]
    pub topic: String,
    /// The payload, as text.
    #[arg(long, conflicts_with = "file")]
    pub data: Option<String>,
    /// The payload, read from a file.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Payload type URL.
    #[arg(long, default_value = "application/octet-stream")]
    pub type_url: String,
    /// How many times to publish it.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Wait for each pulse to be sequenced and print its sequence.
    #[arg(long)]
    pub ack: bool,
}

/// `arqonbus sub`.
#[derive(Debug, clap::Args)]
pub struct SubArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[arg(long)]
    pub reality: String,
    /// Topic pattern: `*` is one segment, `>` the rest.
    #[arg(long, default_value = ">")]
    pub pattern: String,
    /// Print one JSON object per pulse (else a short human line).
    #[arg(long)]
    pub json: bool,
    /// Exit after this many pulses.
    #[arg(long)]
    pub count: Option<u64>,
    /// Deliver only pulses for which this spectral filter holds, e.g.
    /// 'coherence >= 0.9 && criticality < 0.1' (grammar: proto/README.md).
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,
}

/// `arqonbus presence`.
#[derive(Debug, clap::Args)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[arg(long)]
    pub reality: String,
    /// One JSON object per session (else a short human line).
    #[arg(long)]
    pub json: bool,
}

/// Prints who is present in a reality.
pub fn presence(args: PresenceArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = connect(&args.conn).await?;
        let entries = client
            .presence(&args.reality)
            .await
            .context("presence could not be read")?;
        for e in entries {
            if args.json {
                let line = serde_json::json!({
                    "session_id": e.session_id,
                    "client_name": e.client_name,
                    "tenant": e.tenant,
                    "subject": e.subject,
                    "manifest_name": e.manifest_name,
                    "capabilities": e.capabilities,
                    "patterns": e.patterns,
                    "connected_since_unix_nanos": e.connected_since_unix_nanos,
                });
                println!("{line}");
            } else {
                let operator = if e.manifest_name.is_empty() {
                    String::new()
                } else {
                    format!(" operator {}", e.manifest_name)
                };
                println!(
                    "{} {} ({}/{}){operator} patterns {}",
                    e.session_id,
                    e.client_name,
                    e.tenant,
                    e.subject,
                    e.patterns.join(",")
                );
            }
        }
        client.close().await?;
        Ok(())
    })
}

/// `arqonbus history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    #[arg(long)]
    pub reality: String,
    /// Topic pattern to keep.
    #[arg(long, default_value = ">")]
    pub pattern: String,
    /// First sequence (inclusive).
    #[arg(long, conflicts_with = "from_time")]
    pub from_seq: Option<u64>,
    /// First time (inclusive), nanoseconds since the Unix epoch, UTC.
    #[arg(long)]
    pub from_time: Option<u64>,
    /// Last sequence (exclusive).
    #[arg(long, conflicts_with = "to_time")]
    pub to_seq: Option<u64>,
    /// Last time (exclusive), nanoseconds since the Unix epoch, UTC.
    #[arg(long)]
    pub to_time: Option<u64>,
    /// At most this many pulses (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// One JSON object per pulse.
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the client runtime")
}

/// Connects as the CLI, over TLS when the address says `tls://`.
async fn connect(conn: &ConnArgs) -> anyhow::Result<Client> {
    let tls = match &conn.ca {
        Some(ca) => {
            let client = conn.cert.as_deref().zip(conn.key.as_deref());
            let mut tls = arqonbus_client::TlsOptions::from_pem_files(ca, client)?;
            if let Some(name) = &conn.server_name {
                tls = tls.server_name(name);
            }
            Some(tls)
        }
        None => None,
    };
    let options = ConnectOptions {
        client_name: "arqonbus-cli".to_owned(),
        token: conn.token.clone().unwrap_or_default(),
        tls,
        ..Default::default()
    };
    Client::connect_url(&conn.server, options)
        .await
        .with_context(|| format!("cannot connect to {}", conn.server))
}

pub fn publish(args: PubArgs) -> anyhow::Result<()> {
    let payload = match (&args.data, &args.file) {
        (Some(d), _) => d.clone().into_bytes(),
        (None, Some(f)) => {
            std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, None) => Vec::new(),
    };
    runtime()?.block_on(async {
        let client = connect(&args.conn).await?;
        let mut stdout = std::io::stdout().lock();
        for _ in 0..args.count {
            let out =
                Outgoing::new(&args.reality, &args.topic).payload(&args.type_url, payload.clone());
            if args.ack {
                let ack = client.publish_acked(out).await?;
                writeln!(stdout, "{} #{} {}", ack.reality_id, ack.sequence, ack.id)?;
            } else {
                client.publish(out).await?;
            }
        }
        // Make sure the server has taken every pulse (and report any error) before exiting.
        client.close().await?;
        Ok(())
    })
}

pub fn subscribe(args: SubArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = connect(&args.conn).await?;
        let options =
            arqonbus_client::SubscribeOptions::new().filter(args.filter.unwrap_or_default());
        let mut sub = client
            .subscribe_with(&args.reality, &args.pattern, options)
            .await?;
        let mut seen = 0u64;
        while let Some(item) = sub.next().await {
            let mut stdout = std::io::stdout().lock();
            match item {
                Ok(m) => {
                    if args.json {
                        writeln!(stdout, "{}", to_json(&m))?;
                    } else {
                        writeln!(stdout, "{}", to_line(&m))?;
                    }
                }
                Err(arqonbus_client::ClientError::Dropped { count }) => {
                    eprintln!(
                        "warning: the server dropped {count} pulses (this subscriber was too slow)"
                    );
                }
                Err(e) => return Err(e.into()),
            }
            stdout.flush()?;
            seen += 1;
            if args.count.is_some_and(|c| seen >= c) {
                break;
            }
        }
        Ok(())
    })
}

fn to_line(m: &ArqonMessage) -> String {
    let payload = m
        .payload
        .as_ref()
        .map(|p| String::from_utf8_lossy(&p.value).into_owned())
        .unwrap_or_default();
    format!("{} #{} {} {}", m.reality_id, m.sequence, m.topic, payload)
}

/// One pulse as a JSON object: payload bytes as UTF-8 text when they are, base64 otherwise.
pub fn to_json(m: &ArqonMessage) -> serde_json::Value {
    let payload = m.payload.as_ref().map(|p| {
        let mut v = serde_json::json!({ "type_url": p.type_url });
        match std::str::from_utf8(&p.value) {
            Ok(text) => v["text"] = text.into(),
            Err(_) => {
                v["base64"] = base64::engine::general_purpose::STANDARD
                    .encode(&p.value)
                    .into()
            }
        }
        v
    });
    serde_json::json!({
        "id": m.id,
        "sequence": m.sequence,
        "topic": m.topic,
        "producer_id": m.producer_id,
        "reality_id": m.reality_id,
        "timestamp_unix_nanos": m.timestamp_unix_nanos,
        "trace_context": m.trace_context,
        "causal": m.causal,
        "reply_to": m.reply_to,
        "spectral": m.spectral.as_ref().map(|s| serde_json::json!({
            "coherence": s.coherence,
            "criticality": s.criticality,
            "eigenvalues": s.eigenvalues,
        })),
        "payload": payload,
    })
}

pub fn history(args: HistoryArgs) -> anyhow::Result<()> {
    use arqonbus_proto::v1::{history_get, HistoryGet};
    let query = HistoryGet {
        reality_id: args.reality.clone(),
        pattern: args.pattern.clone(),
        from: match (args.from_seq, args.from_time) {
            (Some(s), _) => Some(history_get::From::FromSequence(s)),
            (None, Some(t)) => Some(history_get::From::FromTimeUnixNanos(t)),
            (None, None) => None,
        },
        to: match (args.to_seq, args.to_time) {
            (Some(s), _) => Some(history_get::To::ToSequence(s)),
            (None, Some(t)) => Some(history_get::To::ToTimeUnixNanos(t)),
            (None, None) => None,
        },
        limit: args.limit,
    };
    runtime()?.block_on(async {
        let client = connect(&args.conn).await?;
        let mut stream = client.history(query).await?;
        let mut stdout = std::io::stdout().lock();
        while let Some(item) = stream.next().await {
            let m = item?;
            if args.json {
                writeln!(stdout, "{}", to_json(&m))?;
            } else {
                writeln!(stdout, "{}", to_line(&m))?;
            }
        }
        if let Some(end) = stream.end() {
            eprintln!("{} pulses; next sequence {}", end.count, end.next_sequence);
        }
        Ok(())
    })
}
