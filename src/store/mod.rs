//! Retained realities: an append-only log of memory-mapped, preallocated segment files per
//! reality, owned by the reality's owner shard (no other thread touches it).
//!
//! ```text
//! data_dir/realities/<reality>.reality/
//!     00000000000000000001.seg     segments, named by their first sequence
//!     00000000000000052311.seg
//!     checkpoint                   the last position known to be on disk
//! ```
//!
//! Appending copies the record into the map. Making it durable is a separate step (fdatasync of
//! the segment's descriptor, which on Linux also writes back the pages dirtied through the map),
//! done off the reactor and for many records at once (group commit). Recovery trusts nothing:
//! it checks every record, truncates a torn tail after the checkpoint, and refuses corruption
//! before it.

mod checkpoint;
mod scan;
mod segment;

pub use checkpoint::Checkpoint;
pub use scan::scan;
pub use segment::{Record, Segment, Slot, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{RetentionRule, SyncMode};

/// Storage failures, each naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} failed for {path}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("disk full: cannot preallocate {path} (free space on the data_dir volume, or lower storage.segment_bytes)")]
    DiskFull { path: PathBuf },
    #[error("{path} is corrupt at offset {offset}: {reason} (set storage.on_corruption = \"quarantine\" to start without this reality)")]
    Corrupt {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
}

/// What recovery found, for the logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Where a torn tail was cut off, if there was one.
    pub truncated_at: Option<(PathBuf, usize)>,
}

/// The directory of one reality under `data_dir`.
pub fn reality_dir(data_dir: &Path, reality: &str) -> PathBuf {
    data_dir
        .join("realities")
        .join(format!("{reality}.reality"))
}

