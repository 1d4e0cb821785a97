//! The checkpoint: the last position known to be on disk, written every
//! `storage.checkpoint_interval_ms` and at shutdown. Each group commit also leaves the position
//! in the active segment's trailer (`segment.rs`), in the same 28-byte encoding; recovery takes
//! the later of the two, checks every record before it strictly and only allows a torn tail
//! after it.

use std::io::Write;
use std::path::Path;

use super::StoreError;

const FILE: &str = "checkpoint";
const TMP: &str = "checkpoint.tmp";
pub(super) const LEN: usize = 28;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub segment_base: u64,
    /// Byte position in that segment just after the last durable record.
    pub position: u64,
    pub sequence: u64,
}

impl Checkpoint {
    /// True when `(segment_base, pos)` lies before the durable position.
    pub fn covers(&self, segment_base: u64, pos: usize) -> bool {
        segment_base < self.segment_base
            || (segment_base == self.segment_base && (pos as u64) < self.position)
    }

    /// Decodes `encode`'s bytes; `None` when the length or the CRC is wrong.
    pub(super) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != LEN {
            return None;
        }
        let crc = u32::from_le_bytes(bytes[24..28].try_into().ok()?);
        if crc32c::crc32c(&bytes[..24]) != crc {
            return None;
        }
        let word = |i: usize| bytes[i..i + 8].try_into().ok().map(u64::from_le_bytes);
        Some(Self {
            segment_base: word(0)?,
            position: word(8)?,
            sequence: word(16)?,
        })
    }

    pub(super) fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..8].copy_from_slice(&self.segment_base.to_le_bytes());
        b[8..16].copy_from_slice(&self.position.to_le_bytes());
        b[16..24].copy_from_slice(&self.sequence.to_le_bytes());
        let crc = crc32c::crc32c(&b[..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads the checkpoint; a reality without one starts from nothing durable.
    pub fn read(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(StoreError::Io {
                    path,
                    op: "read checkpoint",
                    source,
                })
            }
        };
        let bad = |reason: &str| StoreError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: reason.to_owned(),
        };
        if bytes.len() != LEN {
            return Err(bad("checkpoint has the wrong size"));
        }
        Self::decode(&bytes).ok_or_else(|| bad("checkpoint checksum mismatch"))
    }

    /// Writes the checkpoint atomically (temporary file, fsync, rename, fsync the directory).
    /// Blocking: call it off the reactor.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(TMP);
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&self.encode())?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join(FILE))?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), Checkpoint::default());
        let cp = Checkpoint {
            segment_base: 7,
            position: 1234,
            sequence: 99,
        };
        cp.write(dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), cp);
        let path = dir.path().join(FILE);
        let mut b = std::fs::read(&path).unwrap();
        b[3] ^= 1;
        std::fs::write(&path, b).unwrap();
        assert!(Checkpoint::read(dir.path()).is_err());
    }
}
