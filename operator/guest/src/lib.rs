//! Write ArqonBus hosted operators in Rust.
//!
//! An operator is a function from the pulse it is given ([`Input`]) to `Ok(())` or an error
//! code, which may call [`emit`] to publish pulses into the input's reality (sequenced right
//! behind the input) and [`param_f64`] / [`param_text`] to read its parameters. Its statics are
//! its state: the bus keeps one instance per (operator, reality) and its memory between inputs.
//! The [`arqon_operator!`] macro turns such a function into a Wasm module that speaks the guest
//! ABI (`docs/operator-abi.md` in the ArqonBus repository).
//!
//! ```ignore
//! #![no_std]
//! use arqonbus_operator_guest::{arqon_operator, emit, Input, Spectral};
//!
//! fn operate(input: &Input) -> Result<(), u32> {
//!     let gain = arqonbus_operator_guest::param_f64("gain").unwrap_or(1.0);
//!     let c = input.spectral.coherence * gain;
//!     emit("lab.signal.scaled", "", &[], Some(Spectral { coherence: c, ..Default::default() }))
//!         .map_err(|_| 1)
//! }
//! arqon_operator!(operate);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-unknown-unknown`. The crate is `no_std`,
//! needs no allocator, and imports nothing but the host's three functions: no clock, no
//! randomness, so the same inputs give the same outputs in every replay.

#![cfg_attr(not(test), no_std)]

pub mod abi;
pub mod encode;

pub use arqonbus_policy_guest::pb;
pub use arqonbus_policy_guest::DecodeError;

use pb::{Fields, Value};

/// Spectral metadata (`arqon.v1.SpectralMetadata`) to attach to an emitted pulse.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spectral<'a> {
    pub coherence: f64,
    pub criticality: f64,
    pub eigenvalues: &'a [f64],
}

/// Spectral metadata of the input pulse. Eigenvalues are read lazily from the encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct InputSpectral<'a> {
    pub coherence: f64,
    pub criticality: f64,
    eigenvalues: &'a [u8],
}

impl InputSpectral<'_> {
    /// The eigenvalues, in order (packed or not, as protobuf allows).
    pub fn eigenvalues(&self) -> impl Iterator<Item = f64> + '_ {
        Fields::new(self.eigenvalues)
            .flatten()
            .filter(|f| f.number == 3)
            .flat_map(|f| {
                let (one, packed): (Option<f64>, &[u8]) = match f.value {
                    Value::Fixed64(bits) => (Some(f64::from_bits(bits)), &[]),
                    Value::Bytes(b) => (None, b),
                    _ => (None, &[]),
                };
                one.into_iter().chain(
                    packed.chunks_exact(8).map(|c| {
                        f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                    }),
                )
            })
    }
}

/// One sequenced pulse, as decoded from the `arqon.operator.v1.OperatorInput` the host wrote
/// into memory. Strings and bytes borrow from that memory.
#[derive(Debug, Clone, Default)]
pub struct Input<'a> {
    pub reality_id: &'a str,
    pub topic: &'a str,
    pub sequence: u64,
    pub timestamp_unix_nanos: u64,
    pub producer_id: &'a str,
    pub payload_type_url: &'a str,
    pub payload: &'a [u8],
    pub spectral: InputSpectral<'a>,
    pub reply_to: &'a str,
    pub operator_name: &'a str,
    /// Set when another operator emitted the input.
    pub emitted_by: &'a str,
}

impl<'a> Input<'a> {
    /// Decodes an `OperatorInput`. Unknown fields are skipped, as protobuf requires.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut input = Input::default();
        for field in Fields::new(bytes) {
            let field = field?;
            match (field.number, field.value) {
                (1, Value::Bytes(b)) => input.reality_id = utf8(b)?,
                (2, Value::Bytes(b)) => input.topic = utf8(b)?,
                (3, Value::Varint(v)) => input.sequence = v,
                (4, Value::Varint(v)) => input.timestamp_unix_nanos = v,
                (5, Value::Bytes(b)) => input.producer_id = utf8(b)?,
                (6, Value::Bytes(b)) => input.payload_type_url = utf8(b)?,
                (7, Value::Bytes(b)) => input.payload = b,
                (8, Value::Bytes(b)) => input.spectral = spectral(b)?,
                (9, Value::Bytes(b)) => input.reply_to = utf8(b)?,
                (10, Value::Bytes(b)) => input.operator_name = utf8(b)?,
                (11, Value::Bytes(b)) => input.emitted_by = utf8(b)?,
                _ => {}
            }
        }
        Ok(input)
    }
}

