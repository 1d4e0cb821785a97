//! Case tables for `arqonbus policy test`: pulses, and the verdict a policy must give each.
//!
//! A table is a TOML file (the examples' tables are in `policy/cases/`):
//!
//! ```toml
//! [policy]                      # how the policy is loaded, as in a [[policies]] entry
//! name = "energy_cap"           # default: the module's file name
//! params = { max_energy_joules = "50" }
//! bindings = [{ reality_glob = "*", topic_pattern = "nvm.job.submit" }]   # default: *:>
//!
//! [defaults]                    # pulse fields every case starts from
//! reality = "lab-1"
//! topic = "nvm.job.submit"
//! type_url = "type.googleapis.com/arqon.nvm.v1.NvmJob"
//!
//! [[case]]
//! name = "51 J is over the cap"
//! payload = { job_id = "j-51", energy_joules = 51.0 }   # JSON of the message type_url names
//! expect = "deny"               # allow | deny | fault | unbound (the bindings skip it)
//! code = 1                      # deny only; optional
//! reason_contains = "51 J"      # deny and fault; optional
//! ```
//!
//! A payload is `payload` (the protobuf JSON mapping of the message `type_url` names, any
//! message in `proto/arqon`; non-finite doubles as the strings "NaN", "Infinity", "-Infinity"),
//! `payload_hex`, `payload_base64` or `payload_text`. Pulse fields: `reality`, `topic`,
//! `type_url`, `producer`, `tenant`, `subject` (the tenant and subject the session would have),
//! `spectral = { coherence, criticality, eigenvalues }`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use arqonbus_proto::v1::{ArqonMessage, SpectralMetadata};
use base64::Engine;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde::Deserialize;

use super::probe::Outcome;
use super::{check_name, Binding, Decision, Limits, PolicySpec};
use crate::config::{BindingConfig, PolicyConfig};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    policy: PolicySection,
    #[serde(default)]
    defaults: PulseFields,
    #[serde(default, rename = "case")]
    cases: Vec<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySection {
    name: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    bindings: Vec<BindingConfig>,
    #[serde(default)]
    fuel_per_call: u64,
    #[serde(default)]
    max_memory_pages: u64,
    #[serde(default)]
    deadline_ms: u64,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PulseFields {
    reality: Option<String>,
    topic: Option<String>,
    type_url: Option<String>,
    producer: Option<String>,
    tenant: Option<String>,
    subject: Option<String>,
    payload: Option<toml::Value>,
    payload_hex: Option<String>,
    payload_base64: Option<String>,
    payload_text: Option<String>,
    spectral: Option<SpectralFields>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpectralFields {
    #[serde(default)]
    coherence: f64,
    #[serde(default)]
    criticality: f64,
    #[serde(default)]
    eigenvalues: Vec<f64>,
}

impl PulseFields {
    fn has_payload(&self) -> bool {
        self.payload.is_some()
            || self.payload_hex.is_some()
            || self.payload_base64.is_some()
            || self.payload_text.is_some()
    }

    /// These fields over `defaults`, field by field; the payload (in whichever form) as a whole.
    fn over(self, defaults: &PulseFields) -> PulseFields {
        let d = defaults.clone();
        let payload_from = if self.has_payload() { &self } else { &d };
        PulseFields {
            payload: payload_from.payload.clone(),
            payload_hex: payload_from.payload_hex.clone(),
            payload_base64: payload_from.payload_base64.clone(),
            payload_text: payload_from.payload_text.clone(),
            reality: self.reality.or(d.reality),
            topic: self.topic.or(d.topic),
            type_url: self.type_url.or(d.type_url),
            producer: self.producer.or(d.producer),
            tenant: self.tenant.or(d.tenant),
            subject: self.subject.or(d.subject),
            spectral: self.spectral.or(d.spectral),
        }
    }

    fn into_message(self) -> Result<ArqonMessage, String> {
        let forms = [
            self.payload.is_some(),
            self.payload_hex.is_some(),
            self.payload_base64.is_some(),
            self.payload_text.is_some(),
        ];
        if forms.iter().filter(|&&f| f).count() > 1 {
            return Err("give one of payload, payload_hex, payload_base64 and payload_text".into());
        }
        let type_url = self.type_url.unwrap_or_default();
        let body = if let Some(json) = &self.payload {
            if type_url.is_empty() {
                return Err("`payload` is JSON of a message type: give its type_url".into());
            }
            encode_json(&type_url, json)?
        } else if let Some(hex) = &self.payload_hex {
            decode_hex(hex)?
        } else if let Some(b64) = &self.payload_base64 {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("payload_base64 is not base64: {e}"))?
        } else {
            self.payload_text.unwrap_or_default().into_bytes()
        };
        let topic = self
            .topic
            .ok_or("no topic (in the case or in [defaults])")?;
        Ok(ArqonMessage {
            reality_id: self.reality.unwrap_or_else(|| "default".into()),
            topic,
            producer_id: self.producer.unwrap_or_default(),
            tenant: self.tenant.unwrap_or_default(),
            subject: self.subject.unwrap_or_default(),
            spectral: self.spectral.map(|s| SpectralMetadata {
                coherence: s.coherence,
                criticality: s.criticality,
                eigenvalues: s.eigenvalues,
            }),
            payload: (!type_url.is_empty() || !body.is_empty()).then_some(prost_types::Any {
                type_url,
                value: body,
            }),
            ..Default::default()
        })
    }
}

/// The verdict a case expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Allow,
    /// With the reason code, when the case names one.
    Deny(Option<u32>),
    Fault,
    /// The policy's bindings do not cover the pulse: the shield would not ask it.
    Unbound,
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub message: ArqonMessage,
    pub expected: Expected,
    /// Text the deny's or fault's reason must contain.
    pub reason_contains: Option<String>,
}

