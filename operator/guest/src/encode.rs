//! Just enough protobuf to write an `Emit` (and the payloads of the examples) without an
//! allocator: a writer over a fixed buffer, and a counter for the lengths of nested messages.

/// Where encoded bytes go: a buffer, or a counter that measures a nested message first.
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);

    fn raw_varint(&mut self, mut v: u64) {
        let mut tmp = [0u8; 10];
        let mut n = 0;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                tmp[n] = byte;
                n += 1;
                break;
            }
            tmp[n] = byte | 0x80;
            n += 1;
        }
        self.put(&tmp[..n]);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.raw_varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    /// A varint field; zero is left out (proto3).
    fn varint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, 0);
            self.raw_varint(v);
        }
    }

    /// A double field; zero is left out (proto3).
    fn double(&mut self, field: u32, v: f64) {
        if v.to_bits() != 0 {
            self.key(field, 1);
            self.put(&v.to_le_bytes());
        }
    }

    /// A bytes (or string) field; empty is left out.
    fn bytes(&mut self, field: u32, b: &[u8]) {
        if !b.is_empty() {
            self.key(field, 2);
            self.raw_varint(b.len() as u64);
            self.put(b);
        }
    }

    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    /// A nested message written by `f` (called twice: once to measure it, once to write it).
    fn message(&mut self, field: u32, f: impl Fn(&mut dyn Sink))
    where
        Self: Sized,
    {
        let mut counter = Counter(0);
        f(&mut counter);
        self.key(field, 2);
        self.raw_varint(counter.0 as u64);
        f(self);
    }
}

/// Counts bytes instead of writing them.
pub struct Counter(pub usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Writes into a fixed buffer; remembers if it ran out of room.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self {
            buf,
            len: 0,
            overflow: false,
        }
    }

    /// Bytes written, or `None` if the buffer was too small.
    pub fn len(&self) -> Option<usize> {
        (!self.overflow).then_some(self.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Sink for Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            _ => self.overflow = true,
        }
    }
}

/// The fields of an `arqon.v1.SpectralMetadata` (eigenvalues packed).
pub fn spectral(s: &mut dyn Sink, coherence: f64, criticality: f64, eigenvalues: &[f64]) {
    s.double(1, coherence);
    s.double(2, criticality);
    if !eigenvalues.is_empty() {
        s.key(3, 2);
        s.raw_varint(8 * eigenvalues.len() as u64);
        for v in eigenvalues {
            s.put(&v.to_le_bytes());
        }
    }
}

/// An `arqon.operator.v1.Emit`.
pub fn emit(
    w: &mut dyn Sink,
    topic: &str,
    type_url: &str,
    payload: &[u8],
    spectral_out: Option<crate::Spectral<'_>>,
) {
    w.string(1, topic);
    if !type_url.is_empty() || !payload.is_empty() {
        nested(w, 2, &|s: &mut dyn Sink| {
            s.string(1, type_url);
            s.bytes(2, payload);
        });
    }
    if let Some(sp) = spectral_out {
        nested(w, 3, &|s: &mut dyn Sink| {
            spectral(s, sp.coherence, sp.criticality, sp.eigenvalues)
        });
    }
}

/// `Sink::message` for a `dyn Sink`.
pub fn nested(w: &mut dyn Sink, field: u32, f: &dyn Fn(&mut dyn Sink)) {
    let mut counter = Counter(0);
    f(&mut counter);
    w.key(field, 2);
    w.raw_varint(counter.0 as u64);
    f(w);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_lengths_are_measured() {
        let mut buf = [0u8; 64];
        let mut w = Writer::new(&mut buf);
        emit(
            &mut w,
            "a.b",
            "t",
            &[9],
            Some(crate::Spectral {
                coherence: 1.0,
                ..Default::default()
            }),
        );
        let n = w.len().unwrap();
        // topic, Any{type_url, value}, spectral{coherence}
        let expected: &[u8] = &[
            0x0a, 3, b'a', b'.', b'b', 0x12, 6, 0x0a, 1, b't', 0x12, 1, 9, 0x1a, 9, 0x09, 0, 0, 0,
            0, 0, 0, 0xf0, 0x3f,
        ];
        assert_eq!(&buf[..n], expected);
    }

    #[test]
    fn overflow_is_reported() {
        let mut buf = [0u8; 4];
        let mut w = Writer::new(&mut buf);
        w.string(1, "too long for four bytes");
        assert_eq!(w.len(), None);
    }
}
