//! Deterministic replay and time-travel forks, offline.
//!
//! [`replay`] reads a retained reality's recorded log (read-only, so it may run beside a live
//! bus), feeds the pulses clients published through the configured policies and hosted operators
//! — the same [`ShardOperators`] the owner shard runs — with their recorded sequence numbers and
//! timestamps, and writes the output log: every input followed by what the operators emit for
//! it, exactly as the owner would have sequenced it. Pulses an operator emitted in the recording
//! are not inputs: they are regenerated and compared.
//!
//! With the recording's own configuration the output log is the recording, bit for bit (the
//! report says whether it is and, if not, the first record that differs). With changed
//! parameters (`pins`), optionally from a fork point (`fork_at`: everything before it is copied
//! as recorded while the operators replay it to rebuild their state), it is a fork: what the
//! reality would have been.
//!
//! The output log is a file of `[u32 big-endian length][ArqonMessage]` records: the stream
//! framing of the wire. [`read_log`] reads one; [`diff`] compares two.

pub mod diff;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arqonbus_proto::v1::ArqonMessage;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::metrics::ShardCounters;
use crate::operator::{
    stamp_output, Discard, OperatorError, OperatorHost, Param, Sequencing, ShardOperators,
    PARAM_TOPIC,
};
use crate::policy::{Decision, PolicyError, PolicyHost, PolicySpec, ShardPolicies};
use crate::store::{self, StoreError};

pub use diff::{diff, DiffReport, Divergence};

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error("record {sequence} of the log does not decode as an ArqonMessage: {reason}")]
    Undecodable { sequence: u64, reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--param {0}: expected OPERATOR.NAME=VALUE")]
    BadParam(String),
    #[error("the output is larger than operator.max_fork_bytes ({max} bytes)")]
    TooLarge { max: u64 },
    #[error("{path} is not an output log: {reason}")]
    BadLog { path: PathBuf, reason: String },
}

/// Which recorded pulses to replay: `[from, to)` by sequence and by time (both may be given).
#[derive(Debug, Clone, Copy, Default)]
pub struct Range {
    pub from_seq: Option<u64>,
    pub to_seq: Option<u64>,
    pub from_time: Option<u64>,
    pub to_time: Option<u64>,
}

impl Range {
    fn before(&self, seq: u64, ts: u64) -> bool {
        self.from_seq.is_some_and(|f| seq < f) || self.from_time.is_some_and(|f| ts < f)
    }

    fn past(&self, seq: u64, ts: u64) -> bool {
        self.to_seq.is_some_and(|t| seq >= t) || self.to_time.is_some_and(|t| ts >= t)
    }
}

/// A parameter pinned for the whole replay (or from the fork point): `OPERATOR.NAME=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    pub operator: String,
    pub name: String,
    pub value: Param,
}

impl std::str::FromStr for Pin {
    type Err = ReplayError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ReplayError::BadParam(s.to_owned());
        let (key, value) = s.split_once('=').ok_or_else(bad)?;
        let (operator, name) = key.split_once('.').ok_or_else(bad)?;
        if operator.is_empty() || name.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            operator: operator.to_owned(),
            name: name.to_owned(),
            value: Param::parse_cli(value),
        })
    }
}

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub reality: String,
    pub range: Range,
    /// Pinned parameters: they override the configured values and recorded changes.
    pub pins: Vec<Pin>,
    /// Copy the recording up to this sequence (operators still see it, to rebuild their
    /// state), and apply `pins` from here on.
    pub fork_at: Option<u64>,
    /// Where to write the output log (`None`: only hash it).
    pub out: Option<PathBuf>,
    /// Where to write the recorded range in the same framing (for `diff`).
    pub recorded_out: Option<PathBuf>,
    /// Keep the output records in memory, up to this many bytes (live forks); see
    /// [`replay_kept`].
    pub keep_bytes: Option<u64>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Records of the recording in the range.
    pub recorded_records: u64,
    /// Of those, pulses clients published (fed to the operators).
    pub inputs: u64,
    /// Inputs a configured policy refused (left out of the output).
    pub denied: u64,
    /// Records written to the output log.
    pub records: u64,
    /// Operator calls that faulted.
    pub faults: u64,
    /// SHA-256 of the output log, and of the recorded range in the same framing.
    pub sha256: String,
    pub recorded_sha256: String,
    /// True when the output log equals the recorded range.
    pub identical: bool,
    /// The first record where they differ, if any.
    pub first_divergence: Option<Divergence>,
}

