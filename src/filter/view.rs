//! A borrowed view of the fields a filter reads, found by walking the encoded `ArqonMessage`
//! once, without decoding it and without allocating.
//!
//! The walk follows protobuf's rules for a message that repeats fields (which is what
//! concatenated encodings are): the last `topic`, `producer_id`, `coherence` and `criticality`
//! win, and every `eigenvalues` entry of every `spectral` occurrence counts, packed or not, in
//! order. Unknown fields are skipped. Anything malformed — a truncated field, a known field
//! with the wrong wire type, a packed run whose length is not a multiple of 8, a group, a
//! string that is not UTF-8 — makes [`PulseView::scan`] return `None`, and a filter never
//! admits such a pulse.

use prost::encoding::{decode_key, decode_varint, WireType};

/// `ArqonMessage` field numbers the view reads.
const TOPIC: u32 = 3;
const PRODUCER_ID: u32 = 4;
const SPECTRAL: u32 = 7;
const PAYLOAD: u32 = 8;
/// `google.protobuf.Any.type_url`.
const TYPE_URL: u32 = 1;
/// `SpectralMetadata` field numbers.
const COHERENCE: u32 = 1;
const CRITICALITY: u32 = 2;
const EIGENVALUES: u32 = 3;

/// The filterable fields of one pulse, borrowed from its encoded bytes.
#[derive(Debug, Clone, Copy)]
pub struct PulseView<'a> {
    pub topic: &'a str,
    pub producer: &'a str,
    /// `payload.type_url` ("" without a payload): what an operator's input schemas check.
    pub type_url: &'a str,
    pub coherence: f64,
    pub criticality: f64,
    eigenvalue_count: usize,
    eigenvalues: Eigenvalues<'a>,
}

/// Where the eigenvalues are.
#[derive(Debug, Clone, Copy)]
enum Eigenvalues<'a> {
    /// All of them in one run of little-endian doubles (what every encoder that packs writes).
    Contiguous(&'a [u8]),
    /// Spread over several runs or occurrences: indexing walks the envelope again.
    Scattered(&'a [u8]),
}

impl<'a> PulseView<'a> {
    /// Walks `envelope` (an encoded `ArqonMessage`); `None` when it is malformed.
    pub fn scan(envelope: &'a [u8]) -> Option<Self> {
        let mut view = Self {
            topic: "",
            producer: "",
            type_url: "",
            coherence: 0.0,
            criticality: 0.0,
            eigenvalue_count: 0,
            eigenvalues: Eigenvalues::Contiguous(&[]),
        };
        let mut buf = envelope;
        let mut topic: &[u8] = &[];
        let mut producer: &[u8] = &[];
        let mut type_url: &[u8] = &[];
        while !buf.is_empty() {
            let (field, wire) = decode_key(&mut buf).ok()?;
            match field {
                TOPIC => topic = len_delimited(&mut buf, wire)?,
                PRODUCER_ID => producer = len_delimited(&mut buf, wire)?,
                SPECTRAL => {
                    let spectral = len_delimited(&mut buf, wire)?;
                    view.fold_spectral(spectral, envelope)?;
                }
                PAYLOAD => {
                    let mut any = len_delimited(&mut buf, wire)?;
                    while !any.is_empty() {
                        let (field, wire) = decode_key(&mut any).ok()?;
                        match field {
                            TYPE_URL => type_url = len_delimited(&mut any, wire)?,
                            _ => skip(&mut any, wire)?,
                        }
                    }
                }
                _ => skip(&mut buf, wire)?,
            }
        }
        view.topic = std::str::from_utf8(topic).ok()?;
        view.producer = std::str::from_utf8(producer).ok()?;
        view.type_url = std::str::from_utf8(type_url).ok()?;
        Some(view)
    }

    /// `len(eigenvalues)`.
    #[inline]
    pub fn eigenvalue_count(&self) -> usize {
        self.eigenvalue_count
    }

    /// `eigenvalues[index]`, or `None` past the end.
    #[inline]
    pub fn eigenvalue(&self, index: usize) -> Option<f64> {
        if index >= self.eigenvalue_count {
            return None;
        }
        match self.eigenvalues {
            Eigenvalues::Contiguous(run) => run.get(index * 8..index * 8 + 8).map(read_f64),
            Eigenvalues::Scattered(envelope) => scattered_eigenvalue(envelope, index),
        }
    }

    /// Merges one occurrence of `spectral` into the view.
    fn fold_spectral(&mut self, mut spectral: &'a [u8], envelope: &'a [u8]) -> Option<()> {
        while !spectral.is_empty() {
            let (field, wire) = decode_key(&mut spectral).ok()?;
            match field {
                COHERENCE => self.coherence = fixed64(&mut spectral, wire)?,
                CRITICALITY => self.criticality = fixed64(&mut spectral, wire)?,
                EIGENVALUES => {
                    let run = eigenvalue_run(&mut spectral, wire)?;
                    if run.is_empty() {
                        continue;
                    }
                    self.eigenvalues = if self.eigenvalue_count == 0 {
                        Eigenvalues::Contiguous(run)
                    } else {
                        Eigenvalues::Scattered(envelope)
                    };
                    self.eigenvalue_count += run.len() / 8;
                }
                _ => skip(&mut spectral, wire)?,
            }
        }
        Some(())
    }
}

/// The `index`-th eigenvalue over every run of every `spectral` occurrence. The envelope was
/// already checked by [`PulseView::scan`], so this only has to count.
fn scattered_eigenvalue(mut buf: &[u8], mut index: usize) -> Option<f64> {
    while !buf.is_empty() {
        let (field, wire) = decode_key(&mut buf).ok()?;
        if field != SPECTRAL {
            skip(&mut buf, wire)?;
            continue;
        }
        let mut spectral = len_delimited(&mut buf, wire)?;
        while !spectral.is_empty() {
            let (field, wire) = decode_key(&mut spectral).ok()?;
            if field != EIGENVALUES {
                skip(&mut spectral, wire)?;
                continue;
            }
            let run = eigenvalue_run(&mut spectral, wire)?;
            let in_run = run.len() / 8;
            if index < in_run {
                return Some(read_f64(&run[index * 8..index * 8 + 8]));
            }
            index -= in_run;
        }
    }
    None
}

/// One `eigenvalues` entry: a packed run, or a single unpacked double, as raw bytes.
fn eigenvalue_run<'a>(buf: &mut &'a [u8], wire: WireType) -> Option<&'a [u8]> {
    match wire {
        WireType::LengthDelimited => {
            let run = len_delimited(buf, wire)?;
            (run.len() % 8 == 0).then_some(run)
        }
        WireType::SixtyFourBit => take(buf, 8),
        _ => None,
    }
}

