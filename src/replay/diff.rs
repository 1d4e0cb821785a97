//! Where two logs of a reality diverge (a recording and its fork, or two replays): the first
//! differing record, how many differ, what differs field by field, and one numeric field over
//! sequence for both, as data and as an SVG plot.

use arqonbus_proto::v1::ArqonMessage;
use prost::Message;

/// One field that differs between two records, rendered as text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldDiff {
    pub field: &'static str,
    pub a: String,
    pub b: String,
}

/// Two records at the same position that differ (one may be missing: a log is shorter).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Divergence {
    /// Position in the logs (0 = first record).
    pub index: u64,
    pub a_sequence: Option<u64>,
    pub b_sequence: Option<u64>,
    pub fields: Vec<FieldDiff>,
}

impl Divergence {
    /// From the encoded records at `index` (undecodable bytes differ as a whole).
    pub fn between(index: u64, a: Option<&[u8]>, b: Option<&[u8]>) -> Self {
        let a = a.map(|bytes| ArqonMessage::decode(bytes).unwrap_or_default());
        let b = b.map(|bytes| ArqonMessage::decode(bytes).unwrap_or_default());
        Self::of(index, a.as_ref(), b.as_ref())
    }

    fn of(index: u64, a: Option<&ArqonMessage>, b: Option<&ArqonMessage>) -> Self {
        let fields = match (a, b) {
            (Some(a), Some(b)) => field_diffs(a, b),
            _ => Vec::new(),
        };
        Self {
            index,
            a_sequence: a.map(|m| m.sequence),
            b_sequence: b.map(|m| m.sequence),
            fields,
        }
    }
}

fn field_diffs(a: &ArqonMessage, b: &ArqonMessage) -> Vec<FieldDiff> {
    let mut out = Vec::new();
    let mut check = |field: &'static str, x: String, y: String| {
        if x != y {
            out.push(FieldDiff { field, a: x, b: y });
        }
    };
    check("sequence", a.sequence.to_string(), b.sequence.to_string());
    check("topic", a.topic.clone(), b.topic.clone());
    check("id", a.id.clone(), b.id.clone());
    check("producer_id", a.producer_id.clone(), b.producer_id.clone());
    check(
        "timestamp_unix_nanos",
        a.timestamp_unix_nanos.to_string(),
        b.timestamp_unix_nanos.to_string(),
    );
    check("emitted_by", a.emitted_by.clone(), b.emitted_by.clone());
    check(
        "input_sequence",
        a.input_sequence.to_string(),
        b.input_sequence.to_string(),
    );
    let spectral = |m: &ArqonMessage| m.spectral.clone().unwrap_or_default();
    let (sa, sb) = (spectral(a), spectral(b));
    check(
        "spectral.coherence",
        sa.coherence.to_string(),
        sb.coherence.to_string(),
    );
    check(
        "spectral.criticality",
        sa.criticality.to_string(),
        sb.criticality.to_string(),
    );
    check(
        "spectral.eigenvalues",
        format!("{:?}", sa.eigenvalues),
        format!("{:?}", sb.eigenvalues),
    );
    let payload = |m: &ArqonMessage| {
        m.payload
            .as_ref()
            .map(|p| {
                format!(
                    "{} ({} bytes, crc32c {:08x})",
                    p.type_url,
                    p.value.len(),
                    crc32c::crc32c(&p.value)
                )
            })
            .unwrap_or_default()
    };
    check("payload", payload(a), payload(b));
    check(
        "causal",
        format!("{:?}", a.causal),
        format!("{:?}", b.causal),
    );
    check(
        "trace_context",
        format!("{:?}", a.trace_context),
        format!("{:?}", b.trace_context),
    );
    check("reply_to", a.reply_to.clone(), b.reply_to.clone());
    out
}

/// The comparison of two logs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DiffReport {
    pub a_records: u64,
    pub b_records: u64,
    /// Positions whose records differ, counting those only one log has.
    pub differing: u64,
    /// The first few divergences (the first one first).
    pub divergences: Vec<Divergence>,
    /// The plotted field, and its (sequence, value) points in each log, for the records that
    /// have it.
    pub field: String,
    pub a_series: Vec<(u64, f64)>,
    pub b_series: Vec<(u64, f64)>,
}

