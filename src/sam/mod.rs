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
//! Type URLs are compared as strings (`type.googleapis.com/lab.Audio`). In **strict mode** — the
//! manifest carries a `FileDescriptorSet` holding every type its schemas name — a payload on a
//! covered output topic must also decode as its declared type, with no field the type does not
//! declare, at any depth (unknown fields would mean the producer speaks another type that
//! happens to share wire shapes). Inputs are not decoded: every payload an operator receives on
//! a covered topic was published by someone the bus checked, or is refused at their hop.

use std::collections::HashMap;

use arqonbus_proto::v1::{OperatorManifest, SchemaRef};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, ReflectMessage, Value};

use crate::routing::Pattern;

const MAX_NAME_BYTES: usize = 64;
const MAX_VERSION_BYTES: usize = 64;
const MAX_CAPABILITIES: usize = 32;
const MAX_SCHEMAS: usize = 64;
const MAX_TYPE_URL_BYTES: usize = 256;
/// Most bytes of an uploaded descriptor set (a Hello is bounded by `limits.max_frame_bytes` too).
pub const MAX_DESCRIPTOR_SET_BYTES: usize = 1 << 20;

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
    /// Strict mode: each declared type URL's message, from the uploaded descriptor set.
    pub strict: Option<HashMap<String, MessageDescriptor>>,
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
        let inputs = schemas("input_schemas", &m.input_schemas)?;
        let outputs = schemas("output_schemas", &m.output_schemas)?;
        let strict = if m.descriptor_set.is_empty() {
            None
        } else {
            Some(strict_types(&m.descriptor_set, &inputs, &outputs)?)
        };
        Ok(Self {
            name: m.name.clone(),
            version: m.version.clone(),
            capabilities: m.capabilities.clone(),
            inputs,
            outputs,
            strict,
        })
    }

    /// A publish on `topic` with payload `type_url` and bytes `payload`: fine when no output
    /// schema covers the topic, or one that does declares this type (and, strict, the payload
    /// decodes as it); else the message of a TYPE_MISMATCH.
    pub fn check_output(&self, topic: &str, type_url: &str, payload: &[u8]) -> Result<(), String> {
        match check_against(&self.outputs, topic, type_url) {
            Ok(false) => Ok(()),
            Ok(true) => match &self.strict {
                Some(types) => check_decodes(types, type_url, payload).map_err(|why| {
                    format!(
                        "topic `{topic}`: the payload is not a `{type_url}` (strict manifest of \
                         operator `{}`): {why}",
                        self.name
                    )
                }),
                None => Ok(()),
            },
            Err(expected) => Err(format!(
                "topic `{topic}`: operator `{}` declares output type {expected}, the pulse \
                 carries `{type_url}`",
                self.name
            )),
        }
    }

    /// Whether a pulse on `topic` with payload `type_url` may be delivered to this operator's
    /// subscriptions: no input schema covers the topic, or one that does declares this type.
    #[inline]
    pub fn takes_input(&self, topic: &str, type_url: &str) -> bool {
        check_against(&self.inputs, topic, type_url).is_ok()
    }

    /// Whether payloads are decoded against uploaded descriptors.
    pub fn is_strict(&self) -> bool {
        self.strict.is_some()
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
            "strict": self.is_strict(),
            "input_schemas": side(&self.inputs),
            "output_schemas": side(&self.outputs),
        })
    }
}

/// `Ok(false)` when no schema covers `topic`, `Ok(true)` when one that does has `type_url`;
/// else the expected types, for the message.
fn check_against(list: &[Schema], topic: &str, type_url: &str) -> Result<bool, String> {
    let mut covered = false;
    for s in list {
        if s.pattern.matches(topic) {
            if s.type_url == type_url {
                return Ok(true);
            }
            covered = true;
        }
    }
    if !covered {
        return Ok(false);
    }
    let expected: Vec<String> = list
        .iter()
        .filter(|s| s.pattern.matches(topic))
        .map(|s| format!("`{}`", s.type_url))
        .collect();
    Err(expected.join(" or "))
}

