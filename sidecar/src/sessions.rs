//! Bus sessions for northbound callers: one per distinct bearer token, so the bus checks each
//! caller's own grants and quotas, never the sidecar's.
//!
//! Bounds: at most `sessions.max_sessions` sessions; a session nobody uses (no request in flight,
//! no stream open) is closed after `sessions.idle_timeout_ms`, and the least recently used idle
//! one makes room for a new token. When every session is in use, a new token is refused (503),
//! never queued. Streams have their own bound, `sessions.max_streams`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arqonbus_client::{Client, ConnectOptions, TlsOptions};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{BusConfig, SessionsConfig};
use crate::error::{ApiError, Kind};
use crate::metrics::Metrics;

/// One bus connection, shared by every request that carries its token. Callers hold an
/// `Arc<Session>` while they use it: that is what makes it "in use".
pub struct Session {
    pub client: Client,
    metrics: Arc<Metrics>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.metrics.sessions_open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Entry {
    session: Arc<Session>,
    last_used: Instant,
}

impl Entry {
    /// Nobody but the table holds it.
    fn idle(&self) -> bool {
        Arc::strong_count(&self.session) == 1
    }
}

/// How to reach the bus: the address and everything but the token.
#[derive(Clone)]
pub struct BusTarget {
    pub address: String,
    pub options: ConnectOptions,
}

impl BusTarget {
    pub fn from_config(bus: &BusConfig, stream_buffer: usize) -> Result<Self, ApiError> {
        let tls = match &bus.ca_path {
            Some(ca) => {
                let client = bus
                    .client_cert_path
                    .as_deref()
                    .zip(bus.client_key_path.as_deref());
                Some(TlsOptions::from_pem_files(ca, client).map_err(|e| {
                    ApiError::new(Kind::Internal, "CONFIG", format!("bus.ca_path: {e}"))
                })?)
            }
            None => None,
        };
        Ok(Self {
            address: bus.address.clone(),
            options: ConnectOptions {
                client_name: "arqonbus-sidecar".into(),
                token: String::new(),
                manifest: None,
                timeout: Duration::from_millis(bus.timeout_ms),
                max_frame_bytes: bus.max_frame_bytes as usize,
                subscription_buffer: stream_buffer,
                tls,
            },
        })
    }

    /// A new bus session with `token` as its Hello token.
    pub async fn connect(&self, token: &str, name: &str) -> Result<Client, ApiError> {
        let mut options = self.options.clone();
        options.token = token.to_owned();
        options.client_name = name.to_owned();
        Client::connect_url(&self.address, options)
            .await
            .map_err(ApiError::from)
    }
}

/// The table of sessions, and the stream bound.
pub struct Sessions {
    table: Mutex<HashMap<String, Entry>>,
    target: BusTarget,
    config: SessionsConfig,
    metrics: Arc<Metrics>,
    streams: Arc<Semaphore>,
}

/// A place among `sessions.max_streams`, held for a stream's life.
pub struct StreamGuard {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.metrics.streams_open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Sessions {
    pub fn new(target: BusTarget, config: SessionsConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(HashMap::new()),
            streams: Arc::new(Semaphore::new(config.max_streams)),
            target,
            config,
            metrics,
        })
    }

    /// The session for `token` (empty: a caller without one), connecting when there is none.
    pub async fn get(&self, token: &str) -> Result<Arc<Session>, ApiError> {
        if let Some(session) = self.lookup(token) {
            return Ok(session);
        }
        let client = self.target.connect(token, "arqonbus-sidecar").await?;
        self.metrics.sessions_opened.fetch_add(1, Ordering::Relaxed);
        self.metrics.sessions_open.fetch_add(1, Ordering::Relaxed);
        let fresh = Arc::new(Session {
            client,
            metrics: self.metrics.clone(),
        });
        let mut table = self.table.lock().expect("sessions lock");
        // Another request with the same token may have connected meanwhile: keep one.
        if let Some(entry) = table.get_mut(token) {
            if !entry.session.client.is_closed() {
                entry.last_used = Instant::now();
                return Ok(entry.session.clone());
            }
        }
        table.remove(token);
        if table.len() >= self.config.max_sessions {
            let victim = table
                .iter()
                .filter(|(_, e)| e.idle())
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    table.remove(&k);
                    self.metrics
                        .sessions_evicted
                        .fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    return Err(ApiError::new(
                        Kind::Unavailable,
                        "SIDECAR_BUSY",
                        format!(
                            "all {} bus sessions are in use (sessions.max_sessions)",
                            self.config.max_sessions
                        ),
                    ))
                }
            }
        }
        table.insert(
            token.to_owned(),
            Entry {
                session: fresh.clone(),
                last_used: Instant::now(),
            },
        );
        Ok(fresh)
    }

    fn lookup(&self, token: &str) -> Option<Arc<Session>> {
        let mut table = self.table.lock().expect("sessions lock");
        let entry = table.get_mut(token)?;
        if entry.session.client.is_closed() {
            table.remove(token);
            return None;
        }
        entry.last_used = Instant::now();
        Some(entry.session.clone())
    }

    /// Forgets a session whose connection failed, so the next request reconnects.
    pub fn forget_if_closed(&self, token: &str) {
        let mut table = self.table.lock().expect("sessions lock");
        if table
            .get(token)
            .is_some_and(|e| e.session.client.is_closed())
        {
            table.remove(token);
        }
    }

    /// A place for one more stream, or 503.
    pub fn stream_guard(&self) -> Result<StreamGuard, ApiError> {
        let permit = self.streams.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                Kind::Unavailable,
                "SIDECAR_BUSY",
                format!(
                    "{} streams are open (sessions.max_streams)",
                    self.config.max_streams
                ),
            )
        })?;
        self.metrics.streams_open.fetch_add(1, Ordering::Relaxed);
        Ok(StreamGuard {
            _permit: permit,
            metrics: self.metrics.clone(),
        })
    }

    /// Closes sessions idle for `sessions.idle_timeout_ms`, until the process ends.
    pub async fn expire_idle(self: Arc<Self>) {
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(250)));
        loop {
            tick.tick().await;
            let mut table = self.table.lock().expect("sessions lock");
            let before = table.len();
            table.retain(|_, e| !(e.idle() && e.last_used.elapsed() >= idle));
            let expired = before - table.len();
            self.metrics
                .sessions_expired
                .fetch_add(expired as u64, Ordering::Relaxed);
        }
    }
}
