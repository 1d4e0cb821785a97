//! Typed circuits (US-02): a named graph of operator stages in one reality —
//! `Audio -> BowlNet -> Features -> QML -> Class` — whose every edge (a topic one stage gives and
//! another takes) is type-checked when the circuit is defined and enforced on every pulse after.
//!
//! - **At definition** ([`check`]): each edge's producer output type must equal its consumer's
//!   input type (exact type URLs; no wider compatibility rule), and one topic has one type. An
//!   operator that is online at that moment must declare its stage's types in its manifest.
//!   `arqonbus circuit check FILE` runs the same check offline.
//! - **At Hello** ([`Circuits::check_manifest`]): a session whose manifest names a stage's
//!   operator but declares other types for the stage's topics is refused, with the reason.
//! - **Per pulse** ([`Circuits::check_publish`], on the publisher's shard, for sessions and
//!   hosted operators alike): a pulse on an edge topic of the circuit's reality with another
//!   type is refused with TYPE_MISMATCH; pulses and refusals are counted per edge, and each
//!   hop's latency (sequenced to written to the consuming stage's connection,
//!   [`Circuits::hop_delivered`]) goes into the edge's histogram.
//! - **Hosted operators** serve a stage only with a manifest that declares its types
//!   ([`Circuits::check_hosted`] at load, [`Circuits::check_online`] at apply).
//!
//! The circuits live in a registry shared by every shard (installed by the audited
//! `sys.control.circuit.apply`); each shard keeps its own snapshot, refreshed when the registry's
//! version moves, so a publish pays one atomic load when nothing changed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arqonbus_proto::circuit::v1::{Circuit, Stage};
use prost::Message;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::metrics::{HistogramSnapshot, SharedLatencyHistogram};
use crate::policy::{Catalog, Catalogued, EpochDemand, Registry};
use crate::routing::{validate_reality, validate_topic};
use crate::sam::{check_type_url, Manifest};

/// Control topics.
pub const APPLY_TOPIC: &str = "sys.control.circuit.apply";
pub const REMOVE_TOPIC: &str = "sys.control.circuit.remove";
/// Most circuits installed at once, and stages per circuit.
pub const MAX_CIRCUITS: u64 = 256;
pub const MAX_STAGES: usize = 64;

/// One edge: `from` gives `type_url` on `topic`, `to` takes it.
#[derive(Debug)]
pub struct Edge {
    pub topic: String,
    pub type_url: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    /// The operators (manifest names) of the `to` stages.
    pub to_operators: Vec<String>,
    pub pulses: AtomicU64,
    pub refusals: AtomicU64,
    /// The hop's latency: from the owner sequencing a pulse on this edge to the bus writing it
    /// to a consuming stage's connection.
    pub latency: SharedLatencyHistogram,
}

/// A checked circuit.
#[derive(Debug)]
pub struct CheckedCircuit {
    pub circuit: Circuit,
    pub edges: Vec<Edge>,
    sha256: [u8; 32],
}

impl Catalogued for CheckedCircuit {
    const KIND: &'static str = "circuit";
    fn name(&self) -> &str {
        &self.circuit.name
    }
    fn sha256_hex(&self) -> String {
        crate::audit::hex(&self.sha256)
    }
}

fn check_stage(i: usize, s: &Stage) -> Result<(), String> {
    let at = format!("stages[{i}] (`{}`)", s.name);
    if s.name.is_empty() || s.name.len() > 64 {
        return Err(format!("stages[{i}].name must be 1 to 64 bytes"));
    }
    if s.operator.is_empty() || s.operator.len() > 64 {
        return Err(format!("{at}.operator must be 1 to 64 bytes"));
    }
    for (topic, type_url, side) in [
        (&s.input_topic, &s.input_type, "input"),
        (&s.output_topic, &s.output_type, "output"),
    ] {
        if topic.is_empty() && type_url.is_empty() {
            continue;
        }
        validate_topic(topic).map_err(|e| format!("{at}.{side}_topic `{topic}`: {e}"))?;
        check_type_url(&format!("{at}.{side}_type"), type_url)?;
    }
    if s.input_topic.is_empty() && s.output_topic.is_empty() {
        return Err(format!("{at} has neither an input nor an output"));
    }
    Ok(())
}

