//! Encoding `arqon.policy.v1.PolicyInput` straight from the envelope, without copying the
//! envelope into a `PolicyInput` first.
//!
//! The input a policy gets is a prefix shared by every policy that inspects the pulse (fields
//! 1-8, 11 and 12, encoded once per pulse) followed by that policy's own suffix (fields 9-10,
//! encoded once when it is loaded). Concatenated protobuf fields are one valid message, whatever
//! their order.

use std::collections::BTreeMap;

use arqonbus_proto::v1::ArqonMessage;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

/// Field numbers of `PolicyInput`.
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
const TENANT: u32 = 11;
const SUBJECT: u32 = 12;

pub(crate) fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    encode_key(field, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

pub(crate) fn put_u64(out: &mut Vec<u8>, field: u32, value: u64) {
    if value == 0 {
        return;
    }
    encode_key(field, WireType::Varint, out);
    encode_varint(value, out);
}

/// Writes fields 1-8, 11 and 12 of the pulse's `PolicyInput` into `out` (cleared first).
pub fn encode_input_prefix(message: &ArqonMessage, frame_bytes: usize, out: &mut Vec<u8>) {
    out.clear();
    let (type_url, payload): (&str, &[u8]) = match &message.payload {
        Some(any) => (&any.type_url, &any.value),
        None => ("", &[]),
    };
    out.reserve(64 + message.topic.len() + type_url.len() + payload.len());
    put_bytes(out, REALITY_ID, message.reality_id.as_bytes());
    put_bytes(out, TOPIC, message.topic.as_bytes());
    put_bytes(out, PRODUCER_ID, message.producer_id.as_bytes());
    put_bytes(out, PAYLOAD_TYPE_URL, type_url.as_bytes());
    put_bytes(out, PAYLOAD, payload);
    if let Some(spectral) = &message.spectral {
        prost::encoding::message::encode(SPECTRAL, spectral, out);
    }
    put_u64(out, PAYLOAD_BYTES, payload.len() as u64);
    put_u64(out, FRAME_BYTES, frame_bytes as u64);
    put_bytes(out, TENANT, message.tenant.as_bytes());
    put_bytes(out, SUBJECT, message.subject.as_bytes());
}

/// Fields 9-10 of `PolicyInput`: the policy's params and name.
pub fn encode_input_suffix(name: &str, params: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in params {
        let entry_len = 2
            + encoded_len_varint(k.len() as u64)
            + k.len()
            + encoded_len_varint(v.len() as u64)
            + v.len();
        encode_key(PARAMS, WireType::LengthDelimited, &mut out);
        encode_varint(entry_len as u64, &mut out);
        for (field, s) in [(1, k), (2, v)] {
            encode_key(field, WireType::LengthDelimited, &mut out);
            encode_varint(s.len() as u64, &mut out);
            out.extend_from_slice(s.as_bytes());
        }
    }
    put_bytes(&mut out, POLICY_NAME, name.as_bytes());
    debug_assert!(arqonbus_proto::policy::v1::PolicyInput::decode(&out[..]).is_ok());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use arqonbus_proto::policy::v1::PolicyInput;
    use arqonbus_proto::v1::SpectralMetadata;

    #[test]
    fn prefix_and_suffix_decode_as_one_policy_input() {
        let message = ArqonMessage {
            reality_id: "lab-1".into(),
            topic: "nvm.job.submit".into(),
            producer_id: "alice".into(),
            tenant: "lab".into(),
            subject: "ada".into(),
            spectral: Some(SpectralMetadata {
                coherence: 0.5,
                criticality: 2.0,
                eigenvalues: vec![1.0, 2.0],
            }),
            payload: Some(prost_types::Any {
                type_url: "type.googleapis.com/arqon.nvm.v1.NvmJob".into(),
                value: vec![1, 2, 3],
            }),
            ..Default::default()
        };
        let mut params = BTreeMap::new();
        params.insert("max_energy_joules".to_owned(), "50".to_owned());
        params.insert("empty".to_owned(), String::new());
        let mut bytes = Vec::new();
        encode_input_prefix(&message, 321, &mut bytes);
        bytes.extend_from_slice(&encode_input_suffix("energy_cap", &params));
        let input = PolicyInput::decode(&bytes[..]).unwrap();
        assert_eq!(input.reality_id, "lab-1");
        assert_eq!(input.topic, "nvm.job.submit");
        assert_eq!(input.producer_id, "alice");
        assert_eq!((&*input.tenant, &*input.subject), ("lab", "ada"));
        assert_eq!(
            input.payload_type_url,
            "type.googleapis.com/arqon.nvm.v1.NvmJob"
        );
        assert_eq!(&input.payload[..], &[1, 2, 3]);
        assert_eq!(input.payload_bytes, 3);
        assert_eq!(input.frame_bytes, 321);
        assert_eq!(input.spectral, message.spectral);
        assert_eq!(input.params.len(), 2);
        assert_eq!(input.params["max_energy_joules"], "50");
        assert_eq!(input.params["empty"], "");
        assert_eq!(input.policy_name, "energy_cap");
    }
}
