//! A pulled cable, not a closed socket: a subscriber in its own network namespace, joined to the
//! bus by a veth pair, goes silent when its end of the link is taken down — no FIN, no RST, the
//! process still alive. TCP keepalive (`limits.keepalive_secs`) must find it gone, end its
//! session and take it out of presence, while a subscriber on loopback stays.
//!
//! Needs root (network namespaces); CI runs as root. Outside CI, without the rights, it says so
//! and passes without checking anything.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use arqonbus::proto::v1::{client_frame, ClientFrame, Hello, Subscribe};
use arqonbus_proto::frame::encode_frame;
use common::{client, TestBus};

const KEEPALIVE_SECS: u64 = 1;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A namespace `ns` joined to this one by veth `host` (10.91.x.1) <-> `peer` (10.91.x.2).
struct Link {
    ns: String,
    host: String,
    peer: String,
    host_ip: Ipv4Addr,
    peer_ip: Ipv4Addr,
}

impl Link {
    fn make() -> Result<Self, String> {
        let id = std::process::id() % 200 + 10;
        let link = Link {
            ns: format!("arqon-cable-{id}"),
            host: format!("acab{id}h"),
            peer: format!("acab{id}p"),
            host_ip: Ipv4Addr::new(10, 91, id as u8, 1),
            peer_ip: Ipv4Addr::new(10, 91, id as u8, 2),
        };
        link.teardown();
        ip(&["netns", "add", &link.ns])?;
        let (ns, host, peer) = (&link.ns, &link.host, &link.peer);
        ip(&[
            "link", "add", host, "type", "veth", "peer", "name", peer, "netns", ns,
        ])?;
        ip(&["addr", "add", &format!("{}/24", link.host_ip), "dev", host])?;
        ip(&["link", "set", host, "up"])?;
        let peer_cidr = format!("{}/24", link.peer_ip);
        ip(&["-n", ns, "addr", "add", &peer_cidr, "dev", peer])?;
        ip(&["-n", ns, "link", "set", peer, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(link)
    }

    fn teardown(&self) {
        let _ = ip(&["link", "del", &self.host]);
        let _ = ip(&["netns", "del", &self.ns]);
    }

    /// A TCP connection made from inside the namespace (a thread that joins it; the socket
    /// stays in it for its life).
    fn connect_from_inside(&self, to: SocketAddr) -> TcpStream {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("namespace file");
            // SAFETY: setns on this thread only, with a descriptor we own.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect across veth")
        })
        .join()
        .unwrap()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn frame(correlation_id: u64, kind: client_frame::Kind) -> Vec<u8> {
    encode_frame(&ClientFrame {
        correlation_id,
        kind: Some(kind),
    })
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_drops_a_peer_whose_cable_is_pulled() {
    let link = match Link::make() {
        Ok(link) => link,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("skipped: cannot make a network namespace here ({e}); run as root");
            return;
        }
        Err(e) => panic!("CI runs as root and must be able to make namespaces: {e}"),
    };
    let bus = TestBus::start(|c| {
        c.listen = "0.0.0.0:0".parse().unwrap();
        c.allow_plaintext_non_local = true;
        c.limits.keepalive_secs = KEEPALIVE_SECS;
    });
    let port = bus.addr.port();
    let reality = "cable-lab";

    // The far subscriber: a raw session from inside the namespace.
    let mut far = link.connect_from_inside(SocketAddr::V4(SocketAddrV4::new(link.host_ip, port)));
    let hello = Hello {
        protocol_version: 1,
        client_name: "far-rig".into(),
        ..Default::default()
    };
    far.write_all(&frame(1, client_frame::Kind::Hello(hello)))
        .unwrap();
    let subscribe = Subscribe {
        subscription_id: 1,
        reality_id: reality.into(),
        pattern: "rig.>".into(),
        ..Default::default()
    };
    far.write_all(&frame(2, client_frame::Kind::Subscribe(subscribe)))
        .unwrap();
    far.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = [0u8; 256];
    assert!(far.read(&mut answer).unwrap() > 0, "the bus answered");

    // A near subscriber on loopback, and a watcher.
    let near = client(bus.addr).await;
    let _near_sub = near.subscribe(reality, "rig.>").await.unwrap();
    let watcher = client(bus.addr).await;
    let names = |entries: &[arqonbus::proto::v1::PresenceEntry]| -> Vec<String> {
        let mut n: Vec<String> = entries.iter().map(|e| e.client_name.clone()).collect();
        n.sort();
        n
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let present = names(&watcher.presence(reality).await.unwrap());
        if present.contains(&"far-rig".to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "far-rig never present: {present:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Pull the cable at the far end: its link goes down, nothing is sent, the socket lives on.
    let pulled = Instant::now();
    ip(&["-n", &link.ns, "link", "set", &link.peer, "down"]).unwrap();
    let bound = Duration::from_secs(KEEPALIVE_SECS * 2 + 8);
    let gone_after = loop {
        let present = names(&watcher.presence(reality).await.unwrap());
        if !present.contains(&"far-rig".to_string()) {
            assert!(
                present.iter().any(|n| n != "far-rig"),
                "the near subscriber stays: {present:?}"
            );
            break pulled.elapsed();
        }
        assert!(
            pulled.elapsed() < bound,
            "a pulled cable was not noticed within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // It was keepalive, not anything the far side said: its socket was never closed.
    assert!(
        gone_after >= Duration::from_secs(KEEPALIVE_SECS),
        "gone before keepalive could have fired: {gone_after:?}"
    );
    eprintln!("a pulled cable left presence {gone_after:?} after the link went down");
    drop(far);
    bus.stop();
}
