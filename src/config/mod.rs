//! Configuration: embedded defaults, an optional TOML file, command-line overrides, and a
//! validation pass that checks every bound at start and names the key to change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config key `{key}` = {value} is out of range: must be between {min} and {max}")]
    OutOfRange {
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("config key `{key}` is invalid: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// What to do with a subscriber whose outbound buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Drop pulses for that connection only, count them, and tell it with `Dropped`.
    #[default]
    Shed,
    /// Send SLOW_CONSUMER and close the connection.
    Disconnect,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The whole configuration. Every field has an embedded default, so `arqonbus serve` runs with
/// no file at all.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every shard accepts plain TCP client connections on (SO_REUSEPORT).
    pub listen: SocketAddr,
    /// TLS 1.3 over TCP (length-prefixed frames, as on `listen`); needs `[tls]`.
    pub tls_listen: Option<SocketAddr>,
    /// Plain WebSocket: one binary message per frame.
    pub ws_listen: Option<SocketAddr>,
    /// WebSocket over TLS 1.3; needs `[tls]`.
    pub wss_listen: Option<SocketAddr>,
    /// Plain (unencrypted) TCP and WebSocket are refused on an address other than loopback
    /// unless this is set; the server then logs a warning at start.
    pub allow_plaintext_non_local: bool,
    /// Number of shards (pinned executors). 0 means one per available core.
    pub shards: usize,
    /// Where retained realities and the audit log live.
    pub data_dir: PathBuf,
    /// Admin HTTP listener (`/metrics`, `/healthz`, `/readyz`); `"off"` in the file (`None`)
    /// turns it off. A bare port means loopback.
    #[serde(deserialize_with = "deserialize_admin_listen")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token the admin listener asks for on every path but `/healthz` and `/readyz`
    /// (at least 16 bytes). Required when `admin_listen` is not on loopback.
    pub admin_token: Option<String>,
    pub limits: Limits,
    pub slow_consumer: SlowConsumerPolicy,
    pub log: LogConfig,
    pub io: IoConfig,
    /// CASIL: engine-wide settings, defaults and ceilings for policies.
    pub policy: PolicyConfig,
    /// Policies loaded at start, in the file as `[[policies]]`.
    pub policies: Vec<PolicyFile>,
    /// Hosted operators: bounds, defaults and ceilings.
    pub operator: OperatorConfig,
    /// Operators loaded at start, in the file as `[[operators]]`.
    pub operators: Vec<OperatorFile>,
    pub control: ControlConfig,
    pub presence: PresenceConfig,
    /// The directory of the config file, against which relative `wasm_path`s are resolved
    /// (the working directory when there is no file).
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
    pub storage: StorageConfig,
    /// Which realities are retained, first match wins. Realities no rule matches are
    /// ephemeral: fire and forget, no history.
    pub retention: Vec<RetentionRule>,
    /// Delta-only topics (docs/delta.md), first match wins.
    pub delta: Vec<DeltaRule>,
    /// Certificates for `tls_listen` and `wss_listen`, and client certificates (mTLS).
    pub tls: Option<TlsConfig>,
    pub auth: AuthConfig,
    /// Per-tenant quotas and scheduling. A tenant not listed has no quota and shares the
    /// default compartment of each shard.
    pub tenants: Vec<TenantQuota>,
    /// How shards divide their time between tenants, and what a faulting tenant costs itself.
    pub tenancy: TenancyConfig,
}

/// Tenant compartments: every shard runs each `[[tenants]]` entry's sessions in a task queue of
/// its own, the sessions of tenants not listed in one shared queue, and connections still in
/// their handshake in another; the reactor serves the queues by share.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenancyConfig {
    /// Shares of the queue that serves connections before their Hello settles a tenant (TLS
    /// and WebSocket handshakes, authentication): connection churn competes here.
    pub handshake_shares: u64,
    /// Shares of the queue shared by tenants without a `[[tenants]]` entry (anonymous
    /// sessions included).
    pub default_shares: u64,
    /// While a queue of class `latency` has work, the reactor stops serving any other queue
    /// at least this often (µs) to look at it.
    pub latency_class_us: u64,
    /// Faults one tenant may cause on one shard within a second before that shard throttles
    /// it: policy faults of its pulses and protocol errors of its sessions.
    pub max_faults_per_sec: u64,
    /// How long a throttled tenant's sessions on that shard are left unread and its new
    /// sessions there refused (QUOTA_EXCEEDED).
    pub throttle_ms: u64,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        Self {
            handshake_shares: 100,
            default_shares: 100,
            latency_class_us: 250,
            max_faults_per_sec: 100,
            throttle_ms: 1000,
        }
    }
}

/// How a tenant's task queue is scheduled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantClass {
    /// Served by share, like every other queue.
    #[default]
    Standard,
    /// Also served by share, but while it has work, no other queue runs longer than
    /// `tenancy.latency_class_us` without the reactor looking at it: for acks and small
    /// pulses whose latency matters more than their throughput.
    Latency,
}

/// TLS 1.3 settings. The files are read at start and again on SIGHUP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// PEM CA certificates that client certificates must chain to (mTLS).
    #[serde(default)]
    pub client_ca_path: Option<PathBuf>,
    /// Refuse the handshake of a client without a certificate from `client_ca_path`. When
    /// false, a client certificate is checked if presented and optional otherwise.
    #[serde(default)]
    pub require_client_cert: bool,
}

/// Who may connect and what they may do.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Refuse sessions whose Hello carries no valid token (UNAUTHENTICATED).
    pub require_token: bool,
    /// Ed25519 public keys (base64, 32 bytes) whose signatures on tokens are trusted; printed
    /// by `arqonbus token keygen`. Each is a bare key or `{ id = "...", key = "..." }`: a token
    /// whose `kid` names an id is checked against that key only.
    pub trusted_keys: Vec<TrustedKeyConfig>,
    /// When set, every token must carry this `aud` (the name tokens for this bus are issued
    /// for).
    pub audience: Option<String>,
    /// A file of revoked tokens (`jti <token id>` and `subject <tenant>/<subject>` lines), read
    /// at start and again on SIGHUP; sessions whose token it revokes are closed.
    pub revocation_file: Option<PathBuf>,
    /// The largest revocation file read; a larger one is refused (at start: the server does
    /// not start; on SIGHUP: the previous list stays).
    pub max_revocation_file_bytes: u64,
    /// The tenant of sessions without a token (or client certificate), when tokens are not
    /// required.
    pub anonymous_tenant: String,
    /// Failed authentications from one address within `failure_window_ms` before further
    /// connections from it are refused for `block_ms`.
    pub max_failures: u64,
    pub failure_window_ms: u64,
    pub block_ms: u64,
    /// Addresses tracked for failures; the oldest entry is forgotten past it.
    pub max_tracked_addresses: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            require_token: false,
            trusted_keys: Vec::new(),
            audience: None,
            revocation_file: None,
            max_revocation_file_bytes: 16 << 20,
            anonymous_tenant: "anonymous".into(),
            max_failures: 10,
            failure_window_ms: 60_000,
            block_ms: 60_000,
            max_tracked_addresses: 10_000,
        }
    }
}