/// The realities that have a directory under `data_dir`.
pub fn list_realities(data_dir: &Path) -> io::Result<Vec<String>> {
    let dir = data_dir.join("realities");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(reality) = name.to_str().and_then(|n| n.strip_suffix(".reality")) {
            out.push(reality.to_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// What a flush must cover, taken when the flush starts.
pub struct FlushJob {
    pub files: Vec<File>,
    pub through: Checkpoint,
}

/// Where to start reading.
#[derive(Debug, Clone, Copy)]
pub struct ReadPosition {
    segment: usize,
    pos: usize,
}

/// One retained reality's log.
pub struct RealityLog {
    pub reality: Arc<str>,
    pub dir: PathBuf,
    pub sync: SyncMode,
    pub sync_interval_ms: u64,
    max_age_ms: u64,
    max_bytes: u64,
    segment_bytes: usize,
    segments: VecDeque<Segment>,
    /// Highest sequence known to be on disk, and where it ends.
    durable: Checkpoint,
    /// The durable position last written to the checkpoint file.
    checkpointed: Checkpoint,
    /// Segments rolled away from since the last flush: their tails still need one.
    rolled_unflushed: Vec<File>,
}

impl RealityLog {
    /// Opens (recovering what is there) or creates the log of `reality`.
    pub fn open(
        data_dir: &Path,
        reality: Arc<str>,
        rule: &RetentionRule,
        segment_bytes: usize,
    ) -> Result<(Self, RecoveryReport), StoreError> {
        let dir = reality_dir(data_dir, &reality);
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            op: "create reality directory",
            source,
        })?;
        let mut log = Self {
            reality,
            dir,
            sync: rule.sync,
            sync_interval_ms: rule.sync_interval_ms,
            max_age_ms: rule.max_age_ms,
            max_bytes: rule.max_bytes,
            segment_bytes,
            segments: VecDeque::new(),
            durable: Checkpoint::default(),
            checkpointed: Checkpoint::default(),
            rolled_unflushed: Vec::new(),
        };
        let report = log.recover()?;
        if log.segments.is_empty() {
            let first = Segment::create(&log.dir, 1, segment_bytes)?;
            log.segments.push_back(first);
        }
        Ok((log, report))
    }

    fn recover(&mut self) -> Result<RecoveryReport, StoreError> {
        let mut report = RecoveryReport::default();
        let checkpoint = Checkpoint::read(&self.dir)?;
        let mut paths: Vec<(u64, PathBuf)> = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            op: "list segments",
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            let base = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(base) = base {
                paths.push((base, path));
            }
        }
        paths.sort();
        let count = paths.len();
        let mut last_timestamp = 0;
        for (i, (base, path)) in paths.into_iter().enumerate() {
            let mut seg = Segment::open(&path)?;
            if seg.base != base {
                return Err(corrupt(
                    &path,
                    8,
                    "segment header names another base sequence",
                ));
            }
            if let Some(prev) = self.segments.back() {
                if seg.base != prev.last_sequence + 1 {
                    let reason = format!(
                        "segment starts at sequence {} but the previous one ends at {}",
                        seg.base, prev.last_sequence
                    );
                    return Err(corrupt(&path, 8, &reason));
                }
            }
            let mut pos = SEGMENT_HEADER_BYTES;
            loop {
                let problem = match seg.slot(pos) {
                    Slot::End => break,
                    Slot::Record(r) if r.sequence != seg.last_sequence + 1 => {
                        "sequence does not follow the previous record"
                    }
                    Slot::Record(r) if r.timestamp_unix_nanos < last_timestamp => {
                        "timestamp goes backwards"
                    }
                    Slot::Record(r) => {
                        let (seq, ts, next) = (r.sequence, r.timestamp_unix_nanos, r.next);
                        seg.accept(seq, ts, pos, next);
                        last_timestamp = ts;
                        report.records += 1;
                        pos = next;
                        continue;
                    }
                    Slot::Invalid { reason } => reason,
                };
                if checkpoint.covers(seg.base, pos) {
                    return Err(corrupt(
                        &path,
                        pos,
                        &format!("{problem}, before the durable checkpoint"),
                    ));
                }
                if i + 1 != count {
                    return Err(corrupt(
                        &path,
                        pos,
                        &format!("{problem}, and later segments exist"),
                    ));
                }
                tracing::warn!(
                    reality = %self.reality,
                    path = %path.display(),
                    offset = pos,
                    reason = problem,
                    "truncating a torn tail after the last durable checkpoint"
                );
                seg.truncate_at(pos)?;
                report.truncated_at = Some((path.clone(), pos));
                break;
            }
            self.segments.push_back(seg);
        }
        report.segments = self.segments.len();
        let last = self.last_sequence();
        if checkpoint.sequence > last {
            let reason = format!(
                "checkpoint says sequence {} is durable but the log ends at {last}",
                checkpoint.sequence
            );
            return Err(corrupt(&self.dir.join("checkpoint"), 0, &reason));
        }
        // What survived is on disk from here on: make it so before anything is served.
        for seg in &self.segments {
            seg.file_clone()
                .and_then(|f| f.sync_data())
                .map_err(|source| StoreError::Io {
                    path: seg.path.clone(),
                    op: "flush recovered segment",
                    source,
                })?;
        }
        self.durable = self.head();
        self.checkpointed = checkpoint;
        Ok(report)
    }

    /// The position just after the last record.
    fn head(&self) -> Checkpoint {
        match self.segments.back() {
            Some(s) => Checkpoint {
                segment_base: s.base,
                position: s.end as u64,
                sequence: s.last_sequence,
            },
            None => Checkpoint::default(),
        }
    }

    /// The last sequence written (0 when the reality has none).
    pub fn last_sequence(&self) -> u64 {
        self.segments.back().map(|s| s.last_sequence).unwrap_or(0)
    }

    pub fn last_timestamp(&self) -> u64 {
        self.segments
            .iter()
            .rev()
            .find(|s| !s.is_empty())
            .map(|s| s.last_timestamp_unix_nanos)
            .unwrap_or(0)
    }

    /// The first sequence still kept (retention deletes older segments).
    pub fn first_sequence(&self) -> u64 {
        self.segments.front().map(|s| s.base).unwrap_or(1)
    }

    /// Timestamp of the oldest record kept, if any.
    pub fn first_timestamp(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| !s.is_empty())
            .map(|s| s.first_timestamp_unix_nanos)
    }

    /// Bytes of records kept.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.data_bytes() as u64).sum()
    }

    pub fn durable_sequence(&self) -> u64 {
        self.durable.sequence
    }

    /// Makes sure a record of up to `body_len` bytes fits, rolling to a new segment if needed.
    /// Called before the record is sequenced, so a failure (disk full) consumes no sequence.
    pub fn reserve(&mut self, body_len: usize) -> Result<(), StoreError> {
        let active = self.segments.back().expect("a log always has a segment");
        if active.fits(body_len) {
            return Ok(());
        }
        let next = Segment::create(&self.dir, active.last_sequence + 1, self.segment_bytes)?;
        let old = active.file_clone().map_err(|source| StoreError::Io {
            path: active.path.clone(),
            op: "duplicate descriptor",
            source,
        })?;
        self.rolled_unflushed.push(old);
        self.segments.push_back(next);
        Ok(())
    }

    /// Copies a record in. `reserve` was called for it and `sequence` follows the last.
    pub fn append(&mut self, sequence: u64, timestamp_unix_nanos: u64, body: &[u8]) {
        let active = self
            .segments
            .back_mut()
            .expect("a log always has a segment");
        assert!(active.fits(body.len()), "append without reserve");
        assert_eq!(
            sequence,
            active.last_sequence + 1,
            "retained sequences are gapless"
        );
        active.append(sequence, timestamp_unix_nanos, body);
    }

    /// True when records were appended since the last durable point.
    pub fn is_dirty(&self) -> bool {
        self.last_sequence() > self.durable.sequence
    }

    /// What a flush must sync to make everything written so far durable.
    pub fn flush_job(&mut self) -> io::Result<FlushJob> {
        let mut files = std::mem::take(&mut self.rolled_unflushed);
        files.push(self.segments.back().expect("segment").file_clone()?);
        Ok(FlushJob {
            files,
            through: self.head(),
        })
    }

    /// Records that a flush finished.
    pub fn flushed(&mut self, through: Checkpoint) {
        if through.sequence >= self.durable.sequence {
            self.durable = through;
        }
    }

    /// The durable position, when it moved since the checkpoint file was last written.
    pub fn checkpoint_due(&self) -> Option<Checkpoint> {
        (self.durable != self.checkpointed).then_some(self.durable)
    }

    pub fn checkpoint_written(&mut self, cp: Checkpoint) {
        self.checkpointed = cp;
    }

    /// Removes the oldest segments that retention no longer keeps; returns their paths for the
    /// caller to delete off the reactor. The active segment is never removed.
    pub fn trim(&mut self, now_unix_nanos: u64) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        while self.segments.len() > 1 {
            let oldest = self.segments.front().expect("checked");
            let too_old = self.max_age_ms > 0
                && !oldest.is_empty()
                && oldest.last_timestamp_unix_nanos + self.max_age_ms * 1_000_000 < now_unix_nanos;
            let too_big = self.max_bytes > 0 && self.bytes() > self.max_bytes;
            // Never delete past what is durable: a crash must still find everything acked.
            let durable = oldest.last_sequence <= self.durable.sequence;
            if !(too_old || too_big) || !durable {
                break;
            }
            let seg = self.segments.pop_front().expect("checked");
            removed.push(seg.path.clone());
        }
        removed
    }

    /// The read position of the first record with `sequence >= seq`.
    pub fn seek_sequence(&self, seq: u64) -> ReadPosition {
        let i = self
            .segments
            .partition_point(|s| s.last_sequence < seq)
            .min(self.segments.len() - 1);
        ReadPosition {
            segment: i,
            pos: self.segments[i].position_of_sequence(seq),
        }
    }

    /// The read position of the first record with `timestamp >= t`.
    pub fn seek_time(&self, t: u64) -> ReadPosition {
        let i = self
            .segments
            .partition_point(|s| s.is_empty() || s.last_timestamp_unix_nanos < t)
            .min(self.segments.len() - 1);
        ReadPosition {
            segment: i,
            pos: self.segments[i].position_of_time(t),
        }
    }

    /// The record at a read position and the position after it; `None` at the end of the log.
    pub fn read(&self, at: ReadPosition) -> Option<(Record<'_>, ReadPosition)> {
        let mut at = at;
        loop {
            let seg = self.segments.get(at.segment)?;
            if at.pos < seg.end {
                if let Slot::Record(r) = seg.slot(at.pos) {
                    let next = ReadPosition {
                        segment: at.segment,
                        pos: r.next,
                    };
                    return Some((r, next));
                }
                return None;
            }
            at = ReadPosition {
                segment: at.segment + 1,
                pos: SEGMENT_HEADER_BYTES,
            };
        }
    }
}

