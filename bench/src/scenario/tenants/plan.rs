//! The shape of a `tenants` run: which floods, in which order, and how a phase is judged.

use std::fmt;

/// What tenant A floods the bus with in one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodKind {
    /// Publishes without ack, flat out, to a reality of A's owned by the connection's shard.
    Publish,
    /// `HistoryGet` of a pre-filled retained reality, several requests in flight.
    History,
    /// Acked publishes to a reality whose CASIL policy burns all its fuel on every pulse.
    Policy,
    /// Connect, Hello, Welcome, close, as fast as possible.
    Churn,
}

impl FloodKind {
    pub const ALL: [FloodKind; 4] = [
        FloodKind::Publish,
        FloodKind::History,
        FloodKind::Policy,
        FloodKind::Churn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FloodKind::Publish => "publish",
            FloodKind::History => "history",
            FloodKind::Policy => "policy",
            FloodKind::Churn => "churn",
        }
    }

    /// `publish,history,...` in the order given; each kind at most once.
    pub fn parse_list(text: &str) -> Result<Vec<FloodKind>, String> {
        let mut kinds = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let kind = FloodKind::ALL
                .into_iter()
                .find(|k| k.name() == word)
                .ok_or_else(|| {
                    format!(
                        "unknown flood `{word}`: the floods are publish, history, policy, churn"
                    )
                })?;
            if kinds.contains(&kind) {
                return Err(format!("flood `{word}` is listed twice"));
            }
            kinds.push(kind);
        }
        if kinds.is_empty() {
            return Err("--floods needs at least one of publish, history, policy, churn".into());
        }
        Ok(kinds)
    }
}

impl fmt::Display for FloodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One phase of the run: A idle (`flood` is `None`) or flooding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    pub flood: Option<FloodKind>,
}

/// Quiet, then each flood followed by a quiet phase again, so that drift between the start and
/// the end of the run shows.
pub fn phases(floods: &[FloodKind]) -> Vec<Phase> {
    let quiet = |n: usize| Phase {
        name: if n == 1 {
            "quiet".to_string()
        } else {
            format!("quiet {n}")
        },
        flood: None,
    };
    let mut out = vec![quiet(1)];
    for (i, &kind) in floods.iter().enumerate() {
        out.push(Phase {
            name: kind.name().to_string(),
            flood: Some(kind),
        });
        out.push(quiet(i + 2));
    }
    out
}

/// A phase's p99 over the reference (the first quiet phase's p99 on the same shard); `None`
/// when either phase has no samples, so nothing is judged on an empty histogram.
pub fn p99_ratio(p99_us: f64, samples: u64, quiet_p99_us: f64, quiet_samples: u64) -> Option<f64> {
    (samples > 0 && quiet_samples > 0 && quiet_p99_us > 0.0).then(|| p99_us / quiet_p99_us)
}

/// Whether a ratio is within `limit` (the target, or `--fail-over`): `None` when there is no
/// ratio to judge.
pub fn within(ratio: Option<f64>, limit: f64) -> Option<bool> {
    ratio.map(|r| r <= limit)
}

/// Which history realities each shard's readers read, from the realities and their owners: the
/// ones the shard owns, so a read stays on the shard; a shard that owns none reads all of them.
pub fn history_readers(owners: &[(String, u32)], shards: u32) -> Vec<Vec<String>> {
    (0..shards)
        .map(|s| {
            let own: Vec<String> = owners
                .iter()
                .filter(|(_, o)| *o == s)
                .map(|(n, _)| n.clone())
                .collect();
            if own.is_empty() {
                owners.iter().map(|(n, _)| n.clone()).collect()
            } else {
                own
            }
        })
        .collect()
}

/// How far apart the quiet phases' p99s are: the largest over the smallest (`None` with fewer
/// than two, or a zero).
pub fn quiet_spread(p99s: &[f64]) -> Option<f64> {
    let lo = p99s.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = p99s.iter().copied().fold(0.0, f64::max);
    (p99s.len() >= 2 && lo > 0.0).then(|| hi / lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floods_parse_in_the_order_given() {
        assert_eq!(
            FloodKind::parse_list("churn, publish"),
            Ok(vec![FloodKind::Churn, FloodKind::Publish])
        );
        assert_eq!(
            FloodKind::parse_list("publish,history,policy,churn").unwrap(),
            FloodKind::ALL.to_vec()
        );
        assert!(FloodKind::parse_list("publish,publish").is_err());
        assert!(FloodKind::parse_list("publish,storm")
            .unwrap_err()
            .contains("storm"));
        assert!(FloodKind::parse_list(" , ").is_err());
    }

    #[test]
    fn every_flood_sits_between_quiet_phases() {
        let p = phases(&[FloodKind::Publish, FloodKind::Churn]);
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["quiet", "publish", "quiet 2", "churn", "quiet 3"]);
        let floods: Vec<Option<FloodKind>> = p.iter().map(|p| p.flood).collect();
        assert_eq!(
            floods,
            [
                None,
                Some(FloodKind::Publish),
                None,
                Some(FloodKind::Churn),
                None
            ]
        );
    }

    #[test]
    fn history_readers_stay_on_their_shard_when_they_can() {
        let owners = vec![
            ("h-0".to_string(), 1),
            ("h-1".to_string(), 0),
            ("h-2".to_string(), 1),
        ];
        assert_eq!(
            history_readers(&owners, 2),
            [vec!["h-1".to_string()], vec!["h-0".into(), "h-2".into()]]
        );
        // Shard 2 owns none of them: its readers take them all.
        assert_eq!(history_readers(&owners, 3)[2].len(), 3);
    }

    #[test]
    fn quiet_spread_is_largest_over_smallest() {
        assert_eq!(quiet_spread(&[200.0, 400.0, 300.0]), Some(2.0));
        assert_eq!(
            quiet_spread(&[200.0]),
            None,
            "one quiet phase has no spread"
        );
        assert_eq!(quiet_spread(&[0.0, 300.0]), None);
    }

    #[test]
    fn ratios_need_samples_on_both_sides() {
        assert_eq!(p99_ratio(300.0, 10, 200.0, 10), Some(1.5));
        assert_eq!(p99_ratio(300.0, 0, 200.0, 10), None);
        assert_eq!(p99_ratio(300.0, 10, 200.0, 0), None);
        assert_eq!(p99_ratio(300.0, 10, 0.0, 10), None);
        assert_eq!(
            within(Some(1.5), 1.5),
            Some(true),
            "the target is inclusive"
        );
        assert_eq!(within(Some(1.51), 1.5), Some(false));
        assert_eq!(within(None, 1.5), None);
    }
}
