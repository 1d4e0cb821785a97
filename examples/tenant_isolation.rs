//! Tenant isolation and the cost of TLS, measured in one run.
//!
//! ```sh
//! cargo run --release --example tenant_isolation -- [seconds-per-phase] [nice]
//! ```
//!
//! An in-process server (2 shards, tokens required) serves two tenants. Tenant B publishes on
//! an open-loop schedule (one pulse per millisecond, latency measured from the *intended* send
//! time to delivery at B's subscriber, so stalls are not hidden) and we report B's p50/p99/max:
//! alone; while tenant A floods from four connections as fast as the clients can write, with a
//! publish quota on A; and while A floods with no quota at all. Then one publisher and one
//! subscriber move 256-byte pulses as fast as they can over plain TCP and over TLS 1.3, and we
//! report pulses per second for each.
//!
//! The clients run in the same process on the same cores as the shards, so absolute numbers
//! are lower than on separate machines; the ratios are the point. A's flooding client takes a
//! core's worth of CPU that, in production, a remote client would not take from the bus; with
//! `nice` it runs at the lowest scheduling priority, which separates what the bus does from
//! what sharing two cores with the flooder does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arqonbus::auth::{token, Claims, Role};
use arqonbus::config::{Config, TenantClass, TenantQuota, TlsConfig};
use arqonbus::transport::Transport;
use arqonbus::Server;
use arqonbus_client::{Client, ConnectOptions, Outgoing, TlsOptions};
use futures::StreamExt;
use hdrhistogram::Histogram;

const FLOOD_CONNECTIONS: usize = 4;
const B_INTERVAL: Duration = Duration::from_millis(1);

struct Setup {
    server: Server,
    key: ed25519_dalek::SigningKey,
    ca: rustls_pki_types::CertificateDer<'static>,
    _dir: tempfile::TempDir,
}

fn certificates(dir: &std::path::Path) -> rustls_pki_types::CertificateDer<'static> {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    ca.der().clone()
}

fn start(a_quota: Option<u64>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let key = token::generate_key().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls_listen: Some("127.0.0.1:0".parse().unwrap()),
        shards: 2,
        tls: Some(TlsConfig {
            cert_path: dir.path().join("cert.pem"),
            key_path: dir.path().join("key.pem"),
            client_ca_path: None,
            require_client_cert: false,
        }),
        ..Config::default()
    };
    config.auth.require_token = true;
    config.auth.trusted_keys = vec![token::encode_public(&key.verifying_key()).into()];
    // Both tenants have a compartment of their own on each shard (equal shares); B's is of the
    // latency class.
    config.tenants.push(TenantQuota {
        name: "a".into(),
        publish_pulses_per_sec: a_quota.unwrap_or(0),
        ..Default::default()
    });
    config.tenants.push(TenantQuota {
        name: "b".into(),
        class: TenantClass::Latency,
        ..Default::default()
    });
    Setup {
        server: Server::start(config).expect("server starts"),
        key,
        ca,
        _dir: dir,
    }
}

fn token_for(key: &ed25519_dalek::SigningKey, tenant: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    token::issue(
        key,
        &Claims {
            tenant: tenant.into(),
            sub: format!("{tenant}-bench"),
            roles: vec![Role::Publisher, Role::Subscriber],
            publish: vec![format!("{tenant}-*:>")],
            subscribe: vec![format!("{tenant}-*:>")],
            exp: now + 3600,
            iat: now,
            capabilities: None,
            kid: None,
            jti: None,
            aud: None,
        },
    )
}

async fn connect(setup: &Setup, tenant: &str, tls: bool) -> Client {
    let mut options = ConnectOptions {
        token: token_for(&setup.key, tenant),
        ..ConnectOptions::default()
    };
    let addr = if tls {
        options.tls = Some(TlsOptions::new(vec![setup.ca.clone()], None).unwrap());
        setup.server.addr_of(Transport::Tls).unwrap()
    } else {
        setup.server.local_addr()
    };
    Client::connect(addr, options).await.expect("connect")
}

/// How to reach the bus, for clients on other threads.
#[derive(Clone)]
struct Target {
    addr: std::net::SocketAddr,
    token_a: String,
    token_b: String,
}

async fn connect_plain(addr: std::net::SocketAddr, token: &str) -> Client {
    let options = ConnectOptions {
        token: token.into(),
        ..ConnectOptions::default()
    };
    Client::connect(addr, options).await.expect("connect")
}

