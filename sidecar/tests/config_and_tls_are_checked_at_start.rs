//! The sidecar refuses to start on a bad configuration, naming the key; off loopback it needs
//! TLS, and its TLS is 1.3 only; `/healthz` and `/metrics` answer on the HTTP listener.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{sidecar_bin, Sidecar};

/// Runs the sidecar with `toml` and expects it to exit at once, non-zero; returns its stderr.
fn refused(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(sidecar_bin())
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with:\n{toml}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_non_loopback_listener_without_tls_is_refused_naming_the_key() {
    let err = refused("[http]\nlisten = \"0.0.0.0:0\"\n");
    assert!(err.contains("http.listen"), "{err}");
    assert!(err.contains("tls.cert_path"), "{err}");
    let err = refused("[grpc]\nlisten = \"0.0.0.0:0\"\n");
    assert!(err.contains("grpc.listen"), "{err}");
}

#[test]
fn bounds_and_unknown_keys_are_refused_naming_the_key() {
    for (toml, key) in [
        ("[sessions]\nmax_sessions = 0\n", "sessions.max_sessions"),
        ("[sessions]\nidle_timeout_ms = 5\n", "sessions.idle_timeout_ms"),
        ("[http]\nmax_body_bytes = 0\n", "http.max_body_bytes"),
        ("[bus]\ntimeout_ms = 0\n", "bus.timeout_ms"),
        ("[bus]\naddress = \"tls://bus:4722\"\n", "bus.ca_path"),
        (
            "[[routes]]\nname = \"r\"\nreality = \"lab\"\ntopics = \"a.b\"\nurl = \"ftp://x/\"\n",
            "routes[0].url",
        ),
        (
            "[[routes]]\nname = \"r\"\nreality = \"lab\"\ntopics = \"a.b\"\nurl = \"http://x/\"\nmax_concurrency = 0\n",
            "routes[0].max_concurrency",
        ),
        ("[http]\nlisten_on = \"x\"\n", "listen_on"),
    ] {
        let err = refused(toml);
        assert!(err.contains(key), "{key} not named in:\n{err}");
    }
}

#[test]
fn the_embedded_defaults_check_clean() {
    let out = Command::new(sidecar_bin()).arg("--check").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = Command::new(sidecar_bin())
        .arg("--print-default-config")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("max_sessions = 1024"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listeners_speak_tls_1_3_only_and_serve_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    // 0.0.0.0: allowed only because TLS is configured.
    let sidecar = Sidecar::start(&format!(
        "[http]\nlisten = \"0.0.0.0:0\"\n\n[grpc]\nlisten = \"off\"\n\n\
         [tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n",
        cert_path.display(),
        key_path.display()
    ));
    assert!(sidecar.tls);
    let port = sidecar.http.unwrap().port();
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let url = |path: &str| format!("https://localhost:{port}{path}");

    let tls13 = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(root.clone())
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let health = tls13.get(url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = tls13.get(url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("# TYPE arqonbus_sidecar_sessions_open gauge"),
        "{text}"
    );
    assert!(
        text.contains("arqonbus_sidecar_http_requests_total{route=\"/healthz\",status=\"200\"} 1"),
        "{text}"
    );

    // A client that speaks at most TLS 1.2 gets no connection.
    let tls12 = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(root)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(tls12.get(url("/healthz")).send().await.is_err());
    // Nor does plain HTTP.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(plain
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err());
}
