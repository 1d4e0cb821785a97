//! `arqonbus-bench`: the load harness of ArqonBus, run side by side with NATS.
//!
//! Layout:
//! - `target`   — `arqonbus://` / `nats://` URLs and the loopback-only rule.
//! - `driver`   — a lean ArqonBus protocol driver and the async-nats adapter, behind one
//!   publisher/subscriber interface.
//! - `payload`  — the header every benchmark pulse carries (publisher, sequence, timestamps).
//! - `placement` — a reality's owner shard, names chosen by owner, connections placed on a shard.
//! - `reading`  — `arqon.bench.Reading`, the typed payload of `types` (shared with the
//!   criterion benchmark of strict mode).
//! - `schedule` — the open-loop send schedule (latency from the intended send time).
//! - `stats`    — HdrHistogram latencies and loss accounting.
//! - `scenario` — throughput, fanout, latency, conns, durable, spectral, filters, params, delta,
//!   types, tenants.
//! - `report`, `plot`, `summary` — JSON, Markdown and SVG output, and the comparison.
//! - `sys`      — RLIMIT_NOFILE, /proc RSS, timer slack.

mod delta;
mod driver;
mod payload;
mod placement;
mod plot;
mod reading;
mod report;
mod scenario;
mod schedule;
mod stats;
mod summary;
mod sys;
mod target;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use driver::Names;
use report::{Metrics, RunResult, Status};
use target::Target;

const LONG_ABOUT: &str = "\
Load harness for ArqonBus, run side by side with NATS.

Targets: --target arqonbus://HOST:PORT (the ArqonBus wire protocol, spoken by a lean driver in
this crate) or --target nats://HOST:PORT (the async-nats client).

SAFETY: the harness floods what it points at, so it only accepts targets that resolve to
loopback addresses (127.0.0.0/8, ::1). It refuses anything else unless --allow-non-loopback is
given. Every run is bounded by --duration (at most 3600 s) or --count.

Each run prints a Markdown table; with --out DIR it also writes LABEL.TARGET.json, .md and an
.svg plot there. `summarize DIR` compares the runs of a directory (ArqonBus / NATS ratios).";

#[derive(Parser)]
#[command(name = "arqonbus-bench", version, about = "Load harness for ArqonBus, side by side with NATS (loopback targets only unless --allow-non-loopback)", long_about = LONG_ABOUT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// P publishers, S subscribers: publish rate and per-subscriber receive rate, losses.
    Throughput(ThroughputArgs),
    /// 1 publisher, S subscribers: total deliveries per second.
    Fanout(FanoutArgs),
    /// Open loop at a fixed rate: latency percentiles from the intended and the actual send.
    Latency(LatencyArgs),
    /// C idle handshaken connections: how many, how fast, and the server's memory per connection.
    Conns(ConnsArgs),
    /// Acked publishes the bus must keep (retained reality / JetStream file storage).
    Durable(DurableArgs),
    /// US-05: N agents' spectral pulses every 10 ms (open loop) under a background load:
    /// latency percentiles, losses, metadata intact.
    Spectral(SpectralArgs),
    /// S subscriptions with different coherence-threshold filters, then the same unfiltered:
    /// deliveries/s, latency, server CPU, and exact selection checked per subscription.
    Filters(FiltersArgs),
    /// C sessions of one reality; a controller sets a parameter K times: set→last and
    /// set→median delivery, and every session must get every version exactly once.
    Params(ParamsArgs),
    /// A 1 KB state changing 1 % per step on a delta-only topic and on a plain one: wire bytes
    /// per subscriber, the ratio, and every subscriber's rebuilt state checked (SHA-256).
    Delta(DeltaArgs),
    /// The same 1 KB pulses from a plain session, a relaxed operator (type URLs checked) and a
    /// strict one (payloads decoded against its descriptor set), alternating over rounds:
    /// deliveries/s, server CPU ns per pulse, and the cost of each check over plain.
    Types(TypesArgs),
    /// Tenant isolation: tenant B's open-loop latency probe on every shard while tenant A is
    /// idle and while it floods (publishes, history reads, policy-heavy pulses, connection
    /// churn), phase by phase: B's p50/p99/p99.9 per shard and its p99 over the quiet p99.
    Tenants(TenantsArgs),
    /// Compare the runs in a results directory: writes summary.md and summary plots.
    Summarize(SummarizeArgs),
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// arqonbus://HOST:PORT or nats://HOST:PORT (loopback only unless --allow-non-loopback).
    #[arg(long)]
    target: String,
    /// Accept a target that is not a loopback address. Load only servers you run.
    #[arg(long)]
    allow_non_loopback: bool,
    /// Directory for the JSON, Markdown and SVG results.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Name of this variant in a comparison (default: derived from the scenario and its sizes).
    #[arg(long)]
    label: Option<String>,
    /// PID of the server process, to report its resident memory and CPU use (/proc/PID).
    #[arg(long)]
    server_pid: Option<u32>,
    /// No progress bars (they are also hidden when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Payload size in bytes (at least the 40-byte harness header).
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many pulses (per publisher for throughput/fanout) if that comes first.
    #[arg(long)]
    count: Option<u64>,
    /// Realities (ArqonBus) or subjects (NATS) to spread pulses over; subscribers take all.
    #[arg(long, default_value_t = 1)]
    realities: usize,
    /// Seconds without a new delivery, after publishing ends, before the rest count as lost.
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
    /// Exit with status 3 when pulses were lost without the server announcing it (Dropped).
    #[arg(long)]
    fail_on_loss: bool,
}

#[derive(Args)]
struct ThroughputArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    load: LoadArgs,
    #[arg(long, short = 'p', default_value_t = 1)]
    publishers: usize,
    #[arg(long, short = 's', default_value_t = 1)]
    subscribers: usize,
    /// Pulses per second per publisher; 0 publishes as fast as the bus takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    load: LoadArgs,
    #[arg(long, short = 's', default_value_t = 4)]
    subscribers: usize,
    /// Pulses per second; 0 publishes as fast as the bus takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
}

#[derive(Args)]
struct LatencyArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Pulses per second on the fixed schedule.
    #[arg(long, short = 'r', default_value_t = 10_000)]
    rate: u64,
    #[arg(long, short = 's', default_value_t = 1)]
    subscribers: usize,
    /// Seconds sent before measuring (counted for loss, not latency).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Busy-wait the last N µs before each send instead of sleeping (more precise, costs CPU).
    #[arg(long, default_value_t = 0)]
    spin_us: u64,
}

