//! ArqonBus: a thread-per-core message bus for pulses.
//!
//! # Layout
//!
//! - [`config`]: the embedded defaults, the TOML file and the validation of every bound.
//! - [`server`]: starts one shard per core and stops them; the embedding API used by `main` and
//!   by the integration tests.
//! - [`shard`]: one pinned glommio executor; owns the connections it accepted, the realities that
//!   hash to it, and the local subscription index.
//! - [`spsc`]: the full mesh of bounded single-producer/single-consumer rings between shards,
//!   and the ordered outboxes in front of them.
//! - [`session`]: one client connection: handshake, frame dispatch (one file per frame kind),
//!   and the bounded outbound queue with its slow-consumer policy.
//! - [`transport`]: listening sockets (SO_REUSEPORT on every shard) for TCP, TLS 1.3,
//!   WebSocket and secure WebSocket, and the TLS configuration with its reload.
//! - [`shield`]: the edge every request passes: [`auth`] (tokens, client certificates, grants,
//!   the failure rate limit) and [`tenant`] (per-tenant quotas).
//! - [`filter`]: spectral filters on subscriptions: the expression language, its bounds, and the
//!   allocation-free evaluator that runs on the subscriber's shard before a pulse is queued.
//! - [`routing`]: topic syntax, subscription patterns and the stable reality-to-shard hash.
//! - [`time`]: the one clock seam.
//! - [`policy`]: CASIL, the Wasm safety policies every published pulse passes on its
//!   connection's shard before it is sequenced (one wasmtime engine per process, instances per
//!   shard, fail-closed).
//! - [`operator`]: hosted Wasm operators: on a reality's owner shard, right after a pulse is
//!   sequenced, each operator bound to it runs (CASIL's engine, fuel and caps) and what it emits
//!   is sequenced right behind, deterministically, so a replay reproduces it bit for bit.
//! - [`replay`]: deterministic replay and time-travel forks of a retained reality, offline, through
//!   the same operator host; and `diff` of two logs.
//! - [`audit`]: the append-only, hash-chained, fsynced log of every governance action.
//! - [`metrics`]: per-shard counters and the latency histogram, written by one shard and summed
//!   by readers.
//! - [`health`]: the server's phase (starting, ready, stopping) and shard liveness, shared with
//!   the admin listener and the systemd watchdog.
//! - [`admin`]: the admin HTTP listener: `/metrics` (Prometheus), `/healthz`, `/readyz`.
//! - [`service`]: life under systemd: READY, WATCHDOG (only while every shard turns), STOPPING.
//! - [`tune`]: `arqonbus tune --check|--apply`, the kernel settings a bus host needs.
//! - `fuzzing` (hidden, not an API): one entry point per decoder that meets outside bytes, for
//!   the cargo-fuzz targets in `fuzz/` and the corpus replay test (fuzz/README.md).
//! - [`cli`]: the client subcommands (`pub`, `sub`, `history`, and `policy` for controllers) on
//!   the Rust client, and `audit verify|show`.
//!
//! # Invariants worth naming
//!
//! - A reality has exactly one owner shard, `stable_hash(reality) % shards`; only the owner
//!   stamps sequences and timestamps, so a reality's sequence is strictly increasing from 1 with
//!   no gaps and its timestamps never decrease. (An idle ephemeral reality nobody subscribes to
//!   may be forgotten to make room, and starts again at 1; a retained one never is.)
//! - Shards share no mutable state on the data path. They talk only through the SPSC mesh; a
//!   full ring makes the sender wait, it never drops.
//! - A pulse is encoded once, by its owner. Every subscriber on every shard is sent the same
//!   reference-counted bytes behind a small per-subscription header.
//! - A pulse is sequenced only after every policy bound to it has answered allow; a policy that
//!   traps, runs out of fuel or time, cannot be instantiated, or answers anything else blocks it.
//! - A hosted operator's outputs are sequenced in the same step as their input, directly behind
//!   it; an input's outputs are all sequenced or (on any fault) none are. The same inputs through
//!   the same operators and parameters encode to the same output bytes in every process.
//! - A governance action (`sys.control.*`, policy and operator loads and unloads) takes effect only after its
//!   audit record is on disk.
//! - A session's identity is settled once, at Hello, and every publish, subscribe and history
//!   read is checked against it; a refusal answers that request only.
//! - Tenants share no per-pulse state: publish rates are per-shard token buckets; connection and
//!   subscription counts are shared atomics touched only when those change.
//! - A subscription's filter runs on its own shard before the pulse is queued, allocates
//!   nothing, and never admits a pulse whose envelope it cannot walk.
//! - A retained reality's log is made only by a write, after the per-shard and per-tenant caps
//!   on retained realities allow it, and on the shard's blocking pool: a read never creates
//!   files, and log creation, recovery and segment rolls run off the reactor (but for the rare
//!   roll an operator's output needs, which is sequenced in its input's step and cannot wait).
//! - Every queue has a configured bound. A slow consumer is shed or disconnected; it never
//!   stalls its shard, the rings, or other subscribers.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod circuit;
pub mod cli;
pub mod config;
pub mod delta;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod history;
pub mod metrics;
pub mod operator;
pub mod param;
pub mod policy;
pub mod presence;
pub mod replay;
pub mod routing;
pub mod sam;
pub mod server;
pub mod service;
pub mod session;
pub mod shard;
pub mod shield;
pub mod spsc;
pub mod store;
pub mod tenant;
pub mod time;
pub mod transport;
pub mod tune;

pub use arqonbus_proto as proto;
pub use config::Config;
pub use server::{Server, ServerError};

/// The server's version, announced in `Welcome.server_version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
