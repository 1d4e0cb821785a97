//! The receiving side of delta-only topics (docs/delta.md): applying an ArqonDelta 1 delta to a
//! base state, and the per-topic chain a subscriber keeps (keyframes, deltas on the right base,
//! a CRC-32 check after each). Written from the document, not from the server's encoder, so
//! the harness checks the bus rather than sharing its mistakes.

use std::fmt;

/// Why a delta or a pulse of a chain was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaError {
    Malformed(&'static str),
    /// The delta's base is not the state the receiver holds.
    WrongBase {
        held: Option<u64>,
        wanted: u64,
    },
    /// The state after applying (or a keyframe) does not have the announced CRC-32.
    Checksum {
        sequence: u64,
        announced: u32,
        computed: u32,
    },
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeltaError::Malformed(why) => write!(f, "malformed delta: {why}"),
            DeltaError::WrongBase { held, wanted } => write!(
                f,
                "delta on base {wanted}, but the state held is of {}",
                held.map(|h| h.to_string())
                    .unwrap_or_else(|| "nothing".into())
            ),
            DeltaError::Checksum {
                sequence,
                announced,
                computed,
            } => write!(
                f,
                "pulse {sequence}: CRC-32 {computed:08x} of the state, {announced:08x} announced"
            ),
        }
    }
}

impl std::error::Error for DeltaError {}