#[derive(Args)]
struct ConnsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Idle connections to open (capped by the open-file limit, which is reported).
    #[arg(long, short = 'c', default_value_t = 1_000)]
    conns: u64,
    /// Connections per source address (127.0.0.2, then .3, ...).
    #[arg(long, default_value_t = 5_000)]
    per_source: u64,
    #[arg(long, default_value = "127.0.0.2")]
    first_source: Ipv4Addr,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Seconds to hold the connections open.
    #[arg(long, default_value_t = 3.0)]
    hold: f64,
    /// Seconds to wait before each memory reading.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
}

#[derive(Args)]
struct DurableArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    load: LoadArgs,
    /// Publishes each publisher keeps awaiting their ack at once.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Publishers, each on its own connection; with --realities R, publisher i writes to
    /// reality number i mod R (`<reality>-<k>` on ArqonBus).
    #[arg(long, short = 'p', default_value_t = 1)]
    publishers: usize,
    /// ArqonBus: do not check that the reality is retained, so acked publishes to an ephemeral
    /// reality can be measured beside retained ones (the label still names the reality).
    #[arg(long)]
    skip_retention_check: bool,
    /// ArqonBus: the retained reality to publish to; the server must have a retention rule for
    /// it (`bench/compare.sh` configures `bench-sync-always*` with `sync = "always"` and
    /// `bench-sync-os*` with `sync = "os"`). The result is labelled `durable-<reality without
    /// "bench-">`, so runs against different realities are compared separately.
    #[arg(long, default_value = "bench-sync-always")]
    reality: String,
    /// ArqonBus: the server runs N shards; each publisher reconnects until its connection is on
    /// a shard other than its reality's owner, so every pulse crosses one ring whatever the
    /// reality is called and runs compare alike (0: wherever the connection lands, which can
    /// put connection and owner on one core in one run and on two in the next).
    #[arg(long, default_value_t = 0)]
    cross_shard: u32,
    /// Seconds to wait for an ack before failing.
    #[arg(long, default_value_t = 10.0)]
    ack_timeout: f64,
}

#[derive(Args)]
struct SpectralArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// --payload-bytes is the background pulses' size; --duration is measured after the
    /// warm-up; --count caps the agents' pulses (all agents together).
    #[command(flatten)]
    load: LoadArgs,
    /// Agents, each on its own connection, each sending one spectral pulse per interval.
    #[arg(long, short = 'n', default_value_t = 100)]
    agents: usize,
    /// Milliseconds between two pulses of one agent (agents are staggered over it).
    #[arg(long, default_value_t = 10.0)]
    interval_ms: f64,
    /// Payload of a spectral pulse (at least the 40-byte harness header).
    #[arg(long, default_value_t = 64)]
    agent_payload_bytes: usize,
    /// Eigenvalues per pulse.
    #[arg(long, default_value_t = 4)]
    eigenvalues: usize,
    /// Subscribers of the spectral topic.
    #[arg(long, short = 's', default_value_t = 1)]
    subscribers: usize,
    /// Seconds sent before measuring (counted for loss, not latency).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Background pulses per second on another topic; 0 publishes flat out.
    #[arg(long, default_value_t = 20_000)]
    background_rate: u64,
    /// No background load at all.
    #[arg(long)]
    no_background: bool,
    /// Put the background on a reality of its own instead of the agents' reality.
    #[arg(long)]
    background_own_reality: bool,
}

#[derive(Args)]
struct FiltersArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Pulses per second, each with a random coherence in [0, 1).
    #[arg(long, short = 'r', default_value_t = 1_000)]
    rate: u64,
    /// Subscriptions; subscription g filters `coherence >= g/S`.
    #[arg(long, short = 's', default_value_t = 1_000)]
    subscriptions: usize,
    /// Connections the subscriptions are spread over (at most 1,024 subscriptions each: the
    /// server's default limits.max_subscriptions_per_connection).
    #[arg(long, short = 'c', default_value_t = 10)]
    connections: usize,
    /// Payload size in bytes (at least the 40-byte header).
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Seconds each phase (filtered, then unfiltered) publishes for, warm-up included.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds at the start of each phase checked but not measured for latency.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
    /// Picks the coherences.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Run the unfiltered phase first (default: filtered first).
    #[arg(long)]
    unfiltered_first: bool,
}

/// The controller token bench/lib.sh configures (`control.controller_tokens`).
const DEFAULT_CONTROLLER_TOKEN: &str = "arqonbus-bench-controller-token";

#[derive(Args)]
struct ParamsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Sessions, one subscription each (capped by the open-file limit, which is reported).
    #[arg(long, short = 'c', default_value_t = 10_000)]
    sessions: u64,
    /// Sessions per source address (127.0.0.2, then .3, ...).
    #[arg(long, default_value_t = 5_000)]
    per_source: u64,
    #[arg(long, default_value = "127.0.0.2")]
    first_source: Ipv4Addr,
    /// Handshakes and subscriptions in flight at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Parameter sets, each timed and checked.
    #[arg(long, short = 'k', default_value_t = 5)]
    repeats: u32,
    /// Parameter name (topic segments): the pulse is sys.param.NAME.
    #[arg(long, default_value = "bench.gain")]
    name: String,
    /// Hello token of the controller session (listed in control.controller_tokens).
    #[arg(long, default_value = DEFAULT_CONTROLLER_TOKEN)]
    controller_token: String,
    /// Seconds one set may take to reach every session.
    #[arg(long, default_value_t = 10.0)]
    deliver_timeout: f64,
    /// Seconds between sets (late or repeated receipts are counted meanwhile).
    #[arg(long, default_value_t = 0.2)]
    pause: f64,
}

#[derive(Args)]
struct DeltaArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// State changes published (each twice: delta-only topic and plain topic).
    #[arg(long, default_value_t = 10_000)]
    steps: u64,
    #[arg(long, default_value_t = 1024)]
    state_bytes: usize,
    /// Bytes changed per step.
    #[arg(long, default_value_t = 10)]
    changed_bytes: usize,
    /// `scattered` (single bytes at random places), `contiguous` (one run), or `both`.
    #[arg(long, default_value = "both")]
    change: String,
    /// Subscriber connections per topic (spread over the server's shards).
    #[arg(long, short = 's', default_value_t = 4)]
    subscribers: usize,
    /// Steps per second; 0 publishes as fast as the bus takes them.
    #[arg(long, short = 'r', default_value_t = 5_000)]
    rate: u64,
    #[arg(long, default_value_t = 0xde17a)]
    seed: u64,
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
}

