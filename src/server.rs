//! Starting and stopping the bus: one pinned glommio executor per shard, the SPSC meshes
//! between them, a listening socket each, and the admin listener beside them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::{CpuSet, LocalExecutorBuilder, Placement, PoolPlacement};

use crate::admin::{AdminError, AdminServer};
use crate::audit::{self, AuditError, AuditLog};
use crate::config::{Config, ConfigError};
use crate::health::{FailureGuard, ShardFailures, Status};
use crate::metrics::{ShardCounters, Snapshot};
use crate::operator::{OperatorError, OperatorHost, OperatorSpec};
use crate::policy::{PolicyError, PolicyHost, PolicySpec};
use crate::shard::{self, ShardStart};
use crate::shield::{Shield, ShieldError};
use crate::spsc;
use crate::time::{self, SharedClock};
use crate::transport::tls::TlsError;
use crate::transport::{self, ListenError, Transport};

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Shield(#[from] ShieldError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Operator(#[from] OperatorError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(
        "cannot start shard {shard}: {reason}. glommio needs io_uring and locked memory: raise \
         the memlock limit (`ulimit -l unlimited`, or LimitMEMLOCK=infinity in the systemd unit), \
         or lower io.io_memory_bytes; check that io_uring is not disabled \
         (sysctl kernel.io_uring_disabled=0)"
    )]
    ShardStart { shard: usize, reason: String },
    #[error("shard {shard} could not recover its retained realities: {reason}")]
    Recovery { shard: usize, reason: String },
    #[error("shard {shard} panicked")]
    ShardPanicked { shard: usize },
}

/// Waits until every shard has connected its rings and is accepting. A shard whose executor
/// could not be built (io_uring, memlock) drops its ready sender; its join handle holds why.
fn wait_ready(
    stop: &AtomicBool,
    ready: Vec<std::sync::mpsc::Receiver<Result<(), String>>>,
    shards: &mut Vec<glommio::ExecutorJoinHandle<()>>,
) -> Result<(), ServerError> {
    for (id, rx) in ready.into_iter().enumerate() {
        match rx.recv_timeout(std::time::Duration::from_secs(600)) {
            Ok(Ok(())) => continue,
            Ok(Err(reason)) => {
                stop.store(true, Ordering::Release);
                return Err(ServerError::Recovery { shard: id, reason });
            }
            Err(_) => {}
        }
        stop.store(true, Ordering::Release);
        let reason = match shards.remove(id).join() {
            Err(e) => e.to_string(),
            Ok(()) => "it stopped before it was ready".to_owned(),
        };
        return Err(ServerError::ShardStart { shard: id, reason });
    }
    Ok(())
}

/// The listeners the configuration asks for, bound for every shard: (transport, bound address,
/// one socket per shard).
type Bound = Vec<(Transport, SocketAddr, Vec<socket2::Socket>)>;

fn bind_listeners(config: &Config, count: usize) -> Result<Bound, ListenError> {
    let wanted = [
        (Transport::Tcp, Some(config.listen)),
        (Transport::Tls, config.tls_listen),
        (Transport::Ws, config.ws_listen),
        (Transport::Wss, config.wss_listen),
    ];
    let backlog = config.limits.listen_backlog as i32;
    let mut bound = Vec::new();
    for (transport, addr) in wanted {
        let Some(addr) = addr else { continue };
        let (addr, sockets) = transport::bind_shared(addr, count, backlog)?;
        if !transport.is_encrypted() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                key = transport.config_key(),
                "UNENCRYPTED listener on a non-loopback address (allow_plaintext_non_local = \
                 true): tokens and pulses cross the network in the clear"
            );
        }
        bound.push((transport, addr, sockets));
    }
    Ok(bound)
}

/// Re-reads the TLS files and the revocation list whenever `reload` is raised (SIGHUP), until
/// `stop`. Files are read here, never on a shard; shards notice the new generations.
fn spawn_reloader(
    shield: Arc<Shield>,
    reload: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(std::time::Duration::from_millis(50));
                if reload.swap(false, Ordering::AcqRel) {
                    reload_files(&shield);
                }
            }
        })
        .expect("spawn the reload thread")
}

