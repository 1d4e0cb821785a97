//! Under a service manager (a fake one here: a datagram socket named by NOTIFY_SOCKET), a real
//! `arqonbus serve` says READY=1 only once its listeners accept, pings WATCHDOG=1 while its
//! shards turn, and says STOPPING=1 when SIGTERM starts the drain.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The next notification, or None after `timeout`.
fn next(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

#[test]
fn systemd_notify_ready_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let port = free_port();
    let admin_port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .args(["serve", "--shards", "2", "--listen", &addr.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .env("NOTIFY_SOCKET", &socket_path)
        // A 400 ms watchdog: the supervisor checks every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let ready = next(&socket, Duration::from_secs(30)).expect("a notification");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready
            .lines()
            .any(|l| l == format!("STATUS=listening on {addr} with 2 shards")),
        "{ready:?}"
    );
    // READY means every listener is bound and accepting: no retry here.
    std::net::TcpStream::connect(addr).expect("client port accepts once READY=1 is sent");
    let (code, body) = common::http_get(admin, "/readyz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ready\n"));

    let mut pings = 0;
    while pings < 3 {
        let msg = next(&socket, Duration::from_secs(5)).expect("a watchdog ping");
        assert_eq!(msg, "WATCHDOG=1\n");
        pings += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(30));

    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut stopping = None;
    while let Some(msg) = next(&socket, Duration::from_secs(10)) {
        if msg.lines().any(|l| l == "STOPPING=1") {
            stopping = Some(msg);
            break;
        }
        assert_eq!(msg, "WATCHDOG=1\n", "only pings before STOPPING");
    }
    assert!(stopping.is_some(), "STOPPING=1 after SIGTERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // Nothing after STOPPING: no late pings.
    assert_eq!(next(&socket, Duration::from_millis(300)), None);
}

#[test]
fn outside_systemd_nothing_is_sent_and_serve_runs() {
    // No NOTIFY_SOCKET: sd_notify is a no-op and no supervisor thread starts; the bus serves.
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .args(["serve", "--shards", "1", "--listen", &addr.to_string()])
        .args(["--admin-listen", "off"])
        .env_remove("NOTIFY_SOCKET")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server never accepted");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
