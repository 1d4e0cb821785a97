//! `/metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! Names are `arqonbus_*` in base units (seconds, bytes), counters end in `_total`, and no
//! label has more than a handful of values: per-shard counters are summed here, at scrape time,
//! so the data path never shares a cache line with a reader. The standard `process_*` family
//! (memory, CPU, descriptors) is added from /proc/self.

use std::fmt::Write;

use crate::health::{Phase, Status};
use crate::metrics::{HistogramSnapshot, LaneSnapshot, Snapshot};

/// The content type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric of `status` into `out`.
pub fn render(status: &Status, out: &mut String) {
    let s = status.snapshot();
    gauge(
        out,
        "arqonbus_build_info",
        "The running server's version (always 1).",
        &format!("{{version=\"{}\"}}", crate::VERSION),
        1.0,
    );
    let ready = status.phase() == Phase::Ready;
    gauge(
        out,
        "arqonbus_ready",
        "1 from the end of start-up until shutdown begins.",
        "",
        f64::from(u8::from(ready)),
    );
    gauge(
        out,
        "arqonbus_shards",
        "Shards (pinned reactors) running.",
        "",
        status.shard_count() as f64,
    );
    gauge(
        out,
        "arqonbus_connections_open",
        "Client connections open now (accepted less closed).",
        "",
        s.connections_accepted.saturating_sub(s.connections_closed) as f64,
    );
    counters(out, &s);
    latency(out, &s);
    retained(out, &s, status.reality_series());
    operators(out, &s);
    let now_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    tenants(out, &s, now_nanos);
    task_queues(out, &s);
    process(out, status);
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.trim());
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, labels: &str, value: f64) {
    header(out, name, help, "gauge");
    let _ = writeln!(out, "{name}{labels} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "counter");
    let _ = writeln!(out, "{name} {value}");
}

fn counters(out: &mut String, s: &Snapshot) {
    for c in s.counters() {
        let name = format!("arqonbus_{}", c.exposed);
        header(out, &name, c.help, "counter");
        let _ = writeln!(out, "{name} {}", c.value);
    }
}

fn latency(out: &mut String, s: &Snapshot) {
    histogram(
        out,
        "arqonbus_deliver_latency_seconds",
        "Time from a pulse's sequencing by its owner shard to its subscriber's writer putting it \
         in a socket batch.",
        &s.deliver_latency,
    );
    histogram(
        out,
        "arqonbus_storage_flush_seconds",
        "Time one group commit of a retained reality took to sync its records (and any new \
         directory entries) to disk.",
        &s.flush_latency,
    );
}

fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramSnapshot) {
    header(out, name, help, "histogram");
    for (bound_nanos, cumulative) in h.cumulative() {
        let le = bound_nanos as f64 / 1e9;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let count = h.count();
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum {}", h.sum_nanos as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {count}");
}

/// Retained bytes: the totals over every retained reality, and a series per reality for the
/// largest `series` of them (reality names are unbounded; the label's cardinality is not).
fn retained(out: &mut String, s: &Snapshot, series: usize) {
    gauge(
        out,
        "arqonbus_retained_realities",
        "Retained realities open on this server.",
        "",
        s.retained.len() as f64,
    );
    gauge(
        out,
        "arqonbus_retained_bytes",
        "Bytes of records held by all retained realities (segment data, updated about once a \
         second).",
        "",
        s.retained.iter().map(|(_, b)| *b).sum::<u64>() as f64,
    );
    let name = "arqonbus_reality_retained_bytes";
    header(
        out,
        name,
        "Bytes of records held by one retained reality; only the largest \
         storage.metrics_max_realities realities have a series.",
        "gauge",
    );
    for (reality, bytes) in s.retained.iter().take(series) {
        let _ = writeln!(
            out,
            "{name}{{reality=\"{}\"}} {bytes}",
            label_value(reality)
        );
    }
}

/// A series per hosted operator (their number is bounded by `operator.max_operators`).
fn operators(out: &mut String, s: &Snapshot) {
    type Field = fn(&crate::metrics::OperatorCount) -> u64;
    let series: [(&str, &str, &str, Field); 4] = [
        (
            "arqonbus_hosted_operator_calls_total",
            "Inputs this operator was called on.",
            "counter",
            |o| o.calls,
        ),
        (
            "arqonbus_hosted_operator_emitted_total",
            "Pulses this operator emitted that the bus sequenced.",
            "counter",
            |o| o.emitted,
        ),
        (
            "arqonbus_hosted_operator_faults_total",
            "Calls of this operator that faulted (all of that input's outputs dropped).",
            "counter",
            |o| o.faults,
        ),
        (
            "arqonbus_hosted_operator_parked_realities",
            "Realities this operator is parked in after too many faults in a row.",
            "gauge",
            |o| o.parked_realities,
        ),
    ];
    for (name, help, kind, field) in series {
        header(out, name, help, kind);
        for o in &s.operators {
            let _ = writeln!(
                out,
                "{name}{{operator=\"{}\"}} {}",
                label_value(&o.name),
                field(o)
            );
        }
    }
}

