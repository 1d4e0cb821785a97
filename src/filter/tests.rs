use std::cmp::Ordering;

use arqonbus_proto::v1::{ArqonMessage, SpectralMetadata};
use proptest::prelude::*;
use prost::Message;

use super::*;

const LIMITS: FilterLimits = FilterLimits {
    max_bytes: 1024,
    max_nodes: 128,
    max_depth: 16,
};

/// Room for anything the property tests generate.
const ROOMY: FilterLimits = FilterLimits {
    max_bytes: 1 << 16,
    max_nodes: 4096,
    max_depth: 64,
};

fn pulse(coherence: f64, criticality: f64, eigenvalues: &[f64], producer: &str) -> Vec<u8> {
    ArqonMessage {
        topic: "lab.rig.temp".into(),
        producer_id: producer.into(),
        spectral: Some(SpectralMetadata {
            coherence,
            criticality,
            eigenvalues: eigenvalues.to_vec(),
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn admits(filter: &str, envelope: &[u8]) -> bool {
    Filter::compile(filter, &LIMITS)
        .unwrap_or_else(|e| panic!("{filter}: {e}"))
        .matches_envelope(envelope)
}

fn error(filter: &str, limits: &FilterLimits) -> FilterError {
    match Filter::compile(filter, limits) {
        Ok(f) => panic!("`{filter}` compiled to {f:?}"),
        Err(e) => e,
    }
}

#[test]
fn examples_from_the_protocol_guide() {
    let p = pulse(0.95, 0.05, &[2.0, 1.0, 0.5], "omega-7");
    assert!(admits("coherence >= 0.9 && criticality < 0.1", &p));
    assert!(admits("eigenvalues[0] > 1.5", &p));
    assert!(admits("len(eigenvalues) >= 3", &p));
    assert!(admits("producer == \"omega-7\"", &p));
    assert!(admits("topic == \"lab.rig.temp\"", &p));
    assert!(!admits("coherence >= 0.9 && criticality > 0.1", &p));
    assert!(admits("coherence < 0.5 || !(producer != \"omega-7\")", &p));
    assert!(admits("eigenvalues[0] > eigenvalues[1]", &p));
    assert!(admits("-1e3 < criticality", &p));
}

#[test]
fn precedence_is_not_then_and_then_or() {
    let p = pulse(1.0, 0.0, &[], "");
    // `||` binds looser than `&&`: true || (false && false).
    assert!(admits(
        "coherence == 1 || coherence == 2 && criticality == 3",
        &p
    ));
    // Parentheses change it: (true || false) && false.
    assert!(!admits(
        "(coherence == 1 || coherence == 2) && criticality == 3",
        &p
    ));
    // `!` applies to the comparison after it, not to the whole `&&`.
    assert!(admits("!coherence == 2 && criticality == 0", &p));
}

#[test]
fn missing_eigenvalues_make_every_comparison_false() {
    let p = pulse(0.0, 0.0, &[1.0, 2.0], "");
    for op in ["==", "!=", "<", "<=", ">", ">="] {
        assert!(!admits(&format!("eigenvalues[2] {op} 0"), &p), "{op}");
        assert!(
            !admits(&format!("eigenvalues[5] {op} eigenvalues[0]"), &p),
            "{op}"
        );
    }
    assert!(admits("!(eigenvalues[2] == 0)", &p));
    assert!(admits("eigenvalues[1] == 2", &p));
}

#[test]
fn nan_makes_every_comparison_false() {
    let p = pulse(f64::NAN, 0.0, &[f64::NAN], "");
    for op in ["==", "!=", "<", "<=", ">", ">="] {
        assert!(!admits(&format!("coherence {op} 0.5"), &p), "{op}");
        assert!(!admits(&format!("eigenvalues[0] {op} 0.5"), &p), "{op}");
    }
    assert!(admits("!(coherence == 0.5)", &p));
}

#[test]
fn a_pulse_without_spectral_reads_as_defaults() {
    let bare = ArqonMessage {
        topic: "a.b".into(),
        ..Default::default()
    }
    .encode_to_vec();
    assert!(admits("coherence == 0 && criticality == 0", &bare));
    assert!(admits("len(eigenvalues) == 0", &bare));
    assert!(admits("producer == \"\"", &bare));
    assert!(!admits("eigenvalues[0] <= 0 || eigenvalues[0] > 0", &bare));
}

#[test]
fn malformed_envelopes_are_never_admitted() {
    let good = pulse(0.5, 0.5, &[1.0], "p");
    let always = "coherence == coherence || !(coherence == coherence)";
    assert!(admits(always, &good));
    // Truncated inside the spectral submessage.
    let spectral_at = good.iter().position(|b| *b == (7 << 3 | 2)).unwrap();
    assert!(!admits(always, &good[..spectral_at + 5]));
    // producer_id as a varint instead of a string.
    assert!(!admits(always, &[4 << 3, 1]));
    // A packed run of 7 bytes.
    let mut bad_run = vec![7 << 3 | 2, 9, 3 << 3 | 2, 7];
    bad_run.extend_from_slice(&[0; 7]);
    assert!(!admits(always, &bad_run));
    // A producer that is not UTF-8.
    assert!(!admits(always, &[4 << 3 | 2, 1, 0xff]));
    // A group.
    assert!(!admits(always, &[9 << 3 | 3]));
}

#[test]
fn parse_errors_name_the_byte_where_they_are() {
    let cases: &[(&str, usize, &str)] = &[
        ("coherence >= ", 13, "expected a value"),
        ("coherence => 1", 10, "`=` alone"),
        ("coherence > 1 & criticality < 1", 14, "`&&`"),
        (
            "coherence > 1 criticality < 1",
            14,
            "expected `&&`, `||` or the end",
        ),
        ("(coherence > 1", 14, "expected `)`"),
        ("coherence > 1)", 13, "expected `&&`, `||` or the end"),
        ("coherenc > 1", 0, "unknown field `coherenc`"),
        ("producer == 7", 9, "compares a string with a number"),
        (
            "producer < \"a\"",
            9,
            "strings compare only with `==` and `!=`",
        ),
        ("producer == \"abc", 12, "not closed"),
        ("producer == \"a\\n\"", 14, "escapes"),
        ("eigenvalues > 1", 12, "expected `[`"),
        ("eigenvalues[1.5] > 1", 12, "whole number"),
        ("eigenvalues[-1] > 1", 12, "whole number"),
        ("len(coherence) > 1", 4, "`eigenvalues`"),
        ("coherence > 1e999", 12, "out of range"),
        ("coherence > 1e", 13, "exponent"),
        ("coherence > -", 12, "at least one digit"),
        ("coherence ~ 1", 10, "unexpected character `~`"),
        ("", 0, "expected a value"),
        ("   ", 3, "expected a value"),
        ("coherence", 9, "expected a comparison"),
        ("cohérence > 1", 0, "unknown field `coh`"),
    ];
    for (text, pos, words) in cases {
        let e = error(text, &LIMITS);
        assert_eq!(e.pos(), *pos, "`{text}`: {e}");
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("at byte {pos}: ")),
            "{message}"
        );
        assert!(message.contains(words), "`{text}`: {message}");
    }
}

#[test]
fn bounds_are_refused_with_the_key_to_change() {
    let limits = FilterLimits {
        max_bytes: 40,
        max_nodes: 7,
        max_depth: 3,
    };
    let long = "coherence > 0.5 && criticality < 0.25 && len(eigenvalues) > 1";
    let e = error(long, &limits);
    assert_eq!(
        e,
        FilterError::TooLong {
            len: long.len(),
            max: 40
        }
    );
    assert!(e.to_string().contains("limits.max_filter_bytes"));

    // Seven nodes fit: two comparisons of two operands each, and the `&&`.
    Filter::compile("coherence > 0 && criticality < 1", &limits).unwrap();
    let e = error("coherence > 0 && criticality < 1 ||1<2", &limits);
    // The eighth node is the `||` at byte 33.
    assert_eq!(e, FilterError::TooManyNodes { pos: 33, max: 7 });
    assert!(e.to_string().contains("limits.max_filter_nodes"));

    Filter::compile("((!coherence > 0))", &limits).unwrap();
    let e = error("((!!(coherence > 0)))", &limits);
    assert_eq!(e, FilterError::TooDeep { pos: 3, max: 3 });
    assert!(e.to_string().contains("limits.max_filter_depth"));

    // A deeply nested filter within the byte limit cannot reach the parser's stack.
    let deep = format!("{}coherence > 0{}", "(".repeat(500), ")".repeat(500));
    let e = error(&deep, &ROOMY);
    assert_eq!(e, FilterError::TooDeep { pos: 64, max: 64 });
}

#[test]
fn the_empty_filter_is_no_filter() {
    assert_eq!(Filter::optional("", &LIMITS), Ok(None));
    assert!(Filter::optional("coherence > 1", &LIMITS)
        .unwrap()
        .is_some());
}

#[test]
fn scattered_eigenvalues_are_indexed_across_runs_and_occurrences() {
    // Two spectral occurrences: packed [1, 2] then unpacked 3, and packed [4].
    let mut bytes = Vec::new();
    let spectral = |inner: Vec<u8>| {
        let mut out = vec![7 << 3 | 2, inner.len() as u8];
        out.extend(inner);
        out
    };
    let mut first = vec![3 << 3 | 2, 16];
    first.extend(1f64.to_le_bytes());
    first.extend(2f64.to_le_bytes());
    first.push(3 << 3 | 1);
    first.extend(3f64.to_le_bytes());
    let mut second = vec![1 << 3 | 1];
    second.extend(0.75f64.to_le_bytes());
    second.extend([3 << 3 | 2, 8]);
    second.extend(4f64.to_le_bytes());
    bytes.extend(spectral(first));
    bytes.extend(spectral(second));
    let view = PulseView::scan(&bytes).unwrap();
    assert_eq!(view.eigenvalue_count(), 4);
    let read: Vec<_> = (0..5).map(|i| view.eigenvalue(i)).collect();
    assert_eq!(read, [Some(1.0), Some(2.0), Some(3.0), Some(4.0), None]);
    assert_eq!(view.coherence, 0.75);
    // prost reads the same bytes the same way.
    let decoded = ArqonMessage::decode(&bytes[..]).unwrap();
    assert_eq!(decoded.spectral.unwrap().eigenvalues, [1.0, 2.0, 3.0, 4.0]);
}

// ---- the property: the compiled program agrees with a plain interpreter ----

/// The reference: a recursive interpreter over the tree and the prost-decoded message.
fn reference(expr: &Expr, m: &ArqonMessage) -> bool {
    match expr {
        Expr::Cmp(c) => reference_cmp(c, m),
        Expr::Not(inner) => !reference(inner, m),
        Expr::All(items) => items.iter().all(|e| reference(e, m)),
        Expr::Any(items) => items.iter().any(|e| reference(e, m)),
    }
}

fn reference_cmp(c: &Cmp, m: &ArqonMessage) -> bool {
    if c.lhs.is_string() {
        let equal = reference_str(&c.lhs, m) == reference_str(&c.rhs, m);
        return equal == (c.op == CmpOp::Eq);
    }
    let (Some(a), Some(b)) = (reference_num(&c.lhs, m), reference_num(&c.rhs, m)) else {
        return false;
    };
    let Some(order) = a.partial_cmp(&b) else {
        return false;
    };
    match c.op {
        CmpOp::Eq => order == Ordering::Equal,
        CmpOp::Ne => order != Ordering::Equal,
        CmpOp::Lt => order == Ordering::Less,
        CmpOp::Le => order != Ordering::Greater,
        CmpOp::Gt => order == Ordering::Greater,
        CmpOp::Ge => order != Ordering::Less,
    }
}

fn reference_num(o: &Operand, m: &ArqonMessage) -> Option<f64> {
    let s = m.spectral.clone().unwrap_or_default();
    match o {
        Operand::Number(n) => Some(*n),
        Operand::Coherence => Some(s.coherence),
        Operand::Criticality => Some(s.criticality),
        Operand::Eigenvalue(i) => s.eigenvalues.get(*i as usize).copied(),
        Operand::EigenvalueCount => Some(s.eigenvalues.len() as f64),
        _ => unreachable!("a string operand in a numeric comparison"),
    }
}

fn reference_str<'a>(o: &'a Operand, m: &'a ArqonMessage) -> &'a str {
    match o {
        Operand::Str(s) => s,
        Operand::Producer => &m.producer_id,
        Operand::Topic => &m.topic,
        _ => unreachable!("a numeric operand in a string comparison"),
    }
}

/// Prints a tree so that parsing gives the same tree back.
fn print(expr: &Expr) -> String {
    let item = |e: &Expr| match e {
        Expr::All(_) | Expr::Any(_) => format!("({})", print(e)),
        _ => print(e),
    };
    match expr {
        Expr::Cmp(c) => format!("{} {} {}", operand(&c.lhs), c.op.symbol(), operand(&c.rhs)),
        Expr::Not(inner) => format!("!{}", item(inner)),
        Expr::All(items) => items.iter().map(item).collect::<Vec<_>>().join(" && "),
        Expr::Any(items) => items.iter().map(item).collect::<Vec<_>>().join("||"),
    }
}

fn operand(o: &Operand) -> String {
    match o {
        Operand::Number(n) => format!("{n:?}"),
        Operand::Str(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        Operand::Coherence => "coherence".into(),
        Operand::Criticality => "criticality".into(),
        Operand::Eigenvalue(i) => format!("eigenvalues[{i}]"),
        Operand::EigenvalueCount => "len( eigenvalues )".into(),
        Operand::Producer => "producer".into(),
        Operand::Topic => "topic".into(),
    }
}

/// Values that make comparisons interesting: equal to literals, signed zeros, NaN, infinity.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => prop::sample::select(vec![0.0, -0.0, 0.5, 1.0, 1.5, -1.0, 2.0]),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        2 => -4.0f64..4.0,
    ]
}

const STRINGS: &[&str] = &["", "omega-7", "lab.rig.temp", "a\"b\\c", "é"];

fn num_operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        2 => prop::sample::select(vec![0.0, -0.0, 0.5, 1.0, 1.5, -1.0, 2.0, 1e-7, 3e300])
            .prop_map(Operand::Number),
        1 => (-4.0f64..4.0).prop_map(Operand::Number),
        1 => Just(Operand::Coherence),
        1 => Just(Operand::Criticality),
        2 => (0u32..5).prop_map(Operand::Eigenvalue),
        1 => Just(Operand::EigenvalueCount),
    ]
}

