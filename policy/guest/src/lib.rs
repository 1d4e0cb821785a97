//! Write ArqonBus CASIL policies in Rust.
//!
//! A policy is a function from the pulse it is shown ([`PolicyInput`]) to a [`Verdict`]. The
//! [`arqon_policy!`] macro turns such a function into a Wasm module that speaks the guest ABI
//! (`docs/policy-abi.md` in the ArqonBus repository): it exports `memory`, `arqon_alloc`,
//! `arqon_inspect` and `arqon_reason`.
//!
//! ```ignore
//! #![no_std]
//! use arqonbus_policy_guest::{arqon_policy, deny, PolicyInput, Verdict};
//!
//! fn inspect(input: &PolicyInput) -> Verdict {
//!     if input.producer_id == "mallory" {
//!         return deny!(1, "producer {} is not trusted", input.producer_id);
//!     }
//!     Verdict::Allow
//! }
//! arqon_policy!(inspect);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-unknown-unknown`. The crate is `no_std`
//! and has no dependencies; it needs no allocator.

#![cfg_attr(not(test), no_std)]

pub mod abi;
mod pattern;
pub mod pb;
mod reason;

pub use pattern::topic_matches;
pub use reason::Reason;

use pb::{Fields, Value};

/// What a policy decides about one pulse.
// The reason lives inline because there is no allocator; one Verdict exists per inspection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Verdict {
    /// Let the pulse through (to the next policy, then to the sequencer).
    Allow,
    /// Block the pulse. The publisher gets POLICY_DENIED with the code and the reason text.
    Deny { code: u32, reason: Reason },
}

impl Verdict {
    /// A denial with a fixed reason.
    pub fn deny(code: u32, reason: &str) -> Self {
        Verdict::Deny {
            code,
            reason: Reason::from_str(reason),
        }
    }
}

/// `deny!(code, "format {}", args)`: a [`Verdict::Deny`] with a formatted reason (truncated to
/// [`Reason::CAPACITY`] bytes).
#[macro_export]
macro_rules! deny {
    ($code:expr, $($fmt:tt)*) => {{
        let mut reason = $crate::Reason::new();
        let _ = core::fmt::Write::write_fmt(&mut reason, format_args!($($fmt)*));
        $crate::Verdict::Deny { code: $code, reason }
    }};
}

/// Spectral metadata of the pulse (`arqon.v1.SpectralMetadata`), without its eigenvalues.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spectral {
    pub coherence: f64,
    pub criticality: f64,
}

/// One pulse, as decoded from the `arqon.policy.v1.PolicyInput` the host wrote into memory.
/// Strings and bytes borrow from that memory; nothing is copied.
#[derive(Debug, Clone, Default)]
pub struct PolicyInput<'a> {
    pub reality_id: &'a str,
    pub topic: &'a str,
    pub producer_id: &'a str,
    pub payload_type_url: &'a str,
    pub payload: &'a [u8],
    pub spectral: Option<Spectral>,
    pub payload_bytes: u64,
    pub frame_bytes: u64,
    pub policy_name: &'a str,
    /// The encoded `params` entries (field 9), read by [`PolicyInput::param`].
    raw: &'a [u8],
}

/// Why the input could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Truncated or malformed protobuf.
    Malformed,
    /// A string field that is not UTF-8.
    NotUtf8,
}

impl<'a> PolicyInput<'a> {
    /// Field numbers of `arqon.policy.v1.PolicyInput`.
    const REALITY_ID: u32 = 1;
    const TOPIC: u32 = 2;
    const PRODUCER_ID: u32 = 3;
    const PAYLOAD_TYPE_URL: u32 = 4;
    const PAYLOAD: u32 = 5;
    const SPECTRAL: u32 = 6;
    const PAYLOAD_BYTES: u32 = 7;
    const FRAME_BYTES: u32 = 8;
    const PARAMS: u32 = 9;
    const POLICY_NAME: u32 = 10;

    /// Decodes a `PolicyInput`. Unknown fields are skipped, as protobuf requires.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut input = PolicyInput {
            raw: bytes,
            ..Default::default()
        };
        for field in Fields::new(bytes) {
            let field = field?;
            match (field.number, field.value) {
                (Self::REALITY_ID, Value::Bytes(b)) => input.reality_id = utf8(b)?,
                (Self::TOPIC, Value::Bytes(b)) => input.topic = utf8(b)?,
                (Self::PRODUCER_ID, Value::Bytes(b)) => input.producer_id = utf8(b)?,
                (Self::PAYLOAD_TYPE_URL, Value::Bytes(b)) => input.payload_type_url = utf8(b)?,
                (Self::PAYLOAD, Value::Bytes(b)) => input.payload = b,
                (Self::SPECTRAL, Value::Bytes(b)) => input.spectral = Some(spectral(b)?),
                (Self::PAYLOAD_BYTES, Value::Varint(v)) => input.payload_bytes = v,
                (Self::FRAME_BYTES, Value::Varint(v)) => input.frame_bytes = v,
                (Self::POLICY_NAME, Value::Bytes(b)) => input.policy_name = utf8(b)?,
                _ => {}
            }
        }
        Ok(input)
    }

    /// The value of the policy parameter `key` (from the policy's configuration), if set.
    pub fn param(&self, key: &str) -> Option<&'a str> {
        let mut found = None;
        for field in Fields::new(self.raw).flatten() {
            let (Self::PARAMS, Value::Bytes(entry)) = (field.number, field.value) else {
                continue;
            };
            let (mut k, mut v) = ("", "");
            for f in Fields::new(entry).flatten() {
                match (f.number, f.value) {
                    (1, Value::Bytes(b)) => k = core::str::from_utf8(b).unwrap_or(""),
                    (2, Value::Bytes(b)) => v = core::str::from_utf8(b).unwrap_or(""),
                    _ => {}
                }
            }
            // Protobuf map semantics: the last entry for a key wins.
            if k == key {
                found = Some(v);
            }
        }
        found
    }
}

