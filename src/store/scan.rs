//! Reading a reality's log without opening it for writing: for `arqonbus replay` and `diff`,
//! which may run beside a live bus (they map the segments read-only and never repair anything).

use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::guard::Guard;
use super::segment::{header, slot_in};
use super::{reality_dir, Record, Slot, StoreError, SEGMENT_HEADER_BYTES};

/// The segment files of `reality` in `data_dir`, by base sequence.
fn segments(data_dir: &Path, reality: &str) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let dir = reality_dir(data_dir, reality);
    let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Io {
        path: dir.clone(),
        op: "list segments (is the reality retained in this data directory?)",
        source,
    })?;
    let mut paths: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let base = path
                .file_name()?
                .to_str()?
                .strip_suffix(".seg")?
                .parse::<u64>()
                .ok()?;
            Some((base, path))
        })
        .collect();
    paths.sort();
    Ok(paths)
}

/// Calls `each` with every record of the reality's log in sequence order, until it breaks.
/// Reading stops at the end of the written data; a bad record there (a torn tail the bus will
/// truncate at its next start, or one being written right now) ends the log. A bad record
/// followed by more segments is corruption, reported with its file and offset.
pub fn scan(
    data_dir: &Path,
    reality: &str,
    mut each: impl FnMut(Record<'_>) -> ControlFlow<()>,
) -> Result<(), StoreError> {
    let paths = segments(data_dir, reality)?;
    let count = paths.len();
    for (i, (base, path)) in paths.into_iter().enumerate() {
        let file = File::open(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            op: "open segment",
            source,
        })?;
        // SAFETY: the map is read-only. A live bus only appends past what it has written (the
        // length of a record is stored last, and every record's CRC is checked here), and it
        // never truncates a segment that is in use; retention may unlink a whole old segment,
        // which leaves this mapping valid. A file cut short under us anyway (by someone else,
        // or a disk that fails a page) reads as zeros through the guard instead of raising
        // SIGBUS, and is reported below.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| StoreError::Io {
            path: path.clone(),
            op: "map segment",
            source,
        })?;
        let guard = Guard::register(map.as_ptr(), map.len());
        let unreadable = |guard: &Guard, path: &Path| {
            guard.faulted().map(|offset| StoreError::Unreadable {
                path: path.to_owned(),
                offset,
                reason: "no file data behind the map (was it truncated, or is the disk failing?)"
                    .into(),
            })
        };
        let head = match header(&path, &map) {
            Ok(head) => head,
            Err(e) => return Err(unreadable(&guard, &path).unwrap_or(e)),
        };
        if head.base != base {
            return Err(StoreError::Corrupt {
                path,
                offset: 8,
                reason: "segment header names another base sequence".into(),
            });
        }
        let map = &map[..head.limit];
        let mut pos = SEGMENT_HEADER_BYTES;
        loop {
            let slot = slot_in(map, pos);
            // What a fault left as zeros is no data: say so rather than end the log there.
            if let Some(e) = unreadable(&guard, &path) {
                return Err(e);
            }
            match slot {
                Slot::End => break,
                Slot::Record(r) => {
                    pos = r.next;
                    if each(r).is_break() {
                        return Ok(());
                    }
                }
                Slot::Invalid { reason } if i + 1 == count => {
                    tracing::debug!(path = %path.display(), offset = pos, reason, "log ends");
                    break;
                }
                Slot::Invalid { reason } => {
                    return Err(StoreError::Corrupt {
                        path,
                        offset: pos,
                        reason: format!("{reason}, and later segments exist"),
                    })
                }
            }
        }
        drop(guard);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::sync::Arc;

    use super::*;
    use crate::config::{RetentionRule, SyncMode};
    use crate::store::RealityLog;

    /// A segment cut short while `arqonbus replay` (or `diff`) reads it: the reader gets
    /// `Unreadable` naming the file, where it used to die of SIGBUS.
    #[test]
    fn a_segment_truncated_during_a_scan_is_unreadable_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let rule = RetentionRule {
            realities: "*".into(),
            max_age_ms: 0,
            max_bytes: 0,
            sync: SyncMode::Os,
            sync_interval_ms: 100,
            segment_bytes: None,
        };
        let (mut log, _) =
            RealityLog::open(dir.path(), Arc::from("lab-scan"), &rule, 1 << 20).unwrap();
        // 100 records of 1 KiB: the data runs over about 25 pages.
        for n in 1..=100u64 {
            log.reserve(1024).unwrap();
            log.append(n, n, &[n as u8; 1024]);
        }
        log.flush_job().unwrap().sync().unwrap();
        let path = crate::store::reality_dir(dir.path(), "lab-scan")
            .join(super::super::segment::file_name(1));
        let mut seen = 0u64;
        let result = scan(dir.path(), "lab-scan", |r| {
            seen += 1;
            if seen == 1 {
                // Cut the file to its first page while the scan holds it mapped.
                let f = OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len(4096).unwrap();
            }
            assert_eq!(
                r.body,
                &[r.sequence as u8; 1024][..],
                "a record read intact"
            );
            ControlFlow::Continue(())
        });
        match result {
            Err(StoreError::Unreadable {
                path: p, offset, ..
            }) => {
                assert_eq!(p, path);
                assert!(offset >= 4096, "the fault is past the cut: {offset}");
            }
            other => panic!("expected Unreadable, got {other:?} after {seen} records"),
        }
        assert!((1..100).contains(&seen), "stopped at the cut, read {seen}");
    }
}
