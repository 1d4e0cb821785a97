//! One segment file: preallocated, memory-mapped, a header then records back to back.
//!
//! ```text
//! header:  magic "ARQSEG01" (8) | base sequence u64 LE (8)
//! record:  len u32 | crc32c u32 | sequence u64 | timestamp u64 | envelope bytes (len)
//! ```
//!
//! The CRC covers sequence, timestamp and bytes. A `len` of zero ends the data: the file is
//! preallocated with zeros, and recovery zeroes whatever follows a torn record.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use super::StoreError;

const MAGIC: &[u8; 8] = b"ARQSEG01";
pub const SEGMENT_HEADER_BYTES: usize = 16;
pub const RECORD_HEADER_BYTES: usize = 24;
/// An index entry is kept for the first record after every this many bytes.
const INDEX_EVERY_BYTES: usize = 4096;

/// One record, borrowed from the map.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub sequence: u64,
    pub timestamp_unix_nanos: u64,
    pub body: &'a [u8],
    /// Where the next record starts.
    pub next: usize,
}

/// What is at a position.
#[derive(Debug)]
pub enum Slot<'a> {
    Record(Record<'a>),
    /// Zero length: no data from here on.
    End,
    /// Not a valid record: a torn write, or corruption.
    Invalid {
        reason: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct IndexEntry {
    pub sequence: u64,
    pub timestamp_unix_nanos: u64,
    pub position: usize,
}

pub struct Segment {
    pub path: PathBuf,
    pub base: u64,
    file: File,
    map: MmapMut,
    /// Where the next record goes; everything before it is valid data.
    pub end: usize,
    /// Last sequence in this segment; `base - 1` when empty.
    pub last_sequence: u64,
    pub first_timestamp_unix_nanos: u64,
    pub last_timestamp_unix_nanos: u64,
    index: Vec<IndexEntry>,
    indexed_until: usize,
}

/// Reads the record at `pos` of a segment's bytes (a map, or a copy of the file).
pub fn slot_in(map: &[u8], pos: usize) -> Slot<'_> {
    if pos + RECORD_HEADER_BYTES > map.len() {
        return if pos + 4 > map.len() || map[pos..pos + 4] == [0; 4] {
            Slot::End
        } else {
            Slot::Invalid {
                reason: "record header runs past the segment",
            }
        };
    }
    let len = u32::from_le_bytes(map[pos..pos + 4].try_into().expect("4")) as usize;
    if len == 0 {
        return Slot::End;
    }
    let body_at = pos + RECORD_HEADER_BYTES;
    if body_at + len > map.len() {
        return Slot::Invalid {
            reason: "record length runs past the segment",
        };
    }
    let crc = u32::from_le_bytes(map[pos + 4..pos + 8].try_into().expect("4"));
    if crc32c::crc32c(&map[pos + 8..body_at + len]) != crc {
        return Slot::Invalid {
            reason: "checksum mismatch",
        };
    }
    Slot::Record(Record {
        sequence: u64::from_le_bytes(map[pos + 8..pos + 16].try_into().expect("8")),
        timestamp_unix_nanos: u64::from_le_bytes(map[pos + 16..pos + 24].try_into().expect("8")),
        body: &map[body_at..body_at + len],
        next: body_at + len,
    })
}

/// Checks a segment file's header and returns its base sequence.
pub fn header_base(path: &Path, map: &[u8]) -> Result<u64, StoreError> {
    if map.len() < SEGMENT_HEADER_BYTES || &map[..8] != MAGIC {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            offset: 0,
            reason: "not a segment file (bad magic)".into(),
        });
    }
    Ok(u64::from_le_bytes(map[8..16].try_into().expect("8 bytes")))
}

pub fn file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