/// Runs `f` on its own thread with its own single-threaded runtime, so one tenant's clients
/// never wait behind the other's in a shared runtime.
fn on_own_thread<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
    f: impl FnOnce() -> F + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// Tenant B's publisher: a blocking socket on its own thread, so each pulse leaves at its
/// intended time to within the OS's sleep precision (tokio's timer rounds to a millisecond).
fn b_publisher(target: Target, base: Instant, count: u64) -> std::thread::JoinHandle<()> {
    use arqonbus::proto::v1::{client_frame, ArqonMessage, ClientFrame, Hello, Publish};
    use prost::Message;
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut socket = std::net::TcpStream::connect(target.addr).unwrap();
        socket.set_nodelay(true).unwrap();
        let frame = |kind| {
            let f = ClientFrame {
                correlation_id: 1,
                kind: Some(kind),
            };
            let mut buf = (f.encoded_len() as u32).to_be_bytes().to_vec();
            f.encode(&mut buf).unwrap();
            buf
        };
        let hello = client_frame::Kind::Hello(Hello {
            protocol_version: 1,
            token: target.token_b.clone(),
            ..Default::default()
        });
        socket.write_all(&frame(hello)).unwrap();
        let mut len = [0u8; 4];
        socket.read_exact(&mut len).unwrap();
        socket
            .read_exact(&mut vec![0u8; u32::from_be_bytes(len) as usize])
            .unwrap();
        for i in 0..count {
            let intended = base + B_INTERVAL * i as u32;
            if let Some(wait) = intended.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let nanos = intended.duration_since(base).as_nanos() as u64;
            let mut message = ArqonMessage {
                topic: "lat.ping".into(),
                reality_id: "b-lat".into(),
                ..Default::default()
            };
            message.payload = Some(prost_types::Any {
                type_url: String::new(),
                value: nanos.to_be_bytes().to_vec(),
            });
            let publish = client_frame::Kind::Publish(Publish {
                message: Some(message),
                ack: false,
            });
            socket.write_all(&frame(publish)).unwrap();
        }
    })
}

/// Tenant B's open-loop latency for `secs`: (histogram in microseconds, pulses lost).
async fn measure_b(target: Target, secs: u64) -> (Histogram<u64>, u64) {
    let subscriber = connect_plain(target.addr, &target.token_b).await;
    let mut sub = subscriber.subscribe("b-lat", "lat.>").await.unwrap();
    let count = secs * 1000 / B_INTERVAL.as_millis() as u64;
    let base = Instant::now() + Duration::from_millis(50);
    let sender = b_publisher(target, base, count);
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut got = 0;
    while got < count {
        let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), sub.next()).await else {
            break;
        };
        let value = m.payload.unwrap().value;
        let intended = u64::from_be_bytes(value[..8].try_into().unwrap());
        let now = base.elapsed().as_nanos() as u64;
        hist.record(now.saturating_sub(intended) / 1000).unwrap();
        got += 1;
    }
    let _ = tokio::task::spawn_blocking(move || sender.join()).await;
    (hist, count - got)
}

/// Tenant A floods until `stop`: fire-and-forget publishes from several connections, with one
/// subscriber of its own. Returns (publishes written, connections that failed early).
async fn flood_a(target: Target, stop: Arc<AtomicBool>) -> (u64, u64) {
    let mut tasks = Vec::new();
    for c in 0..FLOOD_CONNECTIONS {
        let client = connect_plain(target.addr, &target.token_a).await;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let reality = format!("a-{c}");
            let body = vec![0u8; 256];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..256 {
                    if client
                        .publish(Outgoing::new(&reality, "flood.x").bytes(body.clone()))
                        .await
                        .is_err()
                    {
                        return (sent, true);
                    }
                    sent += 1;
                }
            }
            (sent, false)
        }));
    }
    let subscriber = connect_plain(target.addr, &target.token_a).await;
    let mut sub = subscriber.subscribe("a-0", ">").await.unwrap();
    let drain = tokio::spawn(async move { while sub.next().await.is_some() {} });
    let (mut sent, mut failed) = (0, 0);
    for t in tasks {
        let (n, f) = t.await.unwrap();
        sent += n;
        failed += f as u64;
    }
    drain.abort();
    (sent, failed)
}

