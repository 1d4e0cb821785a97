//! `conns`: how many idle, handshaken connections the server holds and what each costs it in
//! resident memory. Connections are spread over source addresses 127.0.0.2 and up so that the
//! ephemeral port range of one address is never the limit.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::count_bar;
use crate::driver::arqon;
use crate::report::ConnsMetrics;
use crate::sys::{open_files, raise_nofile_limit, rss_bytes};
use crate::target::{Kind, Target};

#[derive(Debug, Clone)]
pub struct ConnsSpec {
    pub conns: u64,
    /// Connections per source address before the next address is used.
    pub per_source: u64,
    pub first_source: Ipv4Addr,
    /// Handshakes in flight at once.
    pub concurrency: usize,
    pub hold: Duration,
    /// Pause before each RSS reading, so the server's allocations settle.
    pub settle: Duration,
    pub handshake_timeout: Duration,
    pub server_pid: Option<u32>,
    pub progress: bool,
}

/// Files kept free for the runtime, stdio, output files and the like.
const RESERVED_FILES: u64 = 64;
/// Opening stops after this many failures in a row: the server is refusing, not struggling.
const MAX_CONSECUTIVE_FAILURES: u64 = 200;
/// Bytes a NATS handshake may take before it counts as a failure.
const MAX_NATS_HANDSHAKE_BYTES: usize = 64 << 10;

pub async fn run(
    target: &Target,
    spec: &ConnsSpec,
    notes: &mut Vec<String>,
) -> Result<ConnsMetrics> {
    let limit = raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    let open_now = open_files().unwrap_or(16);
    let available = limit.soft.saturating_sub(open_now + RESERVED_FILES);
    let mut m = ConnsMetrics {
        requested: spec.conns,
        file_limit_soft: limit.soft,
        file_limit_hard: limit.hard,
        hold_secs: spec.hold.as_secs_f64(),
        ..Default::default()
    };
    if limit.soft > limit.original_soft {
        notes.push(format!(
            "raised the soft open-file limit from {} to the hard limit {}",
            limit.original_soft, limit.hard
        ));
    }
    let n = spec.conns.min(available);
    if n < spec.conns {
        m.capped_to = Some(n);
        notes.push(format!(
            "asked for {} connections; the open-file limit (RLIMIT_NOFILE soft = hard = {}, {} \
             already open, {} kept in reserve) caps this run at {n}. Raise the hard limit \
             (ulimit -Hn, LimitNOFILE=) to go further",
            spec.conns, limit.hard, open_now, RESERVED_FILES
        ));
    }
    let sources = source_addresses(target, spec, n, notes)?;
    m.source_addresses = sources.iter().map(|s| s.to_string()).collect();

    let rss = |pid: Option<u32>| pid.and_then(|p| rss_bytes(p).ok());
    if spec.server_pid.is_none() {
        notes.push("no --server-pid: the server's memory per connection is not measured".into());
    }
    m.rss_before_bytes = rss(spec.server_pid);

    let pb = count_bar(spec.progress, n, "connecting");
    let started = Instant::now();
    let mut held: Vec<TcpStream> = Vec::with_capacity(n as usize);
    let mut consecutive_failures = 0u64;
    let mut results = stream::iter(0..n)
        .map(|i| {
            let source = (!sources.is_empty())
                .then(|| IpAddr::V4(sources[(i % sources.len() as u64) as usize]));
            let (addr, kind, timeout) = (target.addr, target.kind, spec.handshake_timeout);
            async move {
                match tokio::time::timeout(timeout, open_one(addr, source, kind)).await {
                    Ok(r) => r,
                    Err(_) => bail!("handshake timed out after {timeout:?}"),
                }
            }
        })
        .buffer_unordered(spec.concurrency.max(1));
    while let Some(r) = results.next().await {
        match r {
            Ok(s) => {
                held.push(s);
                consecutive_failures = 0;
            }
            Err(e) => {
                m.failed += 1;
                consecutive_failures += 1;
                *m.failures.entry(failure_kind(&e)).or_default() += 1;
                if consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
                    notes.push(format!(
                        "stopped opening connections after {MAX_CONSECUTIVE_FAILURES} failures in a row (last: {e:#})"
                    ));
                    break;
                }
            }
        }
        pb.inc(1);
    }
    drop(results);
    pb.finish_and_clear();
    m.open_secs = started.elapsed().as_secs_f64();
    m.established = held.len() as u64;
    if m.open_secs > 0.0 {
        m.handshakes_per_s = m.established as f64 / m.open_secs;
    }

    tokio::time::sleep(spec.settle).await;
    m.rss_after_bytes = rss(spec.server_pid);
    if let (Some(b), Some(a)) = (m.rss_before_bytes, m.rss_after_bytes) {
        if m.established > 0 {
            m.bytes_per_conn = Some((a as f64 - b as f64) / m.established as f64);
        }
    }
    tokio::time::sleep(spec.hold.saturating_sub(spec.settle)).await;
    m.closed_during_hold = held.iter().filter(|s| is_closed(s)).count() as u64;
    if m.closed_during_hold > 0 {
        notes.push(format!(
            "the server closed {} idle connections while they were held",
            m.closed_during_hold
        ));
    }
    drop(held);
    tokio::time::sleep(spec.settle).await;
    m.rss_after_close_bytes = rss(spec.server_pid);
    if m.failed > 0 {
        notes.push(format!("{} connections failed: {:?}", m.failed, m.failures));
    }
    Ok(m)
}

