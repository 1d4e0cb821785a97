//! Helpers shared by the integration tests: an in-process server on real sockets, raw frame
//! I/O for protocol edge cases, and clients pinned to a chosen shard.
#![allow(dead_code)]

pub mod acked;
pub mod bystander;
pub mod guest;
pub mod operator;
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

    /// Hands over the server, to join it by hand (a test of how it stops).
    pub fn into_server(mut self) -> Server {
        self.server.take().unwrap()
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

    /// Says Hello with `token` and returns the server's answer (Welcome or an error).
    pub fn hello_with_token(&mut self, token: &str) -> ServerFrame {
        self.send_kind(
            1,
            client_frame::Kind::Hello(Hello {
                protocol_version: 1,
                token: token.into(),
                ..Default::default()
            }),
        );
        self.recv().expect("an answer to Hello")
    }

    /// Subscribes to everything in `reality` with causal delivery, as subscription `id`, and
    /// waits for `Subscribed`.
    pub fn subscribe_causal(&mut self, id: u64, reality: &str) {
        self.send_kind(
            id,
            client_frame::Kind::Subscribe(arqonbus::proto::v1::Subscribe {
                subscription_id: id,
                reality_id: reality.into(),
                pattern: ">".into(),
                causal: true,
                ..Default::default()
            }),
        );
        match self.recv().and_then(|f| f.kind) {
            Some(server_frame::Kind::Subscribed(s)) => assert_eq!(s.subscription_id, id),
            other => panic!("expected Subscribed, got {other:?}"),
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

/// Certificates made for a test: a CA, a server certificate for `localhost` and 127.0.0.1
/// signed by it, and client certificates on demand.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl TestPki {
    pub fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "arqonbus test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Self {
            dir: tempfile::tempdir().unwrap(),
            ca,
            ca_key,
        };
        std::fs::write(pki.path("ca.pem"), pki.ca.pem()).unwrap();
        pki.write_server_cert("server");
        pki
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub fn ca_der(&self) -> rustls_pki_types::CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// Writes `<name>.pem` and `<name>.key` (a server certificate for localhost, 127.0.0.1)
    /// and makes them the ones `server.pem`/`server.key` name.
    pub fn write_server_cert(&self, org: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        std::fs::write(self.path("server.pem"), cert.pem()).unwrap();
        std::fs::write(self.path("server.key"), key.serialize_pem()).unwrap();
    }

    /// A client certificate with common name `cn`, signed by the CA: (chain, key).
    pub fn client_cert(
        &self,
        cn: &str,
    ) -> (
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        (vec![cert.der().clone()], der.into())
    }

    /// The `[tls]` section for this PKI.
    pub fn tls_config(
        &self,
        client_ca: bool,
        require_client_cert: bool,
    ) -> arqonbus::config::TlsConfig {
        arqonbus::config::TlsConfig {
            cert_path: self.path("server.pem"),
            key_path: self.path("server.key"),
            client_ca_path: client_ca.then(|| self.path("ca.pem")),
            require_client_cert,
        }
    }

    /// Client options that trust this CA, optionally with a client certificate.
    pub fn client_options(&self, client_cn: Option<&str>) -> ConnectOptions {
        let identity = client_cn.map(|cn| self.client_cert(cn));
        ConnectOptions {
            tls: Some(arqonbus_client::TlsOptions::new(vec![self.ca_der()], identity).unwrap()),
            ..ConnectOptions::default()
        }
    }

    /// A rustls client configuration trusting this CA, limited to `versions`.
    pub fn rustls_client(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        client_cn: Option<&str>,
    ) -> std::sync::Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let config = match client_cn {
            Some(cn) => {
                let (chain, key) = self.client_cert(cn);
                builder.with_client_auth_cert(chain, key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        std::sync::Arc::new(config)
    }
}

/// A blocking rustls connection to `addr` (for protocol-level TLS tests).
pub fn tls_connect(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, std::io::Error> {
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// A blocking WebSocket client that speaks frames as binary messages.
pub struct WsConn<S: Read + Write> {
    pub ws: tungstenite::WebSocket<S>,
}

impl<S: Read + Write> WsConn<S> {
    pub fn send(&mut self, correlation_id: u64, kind: client_frame::Kind) {
        let frame = ClientFrame {
            correlation_id,
            kind: Some(kind),
        };
        self.ws
            .send(tungstenite::Message::binary(frame.encode_to_vec()))
            .unwrap();
    }

    /// The next frame; None when the server closed.
    pub fn recv(&mut self) -> Option<ServerFrame> {
        loop {
            match self.ws.read() {
                Ok(tungstenite::Message::Binary(b)) => {
                    return Some(ServerFrame::decode(&b[..]).unwrap())
                }
                Ok(tungstenite::Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    pub fn hello(&mut self, token: &str) -> Option<ServerFrame> {
        self.send(
            1,
            client_frame::Kind::Hello(Hello {
                protocol_version: 1,
                client_name: "ws-test".into(),
                token: token.into(),
                ..Default::default()
            }),
        );
        self.recv()
    }
}

/// A plain `ws://` connection.
pub fn ws_connect(addr: SocketAddr) -> WsConn<TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/"), tcp).unwrap();
    WsConn { ws }
}

/// A `wss://` connection trusting `config`'s roots.
pub fn wss_connect(
    addr: SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> WsConn<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tls = tls_connect(addr, config).unwrap();
    let (ws, _) = tungstenite::client(format!("wss://localhost:{}/", addr.port()), tls).unwrap();
    WsConn { ws }
}

/// Transport addresses of a TestBus.
impl TestBus {
    pub fn addr_of(&self, transport: arqonbus::transport::Transport) -> SocketAddr {
        self.server()
            .addr_of(transport)
            .expect("listener configured")
    }
}

/// A signing key and the config that trusts it.
pub fn token_key(config: &mut Config, require: bool) -> ed25519_dalek::SigningKey {
    let key = arqonbus::auth::token::generate_key().unwrap();
    config.auth.trusted_keys =
        vec![arqonbus::auth::token::encode_public(&key.verifying_key()).into()];
    config.auth.require_token = require;
    key
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `tenant`/`subject` with these roles and grants, valid for an hour.
pub fn token(
    key: &ed25519_dalek::SigningKey,
    tenant: &str,
    roles: &[arqonbus::auth::Role],
    publish: &[&str],
    subscribe: &[&str],
) -> String {
    arqonbus::auth::token::issue(
        key,
        &arqonbus::auth::Claims {
            tenant: tenant.into(),
            sub: "tester".into(),
            roles: roles.to_vec(),
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            exp: now_secs() + 3600,
            iat: now_secs(),
            capabilities: None,
            kid: None,
            jti: None,
            aud: None,
        },
    )
}

/// A client with a token.
pub async fn client_with_token(
    addr: SocketAddr,
    token: &str,
) -> Result<Client, arqonbus_client::ClientError> {
    Client::connect(
        addr,
        ConnectOptions {
            token: token.into(),
            ..ConnectOptions::default()
        },
    )
    .await
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

/// Runs the `arqonbus` binary (`serve`, two shards) with `config` on `addr` and waits until it
/// listens; its stderr is drained so it never blocks. For tests that kill the process.
pub fn spawn_serve(config: &std::path::Path, addr: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .args(["serve", "--shards", "2", "--listen", addr])
        // The default admin port is fixed; other tests run side by side.
        .args(["--admin-listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited early: {seen}"
        );
        seen.push_str(&line);
    }
    std::thread::spawn(move || for _ in stderr.lines() {});
    child
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