/// Checks a circuit's shape and every edge's types; the error names the edge, both stages and
/// both types.
pub fn check(circuit: Circuit) -> Result<CheckedCircuit, String> {
    if circuit.name.is_empty() || circuit.name.len() > 64 {
        return Err("circuit name must be 1 to 64 bytes".into());
    }
    validate_reality(&circuit.reality_id)
        .map_err(|e| format!("circuit reality `{}`: {e}", circuit.reality_id))?;
    if circuit.stages.is_empty() || circuit.stages.len() > MAX_STAGES {
        return Err(format!("a circuit has 1 to {MAX_STAGES} stages"));
    }
    let mut names = std::collections::HashSet::new();
    for (i, s) in circuit.stages.iter().enumerate() {
        check_stage(i, s)?;
        if !names.insert(s.name.as_str()) {
            return Err(format!("stage name `{}` is used twice", s.name));
        }
    }
    let mut edges: Vec<Edge> = Vec::new();
    // Producers first: one type per topic.
    for s in circuit.stages.iter().filter(|s| !s.output_topic.is_empty()) {
        match edges.iter_mut().find(|e| e.topic == s.output_topic) {
            Some(e) if e.type_url != s.output_type => {
                return Err(format!(
                    "topic `{}`: stage `{}` gives `{}` but stage `{}` gives `{}`",
                    s.output_topic, e.from[0], e.type_url, s.name, s.output_type
                ));
            }
            Some(e) => e.from.push(s.name.clone()),
            None => edges.push(Edge {
                topic: s.output_topic.clone(),
                type_url: s.output_type.clone(),
                from: vec![s.name.clone()],
                to: Vec::new(),
                to_operators: Vec::new(),
                pulses: AtomicU64::new(0),
                refusals: AtomicU64::new(0),
                latency: SharedLatencyHistogram::default(),
            }),
        }
    }
    for s in circuit.stages.iter().filter(|s| !s.input_topic.is_empty()) {
        let Some(e) = edges.iter_mut().find(|e| e.topic == s.input_topic) else {
            // An input from outside the circuit: nothing to check it against.
            continue;
        };
        if e.type_url != s.input_type {
            return Err(format!(
                "edge `{}` ({} -> {}): `{}` gives `{}`, `{}` takes `{}`",
                e.topic, e.from[0], s.name, e.from[0], e.type_url, s.name, s.input_type
            ));
        }
        e.to.push(s.name.clone());
        if !e.to_operators.contains(&s.operator) {
            e.to_operators.push(s.operator.clone());
        }
    }
    edges.retain(|e| !e.to.is_empty());
    let sha256 = Sha256::digest(circuit.encode_to_vec()).into();
    Ok(CheckedCircuit {
        circuit,
        edges,
        sha256,
    })
}

impl CheckedCircuit {
    /// Why a hosted operator cannot serve the stages of its name, if it cannot: with a manifest,
    /// as [`breaks`](Self::breaks); without one it declares no types, so it may not serve any.
    pub fn breaks_hosted(&self, name: &str, manifest: Option<&Manifest>) -> Option<String> {
        if let Some(m) = manifest {
            return self.breaks(m);
        }
        let stage = self.circuit.stages.iter().find(|s| s.operator == name)?;
        Some(format!(
            "circuit `{}` stage `{}` would be served by hosted operator `{name}`, which declares \
             no manifest; load it with one that declares the stage's types",
            self.circuit.name, stage.name
        ))
    }

    /// Why `manifest` cannot serve the stages of its name, if it cannot: an output schema
    /// covering a stage's output topic must declare its type, and so for inputs.
    pub fn breaks(&self, manifest: &Manifest) -> Option<String> {
        for s in self
            .circuit
            .stages
            .iter()
            .filter(|s| s.operator == manifest.name)
        {
            let sides = [
                (&s.output_topic, &s.output_type, &manifest.outputs, "output"),
                (&s.input_topic, &s.input_type, &manifest.inputs, "input"),
            ];
            for (topic, type_url, schemas, side) in sides {
                if topic.is_empty() {
                    continue;
                }
                let declared: Vec<&str> = schemas
                    .iter()
                    .filter(|sc| sc.pattern.matches(topic))
                    .map(|sc| sc.type_url.as_str())
                    .collect();
                if !declared.contains(&type_url.as_str()) {
                    return Some(format!(
                        "circuit `{}` stage `{}` needs operator `{}` to {} `{type_url}` on \
                         `{topic}`; its manifest declares {}",
                        self.circuit.name,
                        s.name,
                        manifest.name,
                        if side == "output" { "give" } else { "take" },
                        if declared.is_empty() {
                            "nothing there".to_string()
                        } else {
                            declared.join(", ")
                        }
                    ));
                }
            }
        }
        None
    }