impl DiffReport {
    pub fn first(&self) -> Option<&Divergence> {
        self.divergences.first()
    }
}

/// Reads a numeric field of a pulse: `spectral.coherence`, `spectral.criticality`,
/// `spectral.eigenvalues[N]`, `timestamp_unix_nanos`. `None` when the pulse has no such value.
pub fn numeric_field(m: &ArqonMessage, field: &str) -> Option<f64> {
    let s = m.spectral.as_ref();
    match field {
        "spectral.coherence" => s.map(|s| s.coherence),
        "spectral.criticality" => s.map(|s| s.criticality),
        "timestamp_unix_nanos" => Some(m.timestamp_unix_nanos as f64),
        f => {
            let i: usize = f
                .strip_prefix("spectral.eigenvalues[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            s?.eigenvalues.get(i).copied()
        }
    }
}

/// True for the fields [`numeric_field`] knows.
pub fn is_numeric_field(field: &str) -> bool {
    matches!(
        field,
        "spectral.coherence" | "spectral.criticality" | "timestamp_unix_nanos"
    ) || field
        .strip_prefix("spectral.eigenvalues[")
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|n| n.parse::<usize>().is_ok())
}

/// A pulse as it compares across realities (a reality and its fork `R~NAME`): without its
/// reality's name, in the reality id, its own causal entry, and an output's id (derived from
/// the reality).
fn unnamed(m: &ArqonMessage) -> ArqonMessage {
    let mut m = m.clone();
    if let Some(own) = m.causal.remove(&m.reality_id) {
        m.causal.insert(String::new(), own);
    }
    m.reality_id.clear();
    if !m.emitted_by.is_empty() {
        m.id.clear();
    }
    m
}

/// Compares two logs position by position; keeps the first `few` divergences in detail. Logs of
/// two realities (a reality and its fork) are compared without their realities' names.
pub fn diff(a: &[ArqonMessage], b: &[ArqonMessage], field: &str, few: usize) -> DiffReport {
    let renamed = match (a.first(), b.first()) {
        (Some(x), Some(y)) => x.reality_id != y.reality_id,
        _ => false,
    };
    let (na, nb): (Vec<ArqonMessage>, Vec<ArqonMessage>);
    let (a, b) = if renamed {
        na = a.iter().map(unnamed).collect();
        nb = b.iter().map(unnamed).collect();
        (&na[..], &nb[..])
    } else {
        (a, b)
    };
    let mut divergences = Vec::new();
    let mut differing = 0;
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (a.get(i), b.get(i));
        if x == y {
            continue;
        }
        differing += 1;
        if divergences.len() < few {
            divergences.push(Divergence::of(i as u64, x, y));
        }
    }
    let series = |log: &[ArqonMessage]| {
        log.iter()
            .filter(|m| m.spectral.is_some() || !field.starts_with("spectral."))
            .filter_map(|m| numeric_field(m, field).map(|v| (m.sequence, v)))
            .collect()
    };
    DiffReport {
        a_records: a.len() as u64,
        b_records: b.len() as u64,
        differing,
        divergences,
        field: field.to_owned(),
        a_series: series(a),
        b_series: series(b),
    }
}