impl Segment {
    /// Creates and preallocates a new segment. Preallocation reserves the disk blocks, so a
    /// full disk is reported here, before anything is acknowledged, and not as a fault later.
    pub fn create(dir: &Path, base: u64, size: usize) -> Result<Self, StoreError> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path, "create segment"))?;
        // SAFETY: fallocate on a descriptor we own, for a length we chose.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size as libc::off_t) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            let _ = std::fs::remove_file(&path);
            return Err(if err.raw_os_error() == Some(libc::ENOSPC) {
                StoreError::DiskFull { path }
            } else {
                StoreError::Io {
                    path,
                    op: "preallocate segment",
                    source: err,
                }
            });
        }
        // SAFETY: the file is ours, sized above, and only this shard maps or writes it.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io_err(&path, "map segment"))?;
        map[..8].copy_from_slice(MAGIC);
        map[8..16].copy_from_slice(&base.to_le_bytes());
        Ok(Self {
            path,
            base,
            file,
            map,
            end: SEGMENT_HEADER_BYTES,
            last_sequence: base - 1,
            first_timestamp_unix_nanos: 0,
            last_timestamp_unix_nanos: 0,
            index: Vec::new(),
            indexed_until: 0,
        })
    }

    /// Maps an existing segment. Its records are not checked here: see `recover`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err(path, "open segment"))?;
        // SAFETY: as in `create`; recovery runs before the shard serves anything.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(io_err(path, "map segment"))?;
        let base = header_base(path, &map)?;
        Ok(Self {
            path: path.to_owned(),
            base,
            file,
            map,
            end: SEGMENT_HEADER_BYTES,
            last_sequence: base - 1,
            first_timestamp_unix_nanos: 0,
            last_timestamp_unix_nanos: 0,
            index: Vec::new(),
            indexed_until: 0,
        })
    }

    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_sequence < self.base
    }

    /// Bytes of records in this segment.
    pub fn data_bytes(&self) -> usize {
        self.end - SEGMENT_HEADER_BYTES
    }

    /// A duplicate descriptor, for flushing off the reactor.
    pub fn file_clone(&self) -> io::Result<File> {
        self.file.try_clone()
    }

    /// Reads what is at `pos`.
    pub fn slot(&self, pos: usize) -> Slot<'_> {
        slot_in(&self.map[..], pos)
    }

    /// True when a record of `body_len` bytes fits.
    pub fn fits(&self, body_len: usize) -> bool {
        self.end + RECORD_HEADER_BYTES + body_len <= self.map.len()
    }

    /// Copies a record into the map. The caller checked `fits` and that `sequence` follows.
    pub fn append(&mut self, sequence: u64, timestamp_unix_nanos: u64, body: &[u8]) {
        debug_assert!(self.fits(body.len()));
        debug_assert_eq!(
            sequence,
            self.last_sequence + 1,
            "segment sequences are gapless"
        );
        let pos = self.end;
        let body_at = pos + RECORD_HEADER_BYTES;
        let map = &mut self.map[..];
        map[pos + 8..pos + 16].copy_from_slice(&sequence.to_le_bytes());
        map[pos + 16..pos + 24].copy_from_slice(&timestamp_unix_nanos.to_le_bytes());
        map[body_at..body_at + body.len()].copy_from_slice(body);
        let crc = crc32c::crc32c(&map[pos + 8..body_at + body.len()]);
        map[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        // The length goes last: until it is written, the record reads as the end of data.
        map[pos..pos + 4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        self.accept(sequence, timestamp_unix_nanos, pos, body_at + body.len());
    }

    /// Notes a valid record at `pos` (on append and during recovery).
    pub fn accept(&mut self, sequence: u64, timestamp: u64, pos: usize, next: usize) {
        if self.is_empty() {
            self.first_timestamp_unix_nanos = timestamp;
        }
        if self.index.is_empty() || pos >= self.indexed_until {
            self.index.push(IndexEntry {
                sequence,
                timestamp_unix_nanos: timestamp,
                position: pos,
            });
            self.indexed_until = pos + INDEX_EVERY_BYTES;
        }
        self.last_sequence = sequence;
        self.last_timestamp_unix_nanos = timestamp;
        self.end = next;
    }

    /// Zeroes everything from `pos` on, so the data ends there.
    pub fn truncate_at(&mut self, pos: usize) -> Result<(), StoreError> {
        self.map[pos..].fill(0);
        self.map
            .flush_range(pos, self.map.len() - pos)
            .map_err(io_err(&self.path, "flush truncation"))?;
        self.end = pos;
        Ok(())
    }

    /// The position of the first record with `sequence >= seq` (or the end).
    pub fn position_of_sequence(&self, seq: u64) -> usize {
        let i = self.index.partition_point(|e| e.sequence <= seq);
        let mut pos = if i == 0 {
            SEGMENT_HEADER_BYTES
        } else {
            self.index[i - 1].position
        };
        while pos < self.end {
            match self.slot(pos) {
                Slot::Record(r) if r.sequence < seq => pos = r.next,
                _ => break,
            }
        }
        pos
    }

    /// The position of the first record with `timestamp >= t` (timestamps never decrease).
    pub fn position_of_time(&self, t: u64) -> usize {
        let i = self.index.partition_point(|e| e.timestamp_unix_nanos < t);
        let mut pos = if i == 0 {
            SEGMENT_HEADER_BYTES
        } else {
            self.index[i - 1].position
        };
        while pos < self.end {
            match self.slot(pos) {
                Slot::Record(r) if r.timestamp_unix_nanos < t => pos = r.next,
                _ => break,
            }
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_then_read_back_and_find_by_sequence_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Segment::create(dir.path(), 10, 64 << 10).unwrap();
        for i in 0..100u64 {
            let body = vec![i as u8; 100];
            assert!(s.fits(body.len()));
            s.append(10 + i, 1000 + i * 10, &body);
        }
        assert_eq!(s.last_sequence, 109);
        let pos = s.position_of_sequence(50);
        match s.slot(pos) {
            Slot::Record(r) => {
                assert_eq!(r.sequence, 50);
                assert_eq!(r.body, &[40u8; 100][..]);
            }
            other => panic!("{other:?}"),
        }
        match s.slot(s.position_of_time(1205)) {
            Slot::Record(r) => assert_eq!(r.sequence, 31),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.slot(s.end), Slot::End));
        assert_eq!(s.position_of_sequence(1000), s.end);
    }

    #[test]
    fn a_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Segment::create(dir.path(), 1, 4096).unwrap();
        s.append(1, 5, b"hello");
        s.map[SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + 1] ^= 1;
        assert!(matches!(s.slot(SEGMENT_HEADER_BYTES), Slot::Invalid { .. }));
    }
}