/// One entry of `auth.trusted_keys`: a bare public key (tokens without `kid` may use it), or
/// one with the id tokens name it by.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TrustedKeyConfig {
    Key(String),
    Named(NamedKeyConfig),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedKeyConfig {
    /// What tokens signed by this key say in `kid`: 1 to 64 bytes of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// The public key, base64 of 32 bytes.
    pub key: String,
}

impl TrustedKeyConfig {
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Key(_) => None,
            Self::Named(n) => Some(&n.id),
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Self::Key(k) => k,
            Self::Named(n) => &n.key,
        }
    }
}

impl From<String> for TrustedKeyConfig {
    fn from(key: String) -> Self {
        Self::Key(key)
    }
}

/// Is `id` usable as a key id (`kid`)?
fn valid_key_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Quotas of one tenant. 0 means no bound.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantQuota {
    pub name: String,
    /// Open sessions, over all shards.
    pub max_connections: u64,
    /// Subscriptions, over all shards.
    pub max_subscriptions: u64,
    /// Publish rate (token bucket). Each shard gets `rate / shards`, so the bound holds without
    /// shards sharing anything per pulse.
    pub publish_pulses_per_sec: u64,
    pub publish_bytes_per_sec: u64,
    /// Bytes the tenant's publishes may add to retained realities, over all shards.
    pub max_retained_bytes: u64,
    /// Retained realities the tenant's publishes may create, over all shards.
    pub max_retained_realities: u64,
    /// The tenant's share of every shard's time against the other queues (1–1000; each
    /// shard's own work — sequencing, fan-out, storage — runs in a queue of 1000). 0 means
    /// `tenancy.default_shares`.
    pub shares: u64,
    pub class: TenantClass,
    /// Wasm fuel its pulses' CASIL policies may burn per second (split evenly over the
    /// shards, like the publish rate). Over it, its publishes get QUOTA_EXCEEDED and its
    /// connection is left unread until the budget refills.
    pub policy_fuel_per_sec: u64,
    /// `HistoryGet` reads of its sessions in flight at once on each shard.
    pub max_history_reads_per_shard: u64,
}

/// When a retained reality's records reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// An ack (and a delivery) means the record is on disk: group-committed fdatasync.
    Always,
    /// Flushed every `sync_interval_ms`; acks do not wait.
    Interval,
    /// Left to the kernel: survives a process crash, not a power cut.
    Os,
}

/// A retention rule: realities whose id matches `realities` (a glob: `*`, `?`) keep their
/// pulses on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    pub realities: String,
    /// Segments whose newest record is older than this are deleted; 0 keeps forever.
    #[serde(default)]
    pub max_age_ms: u64,
    /// Oldest segments are deleted while the reality holds more; 0 means no bound.
    #[serde(default)]
    pub max_bytes: u64,
    #[serde(default = "default_sync")]
    pub sync: SyncMode,
    #[serde(default = "default_sync_interval_ms")]
    pub sync_interval_ms: u64,
    /// Size of each preallocated segment file; defaults to `storage.segment_bytes`.
    #[serde(default)]
    pub segment_bytes: Option<u64>,
}

fn default_sync() -> SyncMode {
    SyncMode::Always
}

fn default_sync_interval_ms() -> u64 {
    100
}

impl RetentionRule {
    pub fn matches(&self, reality: &str) -> bool {
        wildmatch::WildMatch::new(&self.realities).matches(reality)
    }
}

/// A delta-only rule: topics matching `topics` in realities matching `realities` go out as
/// deltas between keyframes (docs/delta.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaRule {
    /// A glob over reality ids (`*`, `?`).
    pub realities: String,
    /// A subscription pattern (`*` one segment, `>` the rest).
    pub topics: String,
    /// A whole state goes to every subscriber at least this often (in pulses of the topic).
    #[serde(default = "default_keyframe_every")]
    pub keyframe_every: u32,
}

fn default_keyframe_every() -> u32 {
    100
}

/// What to do when recovery finds corruption: a bad record before the durable position (the
/// checkpoint or a segment trailer), one with valid records behind it, or a damaged header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnCorruption {
    /// Refuse to start, naming the file and offset.
    #[default]
    Refuse,
    /// Move the reality's files to `data_dir/quarantine/` and refuse its traffic until an
    /// operator looks at them; the rest of the bus starts.
    Quarantine,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub segment_bytes: u64,
    pub on_corruption: OnCorruption,
    /// Bytes a retained reality with `sync = "always"` may hold waiting for a flush before
    /// publishers wait.
    pub max_unflushed_bytes: u64,
    /// How often each retained reality records its durable position (and, for `os`, flushes).
    pub checkpoint_interval_ms: u64,
    /// Bytes per history chunk (and per replay step); never more than half of
    /// `limits.max_frame_bytes`, so a chunk always fits in a frame.
    pub history_chunk_bytes: u64,
    /// Records one step of a history read or replay examines at most, matching its pattern or
    /// not, before the owner's reactor turns: bounds the time a sparse read holds the shard.
    pub history_scan_records: u64,
    /// Bytes of records one step of a history read or replay examines at most (as
    /// `history_scan_records`; at least one record is always examined).
    pub history_scan_bytes: u64,
    /// Microseconds one step of a history read or replay runs at most (checked every few
    /// records): a step runs to completion, so this is how long it can keep another tenant's
    /// ready work waiting.
    pub history_step_us: u64,
    /// Retained realities that get a series of their own on `/metrics`
    /// (`arqonbus_reality_retained_bytes{reality=...}`), largest first; the totals always cover
    /// all of them. Bounded because reality names are not.
    pub metrics_max_realities: u64,
    /// Longest a publish waits for its retained reality's log to be made (off the reactor)
    /// before it is refused with STORAGE_FAILED.
    pub open_timeout_ms: u64,
    /// Threads in each shard's blocking pool, where flushes, log creation, segment rolls,
    /// recovery and retention's deletions run: one slow `fdatasync` does not hold up the
    /// shard's other storage work unless all of them are busy.
    pub blocking_threads_per_shard: u64,
    /// Group commits of one retained reality (`sync = "always"`) that may be syncing at once.
    /// Above 1, pulses that arrive while a flush runs start the next one at once instead of
    /// waiting for it; acks are still released in sequence order, each after every flush
    /// before it. 1 by default: on ext4 over a virtio disk, concurrent `fdatasync`s of one
    /// file wait on each other, and 4 measured slower than 1 (bench/README.md).
    pub flushes_in_flight: u64,
}