/// Pulses per second from one publisher to one subscriber, plain or TLS.
async fn throughput(setup: &Setup, tls: bool, pulses: u64) -> f64 {
    let publisher = connect(setup, "b", tls).await;
    let subscriber = connect(setup, "b", tls).await;
    let reality = if tls { "b-tls" } else { "b-tcp" };
    let mut sub = subscriber.subscribe(reality, ">").await.unwrap();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let body = vec![0u8; 256];
        for _ in 0..pulses {
            publisher
                .publish(Outgoing::new(reality, "tput.x").bytes(body.clone()))
                .await
                .unwrap();
        }
        publisher
    });
    let (mut got, mut shed) = (0, 0);
    while got + shed < pulses {
        match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
            Ok(Some(Ok(_))) => got += 1,
            Ok(Some(Err(arqonbus_client::ClientError::Dropped { count }))) => shed += count,
            _ => break,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = sender.await;
    if shed > 0 {
        println!("(the subscriber fell behind: the bus shed {shed} of {pulses} pulses for it)");
    }
    got as f64 / elapsed
}

fn line(label: &str, (h, lost): &(Histogram<u64>, u64)) -> String {
    format!(
        "| {label} | {} | {} | {} | {} | {lost} |",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    )
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let nice = std::env::args().nth(2).is_some_and(|a| a == "nice");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut rows = Vec::new();
        let mut floods = Vec::new();
        for (label, quota) in [
            ("B alone", None),
            ("B while A floods (A quota 20,000 pulses/s)", Some(Some(20_000))),
            ("B while A floods (A unlimited)", Some(None)),
        ]
        {
            let setup = start(quota.flatten());
            let target = Target {
                addr: setup.server.local_addr(),
                token_a: token_for(&setup.key, "a"),
                token_b: token_for(&setup.key, "b"),
            };
            let stop = Arc::new(AtomicBool::new(false));
            let flood = quota.map(|_| {
                let (target, stop) = (target.clone(), stop.clone());
                on_own_thread(move || {
                    if nice {
                        // SAFETY: setpriority on this thread (tid 0 = the caller).
                        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                    }
                    flood_a(target, stop)
                })
            });
            if flood.is_some() {
                // Let the flood reach full speed before measuring.
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let before = setup.server.metrics();
            let started = Instant::now();
            let b = {
                let target = target.clone();
                on_own_thread(move || measure_b(target, secs))
            };
            let result = tokio::task::spawn_blocking(move || b.join().unwrap())
                .await
                .unwrap();
            let elapsed = started.elapsed().as_secs_f64();
            let after = setup.server.metrics();
            stop.store(true, Ordering::Relaxed);
            if let Some(f) = flood {
                let (sent, failed) = tokio::task::spawn_blocking(move || f.join().unwrap())
                    .await
                    .unwrap();
                let rate = |a: u64, b: u64| (a - b) as f64 / elapsed;
                floods.push(format!(
                    "{label}: A wrote {:.0} publishes/s; the bus sequenced {:.0} pulses/s \
                     (A and B) and refused {:.0}/s with QUOTA_EXCEEDED; {failed} of A's \
                     connections failed; slow-consumer disconnects {}",
                    sent as f64 / (elapsed + 0.5),
                    rate(after.pulses_sequenced, before.pulses_sequenced),
                    rate(after.quota_exceeded, before.quota_exceeded),
                    after.slow_consumer_disconnects,
                ));
            }
            rows.push(line(label, &result));
            setup.server.stop().unwrap();
        }
        let niced = if nice { ", A's client niced" } else { "" };
        println!("Tenant B latency, publish to delivery, from the intended send time (µs), {secs} s per phase, 1,000 pulses/s{niced}:\n");
        println!("| phase | p50 | p99 | p99.9 | max | lost |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: |");
        for r in rows {
            println!("{r}");
        }
        println!();
        for f in floods {
            println!("{f}");
        }

        let setup = start(None);
        let pulses = 200_000;
        let (mut plain, mut tls) = (Vec::new(), Vec::new());
        // Alternate, three runs each, and take the median: the machine is shared.
        for _ in 0..3 {
            plain.push(throughput(&setup, false, pulses).await);
            tls.push(throughput(&setup, true, pulses).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.total_cmp(b));
            v[v.len() / 2]
        };
        let show = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (runs_plain, runs_tls) = (show(&plain), show(&tls));
        let (plain, tls) = (median(&mut plain), median(&mut tls));
        println!("\nOne publisher to one subscriber, {pulses} pulses of 256 B, median of 3 runs:\n");
        println!("| transport | pulses/s | runs |");
        println!("| --- | ---: | --- |");
        println!("| TCP | {plain:.0} | {runs_plain} |");
        println!("| TLS 1.3 | {tls:.0} | {runs_tls} |");
        println!("\nTLS / TCP = {:.2}", tls / plain);
        setup.server.stop().unwrap();
    });
}
