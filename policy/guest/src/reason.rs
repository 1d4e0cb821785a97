//! A fixed-capacity text buffer for denial reasons, so a policy can format a reason without an
//! allocator.

use core::fmt;

/// Up to [`Reason::CAPACITY`] bytes of UTF-8; longer text is cut at a character boundary.
#[derive(Clone)]
pub struct Reason {
    buf: [u8; Reason::CAPACITY],
    len: usize,
}

impl Reason {
    /// The host reads at most this many bytes of reason text.
    pub const CAPACITY: usize = 256;

    pub const fn new() -> Self {
        Self {
            buf: [0; Self::CAPACITY],
            len: 0,
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub fn from_str(s: &str) -> Self {
        let mut r = Self::new();
        let _ = fmt::Write::write_str(&mut r, s);
        r
    }

    pub fn as_str(&self) -> &str {
        // Only whole characters are ever copied in.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Default for Reason {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Reason {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for ch in s.chars() {
            let mut tmp = [0u8; 4];
            let enc = ch.encode_utf8(&mut tmp).as_bytes();
            if self.len + enc.len() > Self::CAPACITY {
                return Err(fmt::Error);
            }
            self.buf[self.len..self.len + enc.len()].copy_from_slice(enc);
            self.len += enc.len();
        }
        Ok(())
    }
}

impl fmt::Debug for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
