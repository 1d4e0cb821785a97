//! Retained realities: an append-only log of memory-mapped, preallocated segment files per
//! reality, owned by the reality's owner shard (no other thread touches it).
//!
//! ```text
//! data_dir/realities/<reality>.reality/
//!     00000000000000000001.seg     segments, named by their first sequence; each ends with a
//!     00000000000000052311.seg     trailer holding the durable position (segment.rs)
//!     checkpoint                   the durable position, written periodically and at shutdown
//! ```
//!
//! Appending copies the record into the map. Making it durable is a separate step (fdatasync of
//! the segment's descriptor, which on Linux also writes back the pages dirtied through the map,
//! then fsync of every directory that gained an entry), done off the reactor and for many
//! records at once (group commit). Each commit also writes the position the previous one made
//! durable into the active segment's trailer, so the durable position on disk trails the acks
//! by at most one sync.
//!
//! Recovery trusts nothing: it checks every record and every number it reads. A bad record
//! before the durable position, or one with a valid record behind it, is corruption (refused or
//! quarantined, naming file and offset); only a bad record after the durable position with
//! nothing valid behind it is a torn tail, and is cut. A map whose file shrinks under the bus
//! reads zeros instead of raising SIGBUS (guard.rs), and the log reports it as `Unreadable`.

mod checkpoint;
mod guard;
mod scan;
mod segment;

pub use checkpoint::Checkpoint;
pub use scan::scan;
pub use segment::testing;
pub use segment::{
    Record, Segment, Slot, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES, TRAILER_BYTES,
};

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
    /// The file under a running log's map went away (truncated) or could not be read.
    #[error("{path} is unreadable at offset {offset}: {reason}; this reality refuses traffic until the bus restarts")]
    Unreadable {
        path: PathBuf,
        offset: usize,
        reason: String,
    },
    #[error("a record of {body_len} bytes does not fit a segment of {segment_bytes} bytes in {path} (raise storage.segment_bytes, or lower limits.max_frame_bytes)")]
    TooLarge {
        path: PathBuf,
        body_len: usize,
        segment_bytes: usize,
    },
}

/// What recovery found, for the logs and metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// Where a torn tail was cut off, if there was one.
    pub truncated_at: Option<(PathBuf, usize)>,
    /// Segments created after the durable position that never reached the disk, removed.
    pub removed: Vec<PathBuf>,
}

/// The directory of one reality under `data_dir`.
/// Creates `dir` and whatever of its ancestors is missing, and returns the directories whose
/// new entries must be synced before anything in `dir` can be called durable: the parent of
/// each directory made (the data directory's own parent too, when the bus made it).
pub fn create_dir_durably(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut parents = Vec::new();
    let mut missing = dir;
    while !missing.exists() {
        let Some(parent) = missing.parent() else {
            break;
        };
        // A relative path's last parent is "": the working directory.
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        parents.push(parent.to_owned());
        missing = parent;
    }
    std::fs::create_dir_all(dir)?;
    Ok(parents)
}

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
    /// Each segment to sync: a duplicate descriptor, its path, and the length its map has.
    files: Vec<(File, PathBuf, usize)>,
    /// Directories that gained an entry (a segment, a reality) since the last flush.
    dirs: Vec<PathBuf>,
    /// Everything written when the job was taken.
    pub through: Checkpoint,
    /// The durable position this job writes into the active segment's trailer.
    pub marker: Checkpoint,
}

impl FlushJob {
    /// The job's one segment, when it has nothing else to sync (no rolled segment, no new
    /// directory entry): the common case, which the shard syncs through io_uring. Else the job
    /// back, for `sync` on a blocking thread.
    pub fn only_segment(mut self) -> Result<(File, PathBuf, usize), Self> {
        if self.files.len() == 1 && self.dirs.is_empty() {
            Ok(self.files.pop().expect("one file"))
        } else {
            Err(self)
        }
    }

    /// Makes the job's records, trailer and directory entries durable, and checks that no
    /// segment shrank under the bus (a map over a shorter file would have lost the records).
    /// Blocking: run it off the reactor.
    pub fn sync(&self) -> Result<(), StoreError> {
        for (file, path, len) in &self.files {
            file.sync_data().map_err(|source| StoreError::Io {
                path: path.clone(),
                op: "flush segment",
                source,
            })?;
            Segment::check_length(file, path, *len)?;
        }
        for dir in &self.dirs {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| StoreError::Io {
                    path: dir.clone(),
                    op: "flush directory",
                    source,
                })?;
        }
        Ok(())
    }
}

/// Brings the part of a segment that appends have not reached into the page cache, so the
/// shard's first write to each page finds it there. Without it, that write faults into the
/// filesystem, which reads the preallocated (unwritten) blocks as zeros on the reactor
/// (`Segment::advise_appending` has the figures; with readahead on, a third of a shard's time
/// under a sustained 1 KB publish load). Blocking: run it off the reactor. An optimisation
/// only, so a failure is ignored.
pub struct WarmJob {
    file: File,
    range: std::ops::Range<usize>,
}

