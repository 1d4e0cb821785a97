//! Encoding `arqon.operator.v1.OperatorInput` straight from the sequenced envelope (borrowing its
//! payload, not copying it into a message first).

use arqonbus_proto::v1::ArqonMessage;

use crate::policy::{put_bytes, put_u64};

/// Field numbers of `OperatorInput`.
const REALITY_ID: u32 = 1;
const TOPIC: u32 = 2;
const SEQUENCE: u32 = 3;
const TIMESTAMP: u32 = 4;
const PRODUCER_ID: u32 = 5;
const PAYLOAD_TYPE_URL: u32 = 6;
const PAYLOAD: u32 = 7;
const SPECTRAL: u32 = 8;
const REPLY_TO: u32 = 9;
const OPERATOR_NAME: u32 = 10;
const EMITTED_BY: u32 = 11;

/// Writes the input of `operator` for `message` into `out` (cleared first).
pub fn encode(message: &ArqonMessage, operator: &str, out: &mut Vec<u8>) {
    out.clear();
    let (type_url, payload): (&str, &[u8]) = match &message.payload {
        Some(any) => (&any.type_url, &any.value),
        None => ("", &[]),
    };
    out.reserve(96 + message.topic.len() + type_url.len() + payload.len());
    put_bytes(out, REALITY_ID, message.reality_id.as_bytes());
    put_bytes(out, TOPIC, message.topic.as_bytes());
    put_u64(out, SEQUENCE, message.sequence);
    put_u64(out, TIMESTAMP, message.timestamp_unix_nanos);
    put_bytes(out, PRODUCER_ID, message.producer_id.as_bytes());
    put_bytes(out, PAYLOAD_TYPE_URL, type_url.as_bytes());
    put_bytes(out, PAYLOAD, payload);
    if let Some(spectral) = &message.spectral {
        prost::encoding::message::encode(SPECTRAL, spectral, out);
    }
    put_bytes(out, REPLY_TO, message.reply_to.as_bytes());
    put_bytes(out, OPERATOR_NAME, operator.as_bytes());
    put_bytes(out, EMITTED_BY, message.emitted_by.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use arqonbus_proto::operator::v1::OperatorInput;
    use arqonbus_proto::v1::SpectralMetadata;
    use prost::Message;

    #[test]
    fn decodes_as_operator_input() {
        let message = ArqonMessage {
            reality_id: "lab".into(),
            topic: "sim.kuramoto.tick".into(),
            sequence: 42,
            timestamp_unix_nanos: 7,
            producer_id: "p".into(),
            payload: Some(prost_types::Any {
                type_url: "t".into(),
                value: vec![1, 2, 3],
            }),
            spectral: Some(SpectralMetadata {
                coherence: 0.5,
                criticality: 0.1,
                eigenvalues: vec![1.0, 2.0],
            }),
            reply_to: "r.x".into(),
            emitted_by: "other".into(),
            ..Default::default()
        };
        let mut out = Vec::new();
        encode(&message, "kuramoto", &mut out);
        let input = OperatorInput::decode(&out[..]).unwrap();
        assert_eq!(input.reality_id, "lab");
        assert_eq!(input.topic, "sim.kuramoto.tick");
        assert_eq!(input.sequence, 42);
        assert_eq!(input.timestamp_unix_nanos, 7);
        assert_eq!(input.payload_type_url, "t");
        assert_eq!(&input.payload[..], &[1, 2, 3]);
        assert_eq!(input.spectral.unwrap().eigenvalues, vec![1.0, 2.0]);
        assert_eq!(input.reply_to, "r.x");
        assert_eq!(input.operator_name, "kuramoto");
        assert_eq!(input.emitted_by, "other");
    }
}
