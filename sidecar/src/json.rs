//! Pulses as JSON, both ways: the envelope an HTTP caller may POST, and the object the
//! sidecar streams (history lines, SSE events).

use std::collections::BTreeMap;

use arqonbus_client::proto::v1::{ArqonMessage, PubAck, SpectralMetadata};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::ApiError;

/// The JSON envelope of `POST /v1/realities/{reality}/topics/{topic}` with a JSON content type.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// A JSON string is sent as its UTF-8 bytes (type URL `text/plain`); any other JSON value as
    /// its serialization (`application/json`).
    pub payload: Option<Value>,
    /// Raw bytes, base64 (standard alphabet); exclusive with `payload`.
    pub payload_base64: Option<String>,
    pub type_url: Option<String>,
    pub spectral: Option<Spectral>,
    #[serde(default)]
    pub trace_context: BTreeMap<String, String>,
    pub reply_to: Option<String>,
    pub producer_id: Option<String>,
    pub id: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spectral {
    #[serde(default)]
    pub coherence: f64,
    #[serde(default)]
    pub criticality: f64,
    #[serde(default)]
    pub eigenvalues: Vec<f64>,
}

impl Envelope {
    /// Fills `message` (reality and topic already set) from the envelope.
    pub fn apply(self, message: &mut ArqonMessage) -> Result<(), ApiError> {
        let (value, default_type) = match (self.payload, self.payload_base64) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "the envelope has both payload and payload_base64; send one",
                ))
            }
            (None, Some(b)) => (
                B64.decode(b.as_bytes())
                    .map_err(|e| ApiError::invalid(format!("payload_base64: {e}")))?,
                "application/octet-stream",
            ),
            (Some(Value::String(s)), None) => (s.into_bytes(), "text/plain"),
            (Some(v), None) => (
                serde_json::to_vec(&v).map_err(|e| ApiError::invalid(e.to_string()))?,
                "application/json",
            ),
            (None, None) => (Vec::new(), "application/octet-stream"),
        };
        message.payload = Some(prost_types::Any {
            type_url: self.type_url.unwrap_or_else(|| default_type.to_owned()),
            value,
        });
        if let Some(s) = self.spectral {
            message.spectral = Some(SpectralMetadata {
                coherence: s.coherence,
                criticality: s.criticality,
                eigenvalues: s.eigenvalues,
            });
        }
        message.trace_context.extend(self.trace_context);
        if let Some(r) = self.reply_to {
            message.reply_to = r;
        }
        if let Some(p) = self.producer_id {
            message.producer_id = p;
        }
        if let Some(id) = self.id {
            message.id = id;
        }
        Ok(())
    }
}

/// A pulse as the sidecar streams it. The payload's bytes are base64 in `payload.value_base64`;
/// with type URL `application/json` (and valid JSON) the value is also given as `payload.json`,
/// and with a `text/` type URL (and valid UTF-8) as `payload.text`.
pub fn pulse(m: &ArqonMessage) -> Value {
    let payload = m.payload.as_ref().map(|p| {
        let mut obj = json!({
            "type_url": p.type_url,
            "value_base64": B64.encode(&p.value),
        });
        if p.type_url == "application/json" {
            if let Ok(v) = serde_json::from_slice::<Value>(&p.value) {
                obj["json"] = v;
            }
        } else if p.type_url.starts_with("text/") {
            if let Ok(s) = std::str::from_utf8(&p.value) {
                obj["text"] = Value::String(s.to_owned());
            }
        }
        obj
    });
    let mut obj = json!({
        "id": m.id,
        "sequence": m.sequence,
        "reality_id": m.reality_id,
        "topic": m.topic,
        "producer_id": m.producer_id,
        "timestamp_unix_nanos": m.timestamp_unix_nanos,
        "trace_context": m.trace_context,
        "causal": m.causal,
        "tenant": m.tenant,
        "subject": m.subject,
        "payload": payload,
    });
    if !m.reply_to.is_empty() {
        obj["reply_to"] = Value::String(m.reply_to.clone());
    }
    if let Some(s) = &m.spectral {
        obj["spectral"] = json!({
            "coherence": s.coherence,
            "criticality": s.criticality,
            "eigenvalues": s.eigenvalues,
        });
    }
    if !m.emitted_by.is_empty() {
        obj["emitted_by"] = Value::String(m.emitted_by.clone());
        obj["input_sequence"] = Value::from(m.input_sequence);
    }
    obj
}

pub fn ack(a: &PubAck) -> Value {
    json!({
        "reality_id": a.reality_id,
        "sequence": a.sequence,
        "id": a.id,
        "timestamp_unix_nanos": a.timestamp_unix_nanos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_payload_round_trips() {
        let env: Envelope = serde_json::from_value(json!({
            "payload": {"t": 21.5},
            "spectral": {"coherence": 0.9},
            "trace_context": {"k": "v"},
        }))
        .unwrap();
        let mut m = ArqonMessage::default();
        env.apply(&mut m).unwrap();
        assert_eq!(m.payload.as_ref().unwrap().type_url, "application/json");
        let out = pulse(&m);
        assert_eq!(out["payload"]["json"]["t"], json!(21.5));
        assert_eq!(out["spectral"]["coherence"], json!(0.9));
        assert_eq!(out["trace_context"]["k"], json!("v"));
    }

    #[test]
    fn both_payload_forms_are_refused() {
        let env: Envelope =
            serde_json::from_value(json!({"payload": "a", "payload_base64": "YQ=="})).unwrap();
        assert!(env.apply(&mut ArqonMessage::default()).is_err());
    }
}
