//! The bytes every benchmark pulse carries: a fixed header with who sent it, its place in the
//! sender's sequence and two timestamps, then padding up to the requested payload size.
//!
//! Publisher and subscribers run in the same process, so both timestamps are nanoseconds since
//! one process-wide monotonic epoch ([`now_ns`]); no clock synchronisation is involved.

use std::sync::OnceLock;
use std::time::Instant;

use arqonbus_proto::v1::SpectralMetadata;
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

/// `ARB1` in ASCII: marks a payload this harness wrote.
const MAGIC: u32 = 0x4152_4231;

/// Size of the header; the smallest payload the harness can send.
pub const HEADER_BYTES: usize = 40;

/// Set on pulses sent during warm-up: they count for loss but not for latency.
pub const FLAG_WARMUP: u32 = 1;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the harness's monotonic epoch (the first call).
pub fn now_ns() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    epoch.elapsed().as_nanos() as u64
}

/// What a benchmark pulse says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub publisher: u32,
    /// Position in this publisher's sequence, from 0.
    pub seq: u64,
    /// Index of the reality (subject) it was sent to.
    pub reality: u32,
    pub flags: u32,
    /// When the open-loop schedule meant to send it (equal to `sent_ns` for closed-loop runs).
    pub intended_ns: u64,
    /// When the publisher actually handed it to the client library or socket buffer.
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header followed by zero padding, `size` bytes in all (at least the header).
    pub fn write(&self, out: &mut impl BufMut, size: usize) {
        let size = size.max(HEADER_BYTES);
        out.put_u32_le(MAGIC);
        out.put_u32_le(self.publisher);
        out.put_u64_le(self.seq);
        out.put_u32_le(self.reality);
        out.put_u32_le(self.flags);
        out.put_u64_le(self.intended_ns);
        out.put_u64_le(self.sent_ns);
        out.put_bytes(0, size - HEADER_BYTES);
    }

    /// A fresh payload of `size` bytes carrying this header.
    pub fn to_payload(self, size: usize) -> Bytes {
        let mut out = BytesMut::with_capacity(size.max(HEADER_BYTES));
        self.write(&mut out, size);
        out.freeze()
    }

    /// Reads the header back; `None` when the bytes were not written by this harness.
    pub fn read(bytes: &[u8]) -> Option<Header> {
        if bytes.len() < HEADER_BYTES {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        if u32_at(0) != MAGIC {
            return None;
        }
        Some(Header {
            publisher: u32_at(4),
            seq: u64_at(8),
            reality: u32_at(16),
            flags: u32_at(20),
            intended_ns: u64_at(24),
            sent_ns: u64_at(32),
        })
    }

    pub fn is_warmup(&self) -> bool {
        self.flags & FLAG_WARMUP != 0
    }
}

/// A payload for a bus that has no spectral envelope field (NATS): the header, a 2-byte
/// little-endian length, the protobuf-encoded `SpectralMetadata`, then zero padding up to `size`.
/// The bus carries exactly the information ArqonBus carries in `ArqonMessage.spectral`.
pub fn with_spectral(header: &Header, size: usize, spectral: &SpectralMetadata) -> Bytes {
    let encoded = spectral.encode_to_vec();
    let used = HEADER_BYTES + 2 + encoded.len();
    let mut out = BytesMut::with_capacity(size.max(used));
    header.write(&mut out, HEADER_BYTES);
    out.put_u16_le(encoded.len() as u16);
    out.put_slice(&encoded);
    out.put_bytes(0, size.saturating_sub(used));
    out.freeze()
}

/// The spectral metadata [`with_spectral`] put after the header; `None` when it is not there.
pub fn read_spectral(bytes: &[u8]) -> Option<SpectralMetadata> {
    let rest = bytes.get(HEADER_BYTES..)?;
    let len = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    SpectralMetadata::decode(rest.get(2..2 + len)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spectral_rides_after_the_header() {
        let h = Header {
            publisher: 3,
            seq: 9,
            reality: 0,
            flags: 0,
            intended_ns: 1,
            sent_ns: 2,
        };
        let sp = SpectralMetadata {
            coherence: 0.25,
            criticality: 0.5,
            eigenvalues: vec![1.0, -2.5, 3.75],
        };
        for size in [0, 64, 1024] {
            let p = with_spectral(&h, size, &sp);
            assert!(p.len() >= size);
            assert_eq!(Header::read(&p), Some(h));
            assert_eq!(read_spectral(&p), Some(sp.clone()));
        }
        assert_eq!(read_spectral(&h.to_payload(40)), None);
    }

    #[test]
    fn header_round_trips_and_pads_to_size() {
        let h = Header {
            publisher: 7,
            seq: u64::MAX - 3,
            reality: 2,
            flags: FLAG_WARMUP,
            intended_ns: 123_456_789,
            sent_ns: 123_999_999,
        };
        let p = h.to_payload(1024);
        assert_eq!(p.len(), 1024);
        assert_eq!(Header::read(&p), Some(h));
        assert!(Header::read(&p).unwrap().is_warmup());
        // Too small a size still carries the whole header.
        assert_eq!(h.to_payload(8).len(), HEADER_BYTES);
    }

    #[test]
    fn foreign_bytes_are_not_a_header() {
        assert_eq!(Header::read(b"short"), None);
        assert_eq!(Header::read(&[0u8; 64]), None);
    }
}
