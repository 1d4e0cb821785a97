//! `/readyz` answers "not ready" from the moment the admin listener is up until every client
//! listener is bound and every shard accepts, stays so when start-up fails, and turns "not
//! ready" again as soon as shutdown begins. `/healthz` is 200 throughout.

mod common;

use std::net::{SocketAddr, TcpListener};

use arqonbus::admin::AdminServer;
use arqonbus::config::Config;
use arqonbus::health::Status;
use arqonbus::{Server, ServerError};

fn config(listen: SocketAddr) -> Config {
    Config {
        listen,
        admin_listen: None,
        shards: 2,
        ..Config::default()
    }
}

#[test]
fn readyz_flips_only_after_listeners_are_bound() {
    let status = Status::new();
    let admin = AdminServer::start("127.0.0.1:0".parse().unwrap(), status.clone()).unwrap();
    let admin_addr = admin.local_addr();
    let get = |path| common::http_get(admin_addr, path).unwrap();

    assert_eq!(get("/readyz"), (503, "not ready: starting\n".to_owned()));
    assert_eq!(get("/healthz"), (200, "ok: starting\n".to_owned()));
    // Metrics are served (as zeros) before the shards exist.
    let (code, body) = get("/metrics");
    assert_eq!(code, 200);
    let before = common::prometheus::parse(&body).unwrap();
    assert_eq!(before.value("arqonbus_ready"), 0.0);
    assert_eq!(before.value("arqonbus_shards"), 0.0);

    // The client port is held by someone else: start-up fails, and the bus never says ready.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap();
    let failed = Server::start_with(config(port), arqonbus::time::system(), status.clone(), None);
    assert!(
        matches!(failed, Err(ServerError::Listen(_))),
        "{:?}",
        failed.err()
    );
    assert_eq!(get("/readyz").0, 503);

    // Once the port is free, start-up completes; when start_with returns, /readyz says ready and
    // the client port accepts.
    drop(holder);
    let server = Server::start_with(
        config(port),
        arqonbus::time::system(),
        status.clone(),
        Some(admin),
    )
    .unwrap();
    assert_eq!(server.admin_addr(), Some(admin_addr));
    assert_eq!(get("/readyz"), (200, "ready\n".to_owned()));
    std::net::TcpStream::connect(server.local_addr()).expect("client port accepts");
    assert_eq!(get("/healthz"), (200, "ok\n".to_owned()));
    let (_, body) = get("/metrics");
    let after = common::prometheus::parse(&body).unwrap();
    assert_eq!(after.value("arqonbus_ready"), 1.0);
    assert_eq!(after.value("arqonbus_shards"), 2.0);

    // Shutdown: not ready while draining (the admin listener stops last).
    server.shutdown();
    assert_eq!(get("/readyz"), (503, "not ready: stopping\n".to_owned()));
    assert_eq!(get("/healthz").0, 200);
    server.join().unwrap();
    assert!(
        common::http_get(admin_addr, "/readyz").is_err(),
        "admin stopped with the server"
    );
}

#[test]
fn server_start_brings_its_own_admin_listener_and_refuses_a_taken_admin_port() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap();
    let mut c = config("127.0.0.1:0".parse().unwrap());
    c.admin_listen = Some(taken);
    match Server::start(c) {
        Err(e @ ServerError::Admin(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("admin_listen") && msg.contains("off"), "{msg}");
        }
        other => panic!("expected an admin listener error, got {:?}", other.err()),
    }

    let mut c = config("127.0.0.1:0".parse().unwrap());
    c.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = Server::start(c).unwrap();
    let admin = server.admin_addr().unwrap();
    assert_eq!(common::http_get(admin, "/readyz").unwrap().0, 200);
    server.stop().unwrap();
}