/// 127.0.0.2, 127.0.0.3, ... enough for `n` connections at `per_source` each; none when the
/// target is not IPv4 loopback (the source must be able to reach it).
fn source_addresses(
    target: &Target,
    spec: &ConnsSpec,
    n: u64,
    notes: &mut Vec<String>,
) -> Result<Vec<Ipv4Addr>> {
    let IpAddr::V4(dst) = target.addr.ip() else {
        notes.push("IPv6 target: connections use the default source address".into());
        return Ok(Vec::new());
    };
    if !dst.is_loopback() {
        notes.push("non-loopback target: connections use the default source address".into());
        return Ok(Vec::new());
    }
    let count = n.div_ceil(spec.per_source.max(1)).max(1);
    let first = u32::from(spec.first_source);
    let mut out = Vec::new();
    for k in 0..count {
        let ip = Ipv4Addr::from(
            first
                .checked_add(k as u32)
                .context("source address overflow")?,
        );
        if !ip.is_loopback() {
            bail!(
                "source address {ip} is outside 127.0.0.0/8; lower --conns or raise --per-source"
            );
        }
        out.push(ip);
    }
    Ok(out)
}

async fn open_one(
    addr: std::net::SocketAddr,
    source: Option<IpAddr>,
    kind: Kind,
) -> Result<TcpStream> {
    let stream = arqon::tcp_connect(addr, source).await?;
    match kind {
        Kind::Arqon => Ok(arqon::handshake(stream, "bench-idle").await?.into_stream()),
        Kind::Nats => nats_handshake(stream).await,
    }
}

/// The NATS handshake by hand (INFO, CONNECT, PING -> PONG): the client library cannot bind a
/// source address, and an idle connection needs nothing more.
async fn nats_handshake(mut s: TcpStream) -> Result<TcpStream> {
    let mut buf = Vec::with_capacity(4096);
    let info_end = read_until(&mut s, &mut buf, 0, |b| find(b, b"\r\n")).await?;
    if !buf.starts_with(b"INFO ") {
        bail!("NATS server did not start with INFO");
    }
    s.write_all(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"bench-idle\",\"lang\":\"rust\",\"version\":\"0\",\"protocol\":1}\r\nPING\r\n",
    )
    .await?;
    let after_info = info_end + 2;
    read_until(&mut s, &mut buf, after_info, |b| {
        if let Some(i) = find(b, b"-ERR") {
            return Some(i);
        }
        find(b, b"PONG\r\n")
    })
    .await?;
    if let Some(i) = find(&buf[after_info..], b"-ERR") {
        let line = String::from_utf8_lossy(&buf[after_info + i..])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        bail!("NATS refused the connection: {line}");
    }
    Ok(s)
}

async fn read_until(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    from: usize,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> Result<usize> {
    loop {
        if buf.len() > from {
            if let Some(i) = done(&buf[from..]) {
                return Ok(from + i);
            }
        }
        if buf.len() > MAX_NATS_HANDSHAKE_BYTES {
            bail!("NATS handshake longer than {MAX_NATS_HANDSHAKE_BYTES} bytes");
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether the peer has closed (or reset) the connection, without blocking.
fn is_closed(s: &TcpStream) -> bool {
    let mut byte = [0u8; 64];
    match s.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// A short name for why a connection failed, for the failure histogram.
fn failure_kind(e: &anyhow::Error) -> String {
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.raw_os_error() {
                Some(code) => format!("{:?} (os error {code})", io.kind()),
                None => format!("{:?}", io.kind()),
            };
        }
    }
    let s = format!("{e}");
    s.chars().take(80).collect()
}