/// A table read and checked: how to load the policy, and its cases.
#[derive(Debug)]
pub struct CaseTable {
    pub spec: PolicySpec,
    pub cases: Vec<Case>,
}

impl CaseTable {
    /// Reads `path`; `module` names the policy when the table does not. Limits resolve against
    /// `config` as a load would, so a table cannot ask for more than the bus allows.
    pub fn read(path: &Path, module: &Path, config: &PolicyConfig) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text, module, config).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str, module: &Path, config: &PolicyConfig) -> Result<Self, String> {
        let file: CaseFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let p = file.policy;
        let name = match p.name {
            Some(name) => name,
            None => module
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        check_name(&name).map_err(|e| format!("[policy] name: {e}"))?;
        let bindings = if p.bindings.is_empty() {
            vec![Binding::parse("*", ">")?]
        } else {
            p.bindings
                .iter()
                .map(|b| Binding::parse(&b.reality_glob, &b.topic_pattern))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("[policy] bindings: {e}"))?
        };
        let limits = Limits::resolve(config, p.fuel_per_call, p.max_memory_pages, p.deadline_ms)
            .map_err(|e| format!("[policy]: {e}"))?;
        let spec = PolicySpec {
            name: name.as_str().into(),
            bindings,
            limits,
            params: p.params,
            order: 0,
        };
        if file.cases.is_empty() {
            return Err("no [[case]] in the table".into());
        }
        let cases = file
            .cases
            .into_iter()
            .enumerate()
            .map(|(i, table)| {
                let label = table
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map_or_else(|| format!("case {}", i + 1), |n| format!("case `{n}`"));
                read_case(table, &file.defaults, i).map_err(|e| format!("{label}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { spec, cases })
    }
}

fn read_case(mut table: toml::Table, defaults: &PulseFields, i: usize) -> Result<Case, String> {
    let mut take_str = |key: &str| -> Result<Option<String>, String> {
        match table.remove(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!(
                "`{key}` must be a string, not {}",
                other.type_str()
            )),
        }
    };
    let name = take_str("name")?.unwrap_or_else(|| format!("case {}", i + 1));
    let expect = take_str("expect")?.ok_or("no `expect` (allow, deny, fault or unbound)")?;
    let reason_contains = take_str("reason_contains")?;
    let code = match table.remove("code") {
        None => None,
        Some(toml::Value::Integer(c)) => Some(
            u32::try_from(c)
                .map_err(|_| format!("`code` {c} is not a reason code (0 to 2^32-1)"))?,
        ),
        Some(other) => {
            return Err(format!(
                "`code` must be an integer, not {}",
                other.type_str()
            ))
        }
    };
    let expected = match (expect.as_str(), code) {
        ("allow", None) => Expected::Allow,
        ("deny", code) => Expected::Deny(code),
        ("fault", None) => Expected::Fault,
        ("unbound", None) => Expected::Unbound,
        ("allow" | "fault" | "unbound", Some(_)) => {
            return Err(format!(
                "`code` goes with expect = \"deny\", not \"{expect}\""
            ))
        }
        (other, _) => {
            return Err(format!(
                "expect = \"{other}\": say allow, deny, fault or unbound"
            ))
        }
    };
    if reason_contains.is_some() && !matches!(expected, Expected::Deny(_) | Expected::Fault) {
        return Err("`reason_contains` goes with expect = \"deny\" or \"fault\"".into());
    }
    let fields: PulseFields = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().to_owned())?;
    let message = fields.over(defaults).into_message()?;
    Ok(Case {
        name,
        message,
        expected,
        reason_contains,
    })
}

/// Why an outcome does not meet a case; `None` when it does.
pub fn mismatch(case: &Case, outcome: &Outcome) -> Option<String> {
    let reason = match &outcome.decision {
        Some(Decision::Denied { reason, .. } | Decision::Fault { reason, .. }) => Some(reason),
        _ => None,
    };
    let verdict_ok = match (&case.expected, &outcome.decision) {
        (Expected::Allow, Some(Decision::Allow)) => true,
        (Expected::Deny(None), Some(Decision::Denied { .. })) => true,
        (Expected::Deny(Some(want)), Some(Decision::Denied { code, .. })) => want == code,
        (Expected::Fault, Some(Decision::Fault { .. })) => true,
        (Expected::Unbound, None) => true,
        _ => false,
    };
    if !verdict_ok {
        return Some(format!("expected {}", describe_expected(&case.expected)));
    }
    match (&case.reason_contains, reason) {
        (Some(want), Some(reason)) if !reason.contains(want.as_str()) => {
            Some(format!("expected a reason containing `{want}`"))
        }
        _ => None,
    }
}

fn describe_expected(expected: &Expected) -> String {
    match expected {
        Expected::Allow => "allow".into(),
        Expected::Deny(None) => "deny".into(),
        Expected::Deny(Some(code)) => format!("deny {code}"),
        Expected::Fault => "fault".into(),
        Expected::Unbound => "unbound (the bindings skip the pulse)".into(),
    }
}

/// An outcome in a few words: `allow`, `deny 1: reason`, `fault: reason`, `unbound`.
pub fn describe_outcome(outcome: &Outcome) -> String {
    match &outcome.decision {
        None => "unbound".into(),
        Some(Decision::Allow) => "allow".into(),
        Some(Decision::Denied { code, reason, .. }) if reason.is_empty() => format!("deny {code}"),
        Some(Decision::Denied { code, reason, .. }) => format!("deny {code}: {reason}"),
        Some(Decision::Fault { reason, .. }) => format!("fault: {reason}"),
    }
}

/// Every message of `proto/arqon`, for payloads given as JSON.
fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(arqonbus_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set compiled into arqonbus-proto decodes")
    })
}