#[derive(Args)]
struct TypesArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Pulses per second of each phase (open loop); 0 (the default) publishes as fast as the
    /// bus takes them, which is where per-pulse CPU shows the check rather than the wake-ups a
    /// slow rate costs the server per pulse.
    #[arg(long, short = 'r', default_value_t = 0)]
    rate: u64,
    /// Size of the encoded `arqon.bench.Reading` (its packed samples fill it to within 7 bytes).
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Seconds each phase (one mode in one round) publishes for.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Rounds of plain, relaxed and strict (each round rotates the order).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
}

#[derive(Args)]
struct TenantsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Hello token of tenant A, the flooder (a signed token: bench/tenants.sh issues it). Its
    /// grants must cover `<a-prefix>-*` and the history and policy realities.
    #[arg(long)]
    token_a: String,
    /// Hello token of tenant B, the latency probe; its grants must cover `<b-prefix>-*`.
    #[arg(long)]
    token_b: String,
    /// The server's shard count: B probes every shard, A floods every shard.
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// B's pulses per second on each shard (open loop).
    #[arg(long, default_value_t = 5_000)]
    probe_rate: u64,
    /// B's pulse size (at least the 40-byte header).
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// A's pulse size.
    #[arg(long, default_value_t = 256)]
    flood_payload_bytes: usize,
    /// A's connections per shard (churn: connection slots per shard).
    #[arg(long, default_value_t = 4)]
    flood_connections: usize,
    /// The flood phases, in order (each followed by a quiet phase): publish, history, policy,
    /// churn.
    #[arg(long, default_value = "publish,history,policy,churn")]
    floods: String,
    /// Seconds of each phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds B probes before the first phase (checked for loss, not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds at the start of each phase not measured (A's connections are made then).
    #[arg(long, default_value_t = 0.5)]
    settle: f64,
    /// Retained realities of A's, pre-filled, for the history flood (comma-separated or
    /// repeated); the readers on a shard read the ones it owns, else all of them.
    #[arg(long, value_delimiter = ',')]
    history_reality: Vec<String>,
    /// Whole-reality HistoryGets in flight on each history connection.
    #[arg(long, default_value_t = 4)]
    history_inflight: usize,
    /// A's reality whose CASIL policy burns all its fuel on every pulse.
    #[arg(long, default_value = "tenant-a-policy")]
    policy_reality: String,
    /// Acked publishes in flight on each policy-flood connection.
    #[arg(long, default_value_t = 64)]
    policy_inflight: usize,
    /// Prefix of the realities the harness names for A (`<prefix>-<run>-flood-<k>`).
    #[arg(long, default_value = "tenant-a")]
    a_prefix: String,
    /// Prefix of the realities the harness names for B (`<prefix>-<run>-probe-<k>`).
    #[arg(long, default_value = "tenant-b")]
    b_prefix: String,
    /// Nice value of the harness's flooding threads (0-19): a remote flooder would not take CPU
    /// from the bus's cores; 0 leaves them at the harness's priority.
    #[arg(long, default_value_t = 0)]
    flood_nice: i32,
    /// Exit 1 when some flood phase's B p99 is more than RATIO times the quiet p99 on some
    /// shard (off by default; the table judges against 1.5 either way).
    #[arg(long, value_name = "RATIO")]
    fail_over: Option<f64>,
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
}

/// The target for B's p99 under A's flood, over its quiet p99.
const TENANTS_TARGET_RATIO: f64 = 1.5;

