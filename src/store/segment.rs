//! One segment file: preallocated, memory-mapped, a header, records back to back, and a
//! trailer holding the durable position.
//!
//! ```text
//! header:  magic "ARQSEG02" (8) | base sequence u64 LE (8)
//! record:  len u32 | crc32c u32 | sequence u64 | timestamp u64 | envelope bytes (len)
//! trailer: the last TRAILER_BYTES of the file: magic "ARQDUR01" (8) | durable position
//!          (segment base u64 | position u64 | sequence u64 | crc32c u32), zeros after
//! ```
//!
//! The CRC covers sequence, timestamp and bytes. A `len` of zero ends the data: the file is
//! preallocated with zeros, and recovery zeroes whatever follows a torn record.
//!
//! The trailer is rewritten through the map by every group commit with the position the
//! *previous* commit made durable, and synced with the commit's records, so it never claims a
//! record that is not on disk; recovery takes the highest valid trailer (and the checkpoint) as
//! the line before which a bad record is corruption, never a torn tail.
//!
//! Segments written before the trailer existed (magic "ARQSEG01") have records up to the end of
//! the file and no trailer. They are read as before and never appended to again: the first
//! append after recovery rolls to a new segment.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use super::guard::Guard;
use super::{Checkpoint, StoreError};

const MAGIC: &[u8; 8] = b"ARQSEG02";
/// Segments from before the trailer: records run to the end of the file.
const MAGIC_V1: &[u8; 8] = b"ARQSEG01";
const TRAILER_MAGIC: &[u8; 8] = b"ARQDUR01";
pub const SEGMENT_HEADER_BYTES: usize = 16;
pub const RECORD_HEADER_BYTES: usize = 24;
/// Bytes at the end of a segment that hold the durable position, not records.
pub const TRAILER_BYTES: usize = 64;
/// Highest base sequence a segment may name: far past any real log, and low enough that
/// sequence arithmetic on what a file says can never wrap.
const MAX_BASE: u64 = 1 << 62;
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
    /// Declared before `map`, so it is unregistered before the map is unmapped.
    guard: Guard,
    map: MmapMut,
    /// Where the record area ends (the trailer, or the end of a legacy file).
    limit: usize,
    /// A legacy segment: read, never appended to.
    sealed: bool,
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
    if pos.saturating_add(RECORD_HEADER_BYTES) > map.len() {
        return if pos.saturating_add(4) > map.len() || map[pos..pos + 4] == [0; 4] {
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
    if len > map.len() - body_at {
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

/// What a segment's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub base: u64,
    /// Where records end: before the trailer, or the end of a legacy file.
    pub limit: usize,
    pub legacy: bool,
}

/// Checks a segment file's header: the magic, a base sequence from 1 to `MAX_BASE`, and room
/// for the trailer.
pub fn header(path: &Path, map: &[u8]) -> Result<Header, StoreError> {
    let bad = |offset: usize, reason: &str| StoreError::Corrupt {
        path: path.to_owned(),
        offset,
        reason: reason.to_owned(),
    };
    if map.len() < SEGMENT_HEADER_BYTES {
        return Err(bad(0, "file is shorter than a segment header"));
    }
    let legacy = match &map[..8] {
        m if m == MAGIC => false,
        m if m == MAGIC_V1 => true,
        m if m == [0u8; 8] => return Err(bad(0, "segment header is zeroed")),
        _ => return Err(bad(0, "not a segment file (bad magic)")),
    };
    let base = u64::from_le_bytes(map[8..16].try_into().expect("8 bytes"));
    if base == 0 || base > MAX_BASE {
        return Err(bad(
            8,
            &format!("segment base sequence {base} is out of range"),
        ));
    }
    let limit = if legacy {
        map.len()
    } else if map.len() >= SEGMENT_HEADER_BYTES + TRAILER_BYTES {
        map.len() - TRAILER_BYTES
    } else {
        return Err(bad(0, "segment is too short for its trailer"));
    };
    Ok(Header {
        base,
        limit,
        legacy,
    })
}

/// True when a file's first bytes are those of a segment that was created but never reached
/// the disk: shorter than a header, or a header of zeros.
pub fn never_written(path: &Path) -> Result<bool, StoreError> {
    use std::io::Read;
    let mut head = [0u8; SEGMENT_HEADER_BYTES];
    let mut file = File::open(path).map_err(io_err(path, "open segment"))?;
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path, "read segment header")(e)),
        }
    }
    Ok(head[..got].iter().all(|b| *b == 0))
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

