//! The audit log: an append-only, hash-chained file of governance actions, each record on disk
//! (fdatasync) before the action it records takes effect.
//!
//! # Format
//!
//! `data_dir/audit.log`, one record per line: `<sha256> <body>\n`, where `body` is a JSON object
//! `{"seq", "time_unix_nanos", "actor", "action", "target", "details", "prev_sha256"}` and
//! `sha256` is the lowercase hex SHA-256 of exactly those body bytes. `seq` counts from 1;
//! `prev_sha256` is the previous record's `sha256` (64 zeros for the first). Changing any byte of
//! a record therefore breaks that record's own hash, and removing or reordering records breaks
//! the next record's `prev_sha256`: [`verify`] names the first record that does not check out.
//!
//! # One writer
//!
//! Every append goes through one `Mutex<Writer>`, reached from a shard only on glommio's blocking
//! pool ([`AuditLog::commit_async`]), so the reactor never waits on a write or an fsync. Holding
//! the lock across "check, append, fsync, apply" makes the order of records the order in which
//! the actions took effect, whichever shards they came from.
//!
//! # Bounded records
//!
//! Much of what a record holds came from a client (its name, a topic, a producer id, a policy
//! name read from a payload). [`Writer::append`] cuts every string to a bound before it writes
//! ([`MAX_FIELD_BYTES`] for `actor`, `action` and `target`, [`MAX_DETAIL_STRING_BYTES`] for each
//! string in `details`), so no client can make one record the size of a frame. Refusals of
//! non-controllers are not recorded one by one at all: [`coalesce`] gathers them into at most
//! one record per window.

pub mod coalesce;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::time::SharedClock;

/// The file name inside `data_dir`.
pub const FILE_NAME: &str = "audit.log";
/// `prev_sha256` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_HEX_LEN: usize = 64;
/// Longest `actor`, `action` or `target` written, in bytes; longer ones are cut (see [`bound`]).
pub const MAX_FIELD_BYTES: usize = 256;
/// Longest string written inside `details`, in bytes.
pub const MAX_DETAIL_STRING_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes (at a character boundary), with a marker that says how
/// many bytes were left out, so a cut string never passes for a whole one.
pub fn bound(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let marker = format!("...[{} bytes cut]", text.len());
    let mut end = max.saturating_sub(marker.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &text[..end]).into()
}

/// Every string inside `value` (keys included), bounded.
fn bound_details(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) if s.len() > MAX_DETAIL_STRING_BYTES => {
            *s = bound(s, MAX_DETAIL_STRING_BYTES).into_owned();
        }
        Value::Array(items) => items.iter_mut().for_each(bound_details),
        Value::Object(map) => {
            if map.keys().any(|k| k.len() > MAX_FIELD_BYTES) {
                let old = std::mem::take(map);
                for (k, v) in old {
                    map.insert(bound(&k, MAX_FIELD_BYTES).into_owned(), v);
                }
            }
            map.values_mut().for_each(bound_details);
        }
        _ => {}
    }
}

/// What went wrong with the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "audit log {path} is broken at record {record} (line {line}): {reason}. The bus will not \
         append to a broken chain: keep the file as evidence, move it aside, and restart"
    )]
    Broken {
        path: PathBuf,
        record: u64,
        line: u64,
        reason: String,
    },
    #[error(
        "audit log {path} could not be restored after a failed write and takes no more records \
         until restart"
    )]
    Poisoned { path: PathBuf },
}

/// What is being recorded.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Who: e.g. `controller session=… client=… peer=…`, or `config`.
    pub actor: String,
    /// What: the control topic (`sys.control.policy.load`) or an action name (`policy.load`).
    pub action: String,
    /// On what: a policy name.
    pub target: String,
    /// Everything else, including the outcome.
    pub details: serde_json::Value,
}

/// One record, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub time_unix_nanos: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub prev_sha256: String,
}

/// A record's place in the chain, returned by an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub sha256: String,
}

/// The appender, behind the log's one lock.
pub struct Writer {
    path: PathBuf,
    file: Option<File>,
    /// Bytes of complete records in the file.
    len: u64,
    next_seq: u64,
    prev: String,
    clock: SharedClock,
    poisoned: bool,
}