/// Default of `storage.metrics_max_realities`.
pub const DEFAULT_METRICS_MAX_REALITIES: u64 = 100;

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            on_corruption: OnCorruption::Refuse,
            max_unflushed_bytes: 8 << 20,
            checkpoint_interval_ms: 1000,
            history_chunk_bytes: 256 << 10,
            history_scan_records: 4096,
            history_scan_bytes: 4 << 20,
            history_step_us: 200,
            metrics_max_realities: DEFAULT_METRICS_MAX_REALITIES,
            open_timeout_ms: 10_000,
            blocking_threads_per_shard: 2,
            flushes_in_flight: 1,
        }
    }
}

/// Bounds on every queue, buffer and count.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest frame a client may send, and the largest the server will build.
    pub max_frame_bytes: u64,
    /// Largest payload (`ArqonMessage.payload.value`) a pulse may carry; checked at the shield
    /// before any policy runs.
    pub max_payload_bytes: u64,
    /// Bytes queued for one connection before the slow-consumer policy applies.
    pub max_outbound_bytes: u64,
    pub max_subscriptions_per_connection: u64,
    pub max_connections_per_shard: u64,
    /// Realities a shard will sequence; a publish that would create one more is refused.
    pub max_realities_per_shard: u64,
    /// Retained realities (each a directory and at least one preallocated segment) a shard
    /// will own; a publish that would create one more is refused before any file is made.
    pub max_retained_realities_per_shard: u64,
    /// Slots in each SPSC ring between two shards.
    pub ring_capacity: u64,
    /// Messages an outbox may hold in front of a full ring before publishers wait.
    pub outbox_capacity: u64,
    /// Time a new connection has for its whole handshake: TLS, the WebSocket upgrade, and Hello.
    pub handshake_timeout_ms: u64,
    /// Once a frame's first byte has arrived, time the rest has to arrive (TCP, TLS); then
    /// TIMED_OUT and the connection is closed.
    pub frame_timeout_ms: u64,
    /// A session that sends no frame for this long is closed (TIMED_OUT). After half of it the
    /// server sends a keepalive Ping, which clients answer.
    pub idle_timeout_ms: u64,
    /// On shutdown, time allowed for queued frames to reach clients.
    pub shutdown_drain_ms: u64,
    /// Listen backlog of each shard's socket.
    pub listen_backlog: u64,
    /// Pulses a connection with causal subscriptions may hold waiting for dependencies; when
    /// full, the oldest is dropped for its subscription (counted, reported with `Dropped`).
    pub max_causal_held: u64,
    /// Longest a causal subscription holds a pulse for its dependencies; then it is dropped for
    /// that subscription (counted, reported with `Dropped`) and what waited behind it goes on.
    pub causal_hold_ms: u64,
    /// Entries a publish's causal context (`ArqonMessage.causal`) may have; more is refused
    /// with LIMIT_EXCEEDED. Each entry is a dependency the causal gate checks.
    pub max_causal_entries: u64,
    /// Longest `Subscribe.filter` accepted, in bytes.
    pub max_filter_bytes: u64,
    /// Nodes a filter may have: operands, comparisons and `!`, `&&`, `||` operators.
    pub max_filter_nodes: u64,
    /// Deepest nesting of parentheses and `!` in a filter.
    pub max_filter_depth: u64,
    /// Delta-only topics one shard keeps a state for; pulses of further topics go out whole.
    pub max_delta_topics_per_shard: u64,
    /// Largest state delta-encoded; larger ones go out whole (as keyframes).
    pub max_delta_state_bytes: u64,
    /// Parameters one reality may have (`sys.control.param.set`).
    pub max_params_per_reality: u64,
    /// Presence changes of a reality are gathered this long into one `sys.presence.changes`
    /// pulse.
    pub presence_coalesce_ms: u64,
    /// Sessions one reality's presence lists; past it, further ones are present but not listed.
    pub max_presence_per_reality: u64,
    /// TCP keepalive on client connections: a peer that vanished (cable pulled, host gone) is
    /// found within about twice this and its session ends. 0 turns it off.
    pub keepalive_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `arqonbus=debug`. RUST_LOG overrides it.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IoConfig {
    /// Memory each shard registers with io_uring (locked memory; see RLIMIT_MEMLOCK).
    pub io_memory_bytes: u64,
    /// io_uring submission queue depth per shard.
    pub ring_depth: u64,
    /// Pin each shard to a core. Turn off only on machines where pinning is not allowed.
    pub pin_cores: bool,
    /// How long an idle shard polls before it parks. Parking and waking a reactor costs a
    /// context switch and a process-wide memory barrier (IPIs to every core), which dominates
    /// at moderate rates; a short spin trades idle CPU for latency. 0 parks at once.
    pub spin_before_park_us: u64,
}

/// `[policy]`: how policies run, and the ceilings a policy's own limits may not exceed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Period of the one epoch ticker thread that enforces policy deadlines. A deadline fires
    /// between `deadline_ms` and `deadline_ms + epoch_tick_ms` after a call starts.
    pub epoch_tick_ms: u64,
    /// Policies loaded at once (from the file and by controllers).
    pub max_policies: u64,
    /// Largest module accepted, in bytes.
    pub max_wasm_bytes: u64,
    /// Limits of a policy that does not set its own.
    pub default_fuel_per_call: u64,
    pub default_max_memory_pages: u64,
    pub default_deadline_ms: u64,
    /// Ceilings: a policy asking for more is refused.
    pub max_fuel_per_call: u64,
    pub max_memory_pages: u64,
    pub max_deadline_ms: u64,
}

/// One `[[policies]]` entry: a policy loaded at start.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// `[a-z0-9_-]`, 1 to 64 bytes; controllers replace or unload the policy by this name.
    pub name: String,
    /// The module (binary or text format); relative to the config file's directory.
    pub wasm_path: PathBuf,
    /// Where the policy applies; at least one.
    pub bindings: Vec<BindingConfig>,
    /// Policies that apply to one pulse run in ascending `order`, then by name.
    #[serde(default)]
    pub order: i32,
    /// Handed to the policy in `PolicyInput.params`.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    /// 0 or absent: the `[policy]` default.
    #[serde(default)]
    pub fuel_per_call: u64,
    #[serde(default)]
    pub max_memory_pages: u64,
    #[serde(default)]
    pub deadline_ms: u64,
}

