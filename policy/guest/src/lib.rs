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