impl PolicyInput<'_> {
    /// The parameter `key` as a number. Parsing a float costs more than the rest of a typical
    /// inspection, and an instance's parameters never change, so the last parse is remembered
    /// (keyed by the key and the exact text, so a different value is parsed afresh).
    pub fn param_f64(&self, key: &str) -> Option<f64> {
        let text = self.param(key)?.trim();
        // SAFETY: single-threaded and not re-entered (see `abi::GuestCell`).
        let cache = unsafe { &mut *NUMBER_CACHE.0.get() };
        if let Some(value) = cache.get(key, text) {
            return Some(value);
        }
        let value = text.parse::<f64>().ok()?;
        cache.put(key, text, value);
        Some(value)
    }
}

const CACHE_TEXT_BYTES: usize = 64;

/// One remembered `param_f64` parse.
struct NumberCache {
    key: [u8; CACHE_TEXT_BYTES],
    key_len: usize,
    text: [u8; CACHE_TEXT_BYTES],
    text_len: usize,
    value: f64,
}

impl NumberCache {
    const fn new() -> Self {
        Self {
            key: [0; CACHE_TEXT_BYTES],
            key_len: usize::MAX,
            text: [0; CACHE_TEXT_BYTES],
            text_len: 0,
            value: 0.0,
        }
    }

    fn get(&self, key: &str, text: &str) -> Option<f64> {
        let same = self.key_len == key.len()
            && self.text_len == text.len()
            && &self.key[..key.len()] == key.as_bytes()
            && &self.text[..text.len()] == text.as_bytes();
        same.then_some(self.value)
    }

    fn put(&mut self, key: &str, text: &str, value: f64) {
        if key.len() > CACHE_TEXT_BYTES || text.len() > CACHE_TEXT_BYTES {
            return;
        }
        self.key[..key.len()].copy_from_slice(key.as_bytes());
        self.key_len = key.len();
        self.text[..text.len()].copy_from_slice(text.as_bytes());
        self.text_len = text.len();
        self.value = value;
    }
}

static NUMBER_CACHE: abi::GuestCell<NumberCache> =
    abi::GuestCell(core::cell::UnsafeCell::new(NumberCache::new()));

fn utf8(b: &[u8]) -> Result<&str, DecodeError> {
    core::str::from_utf8(b).map_err(|_| DecodeError::NotUtf8)
}

fn spectral(b: &[u8]) -> Result<Spectral, DecodeError> {
    let mut s = Spectral::default();
    for field in Fields::new(b) {
        let field = field?;
        match (field.number, field.value) {
            (1, Value::Fixed64(v)) => s.coherence = f64::from_bits(v),
            (2, Value::Fixed64(v)) => s.criticality = f64::from_bits(v),
            _ => {}
        }
    }
    Ok(s)
}

#[cfg(all(target_arch = "wasm32", feature = "panic-handler", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // A trap: the host blocks the pulse and reports POLICY_FAULT.
    core::arch::wasm32::unreachable()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PolicyInput with params {k: v}: field 9 entries of (1: key, 2: value).
    fn input_with(params: &[(&str, &str)]) -> [u8; 128] {
        let mut out = [0u8; 128];
        let mut n = 0;
        for (k, v) in params {
            let entry = 4 + k.len() + v.len();
            for b in [0x4a, entry as u8, 0x0a, k.len() as u8] {
                out[n] = b;
                n += 1;
            }
            out[n..n + k.len()].copy_from_slice(k.as_bytes());
            n += k.len();
            out[n] = 0x12;
            out[n + 1] = v.len() as u8;
            n += 2;
            out[n..n + v.len()].copy_from_slice(v.as_bytes());
            n += v.len();
        }
        out
    }

    #[test]
    fn param_f64_parses_and_notices_a_new_value() {
        let a = input_with(&[("cap", "50")]);
        let len = a.iter().rposition(|&b| b != 0).unwrap() + 1;
        let input = PolicyInput::decode(&a[..len]).unwrap();
        assert_eq!(input.param("cap"), Some("50"));
        assert_eq!(input.param_f64("cap"), Some(50.0));
        assert_eq!(input.param_f64("cap"), Some(50.0));
        let b = input_with(&[("cap", "12.5")]);
        let len = b.iter().rposition(|&b| b != 0).unwrap() + 1;
        let input = PolicyInput::decode(&b[..len]).unwrap();
        assert_eq!(input.param_f64("cap"), Some(12.5));
        assert_eq!(input.param_f64("other"), None);
        let c = input_with(&[("cap", "lots")]);
        let len = c.iter().rposition(|&b| b != 0).unwrap() + 1;
        assert_eq!(
            PolicyInput::decode(&c[..len]).unwrap().param_f64("cap"),
            None
        );
    }
}