impl WarmJob {
    pub fn run(self) {
        use std::os::fd::AsRawFd;
        // In steps, front first: one call reads ahead at most a few MB, and the appends
        // start at the front.
        const STEP: usize = 2 << 20;
        let mut at = self.range.start;
        while at < self.range.end {
            let len = STEP.min(self.range.end - at);
            // SAFETY: readahead on a descriptor we own; it only fills the page cache.
            let rc = unsafe { libc::readahead(self.file.as_raw_fd(), at as libc::off64_t, len) };
            if rc != 0 {
                let e = io::Error::last_os_error();
                tracing::debug!(error = %e, "segment readahead failed");
                return;
            }
            at += len;
        }
    }
}

/// A segment a log needs before its next record fits: made by `create` (blocking: run it off
/// the reactor), installed by `RealityLog::roll_to`.
#[derive(Debug, Clone)]
pub struct NextSegment {
    dir: PathBuf,
    base: u64,
    bytes: usize,
}

impl NextSegment {
    /// Creates and preallocates the segment file.
    pub fn create(&self) -> Result<Segment, StoreError> {
        Segment::create(&self.dir, self.base, self.bytes)
    }
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
    /// The durable position last synced in a segment trailer (or found by recovery).
    recorded: Checkpoint,
    /// Segments rolled away from since the last flush: their tails still need one.
    rolled_unflushed: Vec<(File, PathBuf, usize)>,
    /// Directories whose new entries the next flush must sync.
    pending_dirs: Vec<PathBuf>,
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
        let new_entries = create_dir_durably(&dir).map_err(|source| StoreError::Io {
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
            recorded: Checkpoint::default(),
            rolled_unflushed: Vec::new(),
            pending_dirs: Vec::new(),
        };
        // A new directory's entry is in its parent: the first ack waits for every one made,
        // up to the data directory's own entry when the bus created that too.
        log.pending_dirs.extend(new_entries);
        let report = log.recover()?;
        match log.segments.back() {
            Some(active) => active.advise_appending(true),
            None => {
                let first = Segment::create(&log.dir, 1, segment_bytes)?;
                log.segments.push_back(first);
                log.pending_dirs.push(log.dir.clone());
            }
        }
        Ok((log, report))
    }

