//! The admin HTTP listener: `/metrics` (Prometheus), `/healthz` (alive: every shard's reactor
//! turns) and `/readyz` (start-up completed, not stopping).
//!
//! It runs on its own threads (tiny_http: one acceptor, a small pool for connections, and one
//! thread here that answers requests in turn), never on a shard: a scrape reads the per-shard
//! counters and sums them, and the data path never waits for it. It is meant for loopback or a
//! management network.
//!
//! # Authentication
//!
//! With `admin_token` set, every path but the health probes needs `Authorization: Bearer
//! <admin_token>` (else 401). `/healthz` and `/readyz` stay open so systemd, load balancers and
//! orchestrators can probe without a secret; they say only whether the bus is alive and ready.
//! A listener off loopback without a token is refused at start, as plain TCP off loopback is.

pub mod exposition;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response};

use crate::health::{Liveness, Phase, Status};

/// A shard whose heartbeat (bumped every 20 ms) has not moved for this long is reported stuck.
const STALL_AFTER: Duration = Duration::from_secs(1);

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "admin listener {addr} is already in use (another arqonbus?): set `admin_listen` \
         (or --admin-listen) to another address, or to \"off\""
    )]
    InUse { addr: SocketAddr },
    #[error("cannot start the admin listener on {addr} (`admin_listen`): {reason}")]
    Start { addr: SocketAddr, reason: String },
    #[error(
        "admin listener {addr} is not on loopback and has no token: set `admin_token` (every \
         path but /healthz and /readyz then needs `Authorization: Bearer <admin_token>`), or keep \
         `admin_listen` on 127.0.0.1"
    )]
    Unauthenticated { addr: SocketAddr },
}

/// Paths anyone may read: health probes say only whether the bus is alive and ready.
const OPEN_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Does `request` carry `Authorization: Bearer <token>`? Compares digests, so the time taken
/// says nothing about how much of a guess was right (nor its length).
fn authorized(request: &Request, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let Some(header) = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
    else {
        return false;
    };
    let value = header.value.as_str();
    let Some(given) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    else {
        return false;
    };
    let (a, b) = (Sha256::digest(given.trim()), Sha256::digest(token));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// A running admin listener; dropping it stops it.
pub struct AdminServer {
    addr: SocketAddr,
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `addr` (loopback: there is no token) and serves `status` until dropped.
    pub fn start(addr: SocketAddr, status: Arc<Status>) -> Result<Self, AdminError> {
        Self::start_with_token(addr, status, None)
    }

    /// Binds `addr` and serves `status` until dropped; with `token`, every path but the health
    /// probes needs it as a bearer token. Off loopback a token is required.
    pub fn start_with_token(
        addr: SocketAddr,
        status: Arc<Status>,
        token: Option<Arc<str>>,
    ) -> Result<Self, AdminError> {
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(AdminError::Unauthenticated { addr });
        }
        let listener = TcpListener::bind(addr).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => AdminError::InUse { addr },
            _ => AdminError::Start {
                addr,
                reason: e.to_string(),
            },
        })?;
        let bound = listener.local_addr().map_err(|e| AdminError::Start {
            addr,
            reason: e.to_string(),
        })?;
        // tiny_http writes a response in 1 KiB pieces; with Nagle, a keep-alive scraper's
        // delayed ACK held every scrape for 40 ms. Accepted sockets inherit TCP_NODELAY from the
        // listener on Linux.
        if let Err(e) = socket2::SockRef::from(&listener).set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on the admin listener");
        }
        let http =
            tiny_http::Server::from_listener(listener, None).map_err(|e| AdminError::Start {
                addr,
                reason: e.to_string(),
            })?;
        let http = Arc::new(http);
        let thread = std::thread::Builder::new()
            .name("admin-http".into())
            .spawn({
                let http = http.clone();
                move || serve(&http, &status, token.as_deref())
            })
            .map_err(|e| AdminError::Start {
                addr,
                reason: e.to_string(),
            })?;
        tracing::info!(addr = %bound, "admin endpoint up: /metrics /healthz /readyz");
        Ok(Self {
            addr: bound,
            http,
            thread: Some(thread),
        })
    }

    /// The bound address (the chosen port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.http.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(http: &tiny_http::Server, status: &Status, token: Option<&str>) {
    let mut liveness = Liveness::default();
    let mut body = String::with_capacity(8 << 10);
    for request in http.incoming_requests() {
        body.clear();
        let path = request.url().split('?').next().unwrap_or("");
        let open = OPEN_PATHS.contains(&path);
        let refused = !open && token.is_some_and(|t| !authorized(&request, t));
        let (code, content_type) = if refused {
            body.push_str("unauthorized: send `Authorization: Bearer <admin_token>`\n");
            (401, "text/plain; charset=utf-8")
        } else {
            route(&request, status, &mut liveness, &mut body)
        };
        let header = Header::from_bytes("Content-Type", content_type).expect("static header");
        let mut response = Response::from_string(body.as_str())
            .with_status_code(code)
            .with_header(header);
        if refused {
            let challenge =
                Header::from_bytes("WWW-Authenticate", "Bearer").expect("static header");
            response.add_header(challenge);
        }
        // A client that went away is its own problem.
        let _ = request.respond(response);
    }
}