impl Writer {
    /// Writes one record and waits for it to reach the disk.
    pub fn append(&mut self, entry: Entry) -> Result<Appended, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned {
                path: self.path.clone(),
            });
        }
        let mut details = entry.details;
        bound_details(&mut details);
        let record = Record {
            seq: self.next_seq,
            time_unix_nanos: self.clock.now_unix_nanos(),
            actor: bound(&entry.actor, MAX_FIELD_BYTES).into_owned(),
            action: bound(&entry.action, MAX_FIELD_BYTES).into_owned(),
            target: bound(&entry.target, MAX_FIELD_BYTES).into_owned(),
            details,
            prev_sha256: self.prev.clone(),
        };
        let body = serde_json::to_string(&record).expect("a record always serializes");
        let sha256 = hex(&Sha256::digest(body.as_bytes()));
        let line = format!("{sha256} {body}\n");
        let len = self.len;
        let file = self.file()?;
        let written = file
            .write_all(line.as_bytes())
            .and_then(|_| file.sync_data());
        if let Err(source) = written {
            // Take back whatever part of the line reached the file, so the chain stays whole.
            let restored = file.set_len(len).and_then(|_| file.sync_data());
            self.poisoned = restored.is_err();
            return Err(AuditError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.len += line.len() as u64;
        self.next_seq += 1;
        self.prev = sha256.clone();
        Ok(Appended {
            seq: record.seq,
            sha256,
        })
    }

    /// The number of records in the log.
    pub fn records(&self) -> u64 {
        self.next_seq - 1
    }

    /// Opens (creating on first use) the file for appending.
    fn file(&mut self) -> Result<&mut File, AuditError> {
        if self.file.is_none() {
            let io = |source| AuditError::Io {
                path: self.path.clone(),
                source,
            };
            let dir = self.path.parent().unwrap_or(Path::new("."));
            let new_entries = crate::store::create_dir_durably(dir).map_err(io)?;
            for parent in &new_entries {
                File::open(parent).and_then(|d| d.sync_all()).map_err(io)?;
            }
            let created = !self.path.exists();
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(io)?;
            if created {
                // Make the new directory entry durable too.
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }
}

/// A handle on the audit log; cheap to clone, shared by every shard.
#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    writer: Arc<Mutex<Writer>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens the log in `data_dir`, checking the whole chain. A torn last line (a record whose
    /// fsync never completed, so whose action never took effect) is cut off; any other damage
    /// refuses the open. The file itself is created by the first append.
    pub fn open(data_dir: &Path, clock: SharedClock) -> Result<Self, AuditError> {
        let path = data_dir.join(FILE_NAME);
        let (len, next_seq, prev) = match std::fs::read(&path) {
            Ok(bytes) => {
                let chain = check_chain(&path, &bytes, |_, _| {})?;
                if chain.torn_bytes > 0 {
                    tracing::warn!(
                        path = %path.display(),
                        bytes = chain.torn_bytes,
                        "audit log ends in an incomplete record (a write that never finished); \
                         cutting it off"
                    );
                    let io = |source| AuditError::Io {
                        path: path.clone(),
                        source,
                    };
                    let f = OpenOptions::new().write(true).open(&path).map_err(io)?;
                    f.set_len(chain.valid_bytes).map_err(io)?;
                    f.sync_all().map_err(io)?;
                }
                (chain.valid_bytes, chain.records + 1, chain.head)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, 1, GENESIS.to_owned()),
            Err(source) => return Err(AuditError::Io { path, source }),
        };
        let writer = Writer {
            path: path.clone(),
            file: None,
            len,
            next_seq,
            prev,
            clock,
            poisoned: false,
        };
        Ok(Self {
            path,
            writer: Arc::new(Mutex::new(writer)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the writer to itself: check, append, then apply, with no other append in
    /// between. Blocks (file I/O): call it off the reactor.
    pub fn commit<T>(&self, f: impl FnOnce(&mut Writer) -> T) -> T {
        // A panic in `f` cannot leave a half-written record: `append` restores the file itself.
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut writer)
    }

    /// Appends one record (blocking).
    pub fn append(&self, entry: Entry) -> Result<Appended, AuditError> {
        self.commit(|w| w.append(entry))
    }

    /// [`AuditLog::commit`] on the shard's blocking pool, so the reactor keeps serving while the
    /// record is written and synced.
    pub async fn commit_async<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&mut Writer) -> T + Send + 'static,
    {
        let log = self.clone();
        glommio::executor()
            .spawn_blocking(move || log.commit(f))
            .await
    }
}

/// The result of checking a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Complete, valid records.
    pub records: u64,
    /// The last record's sha256 (GENESIS for an empty log).
    pub head: String,
    /// Bytes covered by those records.
    pub valid_bytes: u64,
    /// Bytes of an incomplete last line (no newline), if any.
    pub torn_bytes: u64,
}

/// Checks every record of a log's bytes, calling `visit` for each valid one.
pub fn check_chain(
    path: &Path,
    bytes: &[u8],
    mut visit: impl FnMut(&Record, &str),
) -> Result<Chain, AuditError> {
    let mut chain = Chain {
        records: 0,
        head: GENESIS.to_owned(),
        valid_bytes: 0,
        torn_bytes: 0,
    };
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            chain.torn_bytes = rest.len() as u64;
            break;
        };
        let line = &rest[..nl];
        let seq = chain.records + 1;
        let broken = |reason: String| AuditError::Broken {
            path: path.to_owned(),
            record: seq,
            line: seq,
            reason,
        };
        let (sha256, record) = parse_line(line, seq, &chain.head).map_err(broken)?;
        visit(&record, sha256);
        chain.records = seq;
        chain.head = sha256.to_owned();
        chain.valid_bytes += nl as u64 + 1;
        rest = &rest[nl + 1..];
    }
    Ok(chain)
}

