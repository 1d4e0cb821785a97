//! The SAM handshake (FR-OPS-03): a session whose `Hello` carries a manifest is an operator. The
//! manifest says what it is (name, version, capabilities) and what it takes and gives (input and
//! output schemas: topic pattern → payload type URL). It is validated once, at Hello, and kept
//! for the session's life; from then on the bus holds the operator to it:
//!
//! - a pulse it publishes on a topic one of its output schemas covers must carry one of the type
//!   URLs declared for that topic (else TYPE_MISMATCH);
//! - its subscriptions get, on topics its input schemas cover, only pulses of the declared types
//!   (others are counted as filtered and never delivered).
//!
//! Type URLs are compared as strings (`type.googleapis.com/lab.Audio`); checking that payloads
//! decode as the type (descriptor sets) is not built.

use arqonbus_proto::v1::{OperatorManifest, SchemaRef};

use crate::routing::Pattern;

const MAX_NAME_BYTES: usize = 64;
const MAX_VERSION_BYTES: usize = 64;
const MAX_CAPABILITIES: usize = 32;
const MAX_SCHEMAS: usize = 64;
const MAX_TYPE_URL_BYTES: usize = 256;

/// One schema: a topic pattern and the payload type it carries.
#[derive(Debug, Clone)]
pub struct Schema {
    pub pattern: Pattern,
    pub pattern_text: String,
    pub type_url: String,
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub capabilities: Vec<String>,
    pub inputs: Vec<Schema>,
    pub outputs: Vec<Schema>,
}

/// A name, version or capability: 1 to `max` bytes of `[A-Za-z0-9_.-]`.
fn check_word(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!(
            "{field} must be 1 to {max} bytes, not {}",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!("{field} `{value}` has {c:?}; use [A-Za-z0-9_.-]"));
    }
    Ok(())
}

/// A type URL: `host/path.TypeName` as `google.protobuf.Any` uses, printable ASCII, bounded.
pub fn check_type_url(field: &str, url: &str) -> Result<(), String> {
    if url.is_empty() || url.len() > MAX_TYPE_URL_BYTES {
        return Err(format!(
            "{field} must be 1 to {MAX_TYPE_URL_BYTES} bytes, not {}",
            url.len()
        ));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{field} `{url}` must be printable ASCII with no spaces"
        ));
    }
    match url.rsplit_once('/') {
        Some((_, name)) if !name.is_empty() => Ok(()),
        _ => Err(format!(
            "{field} `{url}` is not a type URL (`type.googleapis.com/package.Type`)"
        )),
    }
}