    /// The segment files in the reality's directory, by base sequence.
    fn segment_paths(&self) -> Result<Vec<(u64, PathBuf)>, StoreError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| StoreError::Io {
            path: self.dir.clone(),
            op: "list segments",
            source,
        })?;
        let mut paths: Vec<(u64, PathBuf)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                op: "list segments",
                source,
            })?;
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
        Ok(paths)
    }

    /// Opens every segment, and finds the durable position: the later of the checkpoint and
    /// the segments' trailers. Trailing segments that were created but never reached the disk
    /// (a zeroed or short header, past the durable position) are removed.
    fn open_segments(
        &self,
        report: &mut RecoveryReport,
    ) -> Result<(Vec<Segment>, Checkpoint, PathBuf, Checkpoint), StoreError> {
        let checkpoint = Checkpoint::read(&self.dir)?;
        let mut durable = checkpoint;
        let mut durable_from = self.dir.join("checkpoint");
        let mut opened: Vec<(PathBuf, Result<Segment, StoreError>)> = Vec::new();
        for (base, path) in self.segment_paths()? {
            let seg = Segment::open(&path);
            if let Ok(seg) = &seg {
                if seg.base != base {
                    return Err(corrupt(
                        &path,
                        8,
                        "segment header names another base sequence",
                    ));
                }
                if let Some(cp) = seg.read_durable()? {
                    if cp.sequence > durable.sequence {
                        durable = cp;
                        durable_from = path.clone();
                    }
                }
            }
            opened.push((path, seg));
        }
        let mut segments = Vec::new();
        let mut debris: Vec<(PathBuf, StoreError)> = Vec::new();
        for (path, seg) in opened {
            match seg {
                Ok(seg) if debris.is_empty() => segments.push(seg),
                Ok(_) => {
                    let (first, _) = &debris[0];
                    return Err(corrupt(
                        first,
                        0,
                        "segment header is unreadable, and later segments exist",
                    ));
                }
                Err(e @ StoreError::Corrupt { .. }) => {
                    let base = path
                        .file_stem()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0);
                    if base <= durable.sequence || !segment::never_written(&path)? {
                        return Err(e);
                    }
                    debris.push((path, e));
                }
                Err(e) => return Err(e),
            }
        }
        for (path, why) in debris {
            tracing::warn!(
                reality = %self.reality,
                path = %path.display(),
                reason = %why,
                "removing a segment created after the durable position that never reached the disk"
            );
            std::fs::remove_file(&path).map_err(|source| StoreError::Io {
                path: path.clone(),
                op: "remove unwritten segment",
                source,
            })?;
            report.removed.push(path);
        }
        Ok((segments, durable, durable_from, checkpoint))
    }

    fn recover(&mut self) -> Result<RecoveryReport, StoreError> {
        let mut report = RecoveryReport::default();
        let (segments, durable, durable_from, checkpoint_file) = self.open_segments(&mut report)?;
        let count = segments.len();
        let mut last_timestamp = 0;
        for (i, mut seg) in segments.into_iter().enumerate() {
            let path = seg.path.clone();
            if let Some(prev) = self.segments.back() {
                if seg.base != prev.last_sequence + 1 {
                    let reason = format!(
                        "segment starts at sequence {} but the previous one ends at {}",
                        seg.base, prev.last_sequence
                    );
                    return Err(corrupt(&path, 8, &reason));
                }
            }
            if seg.base == durable.segment_base && durable.position > seg.limit() as u64 {
                let reason = format!(
                    "the durable position {} lies past the segment's end {}",
                    durable.position,
                    seg.limit()
                );
                return Err(corrupt(&durable_from, 0, &reason));
            }
            let mut pos = SEGMENT_HEADER_BYTES;
            loop {
                let problem = match seg.slot(pos) {
                    Slot::End => None,
                    Slot::Record(r) if r.sequence != seg.last_sequence + 1 => {
                        Some("sequence does not follow the previous record")
                    }
                    Slot::Record(r) if r.timestamp_unix_nanos < last_timestamp => {
                        Some("timestamp goes backwards")
                    }
                    Slot::Record(r) => {
                        let (seq, ts, next) = (r.sequence, r.timestamp_unix_nanos, r.next);
                        seg.accept(seq, ts, pos, next);
                        last_timestamp = ts;
                        report.records += 1;
                        pos = next;
                        continue;
                    }
                    Slot::Invalid { reason } => Some(reason),
                };
                let what = problem.unwrap_or("the data ends");
                // Data may end early in a segment the durable position is past (it rolled);
                // a bad record may not.
                let before_durable = match problem {
                    Some(_) => durable.covers(seg.base, pos),
                    None => seg.base == durable.segment_base && (pos as u64) < durable.position,
                };
                if before_durable {
                    return Err(corrupt(
                        &path,
                        pos,
                        &format!("{what} before the durable position"),
                    ));
                }
                // A bad record with a valid one behind it is damage, not a write cut short:
                // appends only ever add at the end.
                if let Some(at) = seg.valid_record_after(pos, seg.last_sequence) {
                    return Err(corrupt(
                        &path,
                        pos,
                        &format!("{what}, but a valid record follows at offset {at}"),
                    ));
                }
                let Some(problem) = problem else { break };
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
                    "truncating a torn tail after the durable position"
                );
                seg.truncate_at(pos)?;
                report.truncated_at = Some((path.clone(), pos));
                break;
            }
            self.segments.push_back(seg);
        }
        // An empty legacy segment cannot be appended to and its name is the next segment's:
        // replace it with a current one of the same base.
        if self
            .segments
            .back()
            .is_some_and(|s| s.is_sealed() && s.is_empty())
        {
            let old = self.segments.pop_back().expect("checked");
            let (base, path) = (old.base, old.path.clone());
            drop(old);
            std::fs::remove_file(&path).map_err(|source| StoreError::Io {
                path: path.clone(),
                op: "replace empty legacy segment",
                source,
            })?;
            self.segments
                .push_back(Segment::create(&self.dir, base, self.segment_bytes)?);
            self.pending_dirs.push(self.dir.clone());
        }
        report.segments = self.segments.len();
        let last = self.last_sequence();
        if durable.sequence > last {
            let reason = format!(
                "sequence {} is recorded as durable but the log ends at {last}",
                durable.sequence
            );
            return Err(corrupt(&durable_from, 0, &reason));
        }
        // What survived is on disk from here on: make it so, and record it, before anything is
        // served (a later bad record among these must read as corruption, not a tail).
        // Segments before the durable one were synced before that position was recorded.
        for seg in self
            .segments
            .iter()
            .filter(|s| s.base >= durable.segment_base)
        {
            seg.file_clone()
                .and_then(|f| f.sync_data())
                .map_err(|source| StoreError::Io {
                    path: seg.path.clone(),
                    op: "flush recovered segment",
                    source,
                })?;
        }
        self.durable = self.head();
        self.recorded = durable;
        self.checkpointed = checkpoint_file;
        if !self.segments.is_empty() && self.durable != checkpoint_file {
            self.durable
                .write(&self.dir)
                .map_err(|source| StoreError::Io {
                    path: self.dir.join("checkpoint"),
                    op: "write recovered checkpoint",
                    source,
                })?;
            self.checkpointed = self.durable;
            self.recorded = self.durable;
        }
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

    /// The base sequence of the segment the next record goes to (after `reserve`).
    pub fn active_base(&self) -> u64 {
        self.segments.back().map_or(1, |s| s.base)
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
    /// Creates the next segment on the calling thread: the shard uses `room_for`, creates the
    /// segment off the reactor and hands it to `roll_to`, and calls this only where it cannot
    /// wait (operator outputs, sequenced in the same step as their input).
    pub fn reserve(&mut self, body_len: usize) -> Result<(), StoreError> {
        match self.room_for(body_len)? {
            None => Ok(()),
            Some(next) => self.roll_to(next.create()?),
        }
    }

    /// `None` when a record of up to `body_len` bytes fits the active segment; else the segment
    /// to create and `roll_to` first. Changes nothing.
    pub fn room_for(&self, body_len: usize) -> Result<Option<NextSegment>, StoreError> {
        let active = self.segments.back().expect("a log always has a segment");
        if active.fits(body_len) {
            return Ok(None);
        }
        if !Segment::fits_in_new(self.segment_bytes, body_len) {
            return Err(StoreError::TooLarge {
                path: self.dir.clone(),
                body_len,
                segment_bytes: self.segment_bytes,
            });
        }
        Ok(Some(NextSegment {
            dir: self.dir.clone(),
            base: active.last_sequence + 1,
            bytes: self.segment_bytes,
        }))
    }

    /// Makes `next` (created from `room_for`'s answer, with nothing appended since) the active
    /// segment.
    pub fn roll_to(&mut self, next: Segment) -> Result<(), StoreError> {
        let active = self.segments.back().expect("a log always has a segment");
        if next.base != active.last_sequence + 1 {
            // Something was appended while the segment was made: its name would be a lie.
            let path = next.path.clone();
            drop(next);
            let _ = std::fs::remove_file(&path);
            return Err(corrupt(
                &path,
                8,
                "a rolled-to segment does not start after the active one",
            ));
        }
        let old = active.file_clone().map_err(|source| StoreError::Io {
            path: active.path.clone(),
            op: "duplicate descriptor",
            source,
        })?;
        self.rolled_unflushed
            .push((old, active.path.clone(), active.capacity()));
        active.advise_appending(false);
        self.segments.push_back(next);
        // The new file's directory entry must be durable before an ack depends on it.
        if !self.pending_dirs.contains(&self.dir) {
            self.pending_dirs.push(self.dir.clone());
        }
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

    /// True when the durable position moved past what any synced trailer or checkpoint says:
    /// one more sync of the active segment records it (a later bad record among those acked
    /// records must read as corruption).
    pub fn needs_confirmation(&self) -> bool {
        self.durable.sequence > self.recorded.sequence.max(self.checkpointed.sequence)
    }

    /// What a flush must sync to make everything written so far durable. Writes the current
    /// durable position into the active segment's trailer: it rides with this sync, and it
    /// only names records an earlier, finished sync made durable.
    pub fn flush_job(&mut self) -> Result<FlushJob, StoreError> {
        let marker = self.durable;
        let active = self.segments.back_mut().expect("segment");
        active.write_durable(&marker);
        let file = active.file_clone().map_err(|source| StoreError::Io {
            path: active.path.clone(),
            op: "duplicate descriptor",
            source,
        })?;
        let mut files = std::mem::take(&mut self.rolled_unflushed);
        files.push((file, active.path.clone(), active.capacity()));
        Ok(FlushJob {
            files,
            dirs: std::mem::take(&mut self.pending_dirs),
            through: self.head(),
            marker,
        })
    }

    /// What brings the active segment's unwritten rest into the page cache (see `WarmJob`);
    /// `None` when its descriptor cannot be duplicated.
    pub fn warm_job(&self) -> Option<WarmJob> {
        let active = self.segments.back().expect("a log always has a segment");
        Some(WarmJob {
            file: active.file_clone().ok()?,
            range: active.unwritten(),
        })
    }

    /// Records that a flush finished.
    pub fn flushed(&mut self, through: Checkpoint, marker: Checkpoint) {
        if through.sequence >= self.durable.sequence {
            self.durable = through;
        }
        if marker.sequence >= self.recorded.sequence {
            self.recorded = marker;
        }
    }

    /// The first segment whose map lost its file (truncated, or a page that could not be
    /// read), as the error to answer with.
    pub fn fault(&self) -> Option<StoreError> {
        self.segments.iter().find_map(|s| {
            s.faulted().map(|offset| StoreError::Unreadable {
                path: s.path.clone(),
                offset,
                reason: "no file data behind the map (was it truncated, or is the disk failing?)"
                    .into(),
            })
        })
    }

    /// After a failed flush: every record past the durable position is zeroed in the map, so
    /// neither a read in this process nor recovery after a restart finds a pulse that was
    /// refused. Segments wholly past it lose their header too, so recovery removes them.
    /// Nothing is synced (the disk just failed); what the failed flush may have written is
    /// past the durable position, where recovery cuts it.
    pub fn discard_unflushed(&mut self) {
        let durable = self.durable;
        let count = self.segments.len();
        for (i, seg) in self.segments.iter_mut().enumerate() {
            if seg.last_sequence <= durable.sequence {
                continue;
            }
            if seg.base <= durable.sequence || (i == 0 && count == 1) {
                let pos = if seg.base == durable.segment_base {
                    durable.position as usize
                } else {
                    SEGMENT_HEADER_BYTES
                };
                seg.discard_from(pos, durable.sequence);
            } else {
                seg.erase();
            }
        }
        self.rolled_unflushed.clear();
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
        // Config validation keeps `max_age_ms` in nanoseconds below u64::MAX; saturating
        // here as well, so a huge age means "keep", never a wrap that deletes.
        let max_age_nanos = self.max_age_ms.saturating_mul(1_000_000);
        while self.segments.len() > 1 {
            let oldest = self.segments.front().expect("checked");
            let too_old = self.max_age_ms > 0
                && !oldest.is_empty()
                && oldest
                    .last_timestamp_unix_nanos
                    .saturating_add(max_age_nanos)
                    < now_unix_nanos;
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
        job.sync().unwrap();
        log.flushed(job.through, job.marker);
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
        // Garble the body of record 15, the last one (a write torn by a crash).
        let rec = RECORD_HEADER_BYTES + 100;
        let offset = SEGMENT_HEADER_BYTES + 14 * rec + RECORD_HEADER_BYTES + 3;
        garble(&path, offset);
        let (mut log, report) = open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            report.truncated_at,
            Some((path, SEGMENT_HEADER_BYTES + 14 * rec))
        );
        assert_eq!(log.last_sequence(), 14);
        write(&mut log, 1, 100);
        assert_eq!(
            log.last_sequence(),
            15,
            "numbering continues after the last good record"
        );
    }

    /// Flushes what is written, then syncs once more so the trailer records it (what the
    /// shard does when nothing else is held).
    fn flush_and_confirm(log: &mut RealityLog) {
        for _ in 0..2 {
            let job = log.flush_job().unwrap();
            job.sync().unwrap();
            log.flushed(job.through, job.marker);
        }
        assert!(!log.needs_confirmation());
    }

    fn expect_corrupt(dir: &Path, seg: usize, path: &Path, offset: usize, says: &str) {
        match open(dir, seg) {
            Err(StoreError::Corrupt {
                path: p,
                offset: o,
                reason,
            }) => {
                assert_eq!((p.as_path(), o), (path, offset), "{reason}");
                assert!(reason.contains(says), "{reason}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok((log, r)) => panic!(
                "damage was accepted: log ends at {}, {r:?}",
                log.last_sequence()
            ),
        }
    }

    #[test]
    fn flipped_bit_in_an_acked_record_after_the_checkpoint_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let (mut log, _) = open(dir.path(), 1 << 20).unwrap();
            write(&mut log, 10, 100);
            flush_and_checkpoint(&mut log);
            // Acked after the checkpoint: flushed with group commit, never checkpointed.
            write(&mut log, 5, 100);
            flush_and_confirm(&mut log);
            path = log.segments.back().unwrap().path.clone();
        }
        let rec = RECORD_HEADER_BYTES + 100;
        // Record 15, the last acked one: nothing valid follows it.
        garble(
            &path,
            SEGMENT_HEADER_BYTES + 14 * rec + RECORD_HEADER_BYTES + 7,
        );
        let at = SEGMENT_HEADER_BYTES + 14 * rec;
        expect_corrupt(
            dir.path(),
            1 << 20,
            &path,
            at,
            "before the durable position",
        );
    }

    #[test]
    fn bad_record_with_valid_ones_behind_it_is_corruption_even_past_the_durable_position() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let (mut log, _) = open(dir.path(), 1 << 20).unwrap();
            write(&mut log, 10, 100);
            flush_and_checkpoint(&mut log);
            write(&mut log, 5, 100);
            path = log.segments.back().unwrap().path.clone();
        }
        let rec = RECORD_HEADER_BYTES + 100;
        garble(
            &path,
            SEGMENT_HEADER_BYTES + 11 * rec + RECORD_HEADER_BYTES + 7,
        );
        let at = SEGMENT_HEADER_BYTES + 11 * rec;
        expect_corrupt(dir.path(), 1 << 20, &path, at, "a valid record follows");
    }

    #[test]
    fn zeroed_record_header_with_records_behind_it_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let (mut log, _) = open(dir.path(), 1 << 20).unwrap();
            write(&mut log, 10, 100);
            path = log.segments.back().unwrap().path.clone();
        }
        let rec = RECORD_HEADER_BYTES + 100;
        let at = SEGMENT_HEADER_BYTES + 6 * rec;
        overwrite(&path, at, &[0; RECORD_HEADER_BYTES]);
        expect_corrupt(dir.path(), 1 << 20, &path, at, "a valid record follows");
    }

    #[test]
    fn truncated_middle_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let middle;
        {
            let (mut log, _) = open(dir.path(), 4096).unwrap();
            write(&mut log, 60, 200);
            assert!(log.segments.len() >= 3);
            flush_and_confirm(&mut log);
            middle = log.segments[1].path.clone();
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&middle)
            .unwrap();
        f.set_len(2048).unwrap();
        match open(dir.path(), 4096) {
            Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, middle),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a truncated middle segment was accepted"),
        }
    }

    #[test]
    fn zeroed_segment_header_before_the_durable_position_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let first;
        {
            let (mut log, _) = open(dir.path(), 4096).unwrap();
            write(&mut log, 60, 200);
            flush_and_confirm(&mut log);
            first = log.segments[0].path.clone();
        }
        overwrite(&first, 0, &[0; SEGMENT_HEADER_BYTES]);
        expect_corrupt(dir.path(), 4096, &first, 0, "zeroed");
    }

    #[test]
    fn segment_base_zero_is_an_error_not_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let (log, _) = open(dir.path(), 4096).unwrap();
            path = log.segments[0].path.clone();
        }
        overwrite(&path, 8, &0u64.to_le_bytes());
        expect_corrupt(dir.path(), 4096, &path, 8, "out of range");
    }

    #[test]
    fn durable_position_past_the_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path(), 4096).unwrap();
            write(&mut log, 3, 100);
            flush_and_checkpoint(&mut log);
        }
        Checkpoint {
            segment_base: 1,
            position: 1 << 40,
            sequence: 3,
        }
        .write(&reality_dir(dir.path(), "lab"))
        .unwrap();
        match open(dir.path(), 4096) {
            Err(StoreError::Corrupt { reason, .. }) => assert!(reason.contains("past"), "{reason}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a durable position past the file was accepted"),
        }
    }

    #[test]
    fn records_refused_after_a_failed_flush_do_not_come_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path(), 4096).unwrap();
            write(&mut log, 10, 200);
            flush_and_confirm(&mut log);
            // These were held for a flush that failed: refused, never acked.
            write(&mut log, 30, 200);
            assert!(log.segments.len() > 2);
            log.discard_unflushed();
            assert_eq!(
                log.read(log.seek_sequence(11)).map(|(r, _)| r.sequence),
                None
            );
        }
        let (mut log, report) = open(dir.path(), 4096).unwrap();
        assert_eq!(log.last_sequence(), 10, "{report:?}");
        write(&mut log, 1, 200);
        assert_eq!(log.last_sequence(), 11);
    }

    #[test]
    fn a_record_larger_than_a_segment_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 4096).unwrap();
        assert!(matches!(
            log.reserve(4096),
            Err(StoreError::TooLarge { .. })
        ));
        assert_eq!(log.last_sequence(), 0);
    }

    #[test]
    fn huge_max_age_keeps_segments_instead_of_wrapping() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = rule(SyncMode::Always);
        r.max_age_ms = u64::MAX / 1000;
        let (mut log, _) = RealityLog::open(dir.path(), Arc::from("x"), &r, 4096).unwrap();
        write(&mut log, 60, 200);
        flush_and_confirm(&mut log);
        assert!(log.trim(u64::MAX - 1).is_empty());
    }

    #[test]
    fn a_new_segment_and_a_new_reality_directory_are_synced_before_the_ack() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(dir.path(), 4096).unwrap();
        let job = log.flush_job().unwrap();
        let realities = dir.path().join("realities");
        for d in [&realities, &log.dir, &dir.path().to_path_buf()] {
            assert!(
                job.dirs.contains(d),
                "{} not synced: {:?}",
                d.display(),
                job.dirs
            );
        }
        job.sync().unwrap();
        log.flushed(job.through, job.marker);
        write(&mut log, 30, 200);
        let job = log.flush_job().unwrap();
        assert_eq!(
            job.dirs,
            vec![log.dir.clone()],
            "a roll syncs the directory"
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
        log.flushed(job.through, job.marker);
        let removed = log.trim(0);
        assert!(!removed.is_empty());
        assert!(log.bytes() <= 3 * 4096);
        assert!(log.first_sequence() > 1);
        assert_eq!(log.last_sequence(), 200);
        let (r0, _) = log.read(log.seek_sequence(1)).unwrap();
        assert_eq!(r0.sequence, log.first_sequence());
    }

    fn overwrite(path: &Path, offset: usize, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, offset as u64).unwrap();
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

    /// Power cuts, simulated honestly at the one place durability is decided: a model disk
    /// that keeps each file exactly as it was at its last sync (fdatasync of a flush job,
    /// taken in job order) and only the names a directory sync made durable. A cut may land
    /// inside a flush job, between two of its files. After the cut every acked record (covered
    /// by a finished flush) must be there, unchanged, and numbering must go on after it.
    mod power_cut {
        use super::*;
        use proptest::prelude::*;
        use std::collections::{HashMap, HashSet};

        #[derive(Default)]
        struct Disk {
            synced: HashMap<PathBuf, Vec<u8>>,
            named: HashSet<PathBuf>,
        }

        impl Disk {
            fn sync(&mut self, job: &FlushJob, files_done: usize) {
                for (_, path, _) in job.files.iter().take(files_done) {
                    self.synced
                        .insert(path.clone(), std::fs::read(path).unwrap());
                }
                if files_done == job.files.len() {
                    for d in &job.dirs {
                        self.name_all(d);
                    }
                }
            }

            fn name_all(&mut self, dir: &Path) {
                for e in std::fs::read_dir(dir).unwrap() {
                    self.named.insert(e.unwrap().path());
                }
            }

            /// The checkpoint is written with its own fsyncs (file, then directory).
            fn checkpoint(&mut self, dir: &Path) {
                let p = dir.join("checkpoint");
                self.synced.insert(p.clone(), std::fs::read(&p).unwrap());
                self.name_all(dir);
            }

            /// Puts the directory back to what the disk holds.
            fn cut(&self, dir: &Path) {
                for e in std::fs::read_dir(dir).unwrap() {
                    let p = e.unwrap().path();
                    if !self.named.contains(&p) {
                        std::fs::remove_file(&p).unwrap();
                        continue;
                    }
                    match self.synced.get(&p) {
                        Some(bytes) => std::fs::write(&p, bytes).unwrap(),
                        None => {
                            let len = std::fs::metadata(&p).unwrap().len() as usize;
                            std::fs::write(&p, vec![0u8; len]).unwrap();
                        }
                    }
                }
            }
        }

        #[derive(Debug, Clone)]
        enum Op {
            Append(u8, u16),
            /// A flush with more pulses held behind it: no confirming sync.
            Flush,
            /// A flush that leaves nothing held: the shard syncs once more.
            FlushAndConfirm,
            Checkpoint,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                4 => (1u8..12, 1u16..700).prop_map(|(n, s)| Op::Append(n, s)),
                2 => Just(Op::Flush),
                2 => Just(Op::FlushAndConfirm),
                1 => Just(Op::Checkpoint),
            ]
        }

        fn body(seq: u64, size: u16) -> Vec<u8> {
            let mut b = vec![(seq % 251) as u8; size as usize];
            let k = 8.min(b.len());
            b[..k].copy_from_slice(&seq.to_le_bytes()[..k]);
            b
        }

        fn flush(log: &mut RealityLog, disk: &mut Disk, acked: &mut u64) {
            let job = log.flush_job().unwrap();
            disk.sync(&job, job.files.len());
            log.flushed(job.through, job.marker);
            *acked = job.through.sequence;
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
            #[test]
            fn every_acked_record_survives_a_power_cut(
                ops in proptest::collection::vec(op(), 1..40),
                cut_inside in any::<bool>(),
                files_done in 0usize..4,
            ) {
                let dir = tempfile::tempdir().unwrap();
                let mut disk = Disk::default();
                let mut bodies: HashMap<u64, Vec<u8>> = HashMap::new();
                let mut acked = 0u64;
                let rdir;
                {
                    let (mut log, _) = open(dir.path(), 4096).unwrap();
                    rdir = log.dir.clone();
                    for op in &ops {
                        match *op {
                            Op::Append(n, size) => {
                                for _ in 0..n {
                                    log.reserve(size as usize).unwrap();
                                    let seq = log.last_sequence() + 1;
                                    let b = body(seq, size);
                                    log.append(seq, seq, &b);
                                    bodies.insert(seq, b);
                                }
                            }
                            Op::Flush => flush(&mut log, &mut disk, &mut acked),
                            Op::FlushAndConfirm => {
                                flush(&mut log, &mut disk, &mut acked);
                                if log.needs_confirmation() {
                                    flush(&mut log, &mut disk, &mut acked);
                                }
                            }
                            Op::Checkpoint => {
                                if let Some(cp) = log.checkpoint_due() {
                                    cp.write(&log.dir).unwrap();
                                    log.checkpoint_written(cp);
                                    disk.checkpoint(&log.dir);
                                }
                            }
                        }
                    }
                    if cut_inside {
                        // The cut lands while a flush is under way: some of its files synced.
                        let job = log.flush_job().unwrap();
                        let k = files_done.min(job.files.len());
                        disk.sync(&job, k);
                    }
                }
                disk.cut(&rdir);
                let (mut log, report) = match open(dir.path(), 4096) {
                    Ok(r) => r,
                    Err(e) => return Err(TestCaseError::fail(format!("recovery refused: {e}"))),
                };
                prop_assert!(
                    log.last_sequence() >= acked,
                    "acked through {acked} but the log ends at {} ({report:?})",
                    log.last_sequence()
                );
                let mut at = log.seek_sequence(1);
                let mut seen = 0;
                while let Some((r, next)) = log.read(at) {
                    prop_assert_eq!(Some(&r.body.to_vec()), bodies.get(&r.sequence));
                    seen += 1;
                    at = next;
                }
                prop_assert_eq!(seen, log.last_sequence());
                let next = log.last_sequence() + 1;
                log.reserve(13).unwrap();
                log.append(next, next, b"after the cut");
                prop_assert!(next > acked, "sequence {next} was acked before the cut");
            }
        }
    }

    /// Recovery over what a disk can hand back: mutated real segments and random bytes.
    mod damage {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
            #[test]
            fn mutated_segments_never_panic_or_reuse_an_acked_sequence(
                n in 1u64..80,
                size in 1usize..400,
                checkpoint_current in any::<bool>(),
                muts in proptest::collection::vec((0usize..8, 0usize..8192, any::<u8>(), 0u8..4), 1..6),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let paths: Vec<PathBuf>;
                {
                    let (mut log, _) = open(dir.path(), 4096).unwrap();
                    write(&mut log, n, size);
                    flush_and_confirm(&mut log);
                    if checkpoint_current {
                        let cp = log.checkpoint_due().unwrap();
                        cp.write(&log.dir).unwrap();
                    }
                    paths = log.segments.iter().map(|s| s.path.clone()).collect();
                }
                for (file, offset, byte, kind) in muts {
                    let path = &paths[file % paths.len()];
                    let mut bytes = std::fs::read(path).unwrap();
                    if bytes.is_empty() {
                        continue;
                    }
                    let at = offset % bytes.len();
                    // With a stale checkpoint the trailer is the only record of what is durable;
                    // a disk that erases it erases that knowledge (tested apart, above).
                    if !checkpoint_current && at + 64 >= bytes.len() - TRAILER_BYTES {
                        continue;
                    }
                    match kind {
                        0 => bytes[at] ^= 1 << (byte % 8),
                        1 => bytes[at] = byte,
                        2 => {
                            let end = (at + 16).min(bytes.len());
                            bytes[at..end].fill(0);
                        }
                        _ if checkpoint_current => bytes.truncate(at),
                        _ => continue,
                    }
                    std::fs::write(path, bytes).unwrap();
                }
                if let Ok((mut log, _)) = open(dir.path(), 4096) {
                    prop_assert!(log.last_sequence() >= n, "acked {n}, log ends at {}", log.last_sequence());
                    let mut at = log.seek_sequence(1);
                    while let Some((r, next)) = log.read(at) {
                        prop_assert_eq!(r.body, &vec![r.sequence as u8; size][..]);
                        at = next;
                    }
                    log.reserve(10).unwrap();
                    let next = log.last_sequence() + 1;
                    log.append(next, u64::MAX, b"x");
                }
            }

            #[test]
            fn random_bytes_as_a_segment_never_panic(
                body in proptest::collection::vec(any::<u8>(), 0..3000),
                header in 0u8..3,
                base in prop_oneof![Just(0u64), Just(1u64), any::<u64>()],
                zero_trailer in any::<bool>(),
            ) {
                let dir = tempfile::tempdir().unwrap();
                let rdir = reality_dir(dir.path(), "lab");
                std::fs::create_dir_all(&rdir).unwrap();
                let mut bytes = match header {
                    0 => b"ARQSEG02".to_vec(),
                    1 => b"ARQSEG01".to_vec(),
                    _ => Vec::new(),
                };
                if header < 2 {
                    bytes.extend_from_slice(&base.to_le_bytes());
                }
                bytes.extend_from_slice(&body);
                if zero_trailer {
                    bytes.extend_from_slice(&[0; TRAILER_BYTES]);
                }
                let name = format!("{:020}.seg", base.max(1));
                std::fs::write(rdir.join(name), &bytes).unwrap();
                if let Ok((mut log, _)) = open(dir.path(), 4096) {
                    let mut at = log.seek_sequence(1);
                    let mut count = 0u64;
                    while let Some((_, next)) = log.read(at) {
                        count += 1;
                        at = next;
                    }
                    prop_assert!(count <= log.last_sequence());
                    log.reserve(10).unwrap();
                    let next = log.last_sequence() + 1;
                    log.append(next, u64::MAX, b"x");
                }
            }
        }
    }
}