    /// The circuit, its stages' presence and its edges' counters, as JSON.
    pub fn describe(&self, online: &dyn Fn(&str) -> u64) -> serde_json::Value {
        let stages: Vec<serde_json::Value> = self
            .circuit
            .stages
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "operator": s.operator,
                    "input": {"topic": s.input_topic, "type_url": s.input_type},
                    "output": {"topic": s.output_topic, "type_url": s.output_type},
                    "online": online(&s.operator),
                })
            })
            .collect();
        let live = self.circuit.stages.iter().all(|s| online(&s.operator) > 0);
        let edges: Vec<serde_json::Value> = self
            .edges
            .iter()
            .map(|e| {
                serde_json::json!({
                    "topic": e.topic,
                    "type_url": e.type_url,
                    "from": e.from,
                    "to": e.to,
                    "pulses": e.pulses.load(Ordering::Relaxed),
                    "refusals": e.refusals.load(Ordering::Relaxed),
                    "latency": latency_json(&e.latency.snapshot()),
                })
            })
            .collect();
        serde_json::json!({
            "name": self.circuit.name,
            "reality_id": self.circuit.reality_id,
            "live": live,
            "stages": stages,
            "edges": edges,
            "sha256": self.sha256_hex(),
        })
    }
}

/// A hop's latency for `circuit status`: deliveries measured, mean, and the p50 / p99 / max
/// bucket bounds (an upper estimate within one bucket of `/metrics`' latency buckets).
fn latency_json(h: &HistogramSnapshot) -> serde_json::Value {
    let count = h.count();
    let micros = |q: f64| {
        h.quantile_upper_nanos(q).map(|n| {
            if n == u64::MAX {
                f64::INFINITY
            } else {
                n as f64 / 1e3
            }
        })
    };
    serde_json::json!({
        "deliveries": count,
        "mean_us": (count > 0).then(|| h.sum_nanos as f64 / count as f64 / 1e3),
        "p50_us_at_most": micros(0.5),
        "p99_us_at_most": micros(0.99),
    })
}

thread_local! {
    /// This shard's snapshot of the circuits and the registry version it was taken at.
    static SNAPSHOT: RefCell<(u64, Catalog<CheckedCircuit>)> = RefCell::new((0, Arc::new(Vec::new())));
}

/// The process's circuits and who is online to serve them.
pub struct Circuits {
    pub registry: Arc<Registry<CheckedCircuit>>,
    /// Sessions online per manifest name, with the latest manifest of that name.
    roster: Mutex<HashMap<String, (u64, Arc<Manifest>)>>,
}

impl std::fmt::Debug for Circuits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Circuits")
            .field("installed", &self.registry.len())
            .finish()
    }
}

impl Default for Circuits {
    fn default() -> Self {
        Self {
            // Circuits are not Wasm: their demand for the epoch ticker is never counted.
            registry: Arc::new(Registry::new(
                MAX_CIRCUITS,
                Arc::new(EpochDemand::default()),
            )),
            roster: Mutex::new(HashMap::new()),
        }
    }
}

impl Circuits {
    fn snapshot(&self) -> Catalog<CheckedCircuit> {
        let version = self.registry.version();
        SNAPSHOT.with(|cell| {
            let mut cached = cell.borrow_mut();
            if cached.0 != version {
                *cached = self.registry.snapshot();
            }
            cached.1.clone()
        })
    }

