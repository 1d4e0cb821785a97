//! Helpers shared by the integration tests: an in-process server on real sockets, raw frame
//! I/O for protocol edge cases, and clients pinned to a chosen shard.
#![allow(dead_code)]

pub mod guest;
pub mod policy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use arqonbus::config::Config;
use arqonbus::metrics::Snapshot;
use arqonbus::proto::v1::{client_frame, server_frame, ClientFrame, Hello, ServerFrame};
use arqonbus::Server;
use arqonbus_client::{Client, ConnectOptions};
use prost::Message;

/// A server on 127.0.0.1 with an OS-chosen port, stopped when dropped.
pub struct TestBus {
    server: Option<Server>,
    pub addr: SocketAddr,
}

impl TestBus {
    pub fn start(configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_clock(configure, arqonbus::time::system())
    }

    pub fn start_with_clock(
        configure: impl FnOnce(&mut Config),
        clock: arqonbus::time::SharedClock,
    ) -> Self {
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            // The default admin port is fixed; tests run side by side.
            admin_listen: Some("127.0.0.1:0".parse().unwrap()),
            shards: 2,
            ..Config::default()
        };
        configure(&mut config);
        let server = Server::start_with_clock(config, clock).expect("server starts");
        let addr = server.local_addr();
        Self {
            server: Some(server),
            addr,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    pub fn metrics(&self) -> Snapshot {
        self.server.as_ref().unwrap().metrics()
    }

    /// The admin listener's address (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.server
            .as_ref()
            .unwrap()
            .admin_addr()
            .expect("admin listener")
    }

    /// Stops the server and waits for every shard.
    pub fn stop(mut self) {
        self.server.take().unwrap().stop().expect("clean stop");
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop();
        }
    }
}

pub async fn client(addr: SocketAddr) -> Client {
    Client::connect(addr, ConnectOptions::default())
        .await
        .expect("client connects")
}

/// A client whose connection the kernel gave to `shard` (SO_REUSEPORT spreads connections by
/// hash, so this retries until it lands there).
pub async fn client_on_shard(addr: SocketAddr, shard: u32) -> Client {
    for _ in 0..500 {
        let c = client(addr).await;
        if c.welcome().shard == shard {
            return c;
        }
        let _ = c.close().await;
    }
    panic!("no connection landed on shard {shard} in 500 tries");
}

/// Frame I/O on a plain blocking socket, for what a well-behaved client would never send.
pub struct RawConn {
    pub stream: TcpStream,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self { stream }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, frame: &ClientFrame) {
        let mut buf = (frame.encoded_len() as u32).to_be_bytes().to_vec();
        frame.encode(&mut buf).unwrap();
        self.send_raw(&buf);
    }

    pub fn send_kind(&mut self, correlation_id: u64, kind: client_frame::Kind) {
        self.send(&ClientFrame {
            correlation_id,
            kind: Some(kind),
        });
    }

    /// The next frame, or None at end of stream.
    pub fn recv(&mut self) -> Option<ServerFrame> {
        let mut len = [0u8; 4];
        match self.stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                return None
            }
            Err(e) => panic!("read failed: {e}"),
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).unwrap();
        Some(ServerFrame::decode(&body[..]).unwrap())
    }

    /// Says Hello and returns the Welcome's shard.
    pub fn hello(&mut self) -> u32 {
        self.send_kind(
            1,
            client_frame::Kind::Hello(Hello {
                protocol_version: 1,
                client_name: "raw".into(),
                ..Default::default()
            }),
        );
        match self.recv().and_then(|f| f.kind) {
            Some(server_frame::Kind::Welcome(w)) => w.shard,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// True when the server has closed the connection (reads end of stream).
    pub fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// The error code of a frame, if it is an Error.
pub fn error_code(frame: &ServerFrame) -> Option<arqonbus::proto::v1::ErrorCode> {
    match &frame.kind {
        Some(server_frame::Kind::Error(e)) => arqonbus::proto::v1::ErrorCode::try_from(e.code).ok(),
        _ => None,
    }
}

/// Raises the soft descriptor limit to the hard one (tests with many connections).
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

/// A config that retains realities matching `glob` in `dir` with `sync`.
pub fn retain(
    config: &mut Config,
    dir: &std::path::Path,
    glob: &str,
    sync: arqonbus::config::SyncMode,
) {
    config.data_dir = dir.to_owned();
    config.retention.push(arqonbus::config::RetentionRule {
        realities: glob.into(),
        max_age_ms: 0,
        max_bytes: 0,
        sync,
        sync_interval_ms: 20,
        segment_bytes: None,
    });
}

/// A history query.
pub fn history_query(
    reality: &str,
    from: Option<arqonbus::proto::v1::history_get::From>,
    to: Option<arqonbus::proto::v1::history_get::To>,
    limit: u32,
) -> arqonbus::proto::v1::HistoryGet {
    arqonbus::proto::v1::HistoryGet {
        reality_id: reality.into(),
        pattern: String::new(),
        from,
        to,
        limit,
    }
}

pub mod prometheus;

/// A plain HTTP/1.1 GET (one request per connection) against the admin listener: status code and
/// body. Test-side only; the server uses tiny_http.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8(response)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    // Chunked bodies are not expected: tiny_http sends a length for string bodies.
    Ok((code, body.to_owned()))
}
