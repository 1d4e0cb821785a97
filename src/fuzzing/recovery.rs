//! Segment recovery (`store/`): a reality's directory as a crash, a bad disk or a careless
//! person left it, opened the way a shard opens it at start.
//!
//! Refusing a directory is a correct answer. A recovered log must hold only gapless, ordered
//! records, never end before a sequence a checkpoint or trailer says was durable (the next
//! pulse would reuse an acknowledged sequence), and must recover again, with one more record,
//! after it appends and syncs.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{RetentionRule, SyncMode};
use crate::store::{reality_dir, Checkpoint, RealityLog, Segment};

const REALITY: &str = "lab";
/// Size of the segments the log creates while the target runs.
const NEW_SEGMENT_BYTES: usize = 4096;
/// The real log of mode 1: small segments, so it spans several, each with a trailer.
const REAL_SEGMENT_BYTES: usize = 512;
const REAL_RECORDS: u64 = 12;
const MAX_FILES: usize = 4;

fn rule() -> RetentionRule {
    RetentionRule {
        realities: "*".into(),
        max_age_ms: 0,
        max_bytes: 0,
        sync: SyncMode::Always,
        sync_interval_ms: 100,
        segment_bytes: None,
    }
}

/// A directory for the target's data directories, removed when dropped. On tmpfs when there
/// is one: recovery syncs every file it keeps, and a sync there costs nothing.
pub struct RecoveryScratch {
    root: PathBuf,
    runs: u64,
}

impl RecoveryScratch {
    pub fn new() -> std::io::Result<Self> {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        // One root per scratch: threads of one test process each have their own.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = base.join(format!("arqonbus-fuzz-recovery-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&root)?;
        Ok(Self { root, runs: 0 })
    }

    /// A new, empty data directory.
    fn fresh(&mut self) -> PathBuf {
        self.runs += 1;
        let dir = self.root.join(self.runs.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(reality_dir(&dir, REALITY)).expect("scratch directory");
        dir
    }
}

impl Drop for RecoveryScratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

thread_local! {
    static SCRATCH: RefCell<Option<RecoveryScratch>> = const { RefCell::new(None) };
    static REAL_LOG: Vec<(String, Vec<u8>)> = real_log_files();
}

/// The first byte picks what the rest is:
/// - even: the reality's files, as up to four chunks of `kind u8 | len u16 LE | bytes`. Kind
///   `k % 3` is 0 for a segment named by the base its own header names, 1 for a segment named
///   `1 + k / 4` (whatever its header says), 2 for the checkpoint file;
/// - odd: a real log (written by [`RealityLog`], several segments, trailers and a checkpoint)
///   damaged by patches of `file u8 | offset u16 LE | xor u8`; a file byte with the high bit set
///   truncates that file at the offset instead.
pub fn recovery(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    SCRATCH.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(RecoveryScratch::new().expect("a scratch directory for the target"));
        }
        let scratch = cell.as_mut().expect("set above");
        let data_dir = scratch.fresh();
        let dir = reality_dir(&data_dir, REALITY);
        let pristine = if mode % 2 == 0 {
            write_chunks(&dir, rest);
            false
        } else {
            REAL_LOG.with(|files| write_patched(&dir, files, rest));
            rest.len() < 4
        };
        check(&data_dir, &dir, pristine);
        let _ = std::fs::remove_dir_all(&data_dir);
    });
}

fn write_chunks(dir: &Path, mut rest: &[u8]) {
    for _ in 0..MAX_FILES {
        let [kind, lo, hi, tail @ ..] = rest else {
            return;
        };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let name = match kind % 3 {
            0 => {
                let base = bytes
                    .get(8..16)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .unwrap_or(1);
                segment_name(base)
            }
            1 => segment_name(1 + u64::from(kind / 4)),
            _ => "checkpoint".to_owned(),
        };
        std::fs::write(dir.join(name), bytes).expect("scratch file");
    }
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

fn write_patched(dir: &Path, files: &[(String, Vec<u8>)], mut patches: &[u8]) {
    let mut files: Vec<(String, Vec<u8>)> = files.to_vec();
    while let [file, lo, hi, xor, tail @ ..] = patches {
        patches = tail;
        let i = usize::from(file & 0x7f) % files.len();
        let offset = usize::from(u16::from_le_bytes([*lo, *hi]));
        let bytes = &mut files[i].1;
        if file & 0x80 != 0 {
            bytes.truncate(offset);
        } else if !bytes.is_empty() {
            let at = offset % bytes.len();
            bytes[at] ^= xor;
        }
    }
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("scratch file");
    }
}

