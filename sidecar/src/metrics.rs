//! Counters and gauges for `/metrics` (Prometheus text format 0.0.4).
//!
//! Labelled series live in a map behind a mutex: the sidecar's hot path is a network round trip
//! to the bus, and the label sets are bounded (routes come from the config, statuses and codes
//! are small fixed sets, HTTP routes are the handlers' templates, never raw paths).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

type Labels = Vec<(&'static str, String)>;

/// Every series the sidecar exports.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, Labels), u64>>,
    pub sessions_open: AtomicI64,
    pub streams_open: AtomicI64,
    pub sessions_opened: AtomicU64,
    pub sessions_expired: AtomicU64,
    pub sessions_evicted: AtomicU64,
}

struct Help {
    name: &'static str,
    help: &'static str,
}

const COUNTERS: &[Help] = &[
    Help {
        name: "arqonbus_sidecar_http_requests_total",
        help: "HTTP requests answered, by route template and status",
    },
    Help {
        name: "arqonbus_sidecar_grpc_requests_total",
        help: "gRPC calls answered, by method and status code",
    },
    Help {
        name: "arqonbus_sidecar_published_total",
        help: "Pulses published for northbound callers, by surface (http, grpc)",
    },
    Help {
        name: "arqonbus_sidecar_delivered_total",
        help: "Pulses streamed to northbound callers, by surface (sse, grpc, history)",
    },
    Help {
        name: "arqonbus_sidecar_route_calls_total",
        help: "Southbound calls, by route and outcome (ok, error, timeout)",
    },
    Help {
        name: "arqonbus_sidecar_route_retries_total",
        help: "Southbound retries (idempotent routes only), by route",
    },
    Help {
        name: "arqonbus_sidecar_route_results_total",
        help: "Result pulses published by routes, by route and kind (reply, error, unsent)",
    },
];

impl Metrics {
    /// Adds one to the counter `name` with `labels`.
    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        *self
            .counters
            .lock()
            .expect("metrics lock")
            .entry(key)
            .or_insert(0) += 1;
    }

    /// The value of one counter series (tests and logs).
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let key: (&'static str, Labels) = (
            name,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        );
        self.counters
            .lock()
            .expect("metrics lock")
            .get(&key)
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counters = self.counters.lock().expect("metrics lock").clone();
        for h in COUNTERS {
            let _ = writeln!(out, "# HELP {} {}", h.name, h.help);
            let _ = writeln!(out, "# TYPE {} counter", h.name);
            for ((name, labels), value) in counters.iter().filter(|((n, _), _)| *n == h.name) {
                let _ = writeln!(out, "{name}{} {value}", render_labels(labels));
            }
        }
        let gauges = [
            (
                "arqonbus_sidecar_sessions_open",
                "Bus sessions open (one per distinct caller token)",
                self.sessions_open.load(Ordering::Relaxed),
            ),
            (
                "arqonbus_sidecar_streams_open",
                "Northbound streams open (SSE, history, gRPC streams)",
                self.streams_open.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let totals = [
            (
                "arqonbus_sidecar_sessions_opened_total",
                "Bus sessions opened",
                &self.sessions_opened,
            ),
            (
                "arqonbus_sidecar_sessions_expired_total",
                "Bus sessions closed after sessions.idle_timeout_ms unused",
                &self.sessions_expired,
            ),
            (
                "arqonbus_sidecar_sessions_evicted_total",
                "Idle bus sessions closed to make room (sessions.max_sessions)",
                &self.sessions_evicted,
            ),
        ];
        for (name, help, value) in totals {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

fn render_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_escaped_labels() {
        let m = Metrics::default();
        m.inc(
            "arqonbus_sidecar_route_calls_total",
            &[("route", "a\"b"), ("outcome", "ok")],
        );
        m.inc(
            "arqonbus_sidecar_route_calls_total",
            &[("route", "a\"b"), ("outcome", "ok")],
        );
        let text = m.render();
        assert!(
            text.contains("arqonbus_sidecar_route_calls_total{route=\"a\\\"b\",outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("arqonbus_sidecar_sessions_open 0"));
    }
}