fn str_operand() -> impl Strategy<Value = Operand> {
    prop_oneof![
        prop::sample::select(STRINGS).prop_map(|s| Operand::Str(s.to_owned())),
        Just(Operand::Producer),
        Just(Operand::Topic),
    ]
}

fn comparison() -> impl Strategy<Value = Expr> {
    let ops = vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ];
    prop_oneof![
        2 => (num_operand(), prop::sample::select(ops), num_operand())
            .prop_map(|(lhs, op, rhs)| Expr::Cmp(Cmp { lhs, op, rhs })),
        1 => (str_operand(), any::<bool>(), str_operand()).prop_map(|(lhs, eq, rhs)| {
            let op = if eq { CmpOp::Eq } else { CmpOp::Ne };
            Expr::Cmp(Cmp { lhs, op, rhs })
        }),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    comparison().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..5).prop_map(Expr::All),
            prop::collection::vec(inner, 2..5).prop_map(Expr::Any),
        ]
    })
}

/// One field of a spectral submessage, encoded in any of the ways protobuf allows.
#[derive(Debug, Clone)]
enum SpectralField {
    Coherence(f64),
    Criticality(f64),
    Packed(Vec<f64>),
    Unpacked(f64),
    Unknown(u64),
}

fn spectral_field() -> impl Strategy<Value = SpectralField> {
    prop_oneof![
        value().prop_map(SpectralField::Coherence),
        value().prop_map(SpectralField::Criticality),
        prop::collection::vec(value(), 0..4).prop_map(SpectralField::Packed),
        value().prop_map(SpectralField::Unpacked),
        any::<u64>().prop_map(SpectralField::Unknown),
    ]
}