/// Runs a replay (see the module docs).
pub fn replay(config: &Config, options: &Options) -> Result<Report, ReplayError> {
    replay_kept(config, options).map(|(report, _)| report)
}

/// Runs a replay and returns the output records too (when `options.keep_bytes` is set).
pub fn replay_kept(
    config: &Config,
    options: &Options,
) -> Result<(Report, Vec<Vec<u8>>), ReplayError> {
    let policy_host = Arc::new(PolicyHost::with_max_deadline(
        &config.policy,
        config.operator.max_deadline_ms,
    )?);
    for file in &config.policies {
        let (spec, wasm) = PolicySpec::from_file(config, file)?;
        let policy = policy_host.compile(spec, &wasm)?;
        policy_host
            .registry
            .install(Arc::new(policy))
            .map_err(PolicyError::from)?;
    }
    let operator_host = Arc::new(OperatorHost::new(policy_host.clone(), &config.operator));
    operator_host.load_configured(config)?;
    let mut policies = ShardPolicies::new(policy_host);
    let mut operators = ShardOperators::new(operator_host);
    if options.fork_at.is_none() {
        for pin in &options.pins {
            operators.pin_param(&pin.operator, &pin.name, pin.value.clone());
        }
    }
    let counters = ShardCounters::default();
    let mut out = LogWriter::create(options.out.as_deref())?;
    out.keep = options.keep_bytes.map(|max| (Vec::new(), 0, max));
    let mut recorded_out = LogWriter::create(options.recorded_out.as_deref())?;
    let mut compare = Comparison::default();
    let mut report = Report::default();
    let mut next_seq: Option<u64> = None;
    let mut forked = false;
    let mut failure: Option<ReplayError> = None;

    store::scan(&options.data_dir, &options.reality, |record| {
        if options
            .range
            .before(record.sequence, record.timestamp_unix_nanos)
        {
            return ControlFlow::Continue(());
        }
        if options
            .range
            .past(record.sequence, record.timestamp_unix_nanos)
        {
            return ControlFlow::Break(());
        }
        report.recorded_records += 1;
        if let Err(e) = recorded_out.write(record.body) {
            failure = Some(e);
            return ControlFlow::Break(());
        }
        compare.recorded(record.body);
        let mut message = match ArqonMessage::decode(record.body) {
            Ok(m) => m,
            Err(e) => {
                failure = Some(ReplayError::Undecodable {
                    sequence: record.sequence,
                    reason: e.to_string(),
                });
                return ControlFlow::Break(());
            }
        };
        let copying = options.fork_at.is_some_and(|at| record.sequence < at);
        if !copying && !forked && options.fork_at.is_some() {
            forked = true;
            for pin in &options.pins {
                operators.pin_param(&pin.operator, &pin.name, pin.value.clone());
            }
        }
        if copying {
            // Before the fork point the recording stands as it is; the operators see its inputs
            // to rebuild their state, and what they emit is dropped (the recording has it).
            let bytes = record.body.to_vec();
            if let Err(e) = out.write(&bytes) {
                failure = Some(e);
                return ControlFlow::Break(());
            }
            compare.replayed(&bytes);
            report.records += 1;
            next_seq = Some(record.sequence + 1);
            if message.emitted_by.is_empty() {
                report.inputs += 1;
                operators.on_sequenced(&message, &counters, &mut Discard);
            }
            return ControlFlow::Continue(());
        }
        if !message.emitted_by.is_empty() {
            // An operator's output in the recording: replay makes its own.
            return ControlFlow::Continue(());
        }
        report.inputs += 1;
        if !message.topic.starts_with("sys.") {
            let frame_bytes = record.body.len() + 16;
            if policies.check(&message, frame_bytes, &counters) != Decision::Allow {
                report.denied += 1;
                return ControlFlow::Continue(());
            }
        }
        let seq = *next_seq.get_or_insert(record.sequence);
        let bytes = if seq == record.sequence {
            record.body.to_vec()
        } else {
            // Earlier inputs had another number of outputs: this one moves.
            message.sequence = seq;
            message.causal.insert(message.reality_id.clone(), seq);
            message.encode_to_vec()
        };
        next_seq = Some(seq + 1);
        let mut sink = OutputSink {
            out: &mut out,
            compare: &mut compare,
            records: &mut report.records,
            failure: &mut failure,
        };
        sink.write(&bytes);
        let mut stamper = Stamper {
            next_seq: next_seq.as_mut().expect("set above"),
            sink: &mut sink,
        };
        if message.topic == PARAM_TOPIC || !message.topic.starts_with("sys.") {
            operators.on_sequenced(&message, &counters, &mut stamper);
        }
        if failure.is_some() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    report.faults = counters.operator_faults.get();
    let kept = out
        .keep
        .take()
        .map(|(records, _, _)| records)
        .unwrap_or_default();
    report.sha256 = out.finish()?;
    report.recorded_sha256 = recorded_out.finish()?;
    report.first_divergence = compare.finish();
    report.identical = report.first_divergence.is_none() && report.sha256 == report.recorded_sha256;
    Ok((report, kept))
}

/// Gives each output the next sequence and hands it to the output log.
struct Stamper<'a, 'b> {
    next_seq: &'a mut u64,
    sink: &'a mut OutputSink<'b>,
}

impl Sequencing for Stamper<'_, '_> {
    fn sequence_output(&mut self, mut output: ArqonMessage) -> Option<ArqonMessage> {
        let ts = output.timestamp_unix_nanos;
        stamp_output(&mut output, *self.next_seq, ts);
        *self.next_seq += 1;
        self.sink.write(&output.encode_to_vec());
        Some(output)
    }
}

struct OutputSink<'a> {
    out: &'a mut LogWriter,
    compare: &'a mut Comparison,
    records: &'a mut u64,
    failure: &'a mut Option<ReplayError>,
}

impl OutputSink<'_> {
    fn write(&mut self, bytes: &[u8]) {
        if let Err(e) = self.out.write(bytes) {
            self.failure.get_or_insert(e);
        }
        self.compare.replayed(bytes);
        *self.records += 1;
    }
}

