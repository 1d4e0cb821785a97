use std::sync::Arc;

use arqonbus_proto::v1::{Error as WireError, ErrorCode};

/// Everything that can go wrong talking to the bus.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("i/o error: {0}")]
    Io(Arc<std::io::Error>),
    /// The server answered with an error code.
    #[error("server error {code:?}: {message}")]
    Server {
        code: ErrorCode,
        message: String,
        /// For HISTORY_UNAVAILABLE: the first sequence still kept.
        first_available_sequence: u64,
    },
    /// The server dropped this many pulses of the subscription: shed because this client read
    /// too slowly, or held by a causal subscription until their dependencies' time ran out.
    #[error(
        "{count} pulses were dropped by the server (this client read too slowly, or a causal \
         hold ran out before their dependencies arrived)"
    )]
    Dropped { count: u64 },
    #[error("timed out")]
    Timeout,
    #[error("connection closed")]
    Closed,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// A delta-only topic's state could not be rebuilt (a missing base, a delta that does not
    /// apply, a checksum mismatch): the stream gives an error instead of a state it cannot
    /// prove. The next keyframe of the topic starts it again.
    #[error("delta: {0}")]
    Delta(String),
}

impl ClientError {
    pub(crate) fn from_wire(e: &WireError) -> Self {
        ClientError::Server {
            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
            message: e.message.clone(),
            first_available_sequence: e.first_available_sequence,
        }
    }

    /// The server's error code, when this is a server error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(Arc::new(e))
    }
}