/// A seam for the integration tests: a slow disk, made by sleeping in every segment creation.
/// Never set outside tests.
#[doc(hidden)]
pub mod testing {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    static CREATE_DELAY_MS: AtomicU64 = AtomicU64::new(0);

    /// Makes every segment creation in this process take `delay` longer, as if the disk were
    /// slow to preallocate.
    pub fn delay_segment_creation(delay: Duration) {
        CREATE_DELAY_MS.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub(super) fn delay() {
        let ms = CREATE_DELAY_MS.load(Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

impl Segment {
    /// Creates and preallocates a new segment. Preallocation reserves the disk blocks, so a
    /// full disk is reported here, before anything is acknowledged, and not as a fault later.
    pub fn create(dir: &Path, base: u64, size: usize) -> Result<Self, StoreError> {
        let path = dir.join(file_name(base));
        assert!(
            size >= SEGMENT_HEADER_BYTES + TRAILER_BYTES + RECORD_HEADER_BYTES,
            "config validation keeps segments larger than a frame"
        );
        assert!((1..=MAX_BASE).contains(&base), "sequences start at 1");
        testing::delay();
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
        // SAFETY: the file is ours, sized above, and only this shard maps or writes it. A
        // truncation by someone else is caught by the guard registered below.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io_err(&path, "map segment"))?;
        let guard = Guard::register(map.as_ptr(), map.len());
        if let Err(e) = map.advise(memmap2::Advice::Random) {
            tracing::debug!(path = %path.display(), error = %e, "madvise failed");
        }
        map[..8].copy_from_slice(MAGIC);
        map[8..16].copy_from_slice(&base.to_le_bytes());
        Ok(Self {
            path,
            base,
            file,
            guard,
            limit: map.len() - TRAILER_BYTES,
            map,
            sealed: false,
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
        let guard = Guard::register(map.as_ptr(), map.len());
        let Header {
            base,
            limit,
            legacy,
        } = header(path, &map)?;
        Ok(Self {
            path: path.to_owned(),
            base,
            file,
            guard,
            map,
            limit,
            sealed: legacy,
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

    /// Tells the kernel how the map is used. While the segment takes appends: no readahead on
    /// a fault. A fault in the preallocated (unwritten) part otherwise reads ahead, as zeroed
    /// folios, far more than the page touched — on Linux 6.x about 5 ms of kernel time per MB
    /// appended, against 1.5 ms without readahead and 0.6 ms when `WarmJob` has brought the
    /// pages in first (measured on a 256 MB segment). Once the segment is history, reads
    /// (recovery, replay) are sequential and readahead helps. Advice only: failures are ignored.
    pub fn advise_appending(&self, appending: bool) {
        let advice = if appending {
            memmap2::Advice::Random
        } else {
            memmap2::Advice::Normal
        };
        if let Err(e) = self.map.advise(advice) {
            tracing::debug!(path = %self.path.display(), error = %e, "madvise failed");
        }
    }

    /// The byte range appends have not reached yet.
    pub fn unwritten(&self) -> std::ops::Range<usize> {
        self.end..self.map.len()
    }

    /// Where the record area ends.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A legacy segment (no trailer): read, never appended to.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// The offset of the first access that found no file behind the map (the file shrank
    /// under the bus, or its page could not be read), if one did.
    pub fn faulted(&self) -> Option<usize> {
        self.guard.faulted()
    }

    /// The file's length now, against what the map expects: `Err` when it shrank.
    pub fn check_length(file: &File, path: &Path, expected: usize) -> Result<(), StoreError> {
        let len = file.metadata().map_err(io_err(path, "stat segment"))?.len();
        if len < expected as u64 {
            return Err(StoreError::Unreadable {
                path: path.to_owned(),
                offset: len as usize,
                reason: format!("the file shrank to {len} bytes under the bus (it was {expected})"),
            });
        }
        Ok(())
    }

    /// Reads what is at `pos`.
    pub fn slot(&self, pos: usize) -> Slot<'_> {
        slot_in(&self.map[..self.limit], pos)
    }

    /// True when a record of `body_len` bytes fits.
    pub fn fits(&self, body_len: usize) -> bool {
        !self.sealed
            && self
                .end
                .checked_add(RECORD_HEADER_BYTES)
                .and_then(|n| n.checked_add(body_len))
                .is_some_and(|n| n <= self.limit)
    }

    /// True when a record of `body_len` bytes fits in a fresh segment of `size` bytes.
    pub fn fits_in_new(size: usize, body_len: usize) -> bool {
        SEGMENT_HEADER_BYTES + RECORD_HEADER_BYTES + TRAILER_BYTES + body_len <= size
    }

    /// Writes the durable position into the trailer (through the map: the next sync of this
    /// file carries it). Legacy segments have no trailer.
    pub fn write_durable(&mut self, cp: &Checkpoint) {
        if self.sealed {
            return;
        }
        let at = self.limit;
        let encoded = cp.encode();
        let map = &mut self.map[..];
        map[at + 8..at + 8 + encoded.len()].copy_from_slice(&encoded);
        map[at..at + 8].copy_from_slice(TRAILER_MAGIC);
    }

    /// The durable position in the trailer: `Ok(None)` when there is none yet (zeros, or a
    /// legacy segment), `Err` when the trailer is damaged.
    pub fn read_durable(&self) -> Result<Option<Checkpoint>, StoreError> {
        if self.sealed {
            return Ok(None);
        }
        let t = &self.map[self.limit..];
        if t.iter().all(|b| *b == 0) {
            return Ok(None);
        }
        let cp = (&t[..8] == TRAILER_MAGIC)
            .then(|| Checkpoint::decode(&t[8..8 + super::checkpoint::LEN]))
            .flatten();
        match cp {
            Some(cp) => Ok(Some(cp)),
            None => Err(StoreError::Corrupt {
                path: self.path.clone(),
                offset: self.limit,
                reason: "the durable-position trailer is damaged".into(),
            }),
        }
    }

    /// The first position after `from` that holds a valid record with a sequence above
    /// `after`: a bad record with valid ones behind it is not a torn tail. Only ranges the
    /// file has data in are looked at (SEEK_DATA), so a preallocated tail costs nothing.
    pub fn valid_record_after(&self, from: usize, after: u64) -> Option<usize> {
        let area = &self.map[..self.limit];
        let mut pos = from + 1;
        while pos + RECORD_HEADER_BYTES <= area.len() {
            let (start, stop) = self.data_range(pos, area.len())?;
            pos = start;
            while pos < stop && pos + RECORD_HEADER_BYTES <= area.len() {
                let seq = u64::from_le_bytes(area[pos + 8..pos + 16].try_into().expect("8"));
                if seq > after && seq - after < (1 << 32) {
                    if let Slot::Record(r) = slot_in(area, pos) {
                        if r.sequence == seq {
                            return Some(pos);
                        }
                    }
                }
                pos += 1;
            }
            pos = stop.max(pos);
        }
        None
    }

    /// The next range from `pos` that the file has data in, as far as the file system says
    /// (a file system without SEEK_DATA reports all of it).
    fn data_range(&self, pos: usize, limit: usize) -> Option<(usize, usize)> {
        if pos >= limit {
            return None;
        }
        let fd = self.file.as_raw_fd();
        // SAFETY: lseek on a descriptor we own; it only reports offsets.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        let start = match data {
            d if d >= 0 => d as usize,
            _ if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) => return None,
            _ => pos,
        };
        if start >= limit {
            return None;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, start as libc::off_t, libc::SEEK_HOLE) };
        let stop = if hole < 0 {
            limit
        } else {
            (hole as usize).min(limit)
        };
        Some((start, stop.max(start + 1)))
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
        self.zero_from(pos);
        self.map
            .flush_range(pos, self.limit - pos)
            .map_err(io_err(&self.path, "flush truncation"))?;
        Ok(())
    }

    /// Zeroes the record area from `pos` on and forgets what was there, without syncing:
    /// records nobody was told about become unreachable to this process and to a restart.
    /// Only ranges the file has data in are written, so a preallocated tail stays sparse.
    pub fn zero_from(&mut self, pos: usize) {
        let pos = pos.clamp(SEGMENT_HEADER_BYTES, self.limit);
        let mut at = pos;
        while let Some((start, stop)) = self.data_range(at, self.limit) {
            let start = start.max(at);
            self.map[start..stop].fill(0);
            at = stop;
        }
        self.end = pos;
        self.index.retain(|e| e.position < pos);
        self.indexed_until = self
            .index
            .last()
            .map_or(0, |e| e.position + INDEX_EVERY_BYTES);
    }

    /// Zeroes the whole segment, header included: recovery takes it for a segment that never
    /// reached the disk (it lies past the durable position) and removes it.
    pub fn erase(&mut self) {
        self.zero_from(SEGMENT_HEADER_BYTES);
        self.map[..SEGMENT_HEADER_BYTES].fill(0);
        self.last_sequence = self.base - 1;
    }

    /// Forgets every record from `pos` on (which holds `sequence`'s successor): zeroed in the
    /// map, the in-memory end and last sequence moved back.
    pub fn discard_from(&mut self, pos: usize, last_sequence: u64) {
        self.zero_from(pos);
        self.last_sequence = last_sequence.max(self.base - 1);
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
