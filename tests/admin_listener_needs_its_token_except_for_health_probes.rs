//! With `admin_token` set, the admin listener answers `/metrics`, `/operators`, `/circuits` and
//! `/` only to requests that carry it as a bearer token (401 otherwise); `/healthz` and
//! `/readyz` stay open for probes. The CLI sends the token. An admin listener off loopback
//! without a token is refused at start, naming `admin_token`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use arqonbus::config::Config;
use arqonbus::Server;
use common::policy::arqonbus;
use common::TestBus;

const TOKEN: &str = "admin-token-0123456789abcdef";

/// GET `path` with an optional bearer token: the status code and body.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

#[test]
fn admin_listener_needs_its_token_except_for_health_probes() {
    let bus = TestBus::start(|c| c.admin_token = Some(TOKEN.into()));
    let admin = bus.admin_addr();
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(get(admin, probe, None).0, 200, "{probe} is open to probes");
    }
    for path in ["/metrics", "/operators", "/circuits", "/"] {
        assert_eq!(get(admin, path, None).0, 401, "{path} without a token");
        assert_eq!(
            get(admin, path, Some("admin-token-0123456789abcdeX")).0,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            get(admin, path, Some(TOKEN)).0,
            200,
            "{path} with the token"
        );
    }
    let (_, metrics) = get(admin, "/metrics", Some(TOKEN));
    assert!(
        metrics.contains("arqonbus_connections_accepted_total"),
        "{metrics}"
    );

    let addr = admin.to_string();
    let refused = arqonbus(&["operator", "list", "--admin", &addr]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--admin-token"), "{err}");
    let listed = arqonbus(&["operator", "list", "--admin", &addr, "--admin-token", TOKEN]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
}

#[test]
fn an_admin_listener_off_loopback_needs_a_token() {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: Some("0.0.0.0:0".parse().unwrap()),
        shards: 1,
        ..Config::default()
    };
    let err = Server::start(config).err().expect("refused");
    assert!(err.to_string().contains("admin_token"), "{err}");
}
