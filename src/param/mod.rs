//! Reality parameters (FR-EMERG-02): a controller sets a named value of a reality with
//! `sys.control.param.set`; the owner sequences it into the reality on `sys.param.<name>` with
//! the next version, so it is in the log (a replay sees it at its position), and every
//! connection subscribed to anything in the reality receives it, whatever its patterns. A new
//! subscription gets the current value of each parameter first.

use std::collections::HashMap;
use std::sync::Arc;

use arqonbus_proto::v1::{param, ArqonMessage, Param, ParamEntry};
use prost::{Message, Name};

use crate::routing::validate_topic;

/// The control topic a controller publishes a `Param` on.
pub const SET_TOPIC: &str = "sys.control.param.set";
/// Where the bus sequences each change: `sys.param.<name>`.
pub const PREFIX: &str = "sys.param.";

/// Whether a topic is a parameter's (`sys.param.*`).
#[inline]
pub fn is_param_topic(topic: &str) -> bool {
    topic.starts_with(PREFIX)
}

/// Checks a `Param` a controller sent: its name makes a valid topic, and it has a value.
pub fn check(set: &Param, max_value_bytes: usize) -> Result<String, String> {
    if set.name.is_empty() {
        return Err("Param.name is empty".into());
    }
    let topic = format!("{PREFIX}{}", set.name);
    validate_topic(&topic).map_err(|e| {
        format!(
            "Param.name `{}` must be dot-separated segments of [a-z0-9_-] that make a valid topic \
             `{topic}`: {e}",
            set.name
        )
    })?;
    let bytes = match &set.value {
        None => return Err("Param carries no value (number, text or binary)".into()),
        Some(param::Value::Number(n)) if !n.is_finite() => {
            return Err(format!("Param.number must be finite, not {n}"));
        }
        Some(param::Value::Number(_)) => 0,
        Some(param::Value::Text(t)) => t.len(),
        Some(param::Value::Binary(b)) => b.len(),
    };
    if bytes > max_value_bytes {
        return Err(format!(
            "Param value of {bytes} bytes is over the {max_value_bytes}-byte limit"
        ));
    }
    Ok(topic)
}

/// A parameter value as JSON, for audit records and the CLI (binary values by length and a
/// hex prefix).
pub fn value_json(value: &Option<param::Value>) -> serde_json::Value {
    match value {
        Some(param::Value::Number(n)) => serde_json::json!(n),
        Some(param::Value::Text(t)) => serde_json::json!(t),
        Some(param::Value::Binary(b)) => serde_json::json!({
            "binary_bytes": b.len(),
            "prefix_hex": b.iter().take(16).map(|x| format!("{x:02x}")).collect::<String>(),
        }),
        None => serde_json::Value::Null,
    }
}

/// The owner's side: the version of every parameter of the realities it owns.
pub struct OwnerParams {
    versions: HashMap<Arc<str>, HashMap<String, u64>>,
    max_per_reality: usize,
}

impl OwnerParams {
    pub fn new(max_per_reality: usize) -> Self {
        Self {
            versions: HashMap::new(),
            max_per_reality,
        }
    }

    /// Before the sequencer stamps a `sys.param.*` pulse: gives it the next version of its
    /// name (written into its payload), or says why the reality cannot take it. Nothing is
    /// recorded until [`record`](Self::record).
    /// True when `reality` has parameters.
    pub fn holds(&self, reality: &str) -> bool {
        self.versions.get(reality).is_some_and(|v| !v.is_empty())
    }

    pub fn prepare(&self, message: &mut ArqonMessage) -> Result<(String, u64), String> {
        let payload = message
            .payload
            .as_mut()
            .ok_or("a parameter pulse has no payload")?;
        let mut set = Param::decode(payload.value.as_slice())
            .map_err(|e| format!("a parameter pulse does not hold a Param: {e}"))?;
        let known = self.versions.get(message.reality_id.as_str());
        let current = known.and_then(|v| v.get(&set.name)).copied();
        if current.is_none() && known.map_or(0, HashMap::len) >= self.max_per_reality {
            return Err(format!(
                "reality `{}` already has {} parameters (limits.max_params_per_reality)",
                message.reality_id, self.max_per_reality
            ));
        }
        set.version = current.unwrap_or(0) + 1;
        payload.type_url = Param::type_url();
        payload.value = set.encode_to_vec();
        Ok((set.name, set.version))
    }

    /// The pulse was stamped: its version is the name's current one.
    pub fn record(&mut self, reality: &str, name: String, version: u64) {
        match self.versions.get_mut(reality) {
            Some(v) => {
                v.insert(name, version);
            }
            None => {
                self.versions
                    .insert(Arc::from(reality), HashMap::from([(name, version)]));
            }
        }
    }
}

/// A `ParamEntry` from a sequenced `sys.param.*` pulse (its encoded envelope).
pub fn entry_of(encoded: &[u8]) -> Option<ParamEntry> {
    let message = ArqonMessage::decode(encoded).ok()?;
    let param = Param::decode(message.payload?.value.as_slice()).ok()?;
    Some(ParamEntry {
        param: Some(param),
        sequence: message.sequence,
        timestamp_unix_nanos: message.timestamp_unix_nanos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, value: param::Value) -> Param {
        Param {
            name: name.into(),
            value: Some(value),
            ..Default::default()
        }
    }

    fn pulse(reality: &str, p: &Param) -> ArqonMessage {
        ArqonMessage {
            reality_id: reality.into(),
            topic: format!("{PREFIX}{}", p.name),
            payload: Some(prost_types::Any {
                type_url: Param::type_url(),
                value: p.encode_to_vec(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn names_and_values_are_checked() {
        assert_eq!(
            check(&set("coupling", param::Value::Number(0.5)), 16).unwrap(),
            "sys.param.coupling"
        );
        assert!(check(&set("gain.left", param::Value::Text("x".into())), 16).is_ok());
        for bad in ["", "Coupling", "a..b", "a b", "a.b.c.d.e.f.g"] {
            assert!(
                check(&set(bad, param::Value::Number(1.0)), 16).is_err(),
                "`{bad}`"
            );
        }
        assert!(check(&set("x", param::Value::Number(f64::NAN)), 16).is_err());
        assert!(check(&set("x", param::Value::Binary(vec![0; 17].into())), 16).is_err());
        let empty = Param {
            name: "x".into(),
            ..Default::default()
        };
        assert!(check(&empty, 16).unwrap_err().contains("no value"));
    }

    #[test]
    fn versions_count_per_name_and_reality() {
        let mut owner = OwnerParams::new(2);
        let mut next = |reality: &str, name: &str| {
            let mut m = pulse(reality, &set(name, param::Value::Number(1.0)));
            let got = owner.prepare(&mut m);
            if let Ok((name, version)) = &got {
                let p = Param::decode(m.payload.unwrap().value.as_slice()).unwrap();
                assert_eq!(p.version, *version);
                owner.record(reality, name.clone(), *version);
            }
            got.map(|(_, v)| v)
        };
        assert_eq!(next("r", "a"), Ok(1));
        assert_eq!(next("r", "a"), Ok(2));
        assert_eq!(next("r", "b"), Ok(1));
        assert_eq!(next("s", "a"), Ok(1));
        let full = next("r", "c").unwrap_err();
        assert!(full.contains("max_params_per_reality"), "{full}");
        assert_eq!(next("r", "b"), Ok(2), "known names still change");
    }
}
