//! `summarize DIR`: puts the runs of one comparison side by side, ArqonBus against NATS, with
//! ratios, and draws the combined plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::plot;
use crate::report::{fmt_num, Better, Metrics, RunResult, Status};

const SUBJECT: &str = "arqonbus";
const PEER: &str = "nats";

/// Reads every result JSON in `dir`, writes `summary.md` and the summary plots there, and
/// returns the Markdown.
pub fn summarize(dir: &Path) -> Result<String> {
    let runs = load(dir)?;
    // label -> target -> runs, labels in the order they were first run.
    let mut order: Vec<String> = Vec::new();
    let mut by_label: BTreeMap<String, BTreeMap<String, Vec<RunResult>>> = BTreeMap::new();
    for r in runs {
        if !by_label.contains_key(&r.label) {
            order.push(r.label.clone());
        }
        by_label
            .entry(r.label.clone())
            .or_default()
            .entry(r.target.clone())
            .or_default()
            .push(r);
    }

    let mut md = String::new();
    let _ = writeln!(md, "# ArqonBus vs NATS\n");
    let _ = writeln!(
        md,
        "Ratios are ArqonBus / NATS, medians over repeats. For rates a ratio above 1 favours \
         ArqonBus; for latencies, memory and losses a ratio below 1 does. The last column says \
         which way it went (≈ within 5 %).\n"
    );
    let _ = writeln!(
        md,
        "| scenario | metric | ArqonBus | NATS | ratio | ArqonBus is |"
    );
    let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: | --- |");
    for label in &order {
        let targets = &by_label[label];
        let empty = Vec::new();
        let ours = targets.get(SUBJECT).unwrap_or(&empty);
        let theirs = targets.get(PEER).unwrap_or(&empty);
        let names = headline_names(ours.iter().chain(theirs.iter()));
        if names.is_empty() {
            let _ = writeln!(
                md,
                "| {label} | – | {} | {} | – | – |",
                status_word(ours),
                status_word(theirs)
            );
            continue;
        }
        for (name, better) in names {
            let a = median_of(ours, name);
            let b = median_of(theirs, name);
            let cell = |v: Option<f64>, runs: &Vec<RunResult>| {
                v.map(fmt_num).unwrap_or_else(|| status_word(runs))
            };
            let (ratio, verdict) = match (a, b) {
                (Some(a), Some(b)) if b != 0.0 => {
                    let r = a / b;
                    (format!("{r:.2}"), verdict(r, better))
                }
                (Some(a), Some(b)) if a == b => ("1.00".to_string(), "≈".to_string()),
                _ => ("–".to_string(), "–".to_string()),
            };
            let _ = writeln!(
                md,
                "| {label} | {name} | {} | {} | {ratio} | {verdict} |",
                cell(a, ours),
                cell(b, theirs)
            );
        }
    }
    md.push('\n');
    interference(
        &mut md,
        by_label.values().flat_map(|t| t.values()).flatten(),
    );

    let _ = writeln!(md, "## Runs\n");
    for label in &order {
        for runs in by_label[label].values() {
            for r in runs {
                md.push_str(&r.to_markdown());
            }
        }
    }

    draw_plots(dir, &order, &by_label)?;
    let path = dir.join("summary.md");
    std::fs::write(&path, &md).with_context(|| format!("writing {}", path.display()))?;
    Ok(md)
}

/// One line on how much other work ran beside the benchmark: a comparison made on a busy
/// machine says so.
fn interference<'a>(md: &mut String, runs: impl Iterator<Item = &'a RunResult>) {
    let with_cpu: Vec<(&RunResult, f64)> = runs
        .filter_map(|r| r.cpu.filter(|c| c.server.is_some()).map(|c| (r, c.other)))
        .collect();
    if with_cpu.is_empty() {
        return;
    }
    let mean = with_cpu.iter().map(|(_, o)| o).sum::<f64>() / with_cpu.len() as f64;
    let (worst, worst_other) = with_cpu
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("not empty");
    let cores = worst.cpu.map(|c| c.machine_cores).unwrap_or(0.0);
    let _ = writeln!(
        md,
        "Other processes on the machine used {mean:.2} of its {cores} cores on average during these \
         runs (the most: {worst_other:.2}, during {} on {}).{}\n",
        worst.label,
        worst.target,
        if mean > 0.25 { " The numbers are skewed by that work; compare again on a quiet machine." } else { "" }
    );
}

