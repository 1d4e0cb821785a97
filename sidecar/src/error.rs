//! One error type for what a northbound caller can be told, and its two faces: an HTTP status
//! with a JSON body, and a gRPC status. The bus's message is passed through unchanged.

use arqonbus_client::proto::v1::ErrorCode;
use arqonbus_client::ClientError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What went wrong, in the caller's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A malformed request (bad topic, reality, filter, envelope).
    Invalid,
    Unauthenticated,
    /// Outside the token's grants, or a policy said no.
    Forbidden,
    /// A payload, frame or per-connection limit.
    TooLarge,
    /// A tenant quota.
    Quota,
    /// The history range is no longer kept.
    Gone,
    /// The bus cannot be reached, is shutting down, or could not store the pulse; or the
    /// sidecar is at one of its own bounds.
    Unavailable,
    Timeout,
    Internal,
}

/// An error for a northbound caller.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: Kind,
    /// The bus's error code name (`PERMISSION_DENIED`) or the sidecar's own reason.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: Kind, code: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, "INVALID_REQUEST", message)
    }

    pub fn http_status(&self) -> StatusCode {
        match self.kind {
            Kind::Invalid => StatusCode::BAD_REQUEST,
            Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::Quota => StatusCode::TOO_MANY_REQUESTS,
            Kind::Gone => StatusCode::GONE,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self.kind {
            Kind::Invalid => Code::InvalidArgument,
            Kind::Unauthenticated => Code::Unauthenticated,
            Kind::Forbidden => Code::PermissionDenied,
            Kind::TooLarge | Kind::Quota => Code::ResourceExhausted,
            Kind::Gone => Code::OutOfRange,
            Kind::Unavailable => Code::Unavailable,
            Kind::Timeout => Code::DeadlineExceeded,
            Kind::Internal => Code::Internal,
        };
        tonic::Status::new(code, format!("{}: {}", self.code, self.message))
    }

    /// The JSON body of an HTTP error: `{"error": {"code", "message", "status"}}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "status": self.http_status().as_u16(),
            }
        })
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Server { code, message, .. } => {
                let kind = match code {
                    ErrorCode::InvalidTopic
                    | ErrorCode::InvalidReality
                    | ErrorCode::InvalidRequest
                    | ErrorCode::DecodeFailed
                    | ErrorCode::HelloRequired
                    | ErrorCode::UnsupportedVersion
                    | ErrorCode::TypeMismatch => Kind::Invalid,
                    ErrorCode::Unauthenticated => Kind::Unauthenticated,
                    ErrorCode::PermissionDenied | ErrorCode::PolicyDenied => Kind::Forbidden,
                    ErrorCode::FrameTooLarge | ErrorCode::LimitExceeded => Kind::TooLarge,
                    ErrorCode::QuotaExceeded => Kind::Quota,
                    ErrorCode::HistoryUnavailable => Kind::Gone,
                    // A policy that failed blocked the pulse: the bus's fault, not the caller's,
                    // and maybe passing.
                    ErrorCode::PolicyFault
                    | ErrorCode::ShuttingDown
                    | ErrorCode::StorageFailed
                    | ErrorCode::SlowConsumer
                    | ErrorCode::TimedOut => Kind::Unavailable,
                    ErrorCode::Internal | ErrorCode::Unspecified => Kind::Internal,
                };
                Self::new(kind, code.as_str_name(), message.clone())
            }
            ClientError::Timeout => Self::new(
                Kind::Timeout,
                "TIMEOUT",
                "the bus did not answer in time (bus.timeout_ms)",
            ),
            ClientError::Io(_) | ClientError::Closed | ClientError::Tls(_) => Self::new(
                Kind::Unavailable,
                "BUS_UNAVAILABLE",
                format!("the bus cannot be reached: {e}"),
            ),
            ClientError::Dropped { .. } | ClientError::Protocol(_) | ClientError::Delta(_) => {
                Self::new(Kind::Internal, "BUS_PROTOCOL", e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.http_status(), axum::Json(self.body())).into_response()
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        e.grpc_status()
    }
}