fn varint(delta: &[u8], pos: &mut usize) -> Result<u64, DeltaError> {
    let mut value = 0u64;
    for i in 0..10 {
        let b = *delta
            .get(*pos)
            .ok_or(DeltaError::Malformed("truncated varint"))?;
        *pos += 1;
        if i == 9 && b > 1 {
            return Err(DeltaError::Malformed("varint overflows 64 bits"));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DeltaError::Malformed("varint longer than 10 bytes"))
}

/// Applies an ArqonDelta 1 `delta` to `base` and returns the target.
pub fn apply(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut pos = 0;
    let target_len = usize::try_from(varint(delta, &mut pos)?)
        .map_err(|_| DeltaError::Malformed("target length"))?;
    // The target length is only a claim until the ops fill it: reserve no more than the delta
    // and the base could produce.
    let mut out = Vec::with_capacity(target_len.min(base.len() + delta.len()));
    while pos < delta.len() {
        let op = varint(delta, &mut pos)?;
        let n = usize::try_from(op >> 2).map_err(|_| DeltaError::Malformed("op length"))?;
        if n == 0 {
            return Err(DeltaError::Malformed("an op of length 0"));
        }
        if out.len().checked_add(n).is_none_or(|end| end > target_len) {
            return Err(DeltaError::Malformed("output grows past the target length"));
        }
        match op & 3 {
            0 => {
                let from = out.len();
                let bytes = base
                    .get(from..from + n)
                    .ok_or(DeltaError::Malformed("SKIP past the end of the base"))?;
                out.extend_from_slice(bytes);
            }
            1 => {
                let bytes = delta
                    .get(pos..pos + n)
                    .ok_or(DeltaError::Malformed("INSERT past the end of the delta"))?;
                out.extend_from_slice(bytes);
                pos += n;
            }
            2 => {
                let offset = usize::try_from(varint(delta, &mut pos)?)
                    .map_err(|_| DeltaError::Malformed("COPY offset"))?;
                let bytes = offset
                    .checked_add(n)
                    .and_then(|end| base.get(offset..end))
                    .ok_or(DeltaError::Malformed("COPY past the end of the base"))?;
                out.extend_from_slice(bytes);
            }
            _ => return Err(DeltaError::Malformed("reserved op tag 3")),
        }
    }
    if out.len() != target_len {
        return Err(DeltaError::Malformed(
            "output shorter than the target length",
        ));
    }
    Ok(out)
}

/// CRC-32/ISO-HDLC, as zlib.crc32 computes it.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// One subscription's state of one topic.
#[derive(Debug, Default, Clone)]
pub struct Chain {
    pub state: Vec<u8>,
    /// The sequence of `state`; `None` before the first keyframe.
    pub sequence: Option<u64>,
    pub keyframes: u64,
    pub deltas: u64,
}

impl Chain {
    /// Takes one pulse of the topic: `keyframe` with the whole state in `value`, or a delta on
    /// `base_sequence`. The state is kept only when its CRC is `checksum`.
    pub fn take(
        &mut self,
        sequence: u64,
        keyframe: bool,
        base_sequence: u64,
        checksum: u32,
        value: &[u8],
    ) -> Result<(), DeltaError> {
        let next = if keyframe {
            value.to_vec()
        } else {
            if self.sequence != Some(base_sequence) {
                return Err(DeltaError::WrongBase {
                    held: self.sequence,
                    wanted: base_sequence,
                });
            }
            apply(&self.state, value)?
        };
        let computed = crc32(&next);
        if computed != checksum {
            return Err(DeltaError::Checksum {
                sequence,
                announced: checksum,
                computed,
            });
        }
        self.state = next;
        self.sequence = Some(sequence);
        if keyframe {
            self.keyframes += 1;
        } else {
            self.deltas += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    #[test]
    fn the_documented_examples_apply() {
        // docs/delta.md, "Examples".
        assert_eq!(
            apply(b"hello world", &hex("0b 2c")).unwrap(),
            b"hello world"
        );
        assert_eq!(
            apply(b"hello world", &hex("0b 18 05 57 10")).unwrap(),
            b"hello World"
        );
        assert_eq!(apply(b"", &hex("03 0d 61 62 63")).unwrap(), b"abc");
        assert_eq!(apply(b"abcdef", &hex("02 0a 02")).unwrap(), b"cd");
        assert_eq!(apply(b"", &hex("00")).unwrap(), b"");
    }

    #[test]
    fn every_documented_error_is_refused() {
        let bad = |base: &[u8], d: &str| apply(base, &hex(d)).unwrap_err();
        assert_eq!(
            bad(b"abc", "03 00"),
            DeltaError::Malformed("an op of length 0")
        );
        assert!(
            matches!(bad(b"ab", "03 0c"), DeltaError::Malformed(_)),
            "SKIP past base"
        );
        assert!(
            matches!(bad(b"abc", "03 0e 01"), DeltaError::Malformed(_)),
            "COPY past base"
        );
        assert!(
            matches!(bad(b"", "03 0d 61"), DeltaError::Malformed(_)),
            "INSERT past delta"
        );
        assert!(
            matches!(bad(b"abcd", "02 10"), DeltaError::Malformed(_)),
            "grows past len"
        );
        assert!(
            matches!(bad(b"abc", "03 08"), DeltaError::Malformed(_)),
            "too short"
        );
        assert!(
            matches!(bad(b"abc", "03 0f"), DeltaError::Malformed(_)),
            "tag 3"
        );
        assert!(
            matches!(bad(b"abc", "03 8c"), DeltaError::Malformed(_)),
            "truncated varint"
        );
        assert!(
            matches!(
                bad(b"", "ff ff ff ff ff ff ff ff ff 7f"),
                DeltaError::Malformed(_)
            ),
            "overflow"
        );
    }

    #[test]
    fn crc_is_zlibs() {
        // zlib.crc32(b"123456789") == 0xcbf43926, the CRC-32/ISO-HDLC check value.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn a_chain_keeps_only_proven_states() {
        let mut c = Chain::default();
        let wrong_base = c.take(2, false, 1, crc32(b"hello world"), &hex("0b 2c"));
        assert!(matches!(
            wrong_base,
            Err(DeltaError::WrongBase { held: None, .. })
        ));
        c.take(1, true, 0, crc32(b"hello world"), b"hello world")
            .unwrap();
        c.take(2, false, 1, crc32(b"hello World"), &hex("0b 18 05 57 10"))
            .unwrap();
        assert_eq!(c.state, b"hello World");
        // A wrong checksum leaves the state as it was.
        let bad = c.take(3, false, 2, 0xdead_beef, &hex("0b 2c"));
        assert!(matches!(bad, Err(DeltaError::Checksum { .. })));
        assert_eq!((c.sequence, c.keyframes, c.deltas), (Some(2), 1, 1));
        let stale = c.take(4, false, 1, crc32(b"hello world"), &hex("0b 2c"));
        assert!(matches!(
            stale,
            Err(DeltaError::WrongBase { held: Some(2), .. })
        ));
    }
}