fn schemas(side: &str, list: &[SchemaRef]) -> Result<Vec<Schema>, String> {
    if list.len() > MAX_SCHEMAS {
        return Err(format!(
            "manifest.{side} has {} entries; at most {MAX_SCHEMAS}",
            list.len()
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            let pattern = Pattern::parse(&s.topic_pattern).map_err(|e| {
                format!(
                    "manifest.{side}[{i}].topic_pattern `{}` is invalid: {e}",
                    s.topic_pattern
                )
            })?;
            check_type_url(&format!("manifest.{side}[{i}].type_url"), &s.type_url)?;
            Ok(Schema {
                pattern,
                pattern_text: s.topic_pattern.clone(),
                type_url: s.type_url.clone(),
            })
        })
        .collect()
}

impl Manifest {
    /// Checks a manifest from a Hello; the error names the field.
    pub fn validate(m: &OperatorManifest) -> Result<Self, String> {
        check_word("manifest.name", &m.name, MAX_NAME_BYTES)?;
        if !m.version.is_empty() {
            check_word("manifest.version", &m.version, MAX_VERSION_BYTES)?;
        }
        if m.capabilities.len() > MAX_CAPABILITIES {
            return Err(format!(
                "manifest.capabilities has {} entries; at most {MAX_CAPABILITIES}",
                m.capabilities.len()
            ));
        }
        for (i, c) in m.capabilities.iter().enumerate() {
            check_word(&format!("manifest.capabilities[{i}]"), c, MAX_NAME_BYTES)?;
        }
        Ok(Self {
            name: m.name.clone(),
            version: m.version.clone(),
            capabilities: m.capabilities.clone(),
            inputs: schemas("input_schemas", &m.input_schemas)?,
            outputs: schemas("output_schemas", &m.output_schemas)?,
        })
    }

    /// A publish on `topic` with payload `type_url`: fine when no output schema covers the topic
    /// or one that does declares this type; else the message of a TYPE_MISMATCH.
    pub fn check_output(&self, topic: &str, type_url: &str) -> Result<(), String> {
        check_against(&self.outputs, topic, type_url).map_err(|expected| {
            format!(
                "topic `{topic}`: operator `{}` declares output type {expected}, the pulse \
                 carries `{type_url}`",
                self.name
            )
        })
    }

    /// Whether a pulse on `topic` with payload `type_url` may be delivered to this operator's
    /// subscriptions: no input schema covers the topic, or one that does declares this type.
    #[inline]
    pub fn takes_input(&self, topic: &str, type_url: &str) -> bool {
        check_against(&self.inputs, topic, type_url).is_ok()
    }

    pub fn has_inputs(&self) -> bool {
        !self.inputs.is_empty()
    }

    /// The schemas as JSON (presence, logs).
    pub fn describe(&self) -> serde_json::Value {
        let side = |list: &[Schema]| -> serde_json::Value {
            list.iter()
                .map(|s| serde_json::json!({"topic_pattern": s.pattern_text, "type_url": s.type_url}))
                .collect()
        };
        serde_json::json!({
            "name": self.name,
            "version": self.version,
            "capabilities": self.capabilities,
            "input_schemas": side(&self.inputs),
            "output_schemas": side(&self.outputs),
        })
    }
}

/// `Ok` when no schema covers `topic` or one that does has `type_url`; else the expected
/// types, for the message.
fn check_against(list: &[Schema], topic: &str, type_url: &str) -> Result<(), String> {
    let mut covered = false;
    for s in list {
        if s.pattern.matches(topic) {
            if s.type_url == type_url {
                return Ok(());
            }
            covered = true;
        }
    }
    if !covered {
        return Ok(());
    }
    let expected: Vec<String> = list
        .iter()
        .filter(|s| s.pattern.matches(topic))
        .map(|s| format!("`{}`", s.type_url))
        .collect();
    Err(expected.join(" or "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(pattern: &str, type_url: &str) -> SchemaRef {
        SchemaRef {
            topic_pattern: pattern.into(),
            type_url: type_url.into(),
        }
    }

    fn manifest() -> OperatorManifest {
        OperatorManifest {
            name: "bowlnet".into(),
            version: "1.2.0".into(),
            capabilities: vec!["audio.features".into()],
            input_schemas: vec![schema("audio.raw.>", "type.googleapis.com/lab.Audio")],
            output_schemas: vec![
                schema("audio.bowl.out", "type.googleapis.com/lab.Bowl"),
                schema("audio.bowl.*", "type.googleapis.com/lab.BowlDebug"),
            ],
        }
    }

    #[test]
    fn a_good_manifest_checks_types_both_ways() {
        let m = Manifest::validate(&manifest()).unwrap();
        m.check_output("audio.bowl.out", "type.googleapis.com/lab.Bowl")
            .unwrap();
        m.check_output("audio.bowl.out", "type.googleapis.com/lab.BowlDebug")
            .unwrap();
        m.check_output("other.topic.x", "anything/at.All").unwrap();
        let err = m
            .check_output("audio.bowl.out", "type.googleapis.com/lab.Audio")
            .unwrap_err();
        assert!(err.contains("`type.googleapis.com/lab.Bowl` or"), "{err}");
        assert!(
            err.contains("carries `type.googleapis.com/lab.Audio`"),
            "{err}"
        );
        assert!(m.takes_input("audio.raw.mic1", "type.googleapis.com/lab.Audio"));
        assert!(!m.takes_input("audio.raw.mic1", "type.googleapis.com/lab.Text"));
        assert!(m.takes_input("lab.other.x", "type.googleapis.com/lab.Text"));
    }

    #[test]
    fn bad_manifests_name_the_field() {
        type Spoil = fn(&mut OperatorManifest);
        let cases: Vec<(Spoil, &str)> = vec![
            (|m| m.name.clear(), "manifest.name"),
            (|m| m.name = "bad name".into(), "manifest.name"),
            (|m| m.version = "x".repeat(65), "manifest.version"),
            (
                |m| m.capabilities = vec!["ok".into(), "no/slash".into()],
                "manifest.capabilities[1]",
            ),
            (
                |m| m.capabilities = vec!["c".into(); 33],
                "manifest.capabilities",
            ),
            (
                |m| m.input_schemas[0].topic_pattern = "audio..raw".into(),
                "manifest.input_schemas[0].topic_pattern",
            ),
            (
                |m| m.output_schemas[1].type_url = "NoSlash".into(),
                "manifest.output_schemas[1].type_url",
            ),
            (
                |m| m.output_schemas[0].type_url = "type.googleapis.com/a b".into(),
                "manifest.output_schemas[0].type_url",
            ),
            (
                |m| m.output_schemas = vec![schema("a.b", "t/x"); 65],
                "manifest.output_schemas",
            ),
        ];
        for (spoil, field) in cases {
            let mut m = manifest();
            spoil(&mut m);
            let err = Manifest::validate(&m).unwrap_err();
            assert!(err.starts_with(field), "{field}: {err}");
        }
    }
}