/// A series per tenant compartment (`*` for tenants without a `[[tenants]]` entry), summed
/// over shards: the number of tenants is bounded by the configuration.
fn tenants(out: &mut String, s: &Snapshot, now_nanos: u64) {
    type Field = fn(&LaneSnapshot, u64) -> f64;
    let series: [(&str, &str, &str, Field); 9] = [
        (
            "arqonbus_tenant_published_pulses_total",
            "Pulses the tenant's sessions published that passed the shield.",
            "counter",
            |l, _| l.published_pulses as f64,
        ),
        (
            "arqonbus_tenant_published_bytes_total",
            "Frame bytes of the pulses the tenant's sessions published that passed the shield.",
            "counter",
            |l, _| l.published_bytes as f64,
        ),
        (
            "arqonbus_tenant_quota_refusals_total",
            "Requests and sessions of the tenant refused with QUOTA_EXCEEDED (its quotas, or a \
             throttle).",
            "counter",
            |l, _| l.quota_refusals as f64,
        ),
        (
            "arqonbus_tenant_faults_total",
            "Policy faults of the tenant's pulses and protocol errors of its sessions.",
            "counter",
            |l, _| l.faults as f64,
        ),
        (
            "arqonbus_tenant_throttles_total",
            "Times a shard throttled the tenant for too many faults (tenancy.max_faults_per_sec).",
            "counter",
            |l, _| l.throttles as f64,
        ),
        (
            "arqonbus_tenant_throttled_shards",
            "Shards throttling the tenant now.",
            "gauge",
            |l, now| f64::from(u8::from(l.throttled_until_nanos > now)),
        ),
        (
            "arqonbus_tenant_history_reads_total",
            "HistoryGet reads the tenant's sessions started.",
            "counter",
            |l, _| l.history_reads as f64,
        ),
        (
            "arqonbus_tenant_shed_pulses_total",
            "Pulses shed for the tenant's slow subscribers.",
            "counter",
            |l, _| l.sheds as f64,
        ),
        (
            "arqonbus_tenant_queue_runtime_seconds_total",
            "CPU time the tenant's task queues ran, over all shards.",
            "counter",
            |l, _| l.queue_runtime_nanos as f64 / 1e9,
        ),
    ];
    let mut names: Vec<&str> = s.lanes.iter().filter_map(|l| l.tenant.as_deref()).collect();
    names.sort_unstable();
    names.dedup();
    for (name, help, kind, field) in series {
        header(out, name, help, kind);
        for tenant in &names {
            let lanes = s
                .lanes
                .iter()
                .filter(|l| l.tenant.as_deref() == Some(tenant));
            let value: f64 = lanes.map(|l| field(l, now_nanos)).sum();
            let _ = writeln!(out, "{name}{{tenant=\"{}\"}} {value}", label_value(tenant));
        }
    }
}

/// How long ready work waited for its task queue's turn, per queue and shard: sampled by a
/// timer in each queue every few milliseconds.
fn task_queues(out: &mut String, s: &Snapshot) {
    let name = "arqonbus_task_queue_delay_seconds";
    header(
        out,
        name,
        "How late a timer in this task queue ran (sampled every 25 ms): the time ready work \
         waits for the queue's turn on its shard.",
        "histogram",
    );
    for l in &s.lanes {
        let labels = format!("queue=\"{}\",shard=\"{}\"", label_value(&l.queue), l.shard);
        let h = &l.queue_delay;
        for (bound_nanos, cumulative) in h.cumulative() {
            let le = bound_nanos as f64 / 1e9;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count = h.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_nanos as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
    let name = "arqonbus_task_queue_runtime_seconds_total";
    header(
        out,
        name,
        "CPU time this task queue's tasks ran on its shard (updated about once a second).",
        "counter",
    );
    for l in &s.lanes {
        let _ = writeln!(
            out,
            "{name}{{queue=\"{}\",shard=\"{}\"}} {}",
            label_value(&l.queue),
            l.shard,
            l.queue_runtime_nanos as f64 / 1e9
        );
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn label_value(v: &str) -> String {
    let mut escaped = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The `process_*` metrics every Prometheus client library exports, read from /proc/self.
fn process(out: &mut String, status: &Status) {
    gauge(
        out,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds.",
        "",
        status.started_unix_seconds(),
    );
    if let Some(stat) = ProcStat::read() {
        counter(
            out,
            "process_cpu_seconds_total",
            "User and system CPU time spent, in seconds.",
            stat.cpu_seconds,
        );
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size, in bytes.",
            "",
            stat.resident_bytes as f64,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            out,
            "process_open_fds",
            "Open file descriptors (client connections are most of them).",
            "",
            fds.count() as f64,
        );
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        gauge(
            out,
            "process_max_fds",
            "The soft limit on open file descriptors (LimitNOFILE).",
            "",
            lim.rlim_cur as f64,
        );
    }
}

struct ProcStat {
    cpu_seconds: f64,
    resident_bytes: u64,
}

impl ProcStat {
    fn read() -> Option<Self> {
        let text = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name is in parentheses and may hold spaces: count fields after it.
        let rest = &text[text.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name, field 3 (state) is index 0: utime is field 14, stime 15, rss 24.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let rss_pages: u64 = fields.get(21)?.parse().ok()?;
        // SAFETY: sysconf only reads configuration values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if ticks <= 0 || page <= 0 {
            return None;
        }
        Some(Self {
            cpu_seconds: (utime + stime) as f64 / ticks as f64,
            resident_bytes: rss_pages * page as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("lab-1"), "lab-1");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn not_ready_server_renders_zeros() {
        let status = Status::new();
        let mut out = String::new();
        render(&status, &mut out);
        assert!(out.contains("\narqonbus_ready 0\n"), "{out}");
        assert!(
            out.contains("\narqonbus_pulses_sequenced_total 0\n"),
            "{out}"
        );
        assert!(out.contains("arqonbus_deliver_latency_seconds_bucket{le=\"0.000005\"} 0\n"));
        assert!(out.contains("arqonbus_deliver_latency_seconds_bucket{le=\"10\"} 0\n"));
        assert!(out.contains("arqonbus_deliver_latency_seconds_count 0\n"));
        assert!(out.contains("\nprocess_resident_memory_bytes "), "{out}");
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                name.starts_with("arqonbus_") || name.starts_with("process_"),
                "{name}"
            );
        }
    }
}