fn parse_line<'a>(line: &'a [u8], seq: u64, prev: &str) -> Result<(&'a str, Record), String> {
    let text = std::str::from_utf8(line).map_err(|_| "the record is not UTF-8".to_owned())?;
    let (sha256, body) = text
        .split_once(' ')
        .filter(|(h, _)| h.len() == HASH_HEX_LEN)
        .ok_or("the record does not start with its 64-hex-digit sha256")?;
    let actual = hex(&Sha256::digest(body.as_bytes()));
    if actual != sha256 {
        return Err(format!(
            "its content hashes to {actual}, not the recorded {sha256}: the record was altered"
        ));
    }
    let record: Record =
        serde_json::from_str(body).map_err(|e| format!("the record is not valid: {e}"))?;
    if record.seq != seq {
        return Err(format!(
            "it says it is record {}, in position {seq}: records were removed or reordered",
            record.seq
        ));
    }
    if record.prev_sha256 != prev {
        return Err(format!(
            "its prev_sha256 {} is not the previous record's sha256 {prev}: records were \
             removed, reordered or replaced",
            record.prev_sha256
        ));
    }
    Ok((sha256, record))
}

/// Checks the log in `data_dir`. An incomplete last line is reported as an error too: it is a
/// write that never finished (the server cuts it off at its next start).
pub fn verify(data_dir: &Path) -> Result<Chain, AuditError> {
    let path = data_dir.join(FILE_NAME);
    let bytes = std::fs::read(&path).map_err(|source| AuditError::Io {
        path: path.clone(),
        source,
    })?;
    verify_bytes(&path, &bytes)
}

/// [`verify`] on a log's bytes.
pub fn verify_bytes(path: &Path, bytes: &[u8]) -> Result<Chain, AuditError> {
    let chain = check_chain(path, bytes, |_, _| {})?;
    if chain.torn_bytes > 0 {
        return Err(AuditError::Broken {
            path: path.to_owned(),
            record: chain.records + 1,
            line: chain.records + 1,
            reason: format!(
                "the last {} bytes are an incomplete record (a write that never finished; the \
                 server cuts it off when it next starts)",
                chain.torn_bytes
            ),
        });
    }
    Ok(chain)
}