fn read_f64(bytes: &[u8]) -> f64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(bytes);
    f64::from_le_bytes(le)
}

fn fixed64(buf: &mut &[u8], wire: WireType) -> Option<f64> {
    if wire != WireType::SixtyFourBit {
        return None;
    }
    take(buf, 8).map(read_f64)
}

fn len_delimited<'a>(buf: &mut &'a [u8], wire: WireType) -> Option<&'a [u8]> {
    if wire != WireType::LengthDelimited {
        return None;
    }
    let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
    take(buf, len)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Some(head)
}

fn skip(buf: &mut &[u8], wire: WireType) -> Option<()> {
    match wire {
        WireType::Varint => {
            decode_varint(buf).ok()?;
        }
        WireType::SixtyFourBit => {
            take(buf, 8)?;
        }
        WireType::ThirtyTwoBit => {
            take(buf, 4)?;
        }
        WireType::LengthDelimited => {
            len_delimited(buf, wire)?;
        }
        // Groups are deprecated and nothing in the contract uses them.
        WireType::StartGroup | WireType::EndGroup => return None,
    }
    Some(())
}

/// A view that is scanned only when the first filter asks for it, then shared by every
/// filtered subscription of the same pulse.
pub struct LazyView<'a> {
    envelope: &'a [u8],
    scanned: Option<Option<PulseView<'a>>>,
}

impl<'a> LazyView<'a> {
    pub fn new(envelope: &'a [u8]) -> Self {
        Self {
            envelope,
            scanned: None,
        }
    }

    /// The view, scanning on first use; `None` when the envelope is malformed.
    #[inline]
    pub fn get(&mut self) -> Option<&PulseView<'a>> {
        let envelope = self.envelope;
        self.scanned
            .get_or_insert_with(|| PulseView::scan(envelope))
            .as_ref()
    }
}
