//! `arqonbus replay` (deterministic replay and forks of a retained reality, offline) and
//! `arqonbus diff` (where two logs diverge).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::replay::{self, diff, Options, Pin, Range};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The bus's data directory (the reality's log is read, never written).
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long)]
    pub reality: String,
    /// The configuration whose [[policies]] and [[operators]] to replay through (the recording's
    /// own, to reproduce it). Without it: the embedded defaults (no operators).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub from_seq: Option<u64>,
    /// Exclusive.
    #[arg(long)]
    pub to_seq: Option<u64>,
    /// Nanoseconds since the Unix epoch, UTC.
    #[arg(long)]
    pub from_time: Option<u64>,
    /// Exclusive.
    #[arg(long)]
    pub to_time: Option<u64>,
    /// Pin `OPERATOR.NAME=VALUE` (repeatable): overrides the configured value and recorded
    /// changes.
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// Copy the recording before this sequence (the operators replay it to rebuild their
    /// state) and apply --param from here: a fork.
    #[arg(long)]
    pub fork_at: Option<u64>,
    /// The output log (`[u32 BE length][ArqonMessage]` records).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the recorded range in the same framing (for `arqonbus diff`).
    #[arg(long)]
    pub recorded_out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// Two output logs (from `replay --out` / `--recorded-out`), or with --data-dir two
    /// reality names (e.g. `lab` `lab~k07`).
    pub a: String,
    pub b: String,
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The numeric field to follow over sequence: spectral.coherence, spectral.criticality,
    /// spectral.eigenvalues[N], timestamp_unix_nanos.
    #[arg(long, default_value = "spectral.coherence")]
    pub field: String,
    /// How many divergences to describe field by field.
    #[arg(long, default_value_t = 5)]
    pub first: usize,
    /// Write an SVG plot of --field over sequence for both.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => {
            let config = Config::from_file(p)?;
            config.validate()?;
            Ok(config)
        }
        None => Ok(Config::default()),
    }
}

pub fn run_replay(args: ReplayArgs) -> anyhow::Result<()> {
    let config = load_config(args.config.as_deref())?;
    let pins = args
        .params
        .iter()
        .map(|p| p.parse::<Pin>())
        .collect::<Result<Vec<_>, _>>()?;
    let options = Options {
        data_dir: args.data_dir,
        reality: args.reality,
        range: Range {
            from_seq: args.from_seq,
            to_seq: args.to_seq,
            from_time: args.from_time,
            to_time: args.to_time,
        },
        pins,
        fork_at: args.fork_at,
        out: args.out,
        recorded_out: args.recorded_out,
        keep_bytes: None,
    };
    let report = replay::replay(&config, &options)?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    writeln!(
        stdout,
        "replayed {} recorded records ({} inputs, {} refused by policy, {} operator faults) \
         into {} records",
        report.recorded_records, report.inputs, report.denied, report.faults, report.records
    )?;
    writeln!(stdout, "output sha256   {}", report.sha256)?;
    writeln!(stdout, "recorded sha256 {}", report.recorded_sha256)?;
    match &report.first_divergence {
        None => writeln!(stdout, "identical to the recording")?,
        Some(d) => writeln!(
            stdout,
            "diverges from the recording at record {} (recorded #{}, replayed #{})",
            d.index,
            d.a_sequence.map_or("-".into(), |s| s.to_string()),
            d.b_sequence.map_or("-".into(), |s| s.to_string()),
        )?,
    }
    Ok(())
}

pub fn run_diff(args: DiffArgs) -> anyhow::Result<()> {
    if !diff::is_numeric_field(&args.field) {
        anyhow::bail!(
            "--field {}: use spectral.coherence, spectral.criticality, spectral.eigenvalues[N] \
             or timestamp_unix_nanos",
            args.field
        );
    }
    let read = |name: &str| match &args.data_dir {
        Some(dir) => replay::read_reality(dir, name),
        None => replay::read_log(Path::new(name)),
    };
    let a = read(&args.a)?;
    let b = read(&args.b)?;
    let report = diff::diff(&a, &b, &args.field, args.first);
    if let Some(path) = &args.svg {
        std::fs::write(path, diff::svg(&report, &args.a, &args.b))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    writeln!(
        stdout,
        "{}: {} records; {}: {} records; {} positions differ",
        args.a, report.a_records, args.b, report.b_records, report.differing
    )?;
    for d in &report.divergences {
        writeln!(
            stdout,
            "record {} (#{} / #{}):",
            d.index,
            d.a_sequence.map_or("-".into(), |s| s.to_string()),
            d.b_sequence.map_or("-".into(), |s| s.to_string())
        )?;
        for f in &d.fields {
            writeln!(stdout, "  {}: {} -> {}", f.field, f.a, f.b)?;
        }
    }
    if report.differing == 0 {
        writeln!(stdout, "identical")?;
    }
    Ok(())
}