/// The message a type URL names: what follows its last `/`.
fn type_name(type_url: &str) -> &str {
    type_url.rsplit_once('/').map_or(type_url, |(_, name)| name)
}

/// Decodes the uploaded descriptor set and finds every declared type in it.
fn strict_types(
    descriptor_set: &[u8],
    inputs: &[Schema],
    outputs: &[Schema],
) -> Result<HashMap<String, MessageDescriptor>, String> {
    if descriptor_set.len() > MAX_DESCRIPTOR_SET_BYTES {
        return Err(format!(
            "manifest.descriptor_set is {} bytes; at most {MAX_DESCRIPTOR_SET_BYTES}",
            descriptor_set.len()
        ));
    }
    check_syntax(descriptor_set)?;
    let pool = DescriptorPool::decode(descriptor_set).map_err(|e| {
        format!("manifest.descriptor_set is not a valid google.protobuf.FileDescriptorSet: {e}")
    })?;
    let mut types = HashMap::new();
    for (side, list) in [("input_schemas", inputs), ("output_schemas", outputs)] {
        for (i, s) in list.iter().enumerate() {
            let name = type_name(&s.type_url);
            let message = pool.get_message_by_name(name).ok_or_else(|| {
                format!(
                    "manifest.{side}[{i}].type_url `{}`: manifest.descriptor_set has no message \
                     `{name}`",
                    s.type_url
                )
            })?;
            types.insert(s.type_url.clone(), message);
        }
    }
    Ok(types)
}

/// Files one descriptor set may hold.
pub const MAX_DESCRIPTOR_FILES: usize = 256;
/// Steps of prost-reflect's walk over public imports (see [`check_public_imports`]) a descriptor
/// set may cost, summed over its files.
const MAX_PUBLIC_IMPORT_STEPS: usize = 4_096;

/// Refuses, before prost-reflect sees it, a descriptor set that would crash or stall it on a
/// client's Hello. Found by the `hello` fuzz target (fuzz/README.md); both are prost-reflect
/// 0.16.5 bugs.
/// - A file whose `syntax` is neither proto2 nor proto3: prost-reflect panics (it indexes the
///   file it is reporting before adding it to the pool) instead of returning its error.
/// - Public imports that its resolver walks without end: it recurses into a public dependency
///   when it has *already* seen it, so a cycle (a file that imports itself publicly) overflows
///   the stack and ends the process, and a lattice of diamonds costs exponential time.
fn check_syntax(descriptor_set: &[u8]) -> Result<(), String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(descriptor_set).map_err(|e| {
        format!("manifest.descriptor_set is not a valid google.protobuf.FileDescriptorSet: {e}")
    })?;
    if set.file.len() > MAX_DESCRIPTOR_FILES {
        return Err(format!(
            "manifest.descriptor_set holds {} files; at most {MAX_DESCRIPTOR_FILES}",
            set.file.len()
        ));
    }
    check_public_imports(&set)?;
    for (i, file) in set.file.iter().enumerate() {
        match file.syntax.as_deref() {
            None | Some("proto2") | Some("proto3") => {}
            Some(other) => {
                // Echo a bounded part: the set may be a megabyte.
                let shown: String = other.chars().take(32).collect();
                return Err(format!(
                    "manifest.descriptor_set file {i} has syntax `{shown}`; only proto2 and \
                     proto3 are supported"
                ));
            }
        }
    }
    Ok(())
}