/// One reload: each file on its own, so a bad one keeps only its own previous state.
fn reload_files(shield: &Shield) {
    if let Some(tls) = &shield.tls {
        match tls.reload() {
            Ok(()) => tracing::info!(
                generation = tls.generation(),
                "TLS certificates reloaded; new handshakes use them"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "TLS reload failed; the previous certificates stay in use"
            ),
        }
    }
    if let Some(list) = &shield.auth.revocations {
        match list.reload() {
            Ok(entries) => tracing::info!(
                entries,
                generation = list.generation(),
                path = %list.path().display(),
                "revocation list reloaded; sessions it revokes are being closed"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "revocation list reload failed; the previous list stays in use"
            ),
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    addrs: Vec<(Transport, SocketAddr)>,
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    shield: Arc<Shield>,
    counters: Vec<Arc<ShardCounters>>,
    shards: Vec<glommio::ExecutorJoinHandle<()>>,
    reloader: Option<std::thread::JoinHandle<()>>,
    status: Arc<Status>,
    failures: Arc<ShardFailures>,
    /// Stopped (dropped) after the shards, so /metrics and /readyz answer while they drain.
    admin: Option<AdminServer>,
    policy_host: Arc<PolicyHost>,
    operator_host: Arc<OperatorHost>,
    audit: AuditLog,
}

/// Compiles the policies of the config file and installs them, each audited (actor `config`)
/// before it takes effect. A policy that cannot be read or compiled stops the start: the bus
/// does not run without a safety policy its operator asked for.
fn load_configured_policies(
    config: &Config,
    host: &PolicyHost,
    log: &AuditLog,
) -> Result<(), ServerError> {
    for file in &config.policies {
        let (spec, wasm) = PolicySpec::from_file(config, file)?;
        let policy = Arc::new(host.compile(spec, &wasm)?);
        let details = serde_json::json!({
            "outcome": "applied",
            "source": config.resolve_path(&file.wasm_path).display().to_string(),
            "sha256": policy.sha256_hex(),
            "wasm_bytes": policy.wasm_bytes,
            "spec": policy.spec.describe(),
        });
        let entry = audit::Entry {
            actor: "config".into(),
            action: "policy.load".into(),
            target: file.name.clone(),
            details,
        };
        log.commit(|w| -> Result<(), ServerError> {
            host.registry
                .check_install(&file.name)
                .map_err(PolicyError::from)?;
            w.append(entry)?;
            host.registry.install(policy).map_err(PolicyError::from)?;
            Ok(())
        })?;
        tracing::info!(policy = %file.name, "policy loaded from the config file");
    }
    Ok(())
}

/// Compiles the operators of the config file and installs them, each audited (actor `config`)
/// before it takes effect. An operator that cannot be read or compiled stops the start.
fn load_configured_operators(
    config: &Config,
    host: &OperatorHost,
    log: &AuditLog,
) -> Result<(), ServerError> {
    for file in &config.operators {
        let (spec, wasm) = OperatorSpec::from_file(config, file)?;
        let operator = Arc::new(host.compile(spec, &wasm)?);
        let details = serde_json::json!({
            "outcome": "applied",
            "source": config.resolve_path(&file.wasm_path).display().to_string(),
            "sha256": operator.sha256_hex(),
            "wasm_bytes": operator.wasm_bytes,
            "spec": operator.spec.describe(),
        });
        let entry = audit::Entry {
            actor: "config".into(),
            action: "operator.load".into(),
            target: file.name.clone(),
            details,
        };
        log.commit(|w| -> Result<(), ServerError> {
            host.registry
                .check_install(&file.name)
                .map_err(OperatorError::from)?;
            w.append(entry)?;
            host.registry
                .install(operator)
                .map_err(OperatorError::from)?;
            Ok(())
        })?;
        tracing::info!(operator = %file.name, "operator loaded from the config file");
    }
    Ok(())
}

impl Server {
    /// Validates `config`, starts the admin listener (when `admin_listen` is set), binds the
    /// client listeners and starts every shard. Returns once all shards are accepting; only then
    /// does `/readyz` answer ready.
    pub fn start(config: Config) -> Result<Self, ServerError> {
        Self::start_with_clock(config, time::system())
    }

    /// As [`Server::start`], with a chosen clock (tests).
    pub fn start_with_clock(config: Config, clock: SharedClock) -> Result<Self, ServerError> {
        config.validate()?;
        let status = Status::new();
        let admin = match config.admin_listen {
            Some(addr) => Some(AdminServer::start_with_token(
                addr,
                status.clone(),
                config.admin_token.as_deref().map(Arc::from),
            )?),
            None => None,
        };
        Self::start_with(config, clock, status, admin)
    }

    /// Starts the shards and reports to `status`, which `admin` (started by the caller, so it
    /// can answer "not ready" while start-up runs) serves. `config.admin_listen` is not used
    /// here. The server owns `admin` from now on and stops it last. `status` is marked ready
    /// only when this returns `Ok`.
    pub fn start_with(
        config: Config,
        clock: SharedClock,
        status: Arc<Status>,
        admin: Option<AdminServer>,
    ) -> Result<Self, ServerError> {
        config.validate()?;
        let audit = AuditLog::open(&config.data_dir, clock.clone())?;
        let policy_host = Arc::new(PolicyHost::with_max_deadline(
            &config.policy,
            config.operator.max_deadline_ms,
        )?);
        load_configured_policies(&config, &policy_host, &audit)?;
        let operator_host = Arc::new(OperatorHost::new(policy_host.clone(), &config.operator));
        load_configured_operators(&config, &operator_host, &audit)?;
        let config = Arc::new(config);
        let count = config.shard_count();
        let shield = Arc::new(Shield::from_config(&config)?);
        let bound = bind_listeners(&config, count)?;
        let addr = bound[0].1;
        let addrs: Vec<(Transport, SocketAddr)> = bound.iter().map(|(t, a, _)| (*t, *a)).collect();
        let mut per_shard: Vec<Vec<(Transport, socket2::Socket)>> =
            (0..count).map(|_| Vec::new()).collect();
        for (transport, _, sockets) in bound {
            for (shard, socket) in sockets.into_iter().enumerate() {
                per_shard[shard].push((transport, socket));
            }
        }
        let ring = config.limits.ring_capacity as usize;
        let requests = spsc::full_mesh(count, ring);
        let deliveries = spsc::full_mesh(count, ring);
        let stop = Arc::new(AtomicBool::new(false));
        let counters: Vec<_> = (0..count)
            .map(|_| Arc::new(ShardCounters::default()))
            .collect();
        let failures = ShardFailures::new(count);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);

        let mut shards = Vec::with_capacity(count);
        let mut ready = Vec::with_capacity(count);
        let starts = per_shard.into_iter().zip(requests).zip(deliveries);
        for (id, ((listeners, requests), deliveries)) in starts.enumerate() {
            let start = ShardStart {
                id,
                shards: count,
                config: config.clone(),
                clock: clock.clone(),
                counters: counters[id].clone(),
                listeners,
                shield: shield.clone(),
                requests,
                deliveries,
                stop: stop.clone(),
                policy_host: policy_host.clone(),
                operator_host: operator_host.clone(),
                audit: audit.clone(),
                failures: failures.clone(),
                ready: {
                    let (tx, rx) = std::sync::mpsc::channel();
                    ready.push(rx);
                    tx
                },
            };
            let placement = if config.io.pin_cores {
                Placement::Fixed(id % cpus)
            } else {
                Placement::Unbound
            };
            // Each shard has a blocking pool of its own (one shard's fsyncs never wait for
            // another's), on the shard's core when it is pinned, as glommio's default of one
            // thread would be.
            let threads = config.storage.blocking_threads_per_shard as usize;
            let pool = match &placement {
                Placement::Fixed(cpu) => {
                    let on_cpu = CpuSet::online()
                        .map_err(|e| {
                            stop.store(true, Ordering::Release);
                            ServerError::ShardStart {
                                shard: id,
                                reason: format!("cannot read the online CPUs: {e}"),
                            }
                        })?
                        .filter(|l| l.cpu == *cpu);
                    PoolPlacement::Custom(vec![on_cpu; threads])
                }
                _ => PoolPlacement::Unbound(threads),
            };
            let mut builder =
                LocalExecutorBuilder::new(placement).blocking_thread_pool_placement(pool);
            if config.io.spin_before_park_us > 0 {
                builder =
                    builder.spin_before_park(Duration::from_micros(config.io.spin_before_park_us));
            }
            // Dropped while the shard's thread unwinds from a panic: marks the shard failed and
            // stops the bus, whose other shards answer for its realities meanwhile.
            let guard = FailureGuard::new(id, failures.clone(), stop.clone());
            let handle = builder
                .name(&format!("shard-{id}"))
                .io_memory(config.io.io_memory_bytes as usize)
                .ring_depth(config.io.ring_depth as usize)
                .spawn(move || async move {
                    let _guard = guard;
                    shard::run(start).await
                })
                .map_err(|e| {
                    stop.store(true, Ordering::Release);
                    ServerError::ShardStart {
                        shard: id,
                        reason: e.to_string(),
                    }
                })?;
            shards.push(handle);
        }
        wait_ready(&stop, ready, &mut shards)?;
        // Every shard has recovered its retained realities, connected its rings and is accepting:
        // only now is the server ready (/readyz, and READY=1 to systemd once this returns).
        status.set_reality_series(config.storage.metrics_max_realities as usize);
        status.set_operators(operator_host.registry.clone());
        status.set_shield(shield.clone());
        status.attach(counters.clone(), stop.clone(), addr, failures.clone());
        for (transport, addr) in &addrs {
            tracing::info!(%addr, ?transport, shards = count, "arqonbus listening");
        }
        let reload = Arc::new(AtomicBool::new(false));
        let reloader = (shield.tls.is_some() || shield.auth.revocations.is_some())
            .then(|| spawn_reloader(shield.clone(), reload.clone(), stop.clone()));
        Ok(Self {
            addr,
            addrs,
            stop,
            reload,
            shield,
            counters,
            shards,
            reloader,
            status,
            failures,
            admin,
            policy_host,
            operator_host,
            audit,
        })
    }

    /// The bound address of a transport's listener, when it is configured.
    pub fn addr_of(&self, transport: Transport) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
    }

    /// The flag that makes the server re-read its TLS files and its revocation list when raised
    /// (SIGHUP raises it); the reload thread lowers it within 50 ms and reloads.
    pub fn reload_flag(&self) -> Arc<AtomicBool> {
        self.reload.clone()
    }

    /// Re-reads the TLS files now; on an error the previous certificates stay in use.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.shield.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// The shared edge state (tenant counts, the failure map), for inspection.
    pub fn shield(&self) -> &Shield {
        &self.shield
    }

    /// The address clients connect to (the bound port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// The server's phase, counters and shard heartbeats, shareable with other threads (the
    /// systemd watchdog).
    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// Fault seam for tests: makes `shard` panic, from a task of its own, on its next
    /// heartbeat (within about 20 ms), as a bug in one of its handlers would.
    #[doc(hidden)]
    pub fn inject_shard_panic(&self, shard: usize) {
        self.failures.inject_panic(shard);
    }

    /// The flag that stops the server when raised (signal handlers raise it).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// The hosted operators (tests and the admin listing).
    pub fn operator_host(&self) -> &Arc<OperatorHost> {
        &self.operator_host
    }

    /// CASIL: the engine and the registry of loaded policies.
    pub fn policy_host(&self) -> &Arc<PolicyHost> {
        &self.policy_host
    }

    /// The audit log's file.
    pub fn audit_path(&self) -> &std::path::Path {
        self.audit.path()
    }

    /// Counters summed over shards.
    pub fn metrics(&self) -> Snapshot {
        Snapshot::sum(self.counters.iter().map(|c| &**c))
    }

    /// Asks every shard to stop: no new connections, no more reads, queued frames flushed.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Waits for every shard to finish.
    pub fn join(self) -> Result<(), ServerError> {
        let mut result = Ok(());
        let stop = self.stop.clone();
        for (shard, handle) in self.shards.into_iter().enumerate() {
            if handle.join().is_err() && result.is_ok() {
                result = Err(ServerError::ShardPanicked { shard });
            }
        }
        stop.store(true, Ordering::Release);
        if let Some(reloader) = self.reloader {
            let _ = reloader.join();
        }
        drop(self.admin);
        result
    }

    /// Stops and waits.
    pub fn stop(self) -> Result<(), ServerError> {
        self.shutdown();
        self.join()
    }
}