/// Answers one request into `body`; returns the status code and content type.
fn route(
    request: &Request,
    status: &Status,
    liveness: &mut Liveness,
    body: &mut String,
) -> (u16, &'static str) {
    const TEXT: &str = "text/plain; charset=utf-8";
    if !matches!(request.method(), Method::Get | Method::Head) {
        body.push_str("only GET and HEAD\n");
        return (405, TEXT);
    }
    let path = request.url().split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            exposition::render(status, body);
            (200, exposition::CONTENT_TYPE)
        }
        "/healthz" => (healthz(status, liveness, body), TEXT),
        "/readyz" => (readyz(status, body), TEXT),
        "/operators" => {
            body.push_str(&status.operators_json().to_string());
            body.push('\n');
            (200, "application/json")
        }
        "/circuits" => {
            body.push_str(&status.circuits_json().to_string());
            body.push('\n');
            (200, "application/json")
        }
        "/" => {
            body.push_str("arqonbus admin: /metrics /healthz /readyz /operators /circuits\n");
            (200, TEXT)
        }
        _ => {
            body.push_str("not found: try /metrics, /healthz, /readyz, /operators or /circuits\n");
            (404, TEXT)
        }
    }
}

/// Alive unless a running shard's reactor has stopped turning.
fn healthz(status: &Status, liveness: &mut Liveness, body: &mut String) -> u16 {
    let now = Instant::now();
    liveness.observe(&status.heartbeats(), now);
    let phase = status.phase();
    let failed = status.failed_shards();
    if !failed.is_empty() {
        body.push_str(&format!(
            "unhealthy: shard(s) {failed:?} panicked; the bus is stopping\n"
        ));
        return 503;
    }
    let stalled = liveness.stalled(now, STALL_AFTER);
    // Shards stop beating when they drain: only a ready server can be stuck.
    if phase == Phase::Ready && !stalled.is_empty() {
        body.push_str(&format!(
            "unhealthy: shard(s) {stalled:?} have not turned their reactor for over {STALL_AFTER:?}\n"
        ));
        return 503;
    }
    body.push_str(match phase {
        Phase::Starting => "ok: starting\n",
        Phase::Ready => "ok\n",
        Phase::Stopping => "ok: stopping\n",
    });
    200
}

/// Ready only between the end of start-up and the start of shutdown.
fn readyz(status: &Status, body: &mut String) -> u16 {
    let failed = status.failed_shards();
    if !failed.is_empty() {
        body.push_str(&format!(
            "not ready: shard(s) {failed:?} panicked; the bus is stopping so the service \
             manager restarts it\n"
        ));
        return 503;
    }
    match status.phase() {
        Phase::Ready => {
            body.push_str("ready\n");
            200
        }
        Phase::Starting => {
            body.push_str("not ready: starting\n");
            503
        }
        Phase::Stopping => {
            body.push_str("not ready: stopping\n");
            503
        }
    }
}