    /// Whether a pulse on `topic` of `reality` with `type_url` may pass: refused (with the
    /// message of a TYPE_MISMATCH) when it is on an edge of a circuit of that reality and has
    /// another type. Counted per edge.
    pub fn check_publish(&self, reality: &str, topic: &str, type_url: &str) -> Result<(), String> {
        if self.registry.version() == 0 {
            return Ok(());
        }
        for c in self.snapshot().iter() {
            if c.circuit.reality_id != reality {
                continue;
            }
            for e in c.edges.iter().filter(|e| e.topic == topic) {
                if e.type_url != type_url {
                    e.refusals.fetch_add(1, Ordering::Relaxed);
                    return Err(format!(
                        "topic `{topic}` is edge {} -> {} of circuit `{}`, which carries `{}`; \
                         the pulse carries `{type_url}`",
                        e.from.join(","),
                        e.to.join(","),
                        c.circuit.name,
                        e.type_url
                    ));
                }
                e.pulses.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Whether any circuit is installed: one atomic load.
    #[inline]
    pub fn any(&self) -> bool {
        self.registry.version() != 0 && !self.snapshot().is_empty()
    }

    /// A pulse on `topic` of `reality` was written to a connection of operator `operator`,
    /// `latency_nanos` after it was sequenced: the latency of every edge it is a hop of.
    pub fn hop_delivered(&self, reality: &str, topic: &str, operator: &str, latency_nanos: u64) {
        for c in self.snapshot().iter() {
            if c.circuit.reality_id != reality {
                continue;
            }
            for e in c.edges.iter().filter(|e| e.topic == topic) {
                if e.to_operators.iter().any(|o| o == operator) {
                    e.latency.observe_nanos(latency_nanos);
                }
            }
        }
    }

    /// Before a hosted operator is loaded: the first stage it could not serve.
    pub fn check_hosted(&self, name: &str, manifest: Option<&Manifest>) -> Result<(), String> {
        match self
            .snapshot()
            .iter()
            .find_map(|c| c.breaks_hosted(name, manifest))
        {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// At Hello: the first circuit stage this manifest would break, as the refusal's reason.
    pub fn check_manifest(&self, manifest: &Manifest) -> Result<(), String> {
        match self.snapshot().iter().find_map(|c| c.breaks(manifest)) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Before installing: why an operator online now — a session's, or a hosted one of
    /// `hosted` (name, manifest) — could not serve its stage, if one could not.
    pub fn check_online(
        &self,
        circuit: &CheckedCircuit,
        hosted: &[(String, Option<Arc<Manifest>>)],
    ) -> Result<(), String> {
        if let Some(why) = hosted
            .iter()
            .find_map(|(name, m)| circuit.breaks_hosted(name, m.as_deref()))
        {
            return Err(why);
        }
        let roster = self.roster.lock().expect("roster lock");
        match roster.values().find_map(|(_, m)| circuit.breaks(m)) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// A session with this manifest said Hello.
    pub fn joined(&self, manifest: &Arc<Manifest>) {
        let mut roster = self.roster.lock().expect("roster lock");
        let entry = roster
            .entry(manifest.name.clone())
            .or_insert_with(|| (0, manifest.clone()));
        entry.0 += 1;
        entry.1 = manifest.clone();
    }

    /// A session with a manifest of this name closed.
    pub fn left(&self, name: &str) {
        let mut roster = self.roster.lock().expect("roster lock");
        if let Some(entry) = roster.get_mut(name) {
            entry.0 -= 1;
            if entry.0 == 0 {
                roster.remove(name);
            }
        }
    }

    /// Sessions online with this manifest name.
    pub fn online(&self, name: &str) -> u64 {
        self.roster
            .lock()
            .expect("roster lock")
            .get(name)
            .map_or(0, |(n, _)| *n)
    }

    /// Every circuit as JSON (the admin listener's `/circuits`).
    pub fn describe(&self, hosted: &dyn Fn(&str) -> bool) -> serde_json::Value {
        let online = |name: &str| self.online(name) + u64::from(hosted(name));
        self.registry
            .snapshot()
            .1
            .iter()
            .map(|c| c.describe(&online))
            .collect()
    }
}

/// A circuit as written in TOML (`arqonbus circuit check|apply FILE`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitFile {
    pub name: String,
    pub reality: String,
    pub stages: Vec<StageFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageFile {
    pub name: String,
    pub operator: String,
    pub input: Option<Port>,
    pub output: Option<Port>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub topic: String,
    #[serde(rename = "type")]
    pub type_url: String,
}

impl CircuitFile {
    pub fn parse(text: &str) -> Result<Circuit, String> {
        let file: CircuitFile = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(Circuit {
            name: file.name,
            reality_id: file.reality,
            stages: file
                .stages
                .into_iter()
                .map(|s| {
                    let (input_topic, input_type) =
                        s.input.map(|p| (p.topic, p.type_url)).unwrap_or_default();
                    let (output_topic, output_type) =
                        s.output.map(|p| (p.topic, p.type_url)).unwrap_or_default();
                    Stage {
                        name: s.name,
                        operator: s.operator,
                        input_topic,
                        input_type,
                        output_topic,
                        output_type,
                    }
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = include_str!("../../examples/circuits/hybrid.toml");

    #[test]
    fn the_example_checks_and_has_four_edges() {
        let c = check(CircuitFile::parse(HYBRID).unwrap()).unwrap();
        let topics: Vec<&str> = c.edges.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics.len(), 4, "{topics:?}");
        assert_eq!(c.edges[0].from, ["audio"]);
        assert_eq!(c.edges[0].to, ["bowlnet"]);
    }

    #[test]
    fn a_type_error_names_the_edge_stages_and_types() {
        let broken = HYBRID.replacen(
            "output = { topic = \"audio.features.vector\", type = \"type.googleapis.com/arqon.demo.Features\" }",
            "output = { topic = \"audio.features.vector\", type = \"type.googleapis.com/arqon.demo.Other\" }",
            1,
        );
        let err = check(CircuitFile::parse(&broken).unwrap()).unwrap_err();
        assert!(err.starts_with("edge `"), "{err}");
        assert!(
            err.contains("arqon.demo.Other") && err.contains("arqon.demo.Features"),
            "{err}"
        );
    }

    #[test]
    fn shapes_are_checked() {
        let mut c = CircuitFile::parse(HYBRID).unwrap();
        c.stages[1].name = c.stages[0].name.clone();
        assert!(check(c).unwrap_err().contains("used twice"));
        let mut c = CircuitFile::parse(HYBRID).unwrap();
        c.stages[0].output_type = "nope".into();
        assert!(check(c).unwrap_err().contains("output_type"));
        let mut c = CircuitFile::parse(HYBRID).unwrap();
        c.reality_id = "bad reality".into();
        assert!(check(c).is_err());
    }
}