/// `[operator]`: how hosted Wasm operators run, and the ceilings an operator's own limits may not
/// exceed. They share CASIL's engine and epoch ticker (`policy.epoch_tick_ms`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OperatorConfig {
    /// Operators loaded at once (from the file and by controllers).
    pub max_operators: u64,
    /// Largest module accepted, in bytes.
    pub max_wasm_bytes: u64,
    /// Live instances on one shard: one per (operator, reality) that has seen an input.
    pub max_instances_per_shard: u64,
    /// Parameters one operator may hold (per reality), and the longest string value.
    pub max_params: u64,
    pub max_param_text_bytes: u64,
    /// After this many faults in a row on one reality the operator is parked there.
    pub max_consecutive_faults: u64,
    /// How many operator hops one client pulse may set off in its reality (an output feeding
    /// another operator is one more hop). Outputs past it are sequenced but not fed on.
    pub max_chain_depth: u64,
    /// Most bytes a live fork (`sys.control.reality.fork`) may replay into its new reality; the
    /// fork's records are held in memory between the replay and the import.
    pub max_fork_bytes: u64,
    /// Limits of an operator that does not set its own...
    pub default_fuel_per_call: u64,
    pub default_max_memory_pages: u64,
    pub default_deadline_ms: u64,
    pub default_max_emits_per_call: u64,
    pub default_max_emit_bytes_per_call: u64,
    /// ...and the most any operator may ask for.
    pub max_fuel_per_call: u64,
    pub max_memory_pages: u64,
    pub max_deadline_ms: u64,
    pub max_emits_per_call: u64,
    pub max_emit_bytes_per_call: u64,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            max_operators: 64,
            max_wasm_bytes: 8 << 20,
            max_instances_per_shard: 4096,
            max_params: 64,
            max_param_text_bytes: 4096,
            max_consecutive_faults: 5,
            max_chain_depth: 4,
            max_fork_bytes: 256 << 20,
            default_fuel_per_call: 10_000_000,
            default_max_memory_pages: 64,
            default_deadline_ms: 50,
            default_max_emits_per_call: 16,
            default_max_emit_bytes_per_call: 64 << 10,
            max_fuel_per_call: 1_000_000_000,
            max_memory_pages: 1024,
            max_deadline_ms: 1000,
            max_emits_per_call: 1024,
            max_emit_bytes_per_call: 1 << 20,
        }
    }
}

/// An operator parameter in the config file: a number or a string.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ParamConfig {
    Number(f64),
    Text(String),
}

/// One `[[operators]]` entry: a hosted operator loaded at start.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperatorFile {
    /// `[a-z0-9_-]`, 1 to 64 bytes; controllers replace, unload and tune it by this name.
    pub name: String,
    /// The module (binary or text format); relative to the config file's directory.
    pub wasm_path: PathBuf,
    /// Where it takes its inputs; at least one.
    pub bindings: Vec<BindingConfig>,
    /// Named parameters (numbers or strings) the guest reads with `param_f64` / `param_text`.
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, ParamConfig>,
    /// 0 or absent: the `[operator]` default.
    #[serde(default)]
    pub fuel_per_call: u64,
    #[serde(default)]
    pub max_memory_pages: u64,
    #[serde(default)]
    pub deadline_ms: u64,
    #[serde(default)]
    pub max_emits_per_call: u64,
    #[serde(default)]
    pub max_emit_bytes_per_call: u64,
    /// What it takes and gives (the SAM manifest; its name is the operator's): inputs of other
    /// types on covered topics are not fed to it, and an output of an undeclared type is a fault.
    #[serde(default)]
    pub manifest: Option<OperatorManifestFile>,
}

/// `[operators.manifest]`: an operator's declared types.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OperatorManifestFile {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub inputs: Vec<SchemaConfig>,
    #[serde(default)]
    pub outputs: Vec<SchemaConfig>,
    /// Strict mode: a serialized `google.protobuf.FileDescriptorSet` (e.g. `protoc
    /// --descriptor_set_out`) holding the declared types; relative to the config file.
    #[serde(default)]
    pub descriptor_set: Option<PathBuf>,
}

/// A topic pattern and the payload type URL it carries.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SchemaConfig {
    pub topic: String,
    #[serde(rename = "type")]
    pub type_url: String,
}

/// A reality glob (`*` = any run of characters, `?` = one) and a topic pattern (`*` one segment, `>` the
/// rest).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    pub reality_glob: String,
    pub topic_pattern: String,
}

/// `[control]`: who may send `sys.control.*` pulses.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// A session whose Hello.token equals one of these is a controller. Until the
    /// authentication work lands this is the only credential the bus checks. Each token must be
    /// at least 16 bytes.
    pub controller_tokens: Vec<String>,
    /// `sys.control.*` pulses from a session that is not a controller are refused before
    /// anything is decoded or written; each shard records them in the audit log as one record
    /// counting them at most once per this many ms (the first at once).
    pub refusal_record_window_ms: u64,
    /// Such pulses one connection may send per second (and in a burst); past it the
    /// connection is not read until the rate allows.
    pub non_controller_pulses_per_sec: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            controller_tokens: Vec::new(),
            refusal_record_window_ms: 60_000,
            non_controller_pulses_per_sec: 100,
        }
    }
}

/// `[presence]`: which realities hear of their presence changes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Reality globs whose presence changes are sequenced into the reality as
    /// `sys.presence.changes` pulses (and so stored when it is retained). Every reality's
    /// presence can be read with `PresenceGet` either way. Empty: none announced.
    pub announce: Vec<String>,
}

/// The most shares a task queue can have (glommio's bound; the shard's own queue has it).
pub const MAX_SHARES: u64 = 1000;

/// Shortest controller token accepted.
pub const MIN_CONTROLLER_TOKEN_BYTES: usize = 16;

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            epoch_tick_ms: 1,
            max_policies: 64,
            max_wasm_bytes: 4 << 20,
            default_fuel_per_call: 1_000_000,
            default_max_memory_pages: 64,
            default_deadline_ms: 20,
            max_fuel_per_call: 1_000_000_000,
            max_memory_pages: 1024,
            max_deadline_ms: 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4720)),
            shards: 0,
            data_dir: PathBuf::from("./arqonbus-data"),
            admin_listen: Some(DEFAULT_ADMIN_LISTEN),
            admin_token: None,
            limits: Limits::default(),
            slow_consumer: SlowConsumerPolicy::default(),
            log: LogConfig::default(),
            io: IoConfig::default(),
            policy: PolicyConfig::default(),
            policies: Vec::new(),
            operator: OperatorConfig::default(),
            operators: Vec::new(),
            control: ControlConfig::default(),
            presence: PresenceConfig::default(),
            base_dir: None,
            storage: StorageConfig::default(),
            retention: Vec::new(),
            delta: Vec::new(),
            tls_listen: None,
            ws_listen: None,
            wss_listen: None,
            allow_plaintext_non_local: false,
            tls: None,
            auth: AuthConfig::default(),
            tenants: Vec::new(),
            tenancy: TenancyConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            max_payload_bytes: 1 << 20,
            max_outbound_bytes: 8 << 20,
            max_subscriptions_per_connection: 1024,
            max_connections_per_shard: 50_000,
            max_realities_per_shard: 100_000,
            max_retained_realities_per_shard: 1_000,
            ring_capacity: 1024,
            outbox_capacity: 4096,
            handshake_timeout_ms: 10_000,
            frame_timeout_ms: 30_000,
            idle_timeout_ms: 120_000,
            shutdown_drain_ms: 5_000,
            listen_backlog: 4096,
            max_causal_held: 10_000,
            causal_hold_ms: 5_000,
            max_causal_entries: 1024,
            max_filter_bytes: 1024,
            max_filter_nodes: 128,
            max_filter_depth: 16,
            max_delta_topics_per_shard: 10_000,
            max_delta_state_bytes: 1 << 20,
            max_params_per_reality: 256,
            presence_coalesce_ms: 100,
            max_presence_per_reality: 100_000,
            keepalive_secs: 30,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl Default for IoConfig {
    fn default() -> Self {
        Self {
            io_memory_bytes: 1 << 20,
            ring_depth: 256,
            pin_cores: true,
            spin_before_park_us: 0,
        }
    }
}