/// Writes (optionally) and hashes an output log.
struct LogWriter {
    file: Option<(PathBuf, BufWriter<File>)>,
    hash: Sha256,
    /// Records kept in memory, their bytes, and the most allowed.
    keep: Option<(Vec<Vec<u8>>, u64, u64)>,
}

impl LogWriter {
    fn create(path: Option<&Path>) -> Result<Self, ReplayError> {
        let file = match path {
            Some(p) => {
                let f = File::create(p).map_err(|source| ReplayError::Io {
                    op: "create",
                    path: p.to_owned(),
                    source,
                })?;
                Some((p.to_owned(), BufWriter::new(f)))
            }
            None => None,
        };
        Ok(Self {
            file,
            hash: Sha256::new(),
            keep: None,
        })
    }

    fn write(&mut self, body: &[u8]) -> Result<(), ReplayError> {
        let len = (body.len() as u32).to_be_bytes();
        self.hash.update(len);
        self.hash.update(body);
        if let Some((records, bytes, max)) = &mut self.keep {
            *bytes += body.len() as u64;
            if *bytes > *max {
                return Err(ReplayError::TooLarge { max: *max });
            }
            records.push(body.to_vec());
        }
        if let Some((path, f)) = &mut self.file {
            f.write_all(&len)
                .and_then(|_| f.write_all(body))
                .map_err(|source| ReplayError::Io {
                    op: "write",
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    fn finish(self) -> Result<String, ReplayError> {
        if let Some((path, mut f)) = self.file {
            f.flush()
                .and_then(|_| f.get_ref().sync_all())
                .map_err(|source| ReplayError::Io {
                    op: "flush",
                    path,
                    source,
                })?;
        }
        Ok(crate::audit::hex(&self.hash.finalize()))
    }
}

/// Finds the first record where the replayed stream and the recorded one differ, holding only
/// the records one side is ahead by.
#[derive(Default)]
struct Comparison {
    recorded: VecDeque<Vec<u8>>,
    replayed: VecDeque<Vec<u8>>,
    index: u64,
    first: Option<Divergence>,
}

impl Comparison {
    fn recorded(&mut self, bytes: &[u8]) {
        if self.first.is_none() {
            self.recorded.push_back(bytes.to_vec());
            self.drain();
        }
    }

    fn replayed(&mut self, bytes: &[u8]) {
        if self.first.is_none() {
            self.replayed.push_back(bytes.to_vec());
            self.drain();
        }
    }

    fn drain(&mut self) {
        while let (Some(a), Some(b)) = (self.recorded.front(), self.replayed.front()) {
            if a != b {
                self.first = Some(Divergence::between(self.index, Some(a), Some(b)));
                self.recorded.clear();
                self.replayed.clear();
                return;
            }
            self.recorded.pop_front();
            self.replayed.pop_front();
            self.index += 1;
        }
    }

    fn finish(mut self) -> Option<Divergence> {
        if self.first.is_some() {
            return self.first;
        }
        let (a, b) = (self.recorded.pop_front(), self.replayed.pop_front());
        if a.is_none() && b.is_none() {
            return None;
        }
        Some(Divergence::between(self.index, a.as_deref(), b.as_deref()))
    }
}

/// Reads an output log written by [`replay`].
pub fn read_log(path: &Path) -> Result<Vec<ArqonMessage>, ReplayError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| ReplayError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        })?;
    let bad = |reason: String| ReplayError::BadLog {
        path: path.to_owned(),
        reason,
    };
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(bad(format!(
                "{} bytes left, not a length prefix",
                rest.len()
            )));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let body = rest
            .get(4..4 + len)
            .ok_or_else(|| bad(format!("record {} is cut short", out.len())))?;
        let m = ArqonMessage::decode(body)
            .map_err(|e| bad(format!("record {} does not decode: {e}", out.len())))?;
        out.push(m);
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Reads the whole recorded log of a reality (for `diff` between realities).
pub fn read_reality(data_dir: &Path, reality: &str) -> Result<Vec<ArqonMessage>, ReplayError> {
    let mut out = Vec::new();
    let mut failure = None;
    store::scan(data_dir, reality, |r| match ArqonMessage::decode(r.body) {
        Ok(m) => {
            out.push(m);
            ControlFlow::Continue(())
        }
        Err(e) => {
            failure = Some(ReplayError::Undecodable {
                sequence: r.sequence,
                reason: e.to_string(),
            });
            ControlFlow::Break(())
        }
    })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse() {
        let p: Pin = "kuramoto.k_c=0.7".parse().unwrap();
        assert_eq!(p.operator, "kuramoto");
        assert_eq!(p.name, "k_c");
        assert_eq!(p.value, Param::Number(0.7));
        let t: Pin = "rig.mode=fast".parse().unwrap();
        assert_eq!(t.value, Param::Text("fast".into()));
        for bad in ["k_c=1", "kuramoto.k_c", ".x=1", "op.=1"] {
            assert!(bad.parse::<Pin>().is_err(), "{bad}");
        }
    }

    #[test]
    fn comparison_finds_the_first_difference_whichever_side_is_ahead() {
        let mut c = Comparison::default();
        c.recorded(b"a");
        c.recorded(b"b");
        c.replayed(b"a");
        c.replayed(b"x");
        let d = c.finish().unwrap();
        assert_eq!(d.index, 1);
        let mut same = Comparison::default();
        for r in [b"a", b"b"] {
            same.replayed(r);
            same.recorded(r);
        }
        assert!(same.finish().is_none());
        let mut shorter = Comparison::default();
        shorter.recorded(b"a");
        shorter.recorded(b"b");
        shorter.replayed(b"a");
        assert_eq!(shorter.finish().unwrap().index, 1);
    }
}
