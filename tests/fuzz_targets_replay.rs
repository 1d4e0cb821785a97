//! The fuzz targets' committed seeds, and a bounded run of inputs mutated from them, through the
//! same entry points libFuzzer drives (`arqonbus::fuzzing`, `fuzz/`). This is what CI runs: an
//! instrumented build of the whole crate costs more than CI can spend (fuzz/README.md).
//!
//! `ARQONBUS_FUZZ_SEED` picks the mutation seed (the default is fixed, so a failure reproduces);
//! `ARQONBUS_FUZZ_ITERATIONS` the inputs per target. A failing input is written to
//! `target/fuzz-replay-failures/` and its path printed, ready for `cargo fuzz run <target> <file>`.
//!
//! `cargo test --release --test fuzz_targets_replay -- --ignored write_seed_corpora` rewrites
//! `fuzz/seeds/` from the generator at the bottom.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arqonbus::fuzzing::TARGETS;

const DEFAULT_SEED: u64 = 0x5eed_a2c0_b005;
const DEFAULT_ITERATIONS: usize = 20_000;
/// Recovery writes files and syncs them: fewer, bigger steps.
const RECOVERY_ITERATIONS: usize = 3_000;
/// However many iterations are asked for, one target stops mutating after this long.
const TIME_BOUND: Duration = Duration::from_secs(20);
const MAX_INPUT_BYTES: usize = 8 << 10;

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target)
}

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = seeds_dir(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("directory entry").path();
            let bytes = std::fs::read(&path).expect("seed file");
            (path, bytes)
        })
        .collect();
    out.sort();
    out
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Runs one input; on a panic, keeps the input where a person can find it and fails.
fn run(target: &str, f: fn(&[u8]), input: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| f(input))).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-replay-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{:016x}", fxhash(input)));
    let _ = std::fs::write(&path, input);
    panic!(
        "fuzz target `{target}` panicked on {what}; the input is in {} \
         (replay: cd fuzz && cargo fuzz run -s none {target} {})",
        path.display(),
        path.display()
    );
}

fn fxhash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// One mutation of the kind libFuzzer makes most: flips, overwrites with edge values, inserts,
/// erases, truncations, and splices with another seed.
fn mutate(rng: &mut fastrand::Rng, input: &mut Vec<u8>, other: &[u8]) {
    const EDGES: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, b'.', b'"', b'*'];
    for _ in 0..rng.usize(1..=4) {
        let len = input.len();
        match rng.u8(0..7) {
            0 if len > 0 => input[rng.usize(0..len)] ^= 1 << rng.u8(0..8),
            1 if len > 0 => input[rng.usize(0..len)] = EDGES[rng.usize(0..EDGES.len())],
            2 if len >= 4 => {
                let at = rng.usize(0..=len - 4);
                let value = [0u32, 1, 0x7fff_ffff, u32::MAX, rng.u32(..)][rng.usize(0..5)];
                input[at..at + 4].copy_from_slice(&value.to_le_bytes());
            }
            3 => {
                let at = rng.usize(0..=len);
                input.insert(at, rng.u8(..));
            }
            4 if len > 0 => {
                let at = rng.usize(0..len);
                let end = (at + rng.usize(1..=8)).min(len);
                input.drain(at..end);
            }
            5 => input.truncate(rng.usize(0..=len)),
            _ if !other.is_empty() => {
                let from = rng.usize(0..other.len());
                let to = (from + rng.usize(1..=64)).min(other.len());
                let at = rng.usize(0..=len);
                input.splice(at..at, other[from..to].iter().copied());
            }
            _ => input.push(rng.u8(..)),
        }
    }
    input.truncate(MAX_INPUT_BYTES);
}

#[test]
fn every_target_has_seeds_and_passes_them() {
    for (name, f) in TARGETS {
        let seeds = seeds(name);
        assert!(
            seeds.len() >= 3,
            "fuzz/seeds/{name} holds {} files; regenerate it (see this file's header)",
            seeds.len()
        );
        for (path, bytes) in &seeds {
            run(name, *f, bytes, &format!("seed {}", path.display()));
        }
    }
}

#[test]
fn every_target_survives_a_bounded_run_of_mutated_seeds() {
    let seed = env_number("ARQONBUS_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let asked = env_number("ARQONBUS_FUZZ_ITERATIONS").map(|n| n as usize);
    println!("ARQONBUS_FUZZ_SEED={seed}");
    for (name, f) in TARGETS {
        let mut rng = fastrand::Rng::with_seed(seed ^ fxhash(name.as_bytes()));
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "fuzz/seeds/{name} is empty");
        let default = if *name == "recovery" {
            RECOVERY_ITERATIONS
        } else {
            DEFAULT_ITERATIONS
        };
        let iterations = asked.unwrap_or(default);
        let started = Instant::now();
        let mut ran = 0;
        while ran < iterations && started.elapsed() < TIME_BOUND {
            let mut input = seeds[rng.usize(0..seeds.len())].1.clone();
            let other = &seeds[rng.usize(0..seeds.len())].1;
            mutate(&mut rng, &mut input, other);
            run(
                name,
                *f,
                &input,
                &format!("mutated input {ran} (seed {seed})"),
            );
            ran += 1;
        }
        println!("{name}: {ran} mutated inputs in {:?}", started.elapsed());
    }
}