/// The commented default configuration, printed by `arqonbus config`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The configuration the .deb installs as /etc/arqonbus/arqonbus.toml: the default, with
/// `data_dir` in the service's state directory. A test keeps the two in step.
pub const PACKAGED_TOML: &str = include_str!("../../systemd/arqonbus.toml");

/// Where the admin listener runs unless told otherwise: loopback, beside the client port.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    4721,
));

/// Parses an `admin_listen` value: `off` (no admin listener), a bare port (loopback), or an
/// address.
pub fn parse_admin_listen(value: &str) -> Result<Option<SocketAddr>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if let Ok(port) = value.parse::<u16>() {
        return Ok(Some(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    value.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!("`{value}` is not `off`, a port, or an address such as 127.0.0.1:4721")
    })
}

fn deserialize_admin_listen<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = String::deserialize(deserializer)?;
    parse_admin_listen(&value).map_err(serde::de::Error::custom)
}

impl Config {
    /// Reads a TOML file over the embedded defaults. Keys absent from the file keep their
    /// defaults; unknown keys are refused so a typo never silently does nothing.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        config.base_dir = path.parent().map(Path::to_owned);
        Ok(config)
    }

    /// Where a policy's `wasm_path` points: absolute, or relative to the config file.
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        match &self.base_dir {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_owned(),
        }
    }

    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The retention rule for a reality, if any (first match wins).
    pub fn retention_for(&self, reality: &str) -> Option<&RetentionRule> {
        self.retention.iter().find(|r| r.matches(reality))
    }

    /// Segment size for a rule.
    pub fn segment_bytes_for(&self, rule: &RetentionRule) -> u64 {
        rule.segment_bytes.unwrap_or(self.storage.segment_bytes)
    }

    /// The number of shards to run: the configured count, or one per available core.
    pub fn shard_count(&self) -> usize {
        if self.shards == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            self.shards
        }
    }

    /// Checks every bound. Called once at start; the server refuses to run on an error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        range("shards", self.shards as u64, 0, 256)?;
        range("limits.max_frame_bytes", l.max_frame_bytes, 1024, 64 << 20)?;
        // Above max_frame_bytes it changes nothing (no frame can carry such a payload), so
        // lowering the frame limit alone stays valid.
        range("limits.max_payload_bytes", l.max_payload_bytes, 0, 64 << 20)?;
        range(
            "limits.max_outbound_bytes",
            l.max_outbound_bytes,
            l.max_frame_bytes,
            4 << 30,
        )?;
        range(
            "limits.max_subscriptions_per_connection",
            l.max_subscriptions_per_connection,
            1,
            1 << 20,
        )?;
        range(
            "limits.max_connections_per_shard",
            l.max_connections_per_shard,
            1,
            10_000_000,
        )?;
        range(
            "limits.max_realities_per_shard",
            l.max_realities_per_shard,
            1,
            100_000_000,
        )?;
        range(
            "limits.max_retained_realities_per_shard",
            l.max_retained_realities_per_shard,
            1,
            1_000_000,
        )?;
        range("limits.ring_capacity", l.ring_capacity, 2, 1 << 20)?;
        range("limits.outbox_capacity", l.outbox_capacity, 1, 1 << 24)?;
        range(
            "limits.handshake_timeout_ms",
            l.handshake_timeout_ms,
            1,
            3_600_000,
        )?;
        range(
            "limits.shutdown_drain_ms",
            l.shutdown_drain_ms,
            0,
            3_600_000,
        )?;
        range("limits.frame_timeout_ms", l.frame_timeout_ms, 10, 3_600_000)?;
        range("limits.idle_timeout_ms", l.idle_timeout_ms, 100, 86_400_000)?;
        range("limits.listen_backlog", l.listen_backlog, 1, 1 << 20)?;
        range("limits.max_causal_held", l.max_causal_held, 1, 10_000_000)?;
        range("limits.causal_hold_ms", l.causal_hold_ms, 1, 3_600_000)?;
        range(
            "limits.max_causal_entries",
            l.max_causal_entries,
            1,
            1_000_000,
        )?;
        range("limits.max_filter_bytes", l.max_filter_bytes, 1, 64 << 10)?;
        range("limits.max_filter_nodes", l.max_filter_nodes, 1, 4096)?;
        // The parser and compiler recurse once or twice per level; the ceiling keeps that far
        // from the stack's size.
        range("limits.max_filter_depth", l.max_filter_depth, 1, 64)?;
        range(
            "limits.max_delta_topics_per_shard",
            l.max_delta_topics_per_shard,
            0,
            10_000_000,
        )?;
        range(
            "limits.max_delta_state_bytes",
            l.max_delta_state_bytes,
            0,
            1 << 30,
        )?;
        range(
            "limits.max_params_per_reality",
            l.max_params_per_reality,
            0,
            100_000,
        )?;
        range(
            "limits.presence_coalesce_ms",
            l.presence_coalesce_ms,
            1,
            60_000,
        )?;
        range(
            "limits.max_presence_per_reality",
            l.max_presence_per_reality,
            0,
            10_000_000,
        )?;
        range("limits.keepalive_secs", l.keepalive_secs, 0, 86_400)?;
        range(
            "io.io_memory_bytes",
            self.io.io_memory_bytes,
            64 << 10,
            1 << 30,
        )?;
        range("io.ring_depth", self.io.ring_depth, 8, 32_768)?;
        range(
            "io.spin_before_park_us",
            self.io.spin_before_park_us,
            0,
            1_000_000,
        )?;
        let st = &self.storage;
        let min_segment = l.max_frame_bytes + 64;
        range(
            "storage.segment_bytes",
            st.segment_bytes,
            min_segment,
            1 << 34,
        )?;
        range(
            "storage.max_unflushed_bytes",
            st.max_unflushed_bytes,
            l.max_frame_bytes,
            1 << 34,
        )?;
        range(
            "storage.checkpoint_interval_ms",
            st.checkpoint_interval_ms,
            10,
            3_600_000,
        )?;
        range(
            "storage.history_chunk_bytes",
            st.history_chunk_bytes,
            4096,
            64 << 20,
        )?;
        range(
            "storage.history_scan_records",
            st.history_scan_records,
            1,
            10_000_000,
        )?;
        range(
            "storage.history_scan_bytes",
            st.history_scan_bytes,
            4096,
            1 << 30,
        )?;
        range("storage.history_step_us", st.history_step_us, 10, 1_000_000)?;
        range(
            "storage.metrics_max_realities",
            st.metrics_max_realities,
            0,
            10_000,
        )?;
        range("storage.open_timeout_ms", st.open_timeout_ms, 10, 600_000)?;
        range(
            "storage.blocking_threads_per_shard",
            st.blocking_threads_per_shard,
            1,
            64,
        )?;
        range("storage.flushes_in_flight", st.flushes_in_flight, 1, 64)?;
        for rule in &self.retention {
            if rule.realities.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "retention.realities",
                    reason: "must be a glob such as `lab-*`".into(),
                });
            }
            range(
                "retention.sync_interval_ms",
                rule.sync_interval_ms,
                1,
                3_600_000,
            )?;
            if let Some(size) = rule.segment_bytes {
                range("retention.segment_bytes", size, min_segment, 1 << 34)?;
            }
            // Retention compares ages in nanoseconds: an age that does not fit would wrap.
            range(
                "retention.max_age_ms",
                rule.max_age_ms,
                0,
                u64::MAX / 1_000_000,
            )?;
        }
        for glob in &self.presence.announce {
            crate::policy::RealityGlob::parse(glob).map_err(|reason| ConfigError::Invalid {
                key: "presence.announce",
                reason,
            })?;
        }
        for rule in &self.delta {
            crate::policy::RealityGlob::parse(&rule.realities).map_err(|reason| {
                ConfigError::Invalid {
                    key: "delta.realities",
                    reason,
                }
            })?;
            crate::routing::Pattern::parse(&rule.topics).map_err(|e| ConfigError::Invalid {
                key: "delta.topics",
                reason: format!("`{}` is not a topic pattern: {e}", rule.topics),
            })?;
            range(
                "delta.keyframe_every",
                u64::from(rule.keyframe_every),
                1,
                1_000_000,
            )?;
        }
        self.validate_security()?;
        self.validate_policy()?;
        self.validate_operator()?;
        if self.log.level.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                reason: "must be a tracing filter such as `info`".into(),
            });
        }
        Ok(())
    }
}