fn encode_spectral(fields: &[SpectralField], out: &mut Vec<u8>) {
    use prost::encoding::encode_varint;
    let mut inner = Vec::new();
    for f in fields {
        match f {
            SpectralField::Coherence(v) => {
                inner.push(1 << 3 | 1);
                inner.extend(v.to_le_bytes());
            }
            SpectralField::Criticality(v) => {
                inner.push(2 << 3 | 1);
                inner.extend(v.to_le_bytes());
            }
            SpectralField::Packed(vs) => {
                inner.push(3 << 3 | 2);
                encode_varint(8 * vs.len() as u64, &mut inner);
                vs.iter().for_each(|v| inner.extend(v.to_le_bytes()));
            }
            SpectralField::Unpacked(v) => {
                inner.push(3 << 3 | 1);
                inner.extend(v.to_le_bytes());
            }
            SpectralField::Unknown(v) => {
                inner.push(9 << 3);
                encode_varint(*v, &mut inner);
            }
        }
    }
    out.push(7 << 3 | 2);
    encode_varint(inner.len() as u64, out);
    out.extend(inner);
}

/// An envelope: a prost-encoded base, then spectral occurrences written by hand, then maybe a
/// second encoded message (protobuf merges concatenated messages: its fields win).
fn envelope() -> impl Strategy<Value = Vec<u8>> {
    let text = || prop::sample::select(STRINGS);
    (
        text(),
        text(),
        prop::collection::vec(prop::collection::vec(spectral_field(), 0..5), 0..3),
        prop::option::of((text(), text())),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(topic, producer, spectrals, tail, payload)| {
            let mut bytes = ArqonMessage {
                id: "0190-id".into(),
                sequence: 42,
                topic: topic.into(),
                producer_id: producer.into(),
                reality_id: "lab-1".into(),
                payload: Some(prost_types::Any {
                    type_url: "t".into(),
                    value: payload,
                }),
                timestamp_unix_nanos: 7,
                ..Default::default()
            }
            .encode_to_vec();
            for s in &spectrals {
                encode_spectral(s, &mut bytes);
            }
            if let Some((topic, producer)) = tail {
                let more = ArqonMessage {
                    topic: topic.into(),
                    producer_id: producer.into(),
                    ..Default::default()
                };
                more.encode(&mut bytes).expect("vec grows");
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn compiled_filter_agrees_with_the_reference(expr in expr(), bytes in envelope()) {
        let text = print(&expr);
        let parsed = parse::parse(&text, &ROOMY).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(&parsed, &expr, "{}", text);
        let filter = Filter::compile(&text, &ROOMY).unwrap();
        let message = ArqonMessage::decode(&bytes[..]).expect("generated envelopes decode");
        prop_assert_eq!(filter.matches_envelope(&bytes), reference(&expr, &message), "{}", text);
    }

    #[test]
    fn truncated_envelopes_agree_or_are_refused(expr in expr(), bytes in envelope(), cut in any::<prop::sample::Index>()) {
        let cut = &bytes[..cut.index(bytes.len() + 1)];
        let filter = Filter::compile(&print(&expr), &ROOMY).unwrap();
        // Where prost reads the prefix as a message, the walker must read it the same way.
        // (The walker checks less than prost, for instance not the payload's inside, so it may
        // also read prefixes prost refuses; those are not compared.)
        if let Ok(message) = ArqonMessage::decode(cut) {
            prop_assert_eq!(filter.matches_envelope(cut), reference(&expr, &message));
        }
    }

    #[test]
    fn the_parser_never_panics(text in "[ a-z0-9_.()\\[\\]!=<>&|\"\\\\-]{0,60}") {
        let _ = Filter::compile(&text, &LIMITS);
    }
}

#[test]
fn the_view_reads_the_payload_type_url_last_wins() {
    let with = |url: &str| {
        ArqonMessage {
            topic: "a.b".into(),
            payload: Some(prost_types::Any {
                type_url: url.into(),
                value: vec![1, 2, 3],
            }),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let one = with("type.googleapis.com/lab.Audio");
    assert_eq!(
        view::PulseView::scan(&one).unwrap().type_url,
        "type.googleapis.com/lab.Audio"
    );
    let mut merged = one.clone();
    merged.extend_from_slice(&with("type.googleapis.com/lab.Text"));
    assert_eq!(
        view::PulseView::scan(&merged).unwrap().type_url,
        "type.googleapis.com/lab.Text"
    );
    let bare = ArqonMessage::default().encode_to_vec();
    assert_eq!(view::PulseView::scan(&bare).unwrap().type_url, "");
}