/// The seed corpora: small, real inputs of each target's format.
#[test]
#[ignore = "writes fuzz/seeds/; run by hand when a format changes"]
fn write_seed_corpora() {
    for (name, files) in seed_corpora::all() {
        let dir = seeds_dir(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("seeds directory");
        for (file, bytes) in files {
            std::fs::write(dir.join(file), bytes).expect("seed file");
        }
    }
}

mod seed_corpora {
    use arqonbus::fuzzing::{FUZZ_KEY_SEED, FUZZ_NOW_UNIX_SECS};
    use arqonbus::proto::delta;
    use arqonbus::proto::frame::encode_frame;
    use arqonbus::proto::v1::{
        client_frame, ArqonMessage, ClientFrame, DeltaInfo, Hello, OperatorManifest, Ping, Publish,
        SchemaRef, SpectralMetadata, Subscribe,
    };
    use prost::Message;

    type Files = Vec<(&'static str, Vec<u8>)>;

    pub fn all() -> Vec<(&'static str, Files)> {
        vec![
            ("frame", frames()),
            ("hello", hellos()),
            ("token", tokens()),
            ("config", configs()),
            ("policy_input", envelopes()),
            ("delta", deltas()),
            ("recovery", recoveries()),
        ]
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn envelope(topic: &str, value: &[u8]) -> ArqonMessage {
        let mut m = ArqonMessage {
            id: "01J0000000000000000000000".into(),
            topic: topic.into(),
            producer_id: "omega-7".into(),
            reality_id: "lab".into(),
            payload: Some(prost_types::Any {
                type_url: "type.googleapis.com/lab.Bowl".into(),
                value: value.to_vec(),
            }),
            spectral: Some(SpectralMetadata {
                coherence: 0.93,
                criticality: 0.05,
                eigenvalues: vec![1.5, 0.25],
            }),
            tenant: "acme".into(),
            subject: "rig-3".into(),
            ..Default::default()
        };
        m.causal.insert("lab".into(), 41);
        m
    }

    fn frame(kind: client_frame::Kind) -> Vec<u8> {
        encode_frame(&ClientFrame {
            correlation_id: 7,
            kind: Some(kind),
        })
        .to_vec()
    }

    fn manifest(strict: bool) -> OperatorManifest {
        let schema = |p: &str, t: &str| SchemaRef {
            topic_pattern: p.into(),
            type_url: t.into(),
        };
        OperatorManifest {
            name: "bowlnet".into(),
            version: "1.2.0".into(),
            capabilities: vec!["audio.features".into()],
            input_schemas: vec![schema("audio.raw.>", "type.googleapis.com/lab.Band")],
            output_schemas: vec![
                schema("audio.bowl.out", "type.googleapis.com/lab.Bowl"),
                schema("audio.bowl.*", "type.googleapis.com/lab.Band"),
            ],
            descriptor_set: if strict {
                lab_descriptors().into()
            } else {
                Default::default()
            },
        }
    }

    fn hello(strict: bool) -> Hello {
        Hello {
            protocol_version: 1,
            client_name: "seed".into(),
            token: String::new(),
            manifest: Some(manifest(strict)),
        }
    }

    /// `package lab; message Band { double hz = 1; } message Bowl { double energy = 1; Band
    /// band = 2; repeated Band extra = 3; }`, as sam/'s tests declare it.
    fn lab_descriptors() -> Vec<u8> {
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

    /// `Bowl { energy: 2.5, band: Band { hz: 440 } }`, encoded by hand.
    fn bowl_payload() -> Vec<u8> {
        let mut out = vec![0x09];
        out.extend_from_slice(&2.5f64.to_le_bytes());
        out.extend_from_slice(&[0x12, 9, 0x09]);
        out.extend_from_slice(&440f64.to_le_bytes());
        out
    }

    fn frames() -> Files {
        use client_frame::Kind;
        // Knob 0xff: a limit of 31 * 64 bytes, fed 8 bytes at a time; 0x40: 512 bytes, 1 at a
        // time; 0x00: nothing may have a body.
        let hello = frame(Kind::Hello(hello(false)));
        let publish = frame(Kind::Publish(Publish {
            message: Some(envelope("audio.bowl.out", &bowl_payload())),
            ack: true,
        }));
        let subscribe = frame(Kind::Subscribe(Subscribe {
            subscription_id: 1,
            reality_id: "lab".into(),
            pattern: "audio.*.>".into(),
            filter: "coherence >= 0.9 && len(eigenvalues) >= 2 && producer == \"omega-7\"".into(),
            ..Default::default()
        }));
        let ping = frame(Kind::Ping(Ping::default()));
        vec![
            ("hello", cat(&[&[0xff], &hello])),
            ("publish", cat(&[&[0xff], &publish])),
            ("subscribe_filter", cat(&[&[0x47], &subscribe])),
            (
                "session",
                cat(&[&[0xfb], &hello, &subscribe, &publish, &ping]),
            ),
            (
                "oversized_prefix",
                cat(&[&[0x08], &0x0100_0000u32.to_be_bytes(), b"abc"]),
            ),
            ("empty_limit", cat(&[&[0x00], &ping])),
        ]
    }

    fn hellos() -> Files {
        let with_payload = |h: &Hello, payload: &[u8]| {
            let body = h.encode_to_vec();
            cat(&[&(body.len() as u16).to_le_bytes(), &body, payload])
        };
        let mut bad_name = hello(false);
        bad_name.manifest.as_mut().expect("set").name = "bowl net!".into();
        let mut bad_pattern = hello(false);
        bad_pattern.manifest.as_mut().expect("set").output_schemas[0].topic_pattern =
            "a.>.b".into();
        vec![
            ("plain", with_payload(&hello(false), &bowl_payload())),
            (
                "strict_good_payload",
                with_payload(&hello(true), &bowl_payload()),
            ),
            (
                "strict_unknown_field",
                with_payload(&hello(true), &[0x20, 0x01]),
            ),
            ("bad_name", with_payload(&bad_name, &[])),
            ("bad_pattern", with_payload(&bad_pattern, &[])),
            (
                "no_manifest",
                with_payload(
                    &Hello {
                        protocol_version: 1,
                        ..Default::default()
                    },
                    &[],
                ),
            ),
            // Found by this target: a descriptor file of unknown syntax made prost-reflect panic
            // (src/sam/mod.rs, check_syntax). The replay run's 336-byte mutated input, cut by
            // hand to the 5 descriptor bytes that matter; the libFuzzer build panicked on it.
            (
                "crash_unknown_syntax",
                b"\x0c\x00\x22\x0a\x0a\x01\x61\x32\x05\x0a\x03\x62\x01\x78".to_vec(),
            ),
        ]
    }

    fn tokens() -> Files {
        use arqonbus::auth::token::{encode_private, encode_public, issue};
        use arqonbus::auth::{Claims, Role};
        let key = ed25519_dalek::SigningKey::from_bytes(&FUZZ_KEY_SEED);
        let claims = Claims {
            tenant: "acme".into(),
            sub: "rig-3".into(),
            roles: vec![Role::Publisher, Role::Subscriber],
            publish: vec!["lab:a.*".into(), "x?:>".into()],
            subscribe: vec!["*".into()],
            exp: FUZZ_NOW_UNIX_SECS + 3_600,
            iat: FUZZ_NOW_UNIX_SECS,
            capabilities: Some(vec!["sense".into()]),
            kid: None,
            jti: Some("0193c2d4-0000-7000-8000-000000000001".into()),
            aud: None,
        };
        let json = serde_json::to_vec(&claims).expect("claims");
        let expired = Claims {
            exp: FUZZ_NOW_UNIX_SECS,
            ..claims.clone()
        };
        vec![
            ("signed", cat(&[&[0], issue(&key, &claims).as_bytes()])),
            (
                "signed_expired",
                cat(&[&[0], issue(&key, &expired).as_bytes()]),
            ),
            ("malformed", cat(&[&[0], b"eyJ0ZW5hbnQiOiJ4In0.AAAA"])),
            ("claims", cat(&[&[1], &json])),
            (
                "claims_controller",
                cat(&[
                    &[1],
                    br#"{"tenant":"t","sub":"s","roles":["controller"],"exp":1900000000}"#,
                ]),
            ),
            (
                "public_key",
                cat(&[&[2], encode_public(&key.verifying_key()).as_bytes()]),
            ),
            ("private_key", cat(&[&[2], encode_private(&key).as_bytes()])),
        ]
    }

    fn configs() -> Files {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let read = |p: &str| std::fs::read(root.join(p)).expect("config file");
        vec![
            ("default", read("src/config/default.toml")),
            ("packaged", read("systemd/arqonbus.toml")),
            (
                "retention_delta",
                br#"shards = 2
[[retention]]
realities = "lab*"
max_age_ms = 60000
sync = "interval"
segment_bytes = 1048576

[[delta]]
realities = "*"
topics = "state.>"
keyframe_every = 10
"#
                .to_vec(),
            ),
            (
                "auth_tenants",
                br#"[auth]
require_token = true
trusted_keys = ["6kpsY3KMXgvc2U7yJtWGmqW7rt7fh4VC8Y8HAiN5ba0="]

[[tenants]]
name = "acme"
max_connections = 10
"#
                .to_vec(),
            ),
            ("out_of_range", b"[limits]\nmax_frame_bytes = 1\n".to_vec()),
            ("unknown_key", b"no_such_key = true\n".to_vec()),
        ]
    }

    fn envelopes() -> Files {
        let mut bare = ArqonMessage {
            topic: "a.b".into(),
            ..Default::default()
        };
        bare.causal.insert("x".into(), u64::MAX);
        vec![
            (
                "full",
                envelope("audio.bowl.out", &bowl_payload()).encode_to_vec(),
            ),
            ("bare", bare.encode_to_vec()),
            ("nan_spectral", {
                let mut m = envelope("s.t", b"");
                m.spectral.as_mut().expect("set").coherence = f64::NAN;
                m.encode_to_vec()
            }),
        ]
    }

    fn deltas() -> Files {
        let base = b"temperature=21.5;humidity=40;pressure=1013".to_vec();
        let target = b"temperature=21.7;humidity=40;pressure=1012;wind=3".to_vec();
        let d = delta::encode(&base, &target);
        let split = |mode: u8, a: &[u8], b: &[u8]| cat(&[&[mode, a.len() as u8], a, b]);
        // Mode 2: a keyframe, then a producer's delta against it (base 1, the right CRC).
        let keyframe = {
            let mut m = envelope("state.rig", &base);
            m.payload.as_mut().expect("set").type_url = "type.googleapis.com/lab.State".into();
            m.encode_to_vec()
        };
        let producer_delta = {
            let mut m = envelope("state.rig", &d);
            m.payload.as_mut().expect("set").type_url = String::new();
            m.delta = Some(DeltaInfo {
                keyframe: false,
                base_sequence: 1,
                checksum: delta::checksum(&target),
            });
            m.encode_to_vec()
        };
        let whole_again = {
            let mut m = envelope("state.rig", &base);
            m.payload.as_mut().expect("set").type_url = "type.googleapis.com/lab.State".into();
            m.encode_to_vec()
        };
        let mut stream = vec![2, 0];
        for m in [&keyframe, &producer_delta, &whole_again] {
            stream.extend_from_slice(&(m.len() as u16).to_le_bytes());
            stream.extend_from_slice(m);
        }
        vec![
            ("apply", split(0xf0, &base, &d)),
            ("apply_too_large", split(0x03, &base, &d)),
            ("round_trip", split(1, &base, &target)),
            ("round_trip_empty_base", split(1, b"", &target)),
            ("owner_stream", stream),
        ]
    }

    fn recoveries() -> Files {
        let files = arqonbus::fuzzing::real_log_files();
        // Mode 0: the real files as chunks; each segment named by its own header.
        let mut as_chunks = vec![0u8];
        for (name, bytes) in &files {
            let kind = if name == "checkpoint" { 2 } else { 0 };
            as_chunks.push(kind);
            as_chunks.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            as_chunks.extend_from_slice(bytes);
        }
        // A legacy (trailerless) segment holding one record, by hand.
        let legacy = {
            let body = b"legacy";
            let mut rec = Vec::new();
            rec.extend_from_slice(&1u64.to_le_bytes());
            rec.extend_from_slice(&5u64.to_le_bytes());
            rec.extend_from_slice(body);
            let mut seg = b"ARQSEG01".to_vec();
            seg.extend_from_slice(&1u64.to_le_bytes());
            seg.extend_from_slice(&(body.len() as u32).to_le_bytes());
            seg.extend_from_slice(&crc32c::crc32c(&rec).to_le_bytes());
            seg.extend_from_slice(&rec);
            seg.resize(256, 0);
            let mut chunk = vec![0u8, 0];
            chunk.extend_from_slice(&(seg.len() as u16).to_le_bytes());
            chunk.extend_from_slice(&seg);
            chunk
        };
        vec![
            ("real_log", vec![1]),
            // A flipped byte in the first record (before the durable position: corruption).
            ("real_log_bad_record", vec![1, 0, 40, 0, 0x01]),
            // The last segment cut short: a torn tail.
            ("real_log_torn_tail", vec![1, 0x83, 200, 0, 0]),
            ("real_files", as_chunks),
            ("legacy_segment", legacy),
        ]
    }
}
