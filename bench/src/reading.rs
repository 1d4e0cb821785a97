//! `arqon.bench.Reading`, the payload of the `types` scenario and of the strict-mode
//! micro-benchmark (bench/micro/types.rs includes this file), so both measure the same message:
//! the prost structs that encode it, the FileDescriptorSet that describes it, and a template of
//! a given size. Self-contained (prost and prost-types only) so the two crates can share it.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};

pub const MESSAGE_NAME: &str = "arqon.bench.Reading";
pub const TYPE_URL: &str = "type.googleapis.com/arqon.bench.Reading";
/// Bytes of the `header` field's value: the harness's pulse header (`payload::HEADER_BYTES`).
pub const HEADER_BYTES: usize = 40;
/// `bytes header = 1` of 40 bytes: its key and length, the two bytes before the header.
pub const HEADER_FIELD_PREFIX: [u8; 2] = [(1 << 3) | 2, HEADER_BYTES as u8];

/// `arqon.bench.Reading`: what an instrument on a lab rig might publish.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reading {
    /// The harness's header (publisher, sequence, send times). Field 1, so it is encoded first,
    /// at bytes 2..42, where the sender patches it and the subscriber reads it.
    #[prost(bytes = "vec", tag = "1")]
    pub header: Vec<u8>,
    #[prost(string, tag = "2")]
    pub instrument: String,
    #[prost(uint32, tag = "3")]
    pub decimation: u32,
    #[prost(sint32, tag = "4")]
    pub channel: i32,
    #[prost(double, tag = "5")]
    pub gain: f64,
    #[prost(bool, tag = "6")]
    pub calibrated: bool,
    #[prost(message, optional, tag = "7")]
    pub window: Option<Window>,
    /// Packed (prost's default for repeated scalars, as proto3's).
    #[prost(double, repeated, tag = "8")]
    pub samples: Vec<f64>,
    #[prost(message, repeated, tag = "9")]
    pub tags: Vec<Tag>,
}

/// `arqon.bench.Window`: the time span a reading covers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Window {
    #[prost(fixed64, tag = "1")]
    pub start_unix_nanos: u64,
    #[prost(fixed64, tag = "2")]
    pub end_unix_nanos: u64,
    #[prost(string, tag = "3")]
    pub unit: String,
}

/// `arqon.bench.Tag`: a key and a value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tag {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// The FileDescriptorSet of `arqon/bench/reading.proto` (package `arqon.bench`, proto3):
/// `Reading`, `Window` and `Tag` exactly as the prost structs above declare them.
pub fn descriptor_set() -> Vec<u8> {
    let field =
        |name: &str, number: i32, ty: Type, label: Label, type_name: &str| FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            r#type: Some(ty as i32),
            label: Some(label as i32),
            type_name: (!type_name.is_empty()).then(|| type_name.into()),
            json_name: Some(name.into()),
            ..Default::default()
        };
    use Label::{Optional, Repeated};
    let reading = DescriptorProto {
        name: Some("Reading".into()),
        field: vec![
            field("header", 1, Type::Bytes, Optional, ""),
            field("instrument", 2, Type::String, Optional, ""),
            field("decimation", 3, Type::Uint32, Optional, ""),
            field("channel", 4, Type::Sint32, Optional, ""),
            field("gain", 5, Type::Double, Optional, ""),
            field("calibrated", 6, Type::Bool, Optional, ""),
            field("window", 7, Type::Message, Optional, ".arqon.bench.Window"),
            field("samples", 8, Type::Double, Repeated, ""),
            field("tags", 9, Type::Message, Repeated, ".arqon.bench.Tag"),
        ],
        ..Default::default()
    };
    let window = DescriptorProto {
        name: Some("Window".into()),
        field: vec![
            field("start_unix_nanos", 1, Type::Fixed64, Optional, ""),
            field("end_unix_nanos", 2, Type::Fixed64, Optional, ""),
            field("unit", 3, Type::String, Optional, ""),
        ],
        ..Default::default()
    };
    let tag = DescriptorProto {
        name: Some("Tag".into()),
        field: vec![
            field("key", 1, Type::String, Optional, ""),
            field("value", 2, Type::String, Optional, ""),
        ],
        ..Default::default()
    };
    FileDescriptorSet {
        file: vec![FileDescriptorProto {
            name: Some("arqon/bench/reading.proto".into()),
            package: Some("arqon.bench".into()),
            message_type: vec![reading, window, tag],
            syntax: Some("proto3".into()),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// The encoded `Reading` every pulse of a run sends (its header bytes zero until patched), and
/// how many samples it holds.
#[derive(Debug, Clone)]
pub struct Template {
    pub bytes: Vec<u8>,
    pub samples: usize,
}

/// A `Reading` as close to `size` bytes as its packed samples allow (at most 7 bytes under),
/// or the error saying how small a payload can be.
pub fn template(size: usize) -> Result<Template, String> {
    let mut r = Reading {
        header: vec![0; HEADER_BYTES],
        instrument: "lab-2.rig-07.spectrometer-b".into(),
        decimation: 4,
        channel: -3,
        gain: 1.25,
        calibrated: true,
        window: Some(Window {
            start_unix_nanos: 1_764_770_400_000_000_000,
            end_unix_nanos: 1_764_770_400_010_000_000,
            unit: "V".into(),
        }),
        samples: Vec::new(),
        tags: vec![
            Tag {
                key: "site".into(),
                value: "lab-2".into(),
            },
            Tag {
                key: "run".into(),
                value: "bench-types".into(),
            },
        ],
    };
    let base = r.encoded_len();
    // The packed field costs its key, its length's varint and 8 bytes a sample.
    let packed = |n: usize| 1 + prost::encoding::encoded_len_varint(8 * n as u64) as usize + 8 * n;
    let mut n = 0usize;
    while base + packed(n + 1) <= size {
        n += 1;
    }
    if n == 0 {
        return Err(format!(
            "--payload-bytes must be at least {} for a Reading with one sample",
            base + packed(1)
        ));
    }
    r.samples = (0..n)
        .map(|i| {
            let t = i as f64 / n as f64;
            (t * std::f64::consts::TAU * 3.0).sin() * 0.8 + noise(i as u64) * 0.01
        })
        .collect();
    let bytes = r.encode_to_vec();
    if bytes[..2] != HEADER_FIELD_PREFIX {
        return Err(format!(
            "the Reading's header is not its first field (prost encoded {:?})",
            &bytes[..2]
        ));
    }
    Ok(Template { bytes, samples: n })
}

/// A small deterministic jitter in [-0.5, 0.5) for sample `i` (SplitMix64's finaliser).
fn noise(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 - 0.5
}
