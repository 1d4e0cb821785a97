//! `arqonbus-sidecar`: HTTP and gRPC onto the bus and back.
//!
//! # Layout
//!
//! - [`config`]: the one TOML file, defaults embedded, every bound checked at start.
//! - [`sessions`]: bus sessions for northbound callers, one per distinct bearer token (bounded,
//!   idle-expired), and the bound on open streams.
//! - [`http`]: the REST surface (publish, history as JSON lines, subscribe as SSE), `/healthz`,
//!   `/metrics`. [`grpc`]: the service `arqon.sidecar.v1.Bus`.
//! - [`error`]: bus errors as HTTP statuses and gRPC codes, the bus's message kept.
//! - [`southbound`]: routes that make legacy HTTP services operators on the bus.
//! - [`serve`]: listeners, TLS 1.3, HTTP/1.1 and HTTP/2 for both surfaces. [`metrics`]: counters.
//!
//! # Invariants
//!
//! - A caller's request reaches the bus on a session opened with the caller's own token; the
//!   sidecar's token (`bus.token`) is used only by its routes.
//! - Sessions, streams, bodies, history reads and route calls in flight are all bounded by
//!   configuration; a bound reached is an error (503, 413, 400) or backpressure (routes), never
//!   unbounded growth.
//! - Nothing northbound is retried; a route retries only when configured `idempotent`.

pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod json;
pub mod metrics;
pub mod serve;
pub mod sessions;
pub mod southbound;

/// The generated gRPC code of `arqon.sidecar.v1` (server and client).
pub mod pb {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/arqon.sidecar.v1.rs"));
}

use std::sync::Arc;

/// What every handler shares.
pub struct App {
    pub config: config::Config,
    pub sessions: Arc<sessions::Sessions>,
    pub metrics: Arc<metrics::Metrics>,
}

/// Makes ring rustls's process-wide crypto provider (reqwest's TLS asks for the default). Safe to
/// call more than once.
pub fn install_crypto_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}
