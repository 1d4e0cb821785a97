//! A strict reader of the Prometheus text exposition format (0.0.4), for tests: it refuses what
//! a Prometheus server would refuse, and checks the conventions we promise (counters end in
//! `_total`, histograms are cumulative and end at `+Inf` = `_count`).

use std::collections::HashMap;

/// One sample: metric name, labels in the order written, value.
pub type Sample = (String, Vec<(String, String)>, f64);

#[derive(Debug, Default)]
pub struct Exposition {
    /// family name -> type (`counter`, `gauge`, `histogram`, ...)
    pub types: HashMap<String, String>,
    /// family name -> help text
    pub help: HashMap<String, String>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample `name` with no labels.
    pub fn value(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .find(|(n, labels, _)| n == name && labels.is_empty())
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no sample {name}"))
    }

    /// The value of the sample `name` with the label `key="value"`.
    pub fn labelled(&self, name: &str, key: &str, value: &str) -> f64 {
        self.samples
            .iter()
            .find(|(n, labels, _)| n == name && labels.iter().any(|(k, v)| k == key && v == value))
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no sample {name}{{{key}=\"{value}\"}}"))
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text.parse().map_err(|_| format!("bad value `{text}`")),
    }
}

/// `{k="v",...}` -> pairs, with `\\`, `\"` and `\n` escapes.
fn parse_labels(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .ok_or(format!("bad labels `{text}`"))?;
        if !valid_name(key) || key.starts_with("__") {
            return Err(format!("bad label name `{key}`"));
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value in `{text}`")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    _ => return Err(format!("bad escape in `{text}`")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    Ok(labels)
}

/// The family a sample belongs to (histogram samples carry suffixes).
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).map(String::as_str) == Some("histogram") {
                return base;
            }
        }
    }
    name
}

pub fn parse(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut e = Exposition::default();
    let mut seen_samples_of: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |msg: String| format!("line {}: {msg}: `{line}`", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name, rest) = (parts.next(), parts.next(), parts.next());
            match (kind, name) {
                (Some("HELP"), Some(name))
                    if e.help
                        .insert(name.into(), rest.unwrap_or("").into())
                        .is_some() =>
                {
                    return Err(at("second HELP".into()));
                }
                (Some("TYPE"), Some(name)) => {
                    let kind = rest.unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at(format!("unknown type `{kind}`")));
                    }
                    if seen_samples_of.iter().any(|s| s == name) {
                        return Err(at("TYPE after samples".into()));
                    }
                    if e.types.insert(name.into(), kind.into()).is_some() {
                        return Err(at("second TYPE".into()));
                    }
                }
                _ => {}
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').ok_or_else(|| at("no value".into()))?;
        let value = parse_value(value).map_err(at)?;
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .ok_or_else(|| at("no `}`".into()))?;
                (name, parse_labels(labels).map_err(at)?)
            }
            None => (series, Vec::new()),
        };
        if !valid_name(name) {
            return Err(at(format!("bad metric name `{name}`")));
        }
        let fam = family(name, &e.types).to_owned();
        let kind = e
            .types
            .get(&fam)
            .ok_or_else(|| at(format!("no TYPE for `{fam}`")))?;
        if kind == "counter" && !name.ends_with("_total") {
            return Err(at("counter without _total".into()));
        }
        if kind == "counter" && value < 0.0 {
            return Err(at("negative counter".into()));
        }
        if !seen_samples_of.contains(&fam) {
            seen_samples_of.push(fam);
        }
        e.samples.push((name.to_owned(), labels, value));
    }
    check_histograms(&e)?;
    Ok(e)
}

/// A sample's labels, in the order written.
type Labels = Vec<(String, String)>;

fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (name, kind) in &e.types {
        if kind != "histogram" {
            continue;
        }
        // One series per set of labels other than `le`, each checked on its own.
        let bucket = format!("{name}_bucket");
        let mut series: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
        for (_, labels, v) in e.samples.iter().filter(|(n, _, _)| *n == bucket) {
            let le = labels
                .iter()
                .find(|(k, _)| k == "le")
                .map(|(_, v)| parse_value(v))
                .ok_or(format!("{bucket} without le"))??;
            let rest: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
            match series.iter_mut().find(|(l, _)| *l == rest) {
                Some((_, buckets)) => buckets.push((le, *v)),
                None => series.push((rest, vec![(le, *v)])),
            }
        }
        // A family may have no series yet (per-shard series before the shards exist), but not
        // a count without buckets.
        let counted = format!("{name}_count");
        if series.is_empty() && e.samples.iter().any(|(n, _, _)| *n == counted) {
            return Err(format!("histogram {name} has no buckets"));
        }
        for (labels, mut buckets) in series {
            let in_order = buckets.windows(2).all(|w| w[0].0 < w[1].0);
            if !in_order {
                return Err(format!("{name}{labels:?}: le bounds are not increasing"));
            }
            if buckets.windows(2).any(|w| w[0].1 > w[1].1) {
                return Err(format!("{name}{labels:?}: buckets are not cumulative"));
            }
            let (last_le, last) = buckets.pop().unwrap();
            if last_le != f64::INFINITY {
                return Err(format!("{name}{labels:?}: the last bucket is not +Inf"));
            }
            let sample = |suffix: &str| {
                let wanted = format!("{name}_{suffix}");
                e.samples
                    .iter()
                    .find(|(n, l, _)| *n == wanted && *l == labels)
                    .map(|(_, _, v)| *v)
                    .ok_or(format!("no {wanted}{labels:?}"))
            };
            let count = sample("count")?;
            if count != last {
                return Err(format!(
                    "{name}{labels:?}: +Inf bucket {last} != _count {count}"
                ));
            }
            sample("sum")?;
        }
    }
    Ok(())
}