/// The plotted field of both logs over sequence, as a standalone SVG document.
pub fn svg(report: &DiffReport, a_label: &str, b_label: &str) -> String {
    const W: f64 = 800.0;
    const H: f64 = 400.0;
    const M: f64 = 50.0;
    let all = report.a_series.iter().chain(&report.b_series);
    let (mut x0, mut x1, mut y0, mut y1) = (u64::MAX, 0u64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        if y.is_finite() {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        (x0, x1) = (0, 1);
    }
    if y0 > y1 {
        (y0, y1) = (0.0, 1.0);
    }
    let (xs, ys) = ((x1 - x0).max(1) as f64, if y1 > y0 { y1 - y0 } else { 1.0 });
    let points = |series: &[(u64, f64)]| {
        series
            .iter()
            .filter(|(_, y)| y.is_finite())
            .map(|&(x, y)| {
                let px = M + (x - x0) as f64 / xs * (W - 2.0 * M);
                let py = H - M - (y - y0) / ys * (H - 2.0 * M);
                format!("{px:.1},{py:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let first = report
        .first()
        .and_then(|d| d.a_sequence.or(d.b_sequence))
        .map(|s| {
            let px = M + (s.saturating_sub(x0)) as f64 / xs * (W - 2.0 * M);
            format!(
                "<line x1=\"{px:.1}\" y1=\"{M}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4\"/>\
                 <text x=\"{px:.1}\" y=\"{}\" font-size=\"11\" fill=\"#666\">first divergence #{s}</text>",
                H - M,
                M - 6.0
            )
        })
        .unwrap_or_default();
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"{M}\" y=\"20\" font-size=\"14\" font-family=\"sans-serif\">{field} over sequence</text>\
         <line x1=\"{M}\" y1=\"{yb}\" x2=\"{xr}\" y2=\"{yb}\" stroke=\"black\"/>\
         <line x1=\"{M}\" y1=\"{M}\" x2=\"{M}\" y2=\"{yb}\" stroke=\"black\"/>\
         <text x=\"{M}\" y=\"{yl}\" font-size=\"11\">{x0}</text>\
         <text x=\"{xr}\" y=\"{yl}\" font-size=\"11\" text-anchor=\"end\">{x1}</text>\
         <text x=\"4\" y=\"{yb}\" font-size=\"11\">{y0:.3}</text>\
         <text x=\"4\" y=\"{M}\" font-size=\"11\">{y1:.3}</text>\
         {first}\
         <polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{pa}\"/>\
         <polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\" points=\"{pb}\"/>\
         <text x=\"{lx}\" y=\"20\" font-size=\"12\" fill=\"#1f77b4\">{a}</text>\
         <text x=\"{lx}\" y=\"36\" font-size=\"12\" fill=\"#d62728\">{b}</text>\
         </svg>\n",
        field = xml(&report.field),
        yb = H - M,
        xr = W - M,
        yl = H - M + 16.0,
        pa = points(&report.a_series),
        pb = points(&report.b_series),
        lx = W - 260.0,
        a = xml(a_label),
        b = xml(b_label),
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arqonbus_proto::v1::SpectralMetadata;

    fn pulse(seq: u64, coherence: f64) -> ArqonMessage {
        ArqonMessage {
            sequence: seq,
            topic: "sim.kuramoto.state".into(),
            spectral: Some(SpectralMetadata {
                coherence,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn names_the_first_divergence_and_counts_the_rest() {
        let a: Vec<_> = (1..=10).map(|s| pulse(s, 0.1)).collect();
        let mut b = a.clone();
        b[4].spectral.as_mut().unwrap().coherence = 0.9;
        b[7].spectral.as_mut().unwrap().coherence = 0.8;
        b.push(pulse(11, 0.5));
        let r = diff(&a, &b, "spectral.coherence", 1);
        assert_eq!(r.differing, 3);
        let first = r.first().unwrap();
        assert_eq!(first.index, 4);
        assert_eq!(first.a_sequence, Some(5));
        assert_eq!(first.fields.len(), 1);
        assert_eq!(first.fields[0].field, "spectral.coherence");
        assert_eq!(r.a_series.len(), 10);
        assert_eq!(r.b_series.len(), 11);
        let svg = svg(&r, "recorded", "fork");
        assert!(svg.starts_with("<svg") && svg.contains("first divergence #5"));
        assert_eq!(svg.matches("<polyline").count(), 2);
    }

    #[test]
    fn identical_logs_have_no_divergence() {
        let a: Vec<_> = (1..=3).map(|s| pulse(s, 0.3)).collect();
        let r = diff(&a, &a, "spectral.coherence", 5);
        assert_eq!(r.differing, 0);
        assert!(r.first().is_none());
    }

    #[test]
    fn numeric_fields() {
        let mut m = pulse(1, 0.25);
        m.spectral.as_mut().unwrap().eigenvalues = vec![1.0, 2.0];
        assert_eq!(numeric_field(&m, "spectral.coherence"), Some(0.25));
        assert_eq!(numeric_field(&m, "spectral.eigenvalues[1]"), Some(2.0));
        assert_eq!(numeric_field(&m, "spectral.eigenvalues[2]"), None);
        assert!(is_numeric_field("spectral.eigenvalues[3]"));
        assert!(!is_numeric_field("payload"));
    }
}