/// The highest sequence any checkpoint or trailer on disk claims is durable, read the way
/// recovery reads them (a damaged one claims nothing here: recovery refuses it).
fn claimed_durable(dir: &Path) -> u64 {
    let mut claimed = Checkpoint::read(dir).map_or(0, |cp| cp.sequence);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return claimed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "seg") {
            if let Ok(Ok(Some(cp))) = Segment::open(&path).map(|s| s.read_durable()) {
                claimed = claimed.max(cp.sequence);
            }
        }
    }
    claimed
}

fn check(data_dir: &Path, dir: &Path, pristine: bool) {
    let claimed = claimed_durable(dir);
    let opened = RealityLog::open(data_dir, Arc::from(REALITY), &rule(), NEW_SEGMENT_BYTES);
    let (mut log, _report) = match opened {
        Ok(opened) => opened,
        Err(e) if pristine => panic!("the undamaged real log does not recover: {e}"),
        Err(_) => return,
    };
    let last = log.last_sequence();
    assert!(
        last >= claimed,
        "recovered to sequence {last}, but {claimed} was recorded as durable: the next pulse \
         would reuse an acknowledged sequence"
    );
    if pristine {
        assert_eq!(last, REAL_RECORDS, "the undamaged real log lost records");
    }
    let read = read_all(&log);
    if let Some(&(seq, _)) = read.last() {
        assert_eq!(
            seq, last,
            "the last record read is not the log's last sequence"
        );
    }

    // Append and sync one record, as the owner shard would, and recover again.
    let (next, timestamp) = (last + 1, log.last_timestamp());
    if log.reserve(8).is_err() {
        return;
    }
    log.append(next, timestamp, b"fuzzed!!");
    let job = log.flush_job().expect("a flush job");
    job.sync().expect("a sync on the scratch directory");
    log.flushed(job.through, job.marker);
    drop(log);
    let (again, _) = match RealityLog::open(data_dir, Arc::from(REALITY), &rule(), 4096) {
        Ok(opened) => opened,
        Err(e) => panic!("a log that recovered and took a synced record does not recover: {e}"),
    };
    assert_eq!(again.last_sequence(), next, "the synced record was lost");
    let reread = read_all(&again);
    assert_eq!(
        reread.len(),
        read.len() + 1,
        "recovery lost or invented records"
    );
}

/// Every record from the first kept one: sequences must step by one, timestamps never go back.
fn read_all(log: &RealityLog) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut at = log.seek_sequence(log.first_sequence());
    while let Some((r, next)) = log.read(at) {
        if let Some(&(seq, ts)) = out.last() {
            assert_eq!(
                r.sequence,
                seq + 1,
                "recovered sequences have a gap or go back"
            );
            assert!(r.timestamp_unix_nanos >= ts, "recovered timestamps go back");
        }
        out.push((r.sequence, r.timestamp_unix_nanos));
        at = next;
    }
    out
}

/// A real log, written the way the owner shard writes one: records over several segments,
/// flushed (so the segments carry trailers) and checkpointed, then a few records more that
/// were written but never synced. Returns each file's name and bytes.
pub fn real_log_files() -> Vec<(String, Vec<u8>)> {
    let mut scratch = RecoveryScratch::new().expect("a scratch directory");
    let data_dir = scratch.fresh();
    let dir = reality_dir(&data_dir, REALITY);
    let (mut log, _) = RealityLog::open(&data_dir, Arc::from(REALITY), &rule(), REAL_SEGMENT_BYTES)
        .expect("a new log");
    let flush = |log: &mut RealityLog| {
        let job = log.flush_job().expect("a flush job");
        job.sync().expect("sync");
        log.flushed(job.through, job.marker);
        if let Some(cp) = log.checkpoint_due() {
            cp.write(&dir).expect("checkpoint");
            log.checkpoint_written(cp);
        }
    };
    for seq in 1..=REAL_RECORDS {
        let body = vec![seq as u8; 20 + (seq as usize * 13) % 90];
        log.reserve(body.len()).expect("room");
        log.append(seq, seq * 1_000, &body);
        if seq % 4 == 0 && seq < REAL_RECORDS {
            flush(&mut log);
        }
    }
    drop(log);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the log's directory")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((name, std::fs::read(e.path()).ok()?))
        })
        .collect();
    files.sort();
    files
}