impl Config {
    /// The listeners, transports and identity settings.
    fn validate_security(&self) -> Result<(), ConfigError> {
        let needs_tls = self.tls_listen.is_some() || self.wss_listen.is_some();
        if needs_tls && self.tls.is_none() {
            return Err(ConfigError::Invalid {
                key: "tls",
                reason: "tls_listen and wss_listen need a [tls] section with cert_path and \
                         key_path"
                    .into(),
            });
        }
        if let Some(tls) = &self.tls {
            if tls.require_client_cert && tls.client_ca_path.is_none() {
                return Err(ConfigError::Invalid {
                    key: "tls.require_client_cert",
                    reason: "needs tls.client_ca_path (the CA client certificates chain to)".into(),
                });
            }
        }
        if !self.allow_plaintext_non_local {
            let plain = [("listen", Some(self.listen)), ("ws_listen", self.ws_listen)];
            for (key, addr) in plain {
                if let Some(addr) = addr.filter(|a| !a.ip().is_loopback()) {
                    return Err(ConfigError::Invalid {
                        key,
                        reason: format!(
                            "{addr} is not a loopback address and the connection would not be \
                             encrypted: serve clients on tls_listen/wss_listen and keep `{key}` \
                             on 127.0.0.1, or set allow_plaintext_non_local = true"
                        ),
                    });
                }
            }
        }
        if let Some(token) = &self.admin_token {
            if token.len() < MIN_CONTROLLER_TOKEN_BYTES {
                return Err(ConfigError::Invalid {
                    key: "admin_token",
                    reason: format!(
                        "must be at least {MIN_CONTROLLER_TOKEN_BYTES} bytes (e.g. `openssl rand \
                         -hex 32`)"
                    ),
                });
            }
        }
        if let Some(addr) = self.admin_listen.filter(|a| !a.ip().is_loopback()) {
            if self.admin_token.is_none() {
                return Err(ConfigError::Invalid {
                    key: "admin_token",
                    reason: format!(
                        "admin_listen {addr} is not a loopback address and the admin listener \
                         would answer anyone: set admin_token (every path but /healthz and \
                         /readyz then needs `Authorization: Bearer <admin_token>`), or keep \
                         admin_listen on 127.0.0.1"
                    ),
                });
            }
        }
        let a = &self.auth;
        if a.require_token && a.trusted_keys.is_empty() {
            return Err(ConfigError::Invalid {
                key: "auth.trusted_keys",
                reason: "auth.require_token is set but no key is trusted (add the public key \
                         printed by `arqonbus token keygen`)"
                    .into(),
            });
        }
        for (i, k) in a.trusted_keys.iter().enumerate() {
            let Some(id) = k.id() else { continue };
            if !valid_key_id(id) {
                return Err(ConfigError::Invalid {
                    key: "auth.trusted_keys",
                    reason: format!("key id `{id}` must be 1 to 64 bytes of [A-Za-z0-9_.-]"),
                });
            }
            if a.trusted_keys[..i].iter().any(|o| o.id() == Some(id)) {
                return Err(ConfigError::Invalid {
                    key: "auth.trusted_keys",
                    reason: format!("key id `{id}` is given to two keys; ids name one key each"),
                });
            }
        }
        if a.audience.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::Invalid {
                key: "auth.audience",
                reason: "an empty audience names nothing: remove the key or name this bus".into(),
            });
        }
        range(
            "auth.max_revocation_file_bytes",
            a.max_revocation_file_bytes,
            1,
            1 << 30,
        )?;
        range("auth.max_failures", a.max_failures, 1, 1 << 20)?;
        range("auth.failure_window_ms", a.failure_window_ms, 1, 86_400_000)?;
        range("auth.block_ms", a.block_ms, 0, 86_400_000)?;
        range(
            "auth.max_tracked_addresses",
            a.max_tracked_addresses,
            1,
            10_000_000,
        )?;
        for (i, t) in self.tenants.iter().enumerate() {
            if t.name.is_empty() || self.tenants[..i].iter().any(|o| o.name == t.name) {
                return Err(ConfigError::Invalid {
                    key: "tenants.name",
                    reason: format!("tenant #{} needs a unique, non-empty name", i + 1),
                });
            }
            if t.shares != 0 {
                range("tenants.shares", t.shares, 1, MAX_SHARES)?;
            }
        }
        let y = &self.tenancy;
        range(
            "tenancy.handshake_shares",
            y.handshake_shares,
            1,
            MAX_SHARES,
        )?;
        range("tenancy.default_shares", y.default_shares, 1, MAX_SHARES)?;
        range("tenancy.latency_class_us", y.latency_class_us, 50, 100_000)?;
        range(
            "tenancy.max_faults_per_sec",
            y.max_faults_per_sec,
            1,
            1 << 30,
        )?;
        range("tenancy.throttle_ms", y.throttle_ms, 1, 3_600_000)?;
        Ok(())
    }

    fn validate_operator(&self) -> Result<(), ConfigError> {
        let o = &self.operator;
        range("operator.max_operators", o.max_operators, 1, 4096)?;
        range("operator.max_wasm_bytes", o.max_wasm_bytes, 1024, 256 << 20)?;
        range(
            "operator.max_instances_per_shard",
            o.max_instances_per_shard,
            1,
            1 << 20,
        )?;
        range("operator.max_params", o.max_params, 0, 4096)?;
        range(
            "operator.max_param_text_bytes",
            o.max_param_text_bytes,
            1,
            1 << 20,
        )?;
        range(
            "operator.max_consecutive_faults",
            o.max_consecutive_faults,
            1,
            1 << 20,
        )?;
        range("operator.max_chain_depth", o.max_chain_depth, 1, 64)?;
        range(
            "operator.max_fork_bytes",
            o.max_fork_bytes,
            1 << 20,
            16 << 30,
        )?;
        let pairs = [
            (
                "fuel_per_call",
                o.default_fuel_per_call,
                o.max_fuel_per_call,
                1_000,
                u64::MAX / 2,
            ),
            (
                "memory_pages",
                o.default_max_memory_pages,
                o.max_memory_pages,
                1,
                65_536,
            ),
            (
                "deadline_ms",
                o.default_deadline_ms,
                o.max_deadline_ms,
                1,
                60_000,
            ),
            (
                "emits_per_call",
                o.default_max_emits_per_call,
                o.max_emits_per_call,
                1,
                1 << 20,
            ),
            (
                "emit_bytes_per_call",
                o.default_max_emit_bytes_per_call,
                o.max_emit_bytes_per_call,
                64,
                256 << 20,
            ),
        ];
        for (what, default, max, low, high) in pairs {
            let max_key: &'static str = match what {
                "fuel_per_call" => "operator.max_fuel_per_call",
                "memory_pages" => "operator.max_memory_pages",
                "deadline_ms" => "operator.max_deadline_ms",
                "emits_per_call" => "operator.max_emits_per_call",
                _ => "operator.max_emit_bytes_per_call",
            };
            range(max_key, max, low, high)?;
            let default_key: &'static str = match what {
                "fuel_per_call" => "operator.default_fuel_per_call",
                "memory_pages" => "operator.default_max_memory_pages",
                "deadline_ms" => "operator.default_deadline_ms",
                "emits_per_call" => "operator.default_max_emits_per_call",
                _ => "operator.default_max_emit_bytes_per_call",
            };
            range(default_key, default, low, max)?;
        }
        if self.operators.len() as u64 > o.max_operators {
            return Err(ConfigError::Invalid {
                key: "operators",
                reason: format!(
                    "{} operators listed; operator.max_operators is {}",
                    self.operators.len(),
                    o.max_operators
                ),
            });
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.operators.iter().enumerate() {
            let invalid = |reason: String| ConfigError::Invalid {
                key: "operators",
                reason: format!("entry {i} (`{}`): {reason}", f.name),
            };
            if !names.insert(f.name.as_str()) {
                return Err(invalid("the name is listed twice".into()));
            }
            crate::operator::OperatorSpec::check_file(o, f).map_err(invalid)?;
        }
        Ok(())
    }

    fn validate_policy(&self) -> Result<(), ConfigError> {
        let p = &self.policy;
        range("policy.epoch_tick_ms", p.epoch_tick_ms, 1, 1000)?;
        range("policy.max_policies", p.max_policies, 1, 4096)?;
        range("policy.max_wasm_bytes", p.max_wasm_bytes, 1024, 256 << 20)?;
        range(
            "policy.max_fuel_per_call",
            p.max_fuel_per_call,
            1_000,
            u64::MAX / 2,
        )?;
        range("policy.max_memory_pages", p.max_memory_pages, 1, 65_536)?;
        range("policy.max_deadline_ms", p.max_deadline_ms, 1, 60_000)?;
        range(
            "policy.default_fuel_per_call",
            p.default_fuel_per_call,
            1_000,
            p.max_fuel_per_call,
        )?;
        range(
            "policy.default_max_memory_pages",
            p.default_max_memory_pages,
            1,
            p.max_memory_pages,
        )?;
        range(
            "policy.default_deadline_ms",
            p.default_deadline_ms,
            1,
            p.max_deadline_ms,
        )?;
        if self.policies.len() as u64 > p.max_policies {
            return Err(ConfigError::Invalid {
                key: "policies",
                reason: format!(
                    "{} policies listed; policy.max_policies is {}",
                    self.policies.len(),
                    p.max_policies
                ),
            });
        }
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.policies.iter().enumerate() {
            let invalid = |reason: String| ConfigError::Invalid {
                key: "policies",
                reason: format!("entry {i} (`{}`): {reason}", f.name),
            };
            crate::policy::check_name(&f.name).map_err(invalid)?;
            if !names.insert(f.name.as_str()) {
                return Err(invalid("the name is listed twice".into()));
            }
            if f.bindings.is_empty() {
                return Err(invalid("needs at least one of `bindings`".into()));
            }
            for b in &f.bindings {
                crate::policy::Binding::parse(&b.reality_glob, &b.topic_pattern)
                    .map_err(invalid)?;
            }
            crate::policy::Limits::resolve(p, f.fuel_per_call, f.max_memory_pages, f.deadline_ms)
                .map_err(invalid)?;
        }
        range(
            "control.refusal_record_window_ms",
            self.control.refusal_record_window_ms,
            1,
            86_400_000,
        )?;
        range(
            "control.non_controller_pulses_per_sec",
            self.control.non_controller_pulses_per_sec,
            1,
            1_000_000,
        )?;
        for token in &self.control.controller_tokens {
            if token.len() < MIN_CONTROLLER_TOKEN_BYTES {
                return Err(ConfigError::Invalid {
                    key: "control.controller_tokens",
                    reason: format!(
                        "a token is shorter than {MIN_CONTROLLER_TOKEN_BYTES} bytes; use a long \
                         random string"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The quota of a tenant, if one is configured.
    pub fn tenant_quota(&self, tenant: &str) -> Option<&TenantQuota> {
        self.tenants.iter().find(|t| t.name == tenant)
    }
}

fn range(key: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange {
            key,
            value,
            min,
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_max_age_that_would_wrap_in_nanoseconds_is_refused() {
        let mut c = Config::default();
        let rule = |max_age_ms| RetentionRule {
            realities: "lab-*".into(),
            max_age_ms,
            max_bytes: 0,
            sync: SyncMode::Always,
            sync_interval_ms: 100,
            segment_bytes: None,
        };
        c.retention.push(rule(u64::MAX / 1_000_000));
        assert!(c.validate().is_ok());
        c.retention[0] = rule(u64::MAX / 1_000_000 + 1);
        match c.validate() {
            Err(ConfigError::OutOfRange { key, .. }) => assert_eq!(key, "retention.max_age_ms"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn embedded_defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn shipped_default_file_parses_and_matches_defaults() {
        let from_file = Config::from_toml(DEFAULT_TOML).unwrap();
        from_file.validate().unwrap();
        let d = Config::default();
        assert_eq!(from_file.listen, d.listen);
        assert_eq!(from_file.admin_listen, d.admin_listen);
        assert_eq!(from_file.limits.max_frame_bytes, d.limits.max_frame_bytes);
        assert_eq!(
            from_file.limits.max_outbound_bytes,
            d.limits.max_outbound_bytes
        );
        assert_eq!(from_file.slow_consumer, d.slow_consumer);
        assert_eq!(
            from_file.limits.max_payload_bytes,
            d.limits.max_payload_bytes
        );
        assert_eq!(from_file.policy.epoch_tick_ms, d.policy.epoch_tick_ms);
        assert_eq!(
            from_file.policy.default_deadline_ms,
            d.policy.default_deadline_ms
        );
        assert_eq!(from_file.policy.max_memory_pages, d.policy.max_memory_pages);
        assert!(from_file.control.controller_tokens.is_empty());
    }

    #[test]
    fn out_of_range_names_the_key() {
        let c = Config::from_toml("[limits]\nmax_frame_bytes = 10\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("limits.max_frame_bytes"), "{err}");
    }

    #[test]
    fn admin_listen_takes_off_a_port_or_an_address() {
        assert_eq!(Config::default().admin_listen, Some(DEFAULT_ADMIN_LISTEN));
        let off = Config::from_toml("admin_listen = \"off\"\n").unwrap();
        assert_eq!(off.admin_listen, None);
        let port = Config::from_toml("admin_listen = \"9000\"\n").unwrap();
        assert_eq!(port.admin_listen, Some("127.0.0.1:9000".parse().unwrap()));
        let addr = Config::from_toml("admin_listen = \"[::1]:9001\"\n").unwrap();
        assert_eq!(addr.admin_listen, Some("[::1]:9001".parse().unwrap()));
        assert!(Config::from_toml("admin_listen = \"nowhere\"\n").is_err());
    }

    #[test]
    fn packaged_config_is_the_default_with_the_state_directory() {
        let packaged = Config::from_toml(PACKAGED_TOML).unwrap();
        packaged.validate().unwrap();
        assert_eq!(packaged.data_dir, PathBuf::from("/var/lib/arqonbus"));
        // Line for line the same file, so its comments stay true.
        let differs: Vec<(&str, &str)> = DEFAULT_TOML
            .lines()
            .zip(PACKAGED_TOML.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(
            differs,
            vec![(
                "data_dir = \"./arqonbus-data\"",
                "data_dir = \"/var/lib/arqonbus\""
            )],
            "systemd/arqonbus.toml must be src/config/default.toml with only data_dir changed"
        );
        assert_eq!(DEFAULT_TOML.lines().count(), PACKAGED_TOML.lines().count());
    }

    #[test]
    fn retention_rules_match_by_glob_first_wins() {
        let c = Config::from_toml(
            "[[retention]]\nrealities = \"lab-*\"\nsync = \"os\"\n\n[[retention]]\nrealities = \"*\"\nmax_bytes = 10\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.retention_for("lab-1").unwrap().sync, SyncMode::Os);
        assert_eq!(c.retention_for("other").unwrap().max_bytes, 10);
        assert_eq!(c.retention_for("other").unwrap().sync, SyncMode::Always);
    }

    #[test]
    fn plaintext_on_a_public_address_is_refused_unless_allowed() {
        let c = Config::from_toml("listen = \"0.0.0.0:4720\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("allow_plaintext_non_local"), "{err}");
        let c = Config::from_toml("listen = \"0.0.0.0:4720\"\nallow_plaintext_non_local = true\n")
            .unwrap();
        c.validate().unwrap();
        let c = Config::from_toml("ws_listen = \"10.1.2.3:80\"\n").unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn admin_listener_off_loopback_needs_a_token() {
        let c = Config::from_toml("admin_listen = \"0.0.0.0:4721\"\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("`admin_token`"), "{err}");
        let c = Config::from_toml("admin_listen = \"0.0.0.0:4721\"\nadmin_token = \"short\"\n")
            .unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("16 bytes"));
        let c = Config::from_toml(
            "admin_listen = \"0.0.0.0:4721\"\nadmin_token = \"0123456789abcdef0123\"\n",
        )
        .unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn tls_listeners_need_certificates() {
        let c = Config::from_toml("tls_listen = \"127.0.0.1:4722\"\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("[tls]"));
        let c = Config::from_toml(
            "tls_listen = \"127.0.0.1:4722\"\n[tls]\ncert_path = \"c\"\nkey_path = \"k\"\n\
             require_client_cert = true\n",
        )
        .unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("client_ca_path"));
    }

    #[test]
    fn tenants_and_auth_parse() {
        let c = Config::from_toml(
            "[auth]\nrequire_token = true\ntrusted_keys = [\"abc\"]\n\
             [[tenants]]\nname = \"a\"\nmax_connections = 2\npublish_pulses_per_sec = 10\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.tenant_quota("a").unwrap().max_connections, 2);
        assert!(c.tenant_quota("b").is_none());
    }

    #[test]
    fn trusted_keys_may_carry_ids_and_ids_are_checked() {
        let c = Config::from_toml(
            "[auth]\ntrusted_keys = [\"abc\", { id = \"2026-a\", key = \"def\" }]\n\
             audience = \"bus-1\"\nrevocation_file = \"revoked.txt\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        let ids: Vec<_> = c.auth.trusted_keys.iter().map(|k| k.id()).collect();
        assert_eq!(ids, [None, Some("2026-a")]);
        assert_eq!(c.auth.trusted_keys[1].key(), "def");
        assert_eq!(c.auth.audience.as_deref(), Some("bus-1"));
        let refused = |toml: &str| Config::from_toml(toml).unwrap().validate().unwrap_err();
        let twice = refused(
            "[auth]\ntrusted_keys = [{ id = \"k\", key = \"a\" }, { id = \"k\", key = \"b\" }]\n",
        );
        assert!(twice.to_string().contains("auth.trusted_keys"), "{twice}");
        let spaced = refused("[auth]\ntrusted_keys = [{ id = \"a b\", key = \"a\" }]\n");
        assert!(spaced.to_string().contains("key id"), "{spaced}");
        let empty = refused("[auth]\naudience = \"\"\n");
        assert!(empty.to_string().contains("auth.audience"), "{empty}");
        assert!(
            Config::from_toml("[auth]\ntrusted_keys = [{ id = \"k\", kee = \"a\" }]\n").is_err()
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(Config::from_toml("[limits]\nmax_frame_byte = 10\n").is_err());
    }
}
