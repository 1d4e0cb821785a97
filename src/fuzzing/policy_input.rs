//! The policy input encoder (`policy/input.rs`): a published envelope, from a client, written
//! field by field into the `PolicyInput` a CASIL policy decodes.

use std::collections::BTreeMap;

use arqonbus_proto::policy::v1::PolicyInput;
use arqonbus_proto::v1::ArqonMessage;
use prost::Message;

use crate::policy::{encode_input_prefix, encode_input_suffix};

/// The input is an encoded `ArqonMessage`. The policy's name and params come from the same
/// message (its producer id and causal map), so they too are outside bytes.
pub fn policy_input(data: &[u8]) {
    let Ok(message) = ArqonMessage::decode(data) else {
        return;
    };
    let name = message.producer_id.as_str();
    let params: BTreeMap<String, String> = message
        .causal
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let mut input = Vec::new();
    encode_input_prefix(&message, data.len(), &mut input);
    input.extend_from_slice(&encode_input_suffix(name, &params));

    // The hand-written encoder must agree with prost's decoder on every field.
    let decoded = match PolicyInput::decode(&input[..]) {
        Ok(d) => d,
        Err(e) => panic!("the policy input does not decode: {e}"),
    };
    let (type_url, payload) = match &message.payload {
        Some(any) => (any.type_url.as_str(), &any.value[..]),
        None => ("", &[][..]),
    };
    assert_eq!(decoded.reality_id, message.reality_id);
    assert_eq!(decoded.topic, message.topic);
    assert_eq!(decoded.producer_id, message.producer_id);
    assert_eq!(decoded.payload_type_url, type_url);
    assert_eq!(&decoded.payload[..], payload);
    assert_eq!(decoded.payload_bytes, payload.len() as u64);
    assert_eq!(decoded.frame_bytes, data.len() as u64);
    assert_eq!(decoded.tenant, message.tenant);
    assert_eq!(decoded.subject, message.subject);
    assert_eq!(decoded.policy_name, name);
    assert_eq!(decoded.params, params);
    // Spectral metadata holds floats (NaN != NaN): compare its encoding.
    assert_eq!(
        decoded.spectral.map(|s| s.encode_to_vec()),
        message.spectral.map(|s| s.encode_to_vec())
    );
}
