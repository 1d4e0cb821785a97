//! Reading a reality's log without opening it for writing: for `arqonbus replay` and `diff`,
//! which may run beside a live bus (they map the segments read-only and never repair anything).

use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

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
        // which leaves this mapping valid.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| StoreError::Io {
            path: path.clone(),
            op: "map segment",
            source,
        })?;
        let head = header(&path, &map)?;
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
            match slot_in(map, pos) {
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
    }
    Ok(())
}
