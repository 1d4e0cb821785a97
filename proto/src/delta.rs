//! ArqonDelta 1: the byte format of a delta between two states (docs/delta.md), shared by the
//! bus (which encodes) and every Rust receiver (which applies and checks).
//!
//! ```text
//! delta := varint(len(T)) op*
//! op    := varint(n << 2 | tag) operand
//!          tag 0 SKIP   copy n bytes of B at the current output position
//!          tag 1 INSERT n literal bytes follow
//!          tag 2 COPY   varint(offset): copy n bytes of B from offset
//! ```
//!
//! [`apply`] is what every receiver runs on bytes from the wire, so it checks everything and
//! never allocates more than the declared target length (itself bounded by the caller).

use std::fmt;

const SKIP: u64 = 0;
const INSERT: u64 = 1;
const COPY: u64 = 2;
/// Equal runs shorter than this are folded into the inserts around them: a SKIP costs a varint,
/// and splitting an insert costs another.
const MIN_SKIP: usize = 4;

/// Why a delta could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// A varint ran past the end of the delta or past 64 bits.
    BadVarint { at: usize },
    /// The declared target is larger than the caller allows.
    TooLarge { declared: u64, max: usize },
    /// An op of length zero, or the reserved tag 3.
    BadOp { at: usize },
    /// A SKIP or COPY reads past the end of the base.
    PastBase { at: usize },
    /// An INSERT runs past the end of the delta.
    Truncated { at: usize },
    /// The output would grow past, or end short of, the declared length.
    WrongLength { declared: u64, actual: u64 },
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadVarint { at } => write!(f, "malformed varint at byte {at}"),
            Self::TooLarge { declared, max } => {
                write!(
                    f,
                    "declared state of {declared} bytes is over the {max}-byte limit"
                )
            }
            Self::BadOp { at } => write!(f, "invalid op at byte {at}"),
            Self::PastBase { at } => write!(f, "op at byte {at} reads past the end of the base"),
            Self::Truncated { at } => write!(f, "insert at byte {at} runs past the end"),
            Self::WrongLength { declared, actual } => write!(
                f,
                "the ops make {actual} bytes where the delta declares {declared}"
            ),
        }
    }
}

impl std::error::Error for ApplyError {}

/// CRC-32 (IEEE 802.3, as `zlib.crc32`) of a state: `DeltaInfo.checksum`.
pub fn checksum(state: &[u8]) -> u32 {
    crc32fast::hash(state)
}

/// Applies `delta` to `base`. The target may be at most `max_len` bytes.
pub fn apply(base: &[u8], delta: &[u8], max_len: usize) -> Result<Vec<u8>, ApplyError> {
    let mut at = 0;
    let declared = read_varint(delta, &mut at)?;
    if declared > max_len as u64 {
        return Err(ApplyError::TooLarge {
            declared,
            max: max_len,
        });
    }
    let target_len = declared as usize;
    let mut out = Vec::with_capacity(target_len);
    while at < delta.len() {
        let op_at = at;
        let word = read_varint(delta, &mut at)?;
        let (n, tag) = (word >> 2, word & 3);
        if n == 0 || tag == 3 {
            return Err(ApplyError::BadOp { at: op_at });
        }
        if n > (target_len - out.len()) as u64 {
            return Err(ApplyError::WrongLength {
                declared,
                actual: out.len() as u64 + n,
            });
        }
        let n = n as usize;
        match tag {
            SKIP | COPY => {
                let from = if tag == SKIP {
                    out.len()
                } else {
                    let offset = read_varint(delta, &mut at)?;
                    usize::try_from(offset).map_err(|_| ApplyError::PastBase { at: op_at })?
                };
                let end = from
                    .checked_add(n)
                    .filter(|end| *end <= base.len())
                    .ok_or(ApplyError::PastBase { at: op_at })?;
                out.extend_from_slice(&base[from..end]);
            }
            _ => {
                let end = at
                    .checked_add(n)
                    .filter(|end| *end <= delta.len())
                    .ok_or(ApplyError::Truncated { at: op_at })?;
                out.extend_from_slice(&delta[at..end]);
                at = end;
            }
        }
    }
    if out.len() != target_len {
        return Err(ApplyError::WrongLength {
            declared,
            actual: out.len() as u64,
        });
    }
    Ok(out)
}

/// A delta from `base` to `target`: the common prefix and suffix are copied; between them,
/// equal-length regions become SKIP and INSERT runs, others one INSERT.
pub fn encode(base: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    put_varint(&mut out, target.len() as u64);
    let prefix = base.iter().zip(target).take_while(|(a, b)| a == b).count();
    let room = base.len().min(target.len()) - prefix;
    let suffix = base
        .iter()
        .rev()
        .zip(target.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    put_op(&mut out, SKIP, prefix);
    let (b_mid, t_mid) = (
        &base[prefix..base.len() - suffix],
        &target[prefix..target.len() - suffix],
    );
    if b_mid.len() == t_mid.len() {
        encode_in_place(&mut out, b_mid, t_mid);
        put_op(&mut out, SKIP, suffix);
    } else {
        if !t_mid.is_empty() {
            put_op(&mut out, INSERT, t_mid.len());
            out.extend_from_slice(t_mid);
        }
        if suffix > 0 {
            put_op(&mut out, COPY, suffix);
            put_varint(&mut out, (base.len() - suffix) as u64);
        }
    }
    out
}

/// Equal-length regions: SKIP the runs that did not change (at least [`MIN_SKIP`] long),
/// INSERT the rest.
fn encode_in_place(out: &mut Vec<u8>, base: &[u8], target: &[u8]) {
    let mut i = 0;
    let mut literal_from = 0;
    while i < target.len() {
        if base[i] != target[i] {
            i += 1;
            continue;
        }
        let run = base[i..]
            .iter()
            .zip(&target[i..])
            .take_while(|(a, b)| a == b)
            .count();
        if run >= MIN_SKIP {
            put_insert(out, &target[literal_from..i]);
            put_op(out, SKIP, run);
            literal_from = i + run;
        }
        i += run;
    }
    put_insert(out, &target[literal_from..]);
}

fn put_insert(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_op(out, INSERT, bytes.len());
        out.extend_from_slice(bytes);
    }
}