/// Walks public imports exactly as prost-reflect's resolver will (for each file, each
/// dependency in the set, then into a public dependency of a reached file only when it was
/// reached before), on an explicit stack and with a budget, and refuses the set when the walk
/// would not end within [`MAX_PUBLIC_IMPORT_STEPS`]. Duplicate file names are refused too: which
/// of them the resolver would follow is not ours to guess.
fn check_public_imports(set: &prost_types::FileDescriptorSet) -> Result<(), String> {
    use std::collections::HashSet;
    let mut names: HashMap<&str, usize> = HashMap::with_capacity(set.file.len());
    for (i, file) in set.file.iter().enumerate() {
        if names.insert(file.name(), i).is_some() {
            return Err(format!(
                "manifest.descriptor_set names file `{}` twice",
                file.name().chars().take(64).collect::<String>()
            ));
        }
    }
    let too_deep = || {
        format!(
            "manifest.descriptor_set's public imports form a cycle or a walk longer than \
             {MAX_PUBLIC_IMPORT_STEPS} steps"
        )
    };
    let mut steps = 0usize;
    for (i, file) in set.file.iter().enumerate() {
        let mut reached: HashSet<usize> = HashSet::from([i]);
        for dependency in &file.dependency {
            let Some(&d) = names.get(dependency.as_str()) else {
                continue;
            };
            reached.insert(d);
            // (file, next dependency to look at): the resolver's recursion, made iterative.
            let mut stack: Vec<(usize, usize)> = vec![(d, 0)];
            while let Some(top) = stack.last_mut() {
                let (at, k) = *top;
                let Some(next) = set.file[at].dependency.get(k) else {
                    stack.pop();
                    continue;
                };
                top.1 += 1;
                let Some(&n) = names.get(next.as_str()) else {
                    continue;
                };
                let public = set.file[at].public_dependency.contains(&(k as i32));
                if public && !reached.insert(n) {
                    steps += 1;
                    if steps > MAX_PUBLIC_IMPORT_STEPS {
                        return Err(too_deep());
                    }
                    stack.push((n, 0));
                }
            }
        }
    }
    Ok(())
}

/// Strict mode's check of one payload: it decodes as the type, and neither it nor any message
/// inside it has a field the type does not declare.
fn check_decodes(
    types: &HashMap<String, MessageDescriptor>,
    type_url: &str,
    payload: &[u8],
) -> Result<(), String> {
    let Some(descriptor) = types.get(type_url) else {
        // Validation put every declared type in the map; a covered topic's type is declared.
        return Err("no descriptor for the type".into());
    };
    let message = DynamicMessage::decode(descriptor.clone(), payload)
        .map_err(|e| format!("it does not decode: {e}"))?;
    match undeclared_field(&message) {
        Some(why) => Err(why),
        None => Ok(()),
    }
}