/// A payload given as the protobuf JSON mapping of `type_url`'s message, encoded.
fn encode_json(type_url: &str, value: &toml::Value) -> Result<Vec<u8>, String> {
    check_finite(value)?;
    let name = type_url.rsplit_once('/').map_or(type_url, |(_, n)| n);
    let descriptor = descriptor_pool().get_message_by_name(name).ok_or_else(|| {
        format!(
            "type_url `{type_url}`: no message `{name}` in proto/arqon; give the payload as \
             payload_hex, payload_base64 or payload_text"
        )
    })?;
    let json = serde_json::to_value(value).map_err(|e| format!("payload: {e}"))?;
    let message = DynamicMessage::deserialize(descriptor, json)
        .map_err(|e| format!("payload is not JSON of {name}: {e}"))?;
    Ok(message.encode_to_vec())
}

/// TOML's nan and inf have no JSON form (they would turn into null): ask for the strings.
fn check_finite(value: &toml::Value) -> Result<(), String> {
    match value {
        toml::Value::Float(f) if !f.is_finite() => Err(format!(
            "payload: write {f} as the string \"NaN\", \"Infinity\" or \"-Infinity\" (the \
             protobuf JSON mapping)"
        )),
        toml::Value::Array(items) => items.iter().try_for_each(check_finite),
        toml::Value::Table(table) => table.values().try_for_each(check_finite),
        _ => Ok(()),
    }
}