fn utf8(b: &[u8]) -> Result<&str, DecodeError> {
    core::str::from_utf8(b).map_err(|_| DecodeError::NotUtf8)
}

fn spectral(b: &[u8]) -> Result<InputSpectral<'_>, DecodeError> {
    let mut s = InputSpectral {
        eigenvalues: b,
        ..Default::default()
    };
    for field in Fields::new(b) {
        match field? {
            pb::Field {
                number: 1,
                value: Value::Fixed64(bits),
            } => s.coherence = f64::from_bits(bits),
            pb::Field {
                number: 2,
                value: Value::Fixed64(bits),
            } => s.criticality = f64::from_bits(bits),
            _ => {}
        }
    }
    Ok(s)
}

/// Why an emit could not be made: the encoded pulse is larger than the guest's emit buffer
/// ([`abi::EMIT_BUFFER_BYTES`]). Caps the host enforces (pulses or bytes per input, topic
/// syntax) are not reported here: the host ends the call, and the input's outputs are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmitTooLarge;

/// Emits one pulse into the input's reality. `type_url` and `payload` form its
/// `google.protobuf.Any` (both empty: no payload).
pub fn emit(
    topic: &str,
    type_url: &str,
    payload: &[u8],
    spectral: Option<Spectral<'_>>,
) -> Result<(), EmitTooLarge> {
    abi::emit_encoded(|w| encode::emit(w, topic, type_url, payload, spectral))
}

/// The operator's number parameter `name`, if it is set (and is a number).
pub fn param_f64(name: &str) -> Option<f64> {
    abi::param_f64(name)
}

/// The operator's text parameter `name`, copied into `buf`, if it is set (and is text). A value
/// longer than `buf` is cut at `buf.len()` bytes (and then may not be valid UTF-8: `None`).
pub fn param_text<'b>(name: &str, buf: &'b mut [u8]) -> Option<&'b str> {
    let n = abi::param_text(name, buf)?;
    core::str::from_utf8(&buf[..n.min(buf.len())]).ok()
}

#[cfg(all(target_arch = "wasm32", feature = "panic-handler", not(test)))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // A trap: the host drops the input's outputs and counts a fault.
    core::arch::wasm32::unreachable()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::Sink;

    #[test]
    fn decodes_an_input_with_spectral_and_eigenvalues() {
        let mut buf = [0u8; 256];
        let mut w = encode::Writer::new(&mut buf);
        w.string(1, "lab");
        w.string(2, "sim.kuramoto.tick");
        w.varint(3, 9);
        w.varint(4, 77);
        w.message(8, |s| {
            encode::spectral(s, 0.5, 0.25, &[1.5, 2.5]);
        });
        w.string(10, "kuramoto");
        let len = w.len().unwrap();
        let input = Input::decode(&buf[..len]).unwrap();
        assert_eq!(input.reality_id, "lab");
        assert_eq!(input.sequence, 9);
        assert_eq!(input.timestamp_unix_nanos, 77);
        assert_eq!(input.spectral.coherence, 0.5);
        assert_eq!(input.spectral.criticality, 0.25);
        let mut eig = [0.0; 4];
        let mut n = 0;
        for (i, v) in input.spectral.eigenvalues().enumerate() {
            eig[i] = v;
            n += 1;
        }
        assert_eq!(&eig[..n], &[1.5, 2.5]);
        assert_eq!(input.operator_name, "kuramoto");
    }

    #[test]
    fn truncated_input_is_an_error() {
        assert!(Input::decode(&[0x0a, 5, b'a']).is_err());
    }
}
