//! A real server's `/metrics` parses as Prometheus text, and its counters, gauges and the
//! publish-to-deliver histogram move when pulses flow. `/healthz` answers while it runs.

mod common;

use std::time::Duration;

use arqonbus_client::Outgoing;
use common::prometheus::{self, Exposition};
use futures::StreamExt;

const PULSES: u64 = 200;

fn scrape(bus: &common::TestBus) -> Exposition {
    let (code, body) = common::http_get(bus.admin_addr(), "/metrics").unwrap();
    assert_eq!(code, 200, "{body}");
    prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

#[test]
fn the_strict_reader_refuses_what_prometheus_would() {
    use prometheus::parse;
    assert!(
        parse("# TYPE a counter\na_total 1\n").is_err(),
        "TYPE names the family"
    );
    assert!(parse("# TYPE a_total counter\na_total 1\n").is_ok());
    assert!(
        parse("# TYPE a_total counter\na_total 1").is_err(),
        "no final newline"
    );
    assert!(parse("# TYPE a gauge\na 1\n").is_ok());
    assert!(parse("a 1\n").is_err(), "no TYPE");
    assert!(parse("# TYPE a gauge\na{x=\"1} 1\n").is_err());
    assert!(parse("# TYPE a gauge\na one\n").is_err());
    let h =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n";
    assert!(parse(h).is_err(), "not cumulative");
    let h =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 2\n";
    assert!(parse(h).is_ok());
    let h =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 3\n";
    assert!(parse(h).is_err(), "+Inf must equal _count");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_pulses_that_flow() {
    let bus = common::TestBus::start(|_| {});
    let before = scrape(&bus);
    assert_eq!(before.value("arqonbus_ready"), 1.0);
    assert_eq!(before.value("arqonbus_shards"), 2.0);
    assert_eq!(before.value("arqonbus_pulses_sequenced_total"), 0.0);
    assert_eq!(before.value("arqonbus_connections_open"), 0.0);
    assert_eq!(
        before.types["arqonbus_deliver_latency_seconds"],
        "histogram"
    );
    assert_eq!(
        before.labelled("arqonbus_build_info", "version", arqonbus::VERSION),
        1.0
    );
    for (name, kind) in &before.types {
        assert!(
            name.starts_with("arqonbus_") || name.starts_with("process_"),
            "{name}"
        );
        assert!(before.help.contains_key(name), "{name} has HELP");
        if kind == "counter" {
            assert!(name.ends_with("_total"), "{name}");
        }
    }
    assert!(before.value("process_resident_memory_bytes") > 0.0);
    assert!(before.value("process_open_fds") > 0.0);

    let subscriber = common::client(bus.addr).await;
    let mut sub = subscriber.subscribe("metrics-lab", "rig.>").await.unwrap();
    let publisher = common::client(bus.addr).await;
    for i in 0..PULSES {
        publisher
            .publish(Outgoing::new("metrics-lab", "rig.a.temp").bytes(i.to_string()))
            .await
            .unwrap();
    }
    for _ in 0..PULSES {
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("pulse in time")
            .expect("subscription open")
            .expect("pulse");
    }
    // A refused publish (a topic with an upper-case segment) counts as a request error.
    let refused = publisher
        .publish_acked(Outgoing::new("metrics-lab", "Rig.a.temp"))
        .await;
    assert!(refused.is_err());

    let after = scrape(&bus);
    let delta = |name: &str| after.value(name) - before.value(name);
    assert_eq!(delta("arqonbus_pulses_sequenced_total"), PULSES as f64);
    assert_eq!(delta("arqonbus_pulses_delivered_total"), PULSES as f64);
    assert_eq!(after.value("arqonbus_connections_open"), 2.0);
    assert_eq!(delta("arqonbus_connections_accepted_total"), 2.0);
    assert_eq!(delta("arqonbus_request_errors_total"), 1.0);
    assert!(delta("arqonbus_frames_received_total") >= PULSES as f64 + 4.0);
    assert!(delta("arqonbus_received_bytes_total") > 0.0);
    assert!(delta("arqonbus_sent_bytes_total") > 0.0);
    // Every delivered pulse was timed; on loopback each took well under ten seconds.
    let latency = "arqonbus_deliver_latency_seconds";
    assert_eq!(after.value(&format!("{latency}_count")), PULSES as f64);
    assert_eq!(
        after.labelled(&format!("{latency}_bucket"), "le", "10"),
        PULSES as f64
    );
    let sum = after.value(&format!("{latency}_sum"));
    assert!(sum > 0.0 && sum < PULSES as f64 * 10.0, "{sum}");
    // Sessions without a tenant entry publish in the shared compartment `*`; the refused
    // publish never passed the shield.
    assert_eq!(
        after.labelled("arqonbus_tenant_published_pulses_total", "tenant", "*"),
        PULSES as f64
    );
    // Every task queue's delay is sampled (every 25 ms) while the bus runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for queue in ["handshake", "tenant:*"] {
        let delays = "arqonbus_task_queue_delay_seconds_count";
        while scrape(&bus).labelled(delays, "queue", queue) == 0.0 {
            assert!(
                std::time::Instant::now() < deadline,
                "queue {queue} unsampled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The embedding API agrees with the endpoint.
    assert_eq!(bus.metrics().pulses_sequenced, PULSES);

    let (code, body) = common::http_get(bus.admin_addr(), "/healthz").unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    let (code, _) = common::http_get(bus.admin_addr(), "/nothing-here").unwrap();
    assert_eq!(code, 404);

    drop(sub); // it holds the subscriber's connection too
    subscriber.close().await.unwrap();
    publisher.close().await.unwrap();
    // Closed connections leave the open gauge.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let open = scrape(&bus).value("arqonbus_connections_open");
        if open == 0.0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{open} still open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bus.stop();
}

/// Prometheus scrapes over keep-alive connections. With Nagle on, the response's second piece
/// waited for the scraper's delayed ACK: 40 ms per scrape. It must take well under that.
#[test]
fn keep_alive_scrapes_are_not_held_by_delayed_acks() {
    use std::io::{BufRead, BufReader, Read, Write};
    let bus = common::TestBus::start(|_| {});
    let stream = std::net::TcpStream::connect(bus.admin_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut took = Vec::new();
    for _ in 0..9 {
        let start = std::time::Instant::now();
        write!(writer, "GET /metrics HTTP/1.1\r\nHost: bus\r\n\r\n").unwrap();
        let mut length = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = Some(v.trim().parse::<usize>().unwrap());
            }
        }
        let mut body = vec![0; length.expect("a Content-Length")];
        reader.read_exact(&mut body).unwrap();
        took.push(start.elapsed());
    }
    took.sort();
    assert!(
        took[4] < Duration::from_millis(20),
        "median scrape {:?}",
        took[4]
    );
    bus.stop();
}

/// Each retained reality's bytes are on `/metrics` (the largest `storage.metrics_max_realities`
/// of them with a series of their own), with totals over all of them; ephemeral realities are
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_bytes_per_reality_are_exposed() {
    use arqonbus::config::SyncMode;
    let dir = tempfile::tempdir().unwrap();
    let bus = common::TestBus::start(|c| {
        common::retain(c, dir.path(), "kept-*", SyncMode::Os);
        c.storage.metrics_max_realities = 2;
    });
    let publisher = common::client(bus.addr).await;
    // Three retained realities of different sizes, and one ephemeral.
    for (reality, pulses) in [("kept-small", 10), ("kept-mid", 50), ("kept-big", 100)] {
        for _ in 0..pulses {
            publisher
                .publish_acked(Outgoing::new(reality, "rig.a.temp").bytes(vec![7u8; 1000]))
                .await
                .unwrap();
        }
    }
    publisher
        .publish_acked(Outgoing::new("passing", "rig.a.temp").bytes(vec![7u8; 1000]))
        .await
        .unwrap();

    // Shards report about once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(&bus);
        if m.value("arqonbus_retained_realities") == 3.0
            && m.value("arqonbus_retained_bytes") >= 160_000.0
        {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let series = "arqonbus_reality_retained_bytes";
    assert_eq!(m.types[series], "gauge");
    let big = m.labelled(series, "reality", "kept-big");
    let mid = m.labelled(series, "reality", "kept-mid");
    // Each record is the 1,000-byte payload plus its envelope and record header.
    assert!((100_000.0..130_000.0).contains(&big), "{big}");
    assert!((50_000.0..65_000.0).contains(&mid), "{mid}");
    let per_reality: Vec<&str> = m
        .samples
        .iter()
        .filter(|(n, _, _)| n == series)
        .flat_map(|(_, labels, _)| labels.iter().map(|(_, v)| v.as_str()))
        .collect();
    assert_eq!(per_reality, ["kept-big", "kept-mid"], "largest two only");
    let total = m.value("arqonbus_retained_bytes");
    assert!(
        total > big + mid,
        "the total covers kept-small too: {total}"
    );
    publisher.close().await.unwrap();
    bus.stop();
}