/// Hex digits, whitespace between bytes allowed.
fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err("payload_hex has an odd number of digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "payload_hex: `{}` is not a hex byte",
                        String::from_utf8_lossy(pair)
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arqonbus_proto::nvm::v1::NvmJob;

    fn parse(text: &str) -> Result<CaseTable, String> {
        CaseTable::parse(text, Path::new("energy_cap.wasm"), &PolicyConfig::default())
    }

    #[test]
    fn json_payloads_encode_as_their_message_and_defaults_fill_in() {
        let table = parse(
            r#"
            [policy]
            params = { max_energy_joules = "50" }
            [defaults]
            reality = "lab-1"
            topic = "nvm.job.submit"
            type_url = "type.googleapis.com/arqon.nvm.v1.NvmJob"
            payload = { job_id = "default" }
            [[case]]
            name = "49"
            payload = { job_id = "j", energyJoules = 49.5, parameters = { a = "b" } }
            expect = "allow"
            [[case]]
            name = "nan"
            payload = { energy_joules = "NaN" }
            expect = "deny"
            code = 1
            [[case]]
            name = "inherits"
            topic = "nvm.job.cancel"
            expect = "unbound"
            "#,
        )
        .unwrap();
        assert_eq!(&*table.spec.name, "energy_cap", "named after the module");
        assert_eq!(table.spec.params["max_energy_joules"], "50");
        let [a, b, c] = &table.cases[..] else {
            panic!("three cases")
        };
        let any = a.message.payload.as_ref().unwrap();
        assert_eq!(any.type_url, "type.googleapis.com/arqon.nvm.v1.NvmJob");
        let job = NvmJob::decode(&any.value[..]).unwrap();
        assert_eq!((job.job_id.as_str(), job.energy_joules), ("j", 49.5));
        assert_eq!(job.parameters["a"], "b");
        assert_eq!(a.message.reality_id, "lab-1");
        let nan = NvmJob::decode(&b.message.payload.as_ref().unwrap().value[..]).unwrap();
        assert!(nan.energy_joules.is_nan());
        assert_eq!(b.expected, Expected::Deny(Some(1)));
        assert_eq!(c.message.topic, "nvm.job.cancel");
        let inherited = NvmJob::decode(&c.message.payload.as_ref().unwrap().value[..]).unwrap();
        assert_eq!(inherited.job_id, "default");
    }

    #[test]
    fn byte_payloads_and_spectral_fields() {
        let table = parse(
            r#"
            [[case]]
            topic = "a.b.c"
            type_url = "x/y"
            payload_hex = "ff 00 0a"
            spectral = { coherence = 0.5, eigenvalues = [1.0, 2.0] }
            expect = "allow"
            [[case]]
            topic = "a.b.c"
            payload_base64 = "aGk="
            expect = "fault"
            reason_contains = "fuel"
            "#,
        )
        .unwrap();
        let any = table.cases[0].message.payload.as_ref().unwrap();
        assert_eq!(&any.value[..], &[0xff, 0x00, 0x0a]);
        let spectral = table.cases[0].message.spectral.as_ref().unwrap();
        assert_eq!((spectral.coherence, spectral.criticality), (0.5, 0.0));
        assert_eq!(spectral.eigenvalues, vec![1.0, 2.0]);
        let any = table.cases[1].message.payload.as_ref().unwrap();
        assert_eq!((&any.value[..], any.type_url.as_str()), (&b"hi"[..], ""));
    }

    #[test]
    fn mistakes_in_a_table_are_named() {
        let cases = [
            ("[[case]]\ntopic = \"a.b.c\"\n", "no `expect`"),
            ("[[case]]\ntopic = \"a.b.c\"\nexpect = \"maybe\"\n", "say allow, deny"),
            ("[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\ncode = 1\n", "`code` goes"),
            ("[[case]]\nname = \"t\"\ntopic = \"a.b.c\"\nexpect = \"allow\"\ntopik = 1\n", "topik"),
            (
                "[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\npayload = { x = 1 }\n",
                "give its type_url",
            ),
            (
                "[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\ntype_url = \"t/arqon.nvm.v1.NvmJob\"\npayload = { energy_joules = nan }\n",
                "\"NaN\"",
            ),
            (
                "[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\ntype_url = \"t/arqon.nvm.v1.NvmJob\"\npayload = { wrong = 1 }\n",
                "not JSON of arqon.nvm.v1.NvmJob",
            ),
            (
                "[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\ntype_url = \"t/no.Such\"\npayload = {}\n",
                "no message `no.Such`",
            ),
            ("[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\npayload_hex = \"f\"\n", "odd"),
            ("[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\npayload_hex = \"zz\"\n", "`zz`"),
            (
                "[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\npayload_hex = \"00\"\npayload_text = \"x\"\n",
                "give one of",
            ),
            ("[policy]\nfuel_per_call = 1000000000000\n[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\n", "policy.max_fuel_per_call"),
            ("[policy]\nname = \"Bad Name\"\n[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\n", "[policy] name"),
            ("[policy]\n", "no [[case]]"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text}\n=> {err}\n(wanted `{want}`)");
        }
        // The failing case is named.
        let err = parse("[[case]]\nname = \"third\"\nexpect = \"allow\"\n").unwrap_err();
        assert!(err.contains("case `third`: no topic"), "{err}");
    }

    #[test]
    fn outcomes_meet_or_miss_expectations() {
        let case = |expected, reason_contains: Option<&str>| Case {
            name: "c".into(),
            message: ArqonMessage::default(),
            expected,
            reason_contains: reason_contains.map(str::to_owned),
        };
        let outcome = |decision| Outcome {
            decision,
            fuel_used: 1,
            elapsed: std::time::Duration::ZERO,
        };
        let denied = outcome(Some(Decision::Denied {
            policy: "p".into(),
            code: 2,
            reason: "too hot".into(),
        }));
        assert_eq!(
            mismatch(&case(Expected::Deny(Some(2)), Some("hot")), &denied),
            None
        );
        assert_eq!(mismatch(&case(Expected::Deny(None), None), &denied), None);
        assert!(mismatch(&case(Expected::Deny(Some(1)), None), &denied)
            .unwrap()
            .contains("expected deny 1"));
        assert!(mismatch(&case(Expected::Deny(None), Some("cold")), &denied)
            .unwrap()
            .contains("`cold`"));
        assert!(mismatch(&case(Expected::Allow, None), &denied).is_some());
        assert!(mismatch(&case(Expected::Fault, None), &denied).is_some());
        let allowed = outcome(Some(Decision::Allow));
        assert_eq!(mismatch(&case(Expected::Allow, None), &allowed), None);
        assert!(mismatch(&case(Expected::Unbound, None), &allowed).is_some());
        assert_eq!(
            mismatch(&case(Expected::Unbound, None), &outcome(None)),
            None
        );
        assert_eq!(describe_outcome(&denied), "deny 2: too hot");
    }
}
