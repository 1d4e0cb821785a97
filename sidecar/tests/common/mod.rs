//! Real processes over real sockets: the bus binary (`target/release/arqonbus`) with a temporary
//! data directory and its own signing key, and the sidecar binary, each stopped when dropped
//! (even when the test panics), with its log printed if the test failed.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arqonbus_client::{Client, ConnectOptions};

/// How long anything in these tests may take to start.
pub const START_DEADLINE: Duration = Duration::from_secs(20);

/// `target/release`, found from this test executable (`target/release/deps/<test>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/release/deps/..")
        .to_owned()
}

pub fn bus_bin() -> PathBuf {
    let p = bin_dir().join("arqonbus");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --release -p arqonbus` (cargo test --workspace --release builds it)",
        p.display()
    );
    p
}

pub fn sidecar_bin() -> PathBuf {
    // Cargo builds a package's binaries before its integration tests.
    PathBuf::from(env!("CARGO_BIN_EXE_arqonbus-sidecar"))
}

/// A loopback port nothing listens on now (the OS's choice).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// glommio registers memory with io_uring: the bus (a child, inheriting it) needs the limit.
fn raise_memlock() {
    arqonbus_sidecar::install_crypto_provider();
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit on this process with a valid struct; failing leaves the limit as it was.
    unsafe {
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim);
    }
}

/// A child process killed and reaped on drop, its log shown if the thread is panicking.
pub struct Proc {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Waits for the process to exit by itself (bounded), returning its status and log.
    pub fn wait_exit(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return (status, log);
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.name, self.log());
        }
    }
}

/// The bus binary on a free loopback port, requiring signed tokens.
pub struct Bus {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    key: PathBuf,
    proc: Proc,
}

impl Bus {
    /// Starts the bus; `extra` is appended to its configuration.
    pub fn start(extra: &str) -> Self {
        raise_memlock();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("signing.key");
        let out = Command::new(bus_bin())
            .args(["token", "keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(out.status.success(), "token keygen failed: {out:?}");
        let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let config = dir.path().join("bus.toml");
        std::fs::write(
            &config,
            format!(
                "[auth]\nrequire_token = true\ntrusted_keys = [{{ id = \"k1\", key = \"{public}\" }}]\n\n\
                 [[retention]]\nrealities = \"kept-*\"\nsync = \"os\"\n\n{extra}\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.path().join("bus.log");
        let child = Command::new(bus_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--shards", "2", "--admin-listen", "off"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("bus.err")).unwrap())
            .spawn()
            .unwrap();
        let mut proc = Proc {
            name: "arqonbus",
            child,
            log: dir.path().join("bus.err"),
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // The bus announces nothing on stdout: its port accepting is the event.
        let deadline = Instant::now() + START_DEADLINE;
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!("the bus exited at start ({status}):\n{}", proc.log());
            }
            assert!(Instant::now() < deadline, "the bus did not listen in time");
            std::thread::sleep(Duration::from_millis(25));
        }
        Self {
            addr,
            dir,
            key,
            proc,
        }
    }

    /// A signed token: `roles` comma-separated, grants as `reality-glob:topic-pattern`.
    pub fn token(
        &self,
        tenant: &str,
        subject: &str,
        roles: &str,
        publish: &[&str],
        subscribe: &[&str],
    ) -> String {
        let mut cmd = Command::new(bus_bin());
        cmd.args(["token", "issue", "--key"])
            .arg(&self.key)
            .args(["--key-id", "k1", "--tenant", tenant, "--subject", subject])
            .args(["--role", roles, "--ttl", "600"]);
        for g in publish {
            cmd.args(["--publish", g]);
        }
        for g in subscribe {
            cmd.args(["--subscribe", g]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "token issue failed: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A token that may do anything.
    pub fn admin_token(&self) -> String {
        self.token("lab", "root", "admin", &["*:>"], &["*:>"])
    }

    /// A native client with `token`.
    pub async fn client(&self, token: &str) -> Client {
        let options = ConnectOptions {
            token: token.to_owned(),
            ..ConnectOptions::default()
        };
        Client::connect(self.addr, options)
            .await
            .expect("native client connects")
    }
}

/// The sidecar binary with a configuration, its listeners' addresses read from its stdout.
pub struct Sidecar {
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub tls: bool,
    proc: Proc,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts the sidecar with `toml` (ports 0 unless it says otherwise).
    pub fn start(toml: &str) -> Self {
        arqonbus_sidecar::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("sidecar.toml");
        std::fs::write(&config, toml).unwrap();
        let log = dir.path().join("sidecar.err");
        let mut child = Command::new(sidecar_bin())
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,arqonbus_sidecar=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut proc = Proc {
            name: "arqonbus-sidecar",
            child,
            log,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut http = None;
        let mut grpc = None;
        let mut tls = false;
        let deadline = Instant::now() + START_DEADLINE;
        // Each listener prints one line once bound: that is the event waited for.
        let expected = expect_listeners(toml);
        while (http.is_some() as usize + grpc.is_some() as usize) < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let addr = line
                        .split(" listening on ")
                        .nth(1)
                        .and_then(|rest| rest.split(' ').next())
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    tls |= line.ends_with("(tls)");
                    if line.starts_with("arqonbus-sidecar: http ") {
                        http = addr;
                    } else if line.starts_with("arqonbus-sidecar: grpc ") {
                        grpc = addr;
                    }
                }
                Err(_) => {
                    let status = proc.child.try_wait().unwrap();
                    panic!(
                        "the sidecar did not report its listeners (exit: {status:?}):\n{}",
                        proc.log()
                    );
                }
            }
        }
        Self {
            http,
            grpc,
            tls,
            proc,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.http.expect("http listener"))
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// A gRPC client of `arqon.sidecar.v1.Bus` over h2c.
    pub async fn grpc_client(
        &self,
    ) -> arqonbus_sidecar::pb::bus_client::BusClient<tonic::transport::Channel> {
        let endpoint = format!("http://{}", self.grpc.expect("grpc listener"));
        let channel = tonic::transport::Endpoint::from_shared(endpoint)
            .unwrap()
            .connect()
            .await
            .expect("gRPC connects");
        arqonbus_sidecar::pb::bus_client::BusClient::new(channel)
    }

    /// The value of one line of `/metrics` that starts with `series` (0 when absent).
    pub async fn metric(&self, series: &str) -> u64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// Listeners a test configuration turns on (both unless one is "off").
fn expect_listeners(toml: &str) -> usize {
    let off = toml.matches("listen = \"off\"").count();
    2 - off.min(1)
}

/// A sidecar configuration for `bus` with both listeners on OS-chosen loopback ports, and `extra`.
pub fn sidecar_toml(bus: &Bus, extra: &str) -> String {
    sidecar_toml_with(bus, "", extra)
}

/// As [`sidecar_toml`], with `http_keys` inside its `[http]` table.
pub fn sidecar_toml_with(bus: &Bus, http_keys: &str, extra: &str) -> String {
    format!(
        "[bus]\naddress = \"{}\"\ntimeout_ms = 5000\n\n[http]\nlisten = \"127.0.0.1:0\"\n{http_keys}\n\n\
         [grpc]\nlisten = \"127.0.0.1:0\"\n\n{extra}\n",
        bus.addr
    )
}

/// A bearer header value.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Reads Server-Sent Events from a streaming response: (event, data) pairs.
pub struct SseReader {
    response: reqwest::Response,
    buf: String,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            buf: String::new(),
        }
    }

    /// The next event that is not a comment, within `within`.
    pub async fn next(&mut self, within: Duration) -> (String, String) {
        tokio::time::timeout(within, self.next_inner())
            .await
            .expect("an SSE event in time")
    }

    async fn next_inner(&mut self) -> (String, String) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if data.is_empty() && event == "message" {
                    continue; // a keepalive comment
                }
                return (event, data);
            }
            let chunk = self
                .response
                .chunk()
                .await
                .expect("SSE read")
                .expect("the SSE stream ended");
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}