fn corrupt(path: &Path, offset: usize, reason: &str) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        offset,
        reason: reason.to_owned(),
    }
}

/// Syncs the files of a flush job (runs off the reactor).
pub fn run_flush(files: &[File]) -> io::Result<()> {
    for f in files {
        f.sync_data()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(sync: SyncMode) -> RetentionRule {
        RetentionRule {
            realities: "*".into(),
            max_age_ms: 0,
            max_bytes: 0,
            sync,
            sync_interval_ms: 100,
            segment_bytes: None,
        }
    }

    fn open(dir: &Path, seg: usize) -> Result<(RealityLog, RecoveryReport), StoreError> {
        RealityLog::open(dir, Arc::from("lab"), &rule(SyncMode::Always), seg)
    }

    fn write(log: &mut RealityLog, n: u64, body: usize) {
        for _ in 0..n {
            log.reserve(body).unwrap();
            let seq = log.last_sequence() + 1;
            log.append(seq, seq * 10, &vec![seq as u8; body]);
        }
    }

    fn flush_and_checkpoint(log: &mut RealityLog) {
        let job = log.flush_job().unwrap();
        run_flush(&job.files).unwrap();
        log.flushed(job.through);
        let cp = log.checkpoint_due().unwrap();
        cp.write(&log.dir).unwrap();
        log.checkpoint_written(cp);
    }

    #[test]
    fn rolls_segments_and_recovers_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path(), 4096).unwrap();
            write(&mut log, 100, 200);
            assert!(log.segments.len() > 1);
            flush_and_checkpoint(&mut log);
        }
        let (log, report) = open(dir.path(), 4096).unwrap();
        assert_eq!(report.records, 100);
        assert_eq!(report.truncated_at, None);
        assert_eq!(log.last_sequence(), 100);
        let mut at = log.seek_sequence(37);
        let mut seen = Vec::new();
        while let Some((r, next)) = log.read(at) {
            seen.push(r.sequence);
            at = next;
        }
        assert_eq!(seen, (37..=100).collect::<Vec<_>>());
        let (r, _) = log.read(log.seek_time(505)).unwrap();
        assert_eq!(r.sequence, 51);
    }

    #[test]
    fn torn_tail_after_checkpoint_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let (mut log, _) = open(dir.path(), 1 << 20).unwrap();
            write(&mut log, 10, 100);
            flush_and_checkpoint(&mut log);
            write(&mut log, 5, 100);
            path = log.segments.back().unwrap().path.clone();
        }
        // Garble the body of record 13 (a write torn by a crash).
        let rec = RECORD_HEADER_BYTES + 100;
        let offset = SEGMENT_HEADER_BYTES + 12 * rec + RECORD_HEADER_BYTES + 3;
        garble(&path, offset);
        let (mut log, report) = open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            report.truncated_at,
            Some((path, SEGMENT_HEADER_BYTES + 12 * rec))
        );
        assert_eq!(log.last_sequence(), 12);
        write(&mut log, 1, 100);
        assert_eq!(
            log.last_sequence(),
            13,
            "numbering continues after the last good record"
        );
    }

    #[test]
    fn corruption_before_checkpoint_is_refused_with_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let (mut log, _) = open(dir.path(), 1 << 20).unwrap();
            write(&mut log, 10, 100);
            flush_and_checkpoint(&mut log);
            path = log.segments.back().unwrap().path.clone();
        }
        let rec = RECORD_HEADER_BYTES + 100;
        garble(&path, SEGMENT_HEADER_BYTES + 4 * rec + RECORD_HEADER_BYTES);
        match open(dir.path(), 1 << 20) {
            Err(StoreError::Corrupt {
                path: p, offset, ..
            }) => {
                assert_eq!(p, path);
                assert_eq!(offset, SEGMENT_HEADER_BYTES + 4 * rec);
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("corruption before the checkpoint was accepted"),
        }
    }

    #[test]
    fn retention_trims_whole_old_segments_by_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = rule(SyncMode::Always);
        r.max_bytes = 3 * 4096;
        let (mut log, _) = RealityLog::open(dir.path(), Arc::from("x"), &r, 4096).unwrap();
        write(&mut log, 200, 200);
        let job = log.flush_job().unwrap();
        log.flushed(job.through);
        let removed = log.trim(0);
        assert!(!removed.is_empty());
        assert!(log.bytes() <= 3 * 4096);
        assert!(log.first_sequence() > 1);
        assert_eq!(log.last_sequence(), 200);
        let (r0, _) = log.read(log.seek_sequence(1)).unwrap();
        assert_eq!(r0.sequence, log.first_sequence());
    }

    fn garble(path: &Path, offset: usize) {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(offset as u64)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(offset as u64)).unwrap();
        f.write_all(&[b[0] ^ 0xff]).unwrap();
    }
}