fn put_op(out: &mut Vec<u8>, tag: u64, n: usize) {
    if n > 0 {
        put_varint(out, (n as u64) << 2 | tag);
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u64, ApplyError> {
    let start = *at;
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let Some(&b) = bytes.get(*at) else {
            return Err(ApplyError::BadVarint { at: start });
        };
        *at += 1;
        let bits = u64::from(b & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(ApplyError::BadVarint { at: start });
        }
        v |= bits << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(ApplyError::BadVarint { at: start })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_documented_examples() {
        // docs/delta.md, "Examples".
        assert_eq!(hex(&encode(b"hello world", b"hello world")), "0b 2c");
        assert_eq!(
            hex(&encode(b"hello world", b"hello World")),
            "0b 18 05 57 10"
        );
        assert_eq!(hex(&encode(b"", b"abc")), "03 0d 61 62 63");
        assert_eq!(apply(b"abcdef", &[0x02, 0x0a, 0x02], 64).unwrap(), b"cd");
        for (b, t) in [
            (&b"hello world"[..], &b"hello world"[..]),
            (b"hello world", b"hello World"),
            (b"", b"abc"),
        ] {
            assert_eq!(apply(b, &encode(b, t), 64).unwrap(), t);
        }
    }

    #[test]
    fn scattered_changes_cost_little() {
        let base: Vec<u8> = (0..1024).map(|i| (i * 7) as u8).collect();
        let mut target = base.clone();
        for at in (0..1024).step_by(103) {
            target[at] ^= 0x5a;
        }
        let d = encode(&base, &target);
        assert!(d.len() < 60, "{} bytes for 10 changed bytes", d.len());
        assert_eq!(apply(&base, &d, 1024).unwrap(), target);
    }

    #[test]
    fn bad_deltas_are_refused() {
        let base = b"abcdef";
        let cases: &[(&[u8], ApplyError)] = &[
            (&[], ApplyError::BadVarint { at: 0 }),
            (&[0x80], ApplyError::BadVarint { at: 0 }),
            (&[0x02, 0x00], ApplyError::BadOp { at: 1 }),
            (&[0x02, 0x0b], ApplyError::BadOp { at: 1 }),
            (&[0x02, 0x09, b'x'], ApplyError::Truncated { at: 1 }),
            (&[0x02, 0x0a, 0x05], ApplyError::PastBase { at: 1 }),
            (
                &[0x08, 0x18],
                ApplyError::WrongLength {
                    declared: 8,
                    actual: 6,
                },
            ),
            (
                &[0x01, 0x08],
                ApplyError::WrongLength {
                    declared: 1,
                    actual: 2,
                },
            ),
            (
                &[0x03, 0x04],
                ApplyError::WrongLength {
                    declared: 3,
                    actual: 1,
                },
            ),
            (&[0xff; 11], ApplyError::BadVarint { at: 0 }),
        ];
        for (delta, want) in cases {
            assert_eq!(apply(base, delta, 64).as_ref(), Err(want), "{}", hex(delta));
        }
        assert_eq!(
            apply(base, &[0x7f], 64),
            Err(ApplyError::TooLarge {
                declared: 127,
                max: 64
            })
        );
        // A COPY whose offset plus length overflows is past the base, not a panic.
        let mut huge = vec![0x02, 0x0a];
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(apply(base, &huge, 64), Err(ApplyError::PastBase { at: 1 }));
    }

    fn mutated() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        let same_len = (proptest::collection::vec(any::<u8>(), 0..600))
            .prop_flat_map(|base| {
                let n = base.len();
                (
                    Just(base),
                    proptest::collection::vec((0..n.max(1), any::<u8>()), 0..40),
                )
            })
            .prop_map(|(base, edits)| {
                let mut target = base.clone();
                for (at, v) in edits {
                    if let Some(b) = target.get_mut(at) {
                        *b = v;
                    }
                }
                (base, target)
            });
        let any_pair = (
            proptest::collection::vec(any::<u8>(), 0..300),
            proptest::collection::vec(any::<u8>(), 0..300),
        );
        let spliced = (
            proptest::collection::vec(0u8..4, 0..400),
            0usize..400,
            0usize..50,
            proptest::collection::vec(0u8..4, 0..50),
        )
            .prop_map(|(base, at, cut, insert)| {
                let at = at.min(base.len());
                let cut = cut.min(base.len() - at);
                let mut target = base[..at].to_vec();
                target.extend_from_slice(&insert);
                target.extend_from_slice(&base[at + cut..]);
                (base, target)
            });
        prop_oneof![same_len, any_pair, spliced]
    }

    proptest! {
        #[test]
        fn encode_then_apply_round_trips((base, target) in mutated()) {
            let d = encode(&base, &target);
            prop_assert_eq!(apply(&base, &d, target.len()).unwrap(), target.clone());
            // Never much worse than sending the target whole.
            prop_assert!(d.len() <= target.len() + 12);
        }

        #[test]
        fn apply_never_panics_on_noise(
            base in proptest::collection::vec(any::<u8>(), 0..64),
            delta in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            if let Ok(out) = apply(&base, &delta, 256) {
                prop_assert!(out.len() <= 256);
            }
        }
    }
}