fn load(dir: &Path) -> Result<Vec<RunResult>> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        match serde_json::from_str::<RunResult>(&text) {
            Ok(r) => runs.push(r),
            Err(e) => eprintln!("skipping {}: not a run result ({e})", path.display()),
        }
    }
    runs.sort_by_key(|r| r.started_unix_ms);
    Ok(runs)
}

fn headline_names<'a>(runs: impl Iterator<Item = &'a RunResult>) -> Vec<(&'static str, Better)> {
    let mut names: Vec<(&'static str, Better)> = Vec::new();
    for r in runs {
        if let Some(m) = &r.metrics {
            for h in m.headlines() {
                if !names.iter().any(|(n, _)| *n == h.name) {
                    names.push((h.name, h.better));
                }
            }
        }
    }
    names
}

fn median_of(runs: &[RunResult], name: &str) -> Option<f64> {
    let mut values: Vec<f64> = runs
        .iter()
        .filter(|r| r.status == Status::Ok)
        .filter_map(|r| r.metrics.as_ref())
        .flat_map(|m| m.headlines())
        .filter(|h| h.name == name)
        .map(|h| h.value)
        .collect();
    median(&mut values)
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

fn status_word(runs: &[RunResult]) -> String {
    if runs.is_empty() {
        "not run".into()
    } else if runs.iter().any(|r| r.status == Status::Unsupported) {
        "unsupported".into()
    } else if runs.iter().any(|r| r.status == Status::Failed) {
        "failed".into()
    } else {
        "–".into()
    }
}

fn verdict(ratio: f64, better: Better) -> String {
    if (ratio - 1.0).abs() <= 0.05 {
        return "≈".into();
    }
    let ours_higher = ratio > 1.0;
    match (better, ours_higher) {
        (Better::Higher, true) | (Better::Lower, false) => "better".into(),
        _ => "worse".into(),
    }
}

fn draw_plots(
    dir: &Path,
    order: &[String],
    by_label: &BTreeMap<String, BTreeMap<String, Vec<RunResult>>>,
) -> Result<()> {
    let targets = [SUBJECT, PEER];
    // Rates side by side: deliveries/s for throughput and fan-out, acked/s for durable.
    let mut cats = Vec::new();
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for label in order {
        let mut row = Vec::new();
        for t in targets {
            let runs = by_label[label].get(t).map(Vec::as_slice).unwrap_or(&[]);
            let metric = runs.iter().find_map(|r| match &r.metrics {
                Some(Metrics::Flow(_)) => Some("deliveries/s (all subscribers)"),
                Some(Metrics::Durable(_)) => Some("acked publishes/s"),
                _ => None,
            });
            row.push(metric.and_then(|m| median_of(runs, m)));
        }
        if row.iter().any(Option::is_some) {
            cats.push(label.clone());
            for (i, v) in row.into_iter().enumerate() {
                values[i].push(v.unwrap_or(f64::NAN));
            }
        }
    }
    let series: Vec<(String, Vec<f64>)> =
        targets.iter().map(|t| t.to_string()).zip(values).collect();
    plot::bars(
        &dir.join("summary-rates.svg"),
        "Deliveries/s (flows) and acked publishes/s (durable)",
        "per second",
        &cats,
        &series,
    )?;

    for label in order {
        let mut curves = Vec::new();
        for (color, t) in targets.into_iter().enumerate() {
            let Some(runs) = by_label[label].get(t) else {
                continue;
            };
            if let Some(m) = runs
                .iter()
                .filter(|r| r.status == Status::Ok)
                .find_map(|r| match &r.metrics {
                    Some(Metrics::Latency(m)) => Some(m),
                    _ => None,
                })
            {
                curves.push(plot::Curve {
                    name: format!("{t} (from intended send)"),
                    points: m.curve_from_intended.clone(),
                    color,
                    light: false,
                });
                curves.push(plot::Curve {
                    name: format!("{t} (from actual send)"),
                    points: m.curve_from_send.clone(),
                    color,
                    light: true,
                });
            }
        }
        if !curves.is_empty() {
            // One colour per target, as in the bars; the from-actual-send curve is the lighter one.
            plot::latency_curves(
                &dir.join(format!("summary-{label}.svg")),
                &format!("{label}: latency by percentile"),
                &curves,
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_verdicts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(verdict(2.0, Better::Higher), "better");
        assert_eq!(verdict(2.0, Better::Lower), "worse");
        assert_eq!(verdict(0.5, Better::Lower), "better");
        assert_eq!(verdict(1.03, Better::Lower), "≈");
    }
}
