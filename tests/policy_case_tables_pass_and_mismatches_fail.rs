//! `arqonbus policy test`: the example policies' case tables (policy/cases/) pass against the
//! real modules; a table whose expectation a policy does not meet makes it exit 1 naming the
//! case; faults (a policy that burns its fuel, one that lacks an export) are verdicts a table can
//! expect; a broken table is an error naming the file and the case.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::guest::guest_wasm;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/policy").join(name)
}

fn policy_test(module: &Path, cases: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arqonbus"))
        .args(["policy", "test"])
        .arg(module)
        .arg("--cases")
        .arg(cases)
        .env_remove("ARQONBUS_CONTROLLER_TOKEN")
        .output()
        .expect("arqonbus runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `[[case]]` names of a table, in order.
fn case_names(table: &Path) -> Vec<String> {
    let value: toml::Value = toml::from_str(&std::fs::read_to_string(table).unwrap()).unwrap();
    value["case"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_example_policies_meet_their_tables() {
    for name in ["energy_cap", "topic_denylist"] {
        let table = root().join("policy/cases").join(format!("{name}.toml"));
        let output = policy_test(&guest_wasm(name), &table);
        let out = text(&output);
        assert!(output.status.success(), "{name}: {out}");
        let names = case_names(&table);
        assert!(names.len() >= 7, "{name} has a real table");
        for case in &names {
            let line = out
                .lines()
                .find(|l| l.contains(case.as_str()))
                .unwrap_or_else(|| panic!("{name}: no line for `{case}` in\n{out}"));
            assert!(line.trim_start().starts_with("ok"), "{line}");
            assert!(line.contains("fuel"), "each case reports its fuel: {line}");
        }
        let summary = format!("{} cases, {} passed", names.len(), names.len());
        assert!(out.contains(&summary), "{out}");
    }
}

#[test]
fn a_verdict_the_policy_does_not_give_fails_the_run_and_names_the_case() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("wrong.toml");
    std::fs::write(
        &table,
        r#"
        [policy]
        params = { max_energy_joules = "50" }
        [defaults]
        topic = "nvm.job.submit"
        type_url = "type.googleapis.com/arqon.nvm.v1.NvmJob"
        [[case]]
        name = "right: 10 J passes"
        payload = { energy_joules = 10.0 }
        expect = "allow"
        [[case]]
        name = "wrong: 51 J said to pass"
        payload = { energy_joules = 51.0 }
        expect = "allow"
        [[case]]
        name = "wrong code: 51 J said to be garbage"
        payload = { energy_joules = 51.0 }
        expect = "deny"
        code = 2
        "#,
    )
    .unwrap();
    let output = policy_test(&guest_wasm("energy_cap"), &table);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    let line = |case: &str| {
        out.lines()
            .find(|l| l.contains(case))
            .unwrap_or_else(|| panic!("no line for {case}:\n{out}"))
            .to_owned()
    };
    assert!(line("right: 10 J").trim_start().starts_with("ok"), "{out}");
    let wrong = line("wrong: 51 J");
    assert!(wrong.trim_start().starts_with("FAIL"), "{wrong}");
    assert!(
        wrong.contains("deny 1") && wrong.contains("expected allow"),
        "{wrong}"
    );
    let code = line("wrong code");
    assert!(code.contains("expected deny 2"), "{code}");
    assert!(out.contains("3 cases, 1 passed, 2 failed"), "{out}");
}

#[test]
fn faults_are_verdicts_a_table_expects() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("faults.toml");
    std::fs::write(
        &table,
        r#"
        [policy]
        name = "burner"
        fuel_per_call = 50000
        [[case]]
        name = "burns all its fuel"
        topic = "lab.rig.set"
        expect = "fault"
        reason_contains = "fuel exhausted (fuel_per_call 50000)"
        [[case]]
        name = "and again after a fresh start"
        topic = "lab.rig.set"
        expect = "fault"
        "#,
    )
    .unwrap();
    let output = policy_test(&fixture("infinite_loop.wat"), &table);
    let out = text(&output);
    assert!(output.status.success(), "{out}");
    let burns = out
        .lines()
        .find(|l| l.contains("burns all its fuel"))
        .unwrap();
    assert!(
        burns
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w == ["fuel", "50000"]),
        "a fault by fuel used all of it: {out}"
    );

    // A module without arqon_inspect faults every pulse it is bound to, but the table says allow.
    std::fs::write(
        &table,
        "[[case]]\nname = \"missing\"\ntopic = \"a.b.c\"\nexpect = \"allow\"\n",
    )
    .unwrap();
    let output = policy_test(&fixture("missing_export.wat"), &table);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(
        out.contains("fault") && out.contains("arqon_inspect"),
        "{out}"
    );
}

#[test]
fn broken_tables_and_modules_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("broken.toml");
    std::fs::write(
        &table,
        "[[case]]\nname = \"typo\"\ntopic = \"a.b.c\"\nexpect = \"allow\"\ntopik = \"x\"\n",
    )
    .unwrap();
    let output = policy_test(&fixture("allow_all.wat"), &table);
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(
        out.contains("broken.toml") && out.contains("case `typo`") && out.contains("topik"),
        "{out}"
    );

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm not really").unwrap();
    std::fs::write(&table, "[[case]]\ntopic = \"a.b.c\"\nexpect = \"allow\"\n").unwrap();
    let output = policy_test(&garbage, &table);
    let out = text(&output);
    assert!(!output.status.success(), "{out}");
    assert!(out.contains("does not compile"), "{out}");

    let output = policy_test(&dir.path().join("absent.wasm"), &table);
    assert!(!output.status.success());
    assert!(text(&output).contains("absent.wasm"), "{}", text(&output));
}