#[derive(Args)]
struct SummarizeArgs {
    /// A directory of run results (JSON).
    dir: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Summarize(a) = &cli.command {
        return match summary::summarize(&a.dir) {
            Ok(md) => {
                print!("{md}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// What a scenario hands back to [`execute`].
struct Ran {
    status: Status,
    metrics: Option<Metrics>,
}

impl Ran {
    /// A scenario the peer cannot run (the reason is in the notes).
    const UNSUPPORTED: Ran = Ran {
        status: Status::Unsupported,
        metrics: None,
    };

    /// A finished run: Ok when its own check `passed`, else Failed.
    fn checked(passed: bool, metrics: Metrics) -> Ran {
        Ran {
            status: if passed { Status::Ok } else { Status::Failed },
            metrics: Some(metrics),
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Throughput(a) => {
            check_load(&a.load)?;
            check_count("--publishers", a.publishers)?;
            check_count("--subscribers", a.subscribers)?;
            let label = format!("throughput-{}x{}", a.publishers, a.subscribers);
            let params = load_params(
                &a.load,
                [
                    ("publishers", json!(a.publishers)),
                    ("subscribers", json!(a.subscribers)),
                    ("rate_per_publisher", json!(a.rate)),
                ],
            );
            let spec = flow_spec(&a.target, &a.load, a.publishers, a.subscribers, a.rate);
            execute(
                "throughput",
                label,
                &a.target,
                Some(&a.load),
                params,
                |t, names| async move {
                    let mut notes = Vec::new();
                    let r = scenario::flow::run(&t, &names, &spec, &mut notes)
                        .await
                        .map(|m| Ran {
                            status: Status::Ok,
                            metrics: Some(Metrics::Flow(m)),
                        });
                    (r, notes)
                },
            )
            .await
        }
        Command::Fanout(a) => {
            check_load(&a.load)?;
            check_count("--subscribers", a.subscribers)?;
            let label = format!("fanout-1x{}", a.subscribers);
            let params = load_params(
                &a.load,
                [
                    ("publishers", json!(1)),
                    ("subscribers", json!(a.subscribers)),
                    ("rate_per_publisher", json!(a.rate)),
                ],
            );
            let spec = flow_spec(&a.target, &a.load, 1, a.subscribers, a.rate);
            execute(
                "fanout",
                label,
                &a.target,
                Some(&a.load),
                params,
                |t, names| async move {
                    let mut notes = Vec::new();
                    let r = scenario::flow::run(&t, &names, &spec, &mut notes)
                        .await
                        .map(|m| Ran {
                            status: Status::Ok,
                            metrics: Some(Metrics::Flow(m)),
                        });
                    (r, notes)
                },
            )
            .await
        }
        Command::Latency(a) => {
            check_load(&a.load)?;
            check_count("--subscribers", a.subscribers)?;
            if a.rate == 0 || a.rate > 10_000_000 {
                bail!("--rate must be between 1 and 10,000,000 pulses per second");
            }
            let mut duration = secs("--duration", a.load.duration)?;
            if let Some(c) = a.load.count {
                duration = duration.min(Duration::from_secs_f64(c as f64 / a.rate as f64));
            }
            let label = format!("latency-{}", a.rate);
            let params = load_params(
                &a.load,
                [
                    ("rate", json!(a.rate)),
                    ("subscribers", json!(a.subscribers)),
                    ("warmup_s", json!(a.warmup)),
                    ("spin_us", json!(a.spin_us)),
                ],
            );
            let spec = scenario::latency::LatencySpec {
                rate_per_s: a.rate,
                subscribers: a.subscribers,
                payload_bytes: a.load.payload_bytes,
                duration,
                warmup: Duration::from_secs_f64(a.warmup.clamp(0.0, 60.0)),
                drain_timeout: secs("--drain-timeout", a.load.drain_timeout)?,
                spin_us: a.spin_us.min(1_000),
                progress: !a.target.no_progress,
            };
            execute(
                "latency",
                label,
                &a.target,
                Some(&a.load),
                params,
                |t, names| async move {
                    let mut notes = Vec::new();
                    let r = scenario::latency::run(&t, &names, &spec, &mut notes)
                        .await
                        .map(|m| Ran {
                            status: Status::Ok,
                            metrics: Some(Metrics::Latency(Box::new(m))),
                        });
                    (r, notes)
                },
            )
            .await
        }
        Command::Conns(a) => {
            if a.conns == 0 || a.conns > 1_000_000 {
                bail!("--conns must be between 1 and 1,000,000");
            }
            let params = BTreeMap::from([
                ("conns".to_string(), json!(a.conns)),
                ("per_source".to_string(), json!(a.per_source)),
                ("concurrency".to_string(), json!(a.concurrency)),
                ("hold_s".to_string(), json!(a.hold)),
            ]);
            let spec = scenario::conns::ConnsSpec {
                conns: a.conns,
                per_source: a.per_source.max(1),
                first_source: a.first_source,
                concurrency: a.concurrency.clamp(1, 4096),
                hold: secs("--hold", a.hold)?,
                settle: Duration::from_secs_f64(a.settle.clamp(0.0, 60.0)),
                handshake_timeout: Duration::from_secs(10),
                server_pid: a.target.server_pid,
                progress: !a.target.no_progress,
            };
            execute(
                "conns",
                "conns".to_string(),
                &a.target,
                None,
                params,
                |t, _names| async move {
                    let mut notes = Vec::new();
                    let r = scenario::conns::run(&t, &spec, &mut notes).await.map(|m| {
                        let status = if m.established == 0 {
                            Status::Failed
                        } else {
                            Status::Ok
                        };
                        Ran {
                            status,
                            metrics: Some(Metrics::Conns(m)),
                        }
                    });
                    (r, notes)
                },
            )
            .await
        }
        Command::Durable(a) => {
            check_load(&a.load)?;
            let params = load_params(
                &a.load,
                [
                    ("inflight", json!(a.inflight)),
                    ("publishers", json!(a.publishers)),
                    ("reality", json!(a.reality)),
                ],
            );
            let spec = scenario::durable::DurableSpec {
                payload_bytes: a.load.payload_bytes,
                duration: secs("--duration", a.load.duration)?,
                count: a.load.count,
                inflight: a.inflight.clamp(1, 65_536),
                publishers: a.publishers,
                realities: a.load.realities,
                reality: a.reality.clone(),
                any_reality: a.skip_retention_check,
                cross_shard: a.cross_shard,
                ack_timeout: secs("--ack-timeout", a.ack_timeout)?,
                progress: !a.target.no_progress,
            };
            check_count("--publishers", a.publishers)?;
            let label = format!(
                "durable-{}{}",
                a.reality.strip_prefix("bench-").unwrap_or(&a.reality),
                match a.publishers {
                    1 => String::new(),
                    n => format!("-{n}p"),
                }
            );
            execute(
                "durable",
                label,
                &a.target,
                Some(&a.load),
                params,
                |t, names| async move {
                    use scenario::durable::Outcome;
                    let mut notes = Vec::new();
                    let r = match scenario::durable::run(&t, &names, &spec, &mut notes).await {
                        Ok(Outcome::Done(m)) => Ok(Ran {
                            status: Status::Ok,
                            metrics: Some(Metrics::Durable(m)),
                        }),
                        Ok(Outcome::Unsupported(why)) => {
                            notes.push(format!("unsupported: {why}"));
                            Ok(Ran {
                                status: Status::Unsupported,
                                metrics: None,
                            })
                        }
                        Err(e) => Err(e),
                    };
                    (r, notes)
                },
            )
            .await
        }
        Command::Spectral(a) => run_spectral(a).await,
        Command::Filters(a) => run_filters(a).await,
        Command::Params(a) => run_params(a).await,
        Command::Delta(a) => run_delta(a).await,
        Command::Types(a) => run_types(a).await,
        Command::Tenants(a) => run_tenants(a).await,
        Command::Summarize(_) => unreachable!("handled before the runtime starts"),
    }
}

async fn run_spectral(a: SpectralArgs) -> Result<ExitCode> {
    check_load(&a.load)?;
    if a.load.realities != 1 {
        bail!("spectral uses one reality (the agents') and one background topic: drop --realities");
    }
    if a.agents == 0 || a.agents > 10_000 {
        bail!("--agents must be between 1 and 10,000");
    }
    check_count("--subscribers", a.subscribers)?;
    if !(a.interval_ms >= 0.01 && a.interval_ms <= 60_000.0) {
        bail!("--interval-ms must be between 0.01 and 60,000");
    }
    if a.eigenvalues > 1_000 {
        bail!("--eigenvalues must be at most 1,000");
    }
    if a.agent_payload_bytes > 1 << 20 {
        bail!("--agent-payload-bytes must be at most 1 MiB");
    }
    let spec = scenario::spectral::SpectralSpec {
        agents: a.agents,
        interval: Duration::from_secs_f64(a.interval_ms / 1e3),
        payload_bytes: a.agent_payload_bytes,
        eigenvalues: a.eigenvalues,
        subscribers: a.subscribers,
        duration: secs("--duration", a.load.duration)?,
        warmup: Duration::from_secs_f64(a.warmup.clamp(0.0, 60.0)),
        count: a.load.count,
        background_rate: (!a.no_background).then_some(a.background_rate),
        background_payload_bytes: a.load.payload_bytes,
        background_own_reality: a.background_own_reality,
        drain_timeout: secs("--drain-timeout", a.load.drain_timeout)?,
        progress: !a.target.no_progress,
    };
    let label = format!("spectral-{}x{}ms", a.agents, a.interval_ms);
    let params = load_params(
        &a.load,
        [
            ("agents", json!(a.agents)),
            ("interval_ms", json!(a.interval_ms)),
            ("agent_payload_bytes", json!(a.agent_payload_bytes)),
            ("eigenvalues", json!(a.eigenvalues)),
            ("subscribers", json!(a.subscribers)),
            ("warmup_s", json!(a.warmup)),
            (
                "background_rate",
                if a.no_background {
                    json!("none")
                } else {
                    json!(a.background_rate)
                },
            ),
            ("background_own_reality", json!(a.background_own_reality)),
        ],
    );
    execute(
        "spectral",
        label,
        &a.target,
        Some(&a.load),
        params,
        |t, names| async move {
            let mut notes = Vec::new();
            let r = scenario::spectral::run(&t, &names, &spec, &mut notes)
                .await
                .map(|m| Ran {
                    status: if m.spectral_mismatches > 0 {
                        Status::Failed
                    } else {
                        Status::Ok
                    },
                    metrics: Some(Metrics::Spectral(Box::new(m))),
                });
            (r, notes)
        },
    )
    .await
}

async fn run_filters(a: FiltersArgs) -> Result<ExitCode> {
    if a.rate == 0 || a.rate > 1_000_000 {
        bail!("--rate must be between 1 and 1,000,000 pulses per second");
    }
    if a.subscriptions == 0 || a.subscriptions > 100_000 {
        bail!("--subscriptions must be between 1 and 100,000");
    }
    if a.connections == 0 || a.connections > a.subscriptions {
        bail!("--connections must be between 1 and --subscriptions");
    }
    if a.subscriptions.div_ceil(a.connections) > 1_024 {
        bail!(
            "at most 1,024 subscriptions per connection (the server's default \
             limits.max_subscriptions_per_connection): raise --connections"
        );
    }
    if a.payload_bytes > 1 << 20 {
        bail!("--payload-bytes must be at most 1 MiB");
    }
    let spec = scenario::filters::FiltersSpec {
        rate_per_s: a.rate,
        subscriptions: a.subscriptions,
        connections: a.connections,
        payload_bytes: a.payload_bytes,
        duration: secs("--duration", a.duration)?,
        warmup: Duration::from_secs_f64(a.warmup.clamp(0.0, a.duration)),
        drain_timeout: secs("--drain-timeout", a.drain_timeout)?,
        server_pid: a.target.server_pid,
        seed: a.seed,
        unfiltered_first: a.unfiltered_first,
        progress: !a.target.no_progress,
    };
    let label = format!("filters-{}x{}", a.subscriptions, a.rate);
    let params = BTreeMap::from([
        ("rate".to_string(), json!(a.rate)),
        ("subscriptions".to_string(), json!(a.subscriptions)),
        ("connections".to_string(), json!(a.connections)),
        ("payload_bytes".to_string(), json!(a.payload_bytes)),
        ("duration_s".to_string(), json!(a.duration)),
        ("warmup_s".to_string(), json!(a.warmup)),
        ("seed".to_string(), json!(a.seed)),
        ("unfiltered_first".to_string(), json!(a.unfiltered_first)),
    ]);
    execute(
        "filters",
        label,
        &a.target,
        None,
        params,
        |t, names| async move {
            let mut notes = Vec::new();
            if t.kind == target::Kind::Nats {
                notes.push(
                    "unsupported: NATS has no content filters (a subscriber can only pick \
                     subjects); the peer of a filtered run is the same run unfiltered"
                        .to_string(),
                );
                return (Ok(Ran::UNSUPPORTED), notes);
            }
            let r = scenario::filters::run(&t, &names.realities[0], &spec, &mut notes)
                .await
                .map(|m| Ran::checked(m.exact(), Metrics::Filters(m)));
            (r, notes)
        },
    )
    .await
}

async fn run_params(a: ParamsArgs) -> Result<ExitCode> {
    if a.sessions == 0 || a.sessions > 1_000_000 {
        bail!("--sessions must be between 1 and 1,000,000");
    }
    if a.repeats == 0 || a.repeats > 1_000 {
        bail!("--repeats must be between 1 and 1,000");
    }
    let name_ok = !a.name.is_empty()
        && a.name.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        });
    if !name_ok {
        bail!("--name must be dot-separated segments of [a-z0-9_-]");
    }
    let spec = scenario::params::ParamsSpec {
        sessions: a.sessions,
        per_source: a.per_source.max(1),
        first_source: a.first_source,
        concurrency: a.concurrency.clamp(1, 4096),
        repeats: a.repeats,
        name: a.name.clone(),
        token: a.controller_token.clone(),
        deliver_timeout: secs("--deliver-timeout", a.deliver_timeout)?,
        pause: Duration::from_secs_f64(a.pause.clamp(0.0, 60.0)),
        progress: !a.target.no_progress,
    };
    let params = BTreeMap::from([
        ("sessions".to_string(), json!(a.sessions)),
        ("per_source".to_string(), json!(a.per_source)),
        ("repeats".to_string(), json!(a.repeats)),
        ("name".to_string(), json!(a.name)),
        ("deliver_timeout_s".to_string(), json!(a.deliver_timeout)),
    ]);
    execute(
        "params",
        format!("params-{}", a.sessions),
        &a.target,
        None,
        params,
        |t, names| async move {
            let mut notes = Vec::new();
            if t.kind == target::Kind::Nats {
                notes.push(
                    "unsupported: NATS has no reality parameters (no versioned value the server \
                     delivers to every subscriber whatever it subscribed to); a plain broadcast \
                     to C connections is what `fanout` measures"
                        .to_string(),
                );
                return (Ok(Ran::UNSUPPORTED), notes);
            }
            let r = scenario::params::run(&t, &names.realities[0], &spec, &mut notes)
                .await
                .map(|m| {
                    Ran::checked(
                        m.failures == 0 && m.sessions_failed == 0,
                        Metrics::Params(m),
                    )
                });
            (r, notes)
        },
    )
    .await
}

async fn run_delta(a: DeltaArgs) -> Result<ExitCode> {
    use scenario::delta::Change;
    if a.steps == 0 || a.steps > 10_000_000 {
        bail!("--steps must be between 1 and 10,000,000");
    }
    if a.state_bytes == 0 || a.state_bytes > 1 << 20 {
        bail!("--state-bytes must be between 1 and 1 MiB");
    }
    check_count("--subscribers", a.subscribers)?;
    let changes = match a.change.as_str() {
        "scattered" => vec![Change::Scattered],
        "contiguous" => vec![Change::Contiguous],
        "both" => vec![Change::Scattered, Change::Contiguous],
        other => bail!("--change must be scattered, contiguous or both, not `{other}`"),
    };
    let spec = scenario::delta::DeltaSpec {
        steps: a.steps,
        state_bytes: a.state_bytes,
        changed_bytes: a.changed_bytes.min(a.state_bytes),
        changes,
        subscribers: a.subscribers,
        rate_per_s: a.rate,
        seed: a.seed,
        drain_timeout: secs("--drain-timeout", a.drain_timeout)?,
    };
    let params = BTreeMap::from([
        ("steps".to_string(), json!(a.steps)),
        ("state_bytes".to_string(), json!(a.state_bytes)),
        ("changed_bytes".to_string(), json!(a.changed_bytes)),
        ("change".to_string(), json!(a.change)),
        ("subscribers".to_string(), json!(a.subscribers)),
        ("rate".to_string(), json!(a.rate)),
        ("seed".to_string(), json!(a.seed)),
    ]);
    execute(
        "delta",
        format!("delta-{}x{}", a.state_bytes, a.steps),
        &a.target,
        None,
        params,
        |t, names| async move {
            let mut notes = Vec::new();
            if t.kind == target::Kind::Nats {
                notes.push(
                    "unsupported: NATS has no delta-only subjects (it carries every payload \
                     whole); the peer of a delta topic is the same states on a plain topic, in \
                     the same run"
                        .to_string(),
                );
                return (Ok(Ran::UNSUPPORTED), notes);
            }
            let r = scenario::delta::run(&t, &names.realities[0], &spec, &mut notes)
                .await
                .map(|m| Ran::checked(m.all_match(), Metrics::Delta(m)));
            (r, notes)
        },
    )
    .await
}

async fn run_types(a: TypesArgs) -> Result<ExitCode> {
    if a.rate > 1_000_000 {
        bail!("--rate must be at most 1,000,000 pulses per second (0: flat out)");
    }
    if a.payload_bytes > 1 << 20 {
        bail!("--payload-bytes must be at most 1 MiB");
    }
    if a.rounds == 0 || a.rounds > 100 {
        bail!("--rounds must be between 1 and 100");
    }
    // Fails early on a payload too small to hold a Reading.
    scenario::types::template(a.payload_bytes).map_err(anyhow::Error::msg)?;
    let spec = scenario::types::TypesSpec {
        rate_per_s: a.rate,
        payload_bytes: a.payload_bytes,
        duration: secs("--duration", a.duration)?,
        rounds: a.rounds,
        drain_timeout: secs("--drain-timeout", a.drain_timeout)?,
        server_pid: a.target.server_pid,
        progress: !a.target.no_progress,
    };
    let label = if a.rate == 0 {
        "types-flat".to_string()
    } else {
        format!("types-{}", a.rate)
    };
    let params = BTreeMap::from([
        ("rate".to_string(), json!(a.rate)),
        ("payload_bytes".to_string(), json!(a.payload_bytes)),
        ("duration_s".to_string(), json!(a.duration)),
        ("rounds".to_string(), json!(a.rounds)),
    ]);
    execute(
        "types",
        label,
        &a.target,
        None,
        params,
        |t, names| async move {
            let mut notes = Vec::new();
            if t.kind == target::Kind::Nats {
                notes.push(
                    "unsupported: NATS has no payload types to enforce (a subject carries any \
                     bytes); the peer of a typed session is the same pulses from a plain one, in \
                     the same run"
                        .to_string(),
                );
                return (Ok(Ran::UNSUPPORTED), notes);
            }
            let r = scenario::types::run(&t, &names.realities[0], &spec, &mut notes)
                .await
                .map(|m| Ran::checked(m.complete(), Metrics::Types(m)));
            (r, notes)
        },
    )
    .await
}

async fn run_tenants(a: TenantsArgs) -> Result<ExitCode> {
    use scenario::tenants::plan::FloodKind;
    let floods = FloodKind::parse_list(&a.floods).map_err(anyhow::Error::msg)?;
    if a.token_a.is_empty() || a.token_b.is_empty() || a.token_a == a.token_b {
        bail!("--token-a and --token-b must be two tokens, one per tenant");
    }
    if a.shards == 0 || a.shards > 256 {
        bail!("--shards must be between 1 and 256");
    }
    if a.probe_rate == 0 || a.probe_rate > 1_000_000 {
        bail!("--probe-rate must be between 1 and 1,000,000 pulses per second per shard");
    }
    if a.payload_bytes > 1 << 20 || a.flood_payload_bytes > 1 << 20 {
        bail!("--payload-bytes and --flood-payload-bytes must be at most 1 MiB");
    }
    check_count("--flood-connections", a.flood_connections)?;
    if !(1..=1_024).contains(&a.history_inflight) || !(1..=65_536).contains(&a.policy_inflight) {
        bail!("--history-inflight must be 1 to 1,024 and --policy-inflight 1 to 65,536");
    }
    if !(0..=19).contains(&a.flood_nice) {
        bail!("--flood-nice must be between 0 and 19");
    }
    let phase = secs("--duration", a.duration)?;
    if !(a.settle >= 0.0 && a.settle < a.duration / 2.0) {
        bail!("--settle must be at least 0 and under half of --duration");
    }
    if let Some(r) = a.fail_over {
        if !(r >= 1.0 && r.is_finite()) {
            bail!("--fail-over must be a ratio of at least 1");
        }
    }
    let spec = scenario::tenants::TenantsSpec {
        token_a: a.token_a.clone(),
        token_b: a.token_b.clone(),
        shards: a.shards,
        probe_rate_per_s: a.probe_rate,
        payload_bytes: a.payload_bytes,
        flood_payload_bytes: a.flood_payload_bytes,
        flood_connections: a.flood_connections,
        floods: floods.clone(),
        phase,
        warmup: Duration::from_secs_f64(a.warmup.clamp(0.0, 60.0)),
        settle: Duration::from_secs_f64(a.settle),
        history_realities: a.history_reality.clone(),
        history_inflight: a.history_inflight,
        policy_reality: a.policy_reality.clone(),
        policy_inflight: a.policy_inflight,
        a_prefix: a.a_prefix.clone(),
        b_prefix: a.b_prefix.clone(),
        flood_nice: a.flood_nice,
        target_ratio: TENANTS_TARGET_RATIO,
        fail_over: a.fail_over,
        drain_timeout: secs("--drain-timeout", a.drain_timeout)?,
        server_pid: a.target.server_pid,
        progress: !a.target.no_progress,
    };
    let params = BTreeMap::from([
        ("shards".to_string(), json!(a.shards)),
        ("probe_rate".to_string(), json!(a.probe_rate)),
        ("payload_bytes".to_string(), json!(a.payload_bytes)),
        (
            "flood_payload_bytes".to_string(),
            json!(a.flood_payload_bytes),
        ),
        ("flood_connections".to_string(), json!(a.flood_connections)),
        (
            "floods".to_string(),
            json!(floods.iter().map(|k| k.name()).collect::<Vec<_>>()),
        ),
        ("duration_s".to_string(), json!(a.duration)),
        ("warmup_s".to_string(), json!(a.warmup)),
        ("settle_s".to_string(), json!(a.settle)),
        ("history_inflight".to_string(), json!(a.history_inflight)),
        ("policy_inflight".to_string(), json!(a.policy_inflight)),
        ("flood_nice".to_string(), json!(a.flood_nice)),
    ]);
    execute(
        "tenants",
        format!("tenants-{}", a.probe_rate),
        &a.target,
        None,
        params,
        |t, names| async move {
            let mut notes = Vec::new();
            if t.kind == target::Kind::Nats {
                notes.push(
                    "unsupported: NATS has no tenants to isolate from each other (accounts \
                     separate subjects, not the server's cores); the peer of a flooded phase is \
                     the quiet phase of the same run"
                        .to_string(),
                );
                return (Ok(Ran::UNSUPPORTED), notes);
            }
            let r = scenario::tenants::run(&t, &names, &spec, &mut notes)
                .await
                .map(|(m, passed)| Ran::checked(passed, Metrics::Tenants(Box::new(m))));
            (r, notes)
        },
    )
    .await
}

fn flow_spec(
    t: &TargetArgs,
    l: &LoadArgs,
    publishers: usize,
    subscribers: usize,
    rate: u64,
) -> scenario::flow::FlowSpec {
    scenario::flow::FlowSpec {
        publishers,
        subscribers,
        rate_per_publisher: rate,
        payload_bytes: l.payload_bytes,
        duration: Duration::from_secs_f64(l.duration),
        count_per_publisher: l.count,
        drain_timeout: Duration::from_secs_f64(l.drain_timeout),
        progress: !t.no_progress,
    }
}

fn secs(flag: &str, v: f64) -> Result<Duration> {
    if !(v > 0.0 && v <= 3600.0) {
        bail!("{flag} must be more than 0 and at most 3600 seconds");
    }
    Ok(Duration::from_secs_f64(v))
}

fn check_count(flag: &str, v: usize) -> Result<()> {
    if v == 0 || v > 1_000 {
        bail!("{flag} must be between 1 and 1,000");
    }
    Ok(())
}

fn check_load(l: &LoadArgs) -> Result<()> {
    secs("--duration", l.duration)?;
    secs("--drain-timeout", l.drain_timeout)?;
    if l.payload_bytes > 16 << 20 {
        bail!("--payload-bytes must be at most 16 MiB");
    }
    if l.realities == 0 || l.realities > 1_000 {
        bail!("--realities must be between 1 and 1,000");
    }
    if l.count == Some(0) {
        bail!("--count must be at least 1");
    }
    Ok(())
}

fn load_params<const N: usize>(
    l: &LoadArgs,
    extra: [(&str, serde_json::Value); N],
) -> BTreeMap<String, serde_json::Value> {
    let mut p = BTreeMap::from([
        (
            "payload_bytes".to_string(),
            json!(l.payload_bytes.max(payload::HEADER_BYTES)),
        ),
        ("duration_s".to_string(), json!(l.duration)),
        ("realities".to_string(), json!(l.realities)),
    ]);
    if let Some(c) = l.count {
        p.insert("count".to_string(), json!(c));
    }
    for (k, v) in extra {
        p.insert(k.to_string(), v);
    }
    p
}

/// Runs one scenario and reports it: the common part of every subcommand (target check,
/// names, server memory, output files, exit status).
async fn execute<F, Fut>(
    scenario: &str,
    default_label: String,
    t: &TargetArgs,
    load: Option<&LoadArgs>,
    params: BTreeMap<String, serde_json::Value>,
    body: F,
) -> Result<ExitCode>
where
    F: FnOnce(Target, Names) -> Fut,
    Fut: std::future::Future<Output = (Result<Ran>, Vec<String>)>,
{
    let target = Target::parse(&t.target, t.allow_non_loopback)?;
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let run_tag = format!(
        "{:x}{:x}",
        std::process::id(),
        started_unix_ms % 0xffff_ffff
    );
    let names = Names::new(
        target.kind,
        &run_tag,
        load.map(|l| l.realities).unwrap_or(1),
    );
    let label = t.label.clone().unwrap_or(default_label);
    let server_rss = || t.server_pid.and_then(|p| sys::rss_bytes(p).ok());
    let rss_before = server_rss();
    let cpu_before = sys::CpuSnapshot::take(t.server_pid);
    payload::now_ns(); // fix the clock's epoch before any connection exists
    let started = Instant::now();
    let (outcome, mut notes) = body(target.clone(), names).await;
    let elapsed_s = started.elapsed().as_secs_f64();
    // Averages over less than a second (a probe answered `unsupported`) mean nothing.
    let cpu = cpu_before
        .zip(sys::CpuSnapshot::take(t.server_pid))
        .map(|(a, b)| a.until(&b))
        .filter(|_| elapsed_s >= 1.0);
    // Without the server's PID its CPU time is inside `other`, so only warn when it is known.
    if let Some(c) = cpu.filter(|c| c.server.is_some() && c.other > 0.25) {
        notes.push(format!(
            "other processes used {:.2} of the {} cores on average during the run; numbers from \
             a busy machine are skewed",
            c.other, c.machine_cores
        ));
    }
    let (mut status, metrics) = match outcome {
        Ok(r) => (r.status, r.metrics),
        Err(e) => {
            notes.push(format!("failed: {e:#}"));
            (Status::Failed, None)
        }
    };
    let mut unexplained_loss = false;
    match &metrics {
        Some(Metrics::Flow(m)) => {
            if m.published > 0 && m.deliveries == 0 {
                status = Status::Failed;
                notes.push("no pulse reached any subscriber".into());
            }
            unexplained_loss = m.lost > m.dropped_notices;
        }
        Some(Metrics::Latency(m)) => {
            if m.sent > 0 && m.received == 0 {
                status = Status::Failed;
                notes.push("no pulse reached any subscriber".into());
            }
            unexplained_loss = m.lost > m.dropped_notices;
        }
        Some(Metrics::Spectral(m)) => {
            if m.sent > 0 && m.received == 0 {
                status = Status::Failed;
                notes.push("no spectral pulse reached any subscriber".into());
            }
            unexplained_loss =
                m.lost > m.dropped_notices || m.background_lost > m.background_dropped_notices;
        }
        Some(Metrics::Filters(m))
            if m.phases
                .iter()
                .any(|p| p.published > 0 && p.deliveries == 0) =>
        {
            status = Status::Failed;
            notes.push("a phase delivered nothing".into());
        }
        _ => {}
    }
    let result = RunResult {
        scenario: scenario.to_string(),
        label,
        target: target.kind.name().to_string(),
        target_url: target.url.clone(),
        started_unix_ms,
        elapsed_s,
        status,
        notes,
        params,
        metrics,
        server_rss_before_bytes: rss_before,
        server_rss_after_bytes: server_rss(),
        cpu,
    };
    let md = result.to_markdown();
    print!("{md}");
    if let Some(dir) = &t.out {
        write_outputs(dir, &result, &md)?;
    }
    Ok(match result.status {
        Status::Failed => ExitCode::from(1),
        _ if unexplained_loss && load.is_some_and(|l| l.fail_on_loss) => {
            eprintln!("error: pulses were lost without the server announcing it (--fail-on-loss)");
            ExitCode::from(3)
        }
        _ => ExitCode::SUCCESS,
    })
}

fn write_outputs(dir: &Path, r: &RunResult, md: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let base = format!("{}.{}", r.label, r.target);
    let mut stem = base.clone();
    let mut n = 2;
    while dir.join(format!("{stem}.json")).exists() {
        stem = format!("{base}.{n}");
        n += 1;
    }
    let json = serde_json::to_string_pretty(r)?;
    std::fs::write(dir.join(format!("{stem}.json")), json)?;
    std::fs::write(dir.join(format!("{stem}.md")), md)?;
    let svg = dir.join(format!("{stem}.svg"));
    match &r.metrics {
        Some(Metrics::Spectral(m)) => plot::latency_curves(
            &svg,
            &format!(
                "{} on {}: spectral latency by percentile",
                r.label, r.target
            ),
            &[
                plot::Curve {
                    name: "from intended send".into(),
                    points: m.curve_from_intended.clone(),
                    color: 0,
                    light: false,
                },
                plot::Curve {
                    name: "from actual send".into(),
                    points: m.curve_from_send.clone(),
                    color: 1,
                    light: false,
                },
            ],
        )?,
        Some(Metrics::Filters(m)) => plot::latency_curves(
            &svg,
            &format!("{} on {}: publish-to-deliver latency", r.label, r.target),
            &m.phases
                .iter()
                .enumerate()
                .map(|(i, p)| plot::Curve {
                    name: p.name.clone(),
                    points: p.curve.clone(),
                    color: i,
                    light: false,
                })
                .collect::<Vec<_>>(),
        )?,
        Some(Metrics::Tenants(m)) => plot::latency_curves(
            &svg,
            &format!(
                "{} on {}: tenant B's latency, A idle and flooding (light: shards after 0)",
                r.label, r.target
            ),
            // The first quiet phase and the floods; the later quiet phases are in the table.
            &m.phases
                .iter()
                .enumerate()
                .filter(|(i, p)| *i == 0 || p.flood.is_some())
                .enumerate()
                .flat_map(|(color, (_, p))| {
                    p.shards.iter().map(move |s| plot::Curve {
                        name: format!("{} shard {}", p.name, s.shard),
                        points: s.curve.clone(),
                        color,
                        light: s.shard > 0,
                    })
                })
                .collect::<Vec<_>>(),
        )?,
        Some(Metrics::Latency(m)) => plot::latency_curves(
            &svg,
            &format!("{} on {}: latency by percentile", r.label, r.target),
            &[
                plot::Curve {
                    name: "from intended send".into(),
                    points: m.curve_from_intended.clone(),
                    color: 0,
                    light: false,
                },
                plot::Curve {
                    name: "from actual send".into(),
                    points: m.curve_from_send.clone(),
                    color: 1,
                    light: false,
                },
            ],
        )?,
        Some(Metrics::Flow(m)) => {
            let mut cats = vec!["publish".to_string()];
            let mut vals = vec![m.publish_msgs_per_s];
            for s in &m.subscribers {
                cats.push(format!("sub {}", s.index));
                vals.push(s.msgs_per_s);
            }
            plot::bars(
                &svg,
                &format!("{} on {}", r.label, r.target),
                "msgs/s",
                &cats,
                &[(r.target.clone(), vals)],
            )?;
        }
        _ => {}
    }
    Ok(())
}
