use std::collections::HashMap;

use arqonbus_proto::v1::{ArqonMessage, DeltaInfo, SpectralMetadata};

/// A pulse to publish. The bus stamps sequence, time and (unless set) id.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    message: ArqonMessage,
}

impl Outgoing {
    pub fn new(reality: &str, topic: &str) -> Self {
        Self {
            message: ArqonMessage {
                reality_id: reality.to_owned(),
                topic: topic.to_owned(),
                ..Default::default()
            },
        }
    }

    /// A payload of raw bytes (type URL `application/octet-stream`).
    pub fn bytes(self, value: impl Into<Vec<u8>>) -> Self {
        self.payload("application/octet-stream", value)
    }

    /// A payload with an explicit type URL.
    pub fn payload(mut self, type_url: &str, value: impl Into<Vec<u8>>) -> Self {
        self.message.payload = Some(prost_types::Any {
            type_url: type_url.to_owned(),
            value: value.into(),
        });
        self
    }

    /// A protobuf message payload, packed as `type.googleapis.com/<full name>`.
    pub fn message<M: prost::Name>(self, m: &M) -> Self {
        let url = M::type_url();
        self.payload(&url, m.encode_to_vec())
    }

    /// On a delta-only topic (docs/delta.md): sends `state` as a delta against `base`, the
    /// topic's current state at `base_sequence` (as a delivery or the previous `PubAck` told
    /// it). The bus applies it and sequences the whole state; a stale base is refused with
    /// INVALID_REQUEST. Replaces the payload's value, keeping its type URL.
    pub fn delta_of(mut self, base_sequence: u64, base: &[u8], state: &[u8]) -> Self {
        let payload = self.message.payload.get_or_insert_with(Default::default);
        payload.value = arqonbus_proto::delta::encode(base, state);
        self.message.delta = Some(DeltaInfo {
            keyframe: false,
            base_sequence,
            checksum: arqonbus_proto::delta::checksum(state),
        });
        self
    }

    pub fn producer(mut self, producer_id: &str) -> Self {
        self.message.producer_id = producer_id.to_owned();
        self
    }

    pub fn id(mut self, id: &str) -> Self {
        self.message.id = id.to_owned();
        self
    }

    pub fn reply_to(mut self, topic: &str) -> Self {
        self.message.reply_to = topic.to_owned();
        self
    }

    pub fn spectral(mut self, coherence: f64, criticality: f64, eigenvalues: Vec<f64>) -> Self {
        self.message.spectral = Some(SpectralMetadata {
            coherence,
            criticality,
            eigenvalues,
        });
        self
    }

    pub fn trace_context(mut self, context: HashMap<String, String>) -> Self {
        self.message.trace_context = context.into_iter().collect();
        self
    }

    /// Causal context to send beyond what the client tracks itself (reality → sequence).
    pub fn causal(mut self, context: HashMap<String, u64>) -> Self {
        self.message.causal = context.into_iter().collect();
        self
    }

    /// A pulse from an envelope built elsewhere (the bus still stamps what it stamps).
    pub fn from_message(message: ArqonMessage) -> Self {
        Self { message }
    }

    /// The envelope as it will be sent (before the client adds its causal context).
    pub fn into_message(self) -> ArqonMessage {
        self.message
    }
}