/// A record as `audit show` prints it: the body plus its own sha256.
#[derive(Debug, Serialize)]
pub struct Shown<'a> {
    #[serde(flatten)]
    pub record: &'a Record,
    pub sha256: &'a str,
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::ManualClock;

    fn entry(n: u32) -> Entry {
        Entry {
            actor: "test".into(),
            action: "policy.load".into(),
            target: format!("p{n}"),
            details: serde_json::json!({ "n": n }),
        }
    }

    fn log_with(n: u32) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), ManualClock::new(1_000)).unwrap();
        for i in 0..n {
            log.append(entry(i)).unwrap();
        }
        (dir, log)
    }

    #[test]
    fn client_strings_are_bounded_in_every_record() {
        let (dir, log) = log_with(0);
        let long = "é".repeat(50_000);
        log.append(Entry {
            actor: long.clone(),
            action: long.clone(),
            target: long.clone(),
            details: serde_json::json!({ "producer_id": long, "list": [long], long.clone(): 1 }),
        })
        .unwrap();
        let bytes = std::fs::read(dir.path().join(FILE_NAME)).unwrap();
        assert!(bytes.len() < 8 << 10, "{} bytes", bytes.len());
        verify(dir.path()).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("[100000 bytes cut]"), "{text}");
        assert_eq!(bound("short", 10), "short");
        let long = "x".repeat(300);
        let cut = bound(&long, 64);
        assert!(
            cut.len() <= 64 && cut.ends_with("...[300 bytes cut]"),
            "{cut}"
        );
    }

    #[test]
    fn appends_chain_and_reopen_continues() {
        let (dir, log) = log_with(3);
        let chain = verify(dir.path()).unwrap();
        assert_eq!(chain.records, 3);
        drop(log);
        let log = AuditLog::open(dir.path(), ManualClock::new(2_000)).unwrap();
        let a = log.append(entry(9)).unwrap();
        assert_eq!(a.seq, 4);
        let chain = verify(dir.path()).unwrap();
        assert_eq!(chain.records, 4);
        assert_eq!(chain.head, a.sha256);
    }

    #[test]
    fn no_file_until_the_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let _log = AuditLog::open(&dir.path().join("sub"), ManualClock::new(0)).unwrap();
        assert!(!dir.path().join("sub").join(FILE_NAME).exists());
    }

    #[test]
    fn every_single_byte_edit_is_caught_at_its_record() {
        let (dir, _log) = log_with(4);
        let path = dir.path().join(FILE_NAME);
        let original = std::fs::read(&path).unwrap();
        let starts: Vec<usize> = std::iter::once(0)
            .chain(
                original
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        for offset in 0..original.len() {
            let mut bytes = original.clone();
            bytes[offset] ^= 0x01;
            let record = starts.iter().filter(|&&s| s <= offset).count() as u64;
            match verify_bytes(&path, &bytes) {
                Err(AuditError::Broken { record: r, .. }) => {
                    assert_eq!(r, record, "edit at byte {offset}")
                }
                Ok(chain) => panic!("edit at byte {offset} went unnoticed: {chain:?}"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn removed_record_breaks_the_next() {
        let (dir, _log) = log_with(3);
        let path = dir.path().join(FILE_NAME);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        match verify(dir.path()) {
            Err(AuditError::Broken { record, .. }) => assert_eq!(record, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn torn_tail_is_cut_at_open() {
        let (dir, log) = log_with(2);
        drop(log);
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"abc {\"seq\":3").unwrap();
        drop(f);
        assert!(matches!(
            verify(dir.path()),
            Err(AuditError::Broken { record: 3, .. })
        ));
        let log = AuditLog::open(dir.path(), ManualClock::new(0)).unwrap();
        assert_eq!(log.append(entry(7)).unwrap().seq, 3);
        assert_eq!(verify(dir.path()).unwrap().records, 3);
    }

    #[test]
    fn broken_chain_refuses_to_open() {
        let (dir, log) = log_with(2);
        drop(log);
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        let err = AuditLog::open(dir.path(), ManualClock::new(0)).unwrap_err();
        assert!(err.to_string().contains("record 2"), "{err}");
    }
}