/// The first field, at any depth, that the message's type does not declare. The depth is
/// bounded by the decoder's recursion limit.
fn undeclared_field(message: &DynamicMessage) -> Option<String> {
    if let Some(field) = message.unknown_fields().next() {
        return Some(format!(
            "field number {} is not a field of `{}`",
            field.number(),
            message.descriptor().full_name()
        ));
    }
    let nested = |value: &Value| value.as_message().and_then(undeclared_field);
    message.fields().find_map(|(_, value)| match value {
        Value::Message(m) => undeclared_field(m),
        Value::List(items) => items.iter().find_map(nested),
        Value::Map(entries) => entries.values().find_map(nested),
        _ => None,
    })
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
            descriptor_set: Default::default(),
        }
    }

    /// `package lab; message Band { double hz = 1; } message Bowl { double energy = 1; Band band
    /// = 2; repeated Band extra = 3; }`, as a serialized FileDescriptorSet.
    fn lab_descriptors() -> Vec<u8> {
        use prost::Message;
        use prost_types::field_descriptor_proto::{Label, Type};
        use prost_types::{
            DescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet,
        };
        let field = |name: &str, number: i32, ty: Type, label: Label, type_name: &str| {
            FieldDescriptorProto {
                name: Some(name.into()),
                number: Some(number),
                r#type: Some(ty as i32),
                label: Some(label as i32),
                type_name: (!type_name.is_empty()).then(|| type_name.into()),
                json_name: Some(name.into()),
                ..Default::default()
            }
        };
        let band = DescriptorProto {
            name: Some("Band".into()),
            field: vec![field("hz", 1, Type::Double, Label::Optional, "")],
            ..Default::default()
        };
        let bowl = DescriptorProto {
            name: Some("Bowl".into()),
            field: vec![
                field("energy", 1, Type::Double, Label::Optional, ""),
                field("band", 2, Type::Message, Label::Optional, ".lab.Band"),
                field("extra", 3, Type::Message, Label::Repeated, ".lab.Band"),
            ],
            ..Default::default()
        };
        FileDescriptorSet {
            file: vec![FileDescriptorProto {
                name: Some("lab.proto".into()),
                package: Some("lab".into()),
                message_type: vec![band, bowl],
                syntax: Some("proto3".into()),
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn strict_manifests_decode_payloads_as_their_declared_type() {
        let bowl = "type.googleapis.com/lab.Bowl";
        let mut m = manifest();
        m.input_schemas.clear();
        m.output_schemas = vec![schema("audio.bowl.out", bowl)];
        m.descriptor_set = lab_descriptors().into();
        let m = Manifest::validate(&m).unwrap();
        assert!(m.is_strict());
        let energy = [&[0x09u8][..], &2.5f64.to_le_bytes()].concat();
        // band { hz: 440 } and extra [{ hz: 1 }]
        let band = [&[0x09u8][..], &440f64.to_le_bytes()].concat();
        let nested = [
            &[0x12u8, band.len() as u8][..],
            &band,
            &[0x1a, band.len() as u8],
            &band,
        ]
        .concat();
        let ok = [&energy[..], &nested].concat();
        m.check_output("audio.bowl.out", bowl, &ok).unwrap();
        m.check_output("audio.bowl.out", bowl, b"").unwrap();
        // Uncovered topics are not decoded.
        m.check_output("other.x", "x/y.Z", b"\xff\xff").unwrap();

        let bad_wire = [0x08u8, 0x01]; // energy as a varint
        let err = m
            .check_output("audio.bowl.out", bowl, &bad_wire)
            .unwrap_err();
        assert!(err.contains("does not decode"), "{err}");
        let unknown_top = [&energy[..], &[0x28, 0x01]].concat(); // field 5
        let err = m
            .check_output("audio.bowl.out", bowl, &unknown_top)
            .unwrap_err();
        assert!(
            err.contains("field number 5 is not a field of `lab.Bowl`"),
            "{err}"
        );
        // extra [{ hz: 1, field 7 }]: the undeclared field is two messages down, in a list.
        let inner = [&band[..], &[0x38, 0x01]].concat();
        let deep = [&[0x1au8, inner.len() as u8][..], &inner].concat();
        let err = m.check_output("audio.bowl.out", bowl, &deep).unwrap_err();
        assert!(
            err.contains("field number 7 is not a field of `lab.Band`"),
            "{err}"
        );
        assert!(
            err.contains("strict manifest of operator `bowlnet`"),
            "{err}"
        );
    }

    #[test]
    fn a_strict_manifest_must_describe_every_declared_type() {
        let mut m = manifest();
        m.descriptor_set = lab_descriptors().into();
        // lab.Audio (an input) is not in the set.
        let err = Manifest::validate(&m).unwrap_err();
        assert!(
            err.starts_with("manifest.input_schemas[0].type_url")
                && err.contains("no message `lab.Audio`"),
            "{err}"
        );
        m.descriptor_set = bytes::Bytes::from_static(b"\x0a\xff");
        let err = Manifest::validate(&m).unwrap_err();
        assert!(
            err.starts_with("manifest.descriptor_set is not a valid"),
            "{err}"
        );
    }

    #[test]
    fn public_import_cycles_are_refused_before_they_overflow_the_stack() {
        use prost::Message;
        use prost_types::{FileDescriptorProto, FileDescriptorSet};
        let file = |name: &str, deps: &[&str], public: &[i32]| FileDescriptorProto {
            name: Some(name.into()),
            dependency: deps.iter().map(|d| d.to_string()).collect(),
            public_dependency: public.to_vec(),
            syntax: Some("proto3".into()),
            ..Default::default()
        };
        let encode = |files: Vec<FileDescriptorProto>| {
            bytes::Bytes::from(FileDescriptorSet { file: files }.encode_to_vec())
        };
        let mut m = manifest();
        // A file that imports itself publicly: prost-reflect 0.16.5 recursed until the stack
        // overflowed and the process died (fuzz/crashes/hello-stack-overflow-public-dependency).
        m.descriptor_set = encode(vec![file("lab.proto", &["lab.proto"], &[0])]);
        let err = Manifest::validate(&m).unwrap_err();
        assert!(err.contains("public imports form a cycle"), "{err}");
        // Two files importing each other publicly.
        m.descriptor_set = encode(vec![
            file("a.proto", &["b.proto"], &[0]),
            file("b.proto", &["a.proto"], &[0]),
        ]);
        let err = Manifest::validate(&m).unwrap_err();
        assert!(err.contains("public imports form a cycle"), "{err}");
        // A lattice of diamonds: each layer's two files publicly import both of the next layer's,
        // and a root imports every file, deepest first. Finite, but once every file is reached
        // the resolver recurses along every path: 2^40 steps from the top layer.
        const LAYERS: usize = 40;
        let mut lattice = Vec::new();
        for layer in 0..LAYERS {
            let next = [
                format!("l{}a.proto", layer + 1),
                format!("l{}b.proto", layer + 1),
            ];
            let deps: Vec<&str> = if layer + 1 < LAYERS {
                next.iter().map(String::as_str).collect()
            } else {
                Vec::new()
            };
            let public: &[i32] = if deps.is_empty() { &[] } else { &[0, 1] };
            for side in ["a", "b"] {
                lattice.push(file(&format!("l{layer}{side}.proto"), &deps, public));
            }
        }
        let all: Vec<String> = lattice.iter().rev().map(|f| f.name().to_owned()).collect();
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        lattice.push(file("root.proto", &all, &[]));
        m.descriptor_set = encode(lattice);
        let err = Manifest::validate(&m).unwrap_err();
        assert!(err.contains("longer than"), "{err}");
        // Duplicate names.
        m.descriptor_set = encode(vec![file("a.proto", &[], &[]), file("a.proto", &[], &[])]);
        let err = Manifest::validate(&m).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        // A chain of ordinary public imports is fine (and reaches the pool's own checks).
        m.descriptor_set = encode(vec![
            file("a.proto", &["b.proto"], &[0]),
            file("b.proto", &["c.proto"], &[0]),
            file("c.proto", &[], &[]),
        ]);
        let err = Manifest::validate(&m).unwrap_err();
        assert!(err.contains("no message `lab.Audio`"), "{err}");
    }

    #[test]
    fn a_descriptor_file_of_unknown_syntax_is_refused_not_a_panic() {
        let mut m = manifest();
        // FileDescriptorSet { file: [FileDescriptorProto { syntax: "x" }] }: prost-reflect
        // 0.16.5 panics on it (index out of bounds in its error's label).
        m.descriptor_set = bytes::Bytes::from_static(b"\x0a\x03\x62\x01x");
        let err = Manifest::validate(&m).unwrap_err();
        assert!(
            err.starts_with("manifest.descriptor_set file 0 has syntax `x`"),
            "{err}"
        );
        // The known syntaxes still reach the pool (and its own errors).
        m.descriptor_set = bytes::Bytes::from_static(b"\x0a\x08\x62\x06proto3");
        let err = Manifest::validate(&m).unwrap_err();
        assert!(err.contains("no message `lab.Audio`"), "{err}");
    }

    #[test]
    fn a_good_manifest_checks_types_both_ways() {
        let m = Manifest::validate(&manifest()).unwrap();
        m.check_output("audio.bowl.out", "type.googleapis.com/lab.Bowl", b"")
            .unwrap();
        m.check_output("audio.bowl.out", "type.googleapis.com/lab.BowlDebug", b"")
            .unwrap();
        m.check_output("other.topic.x", "anything/at.All", b"\xff")
            .unwrap();
        let err = m
            .check_output("audio.bowl.out", "type.googleapis.com/lab.Audio", b"")
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
