//! `portcullis test` (rule tests), `check --tests` (untested routes), `check --format json`
//! and `--version`, run as an operator runs them: the real binary on real files.

use crate::common::portcullis;
use std::path::{Path, PathBuf};

/// The repository's demo config and its rule tests.
fn demo() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    (root.join("gateway.yaml"), root.join("gateway.test.yaml"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The demo config with the read rule demanding `write:items`: alex (who writes) still
/// passes, a read-only caller no longer does.
fn broken_demo(dir: &Path) -> PathBuf {
    let (config, _) = demo();
    let text = std::fs::read_to_string(config).expect("read demo");
    let marker =
        "  - id: read-items\n    path: /items/**\n    upstream: demo\n    scopes: [read:items]";
    assert!(text.contains(marker), "demo config changed shape");
    let broken = text.replace(
        marker,
        "  - id: read-items\n    path: /items/**\n    upstream: demo\n    scopes: [write:items]",
    );
    let path = dir.join("gateway.yaml");
    std::fs::write(&path, broken).expect("write broken config");
    path
}

#[test]
fn the_demo_rule_tests_pass_on_the_demo_config() {
    let (config, tests) = demo();
    let (code, out, err) = portcullis(["test", "-c", path_str(&config), path_str(&tests)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(" cases, 0 failed"), "{out}");
}

#[test]
fn a_broken_rule_fails_its_case_naming_file_line_expectation_and_deciding_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broken_demo(dir.path());
    let (_, tests) = demo();
    let (code, out, err) = portcullis(["test", "-c", path_str(&config), path_str(&tests)]);
    assert_eq!(code, 1, "{out}{err}");
    let failing: Vec<&str> = out.lines().filter(|l| l.contains(": expected ")).collect();
    assert_eq!(failing.len(), 1, "{out}");
    let line = failing[0];
    let test_line = std::fs::read_to_string(&tests)
        .expect("read tests")
        .lines()
        .position(|l| l.contains("a read-only token reads items"))
        .expect("case present")
        + 1;
    assert!(
        line.starts_with(&format!("{}:{test_line}: ", path_str(&tests))),
        "{line}"
    );
    assert!(
        line.contains("expected allow read-items, got 403"),
        "{line}"
    );
    assert!(
        line.contains("decided by rule #4 read-items (/items/**)"),
        "{line}"
    );
    assert!(out.contains("1 failed"), "{out}");
}

#[test]
fn junit_output_is_well_formed_and_marks_the_failing_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = broken_demo(dir.path());
    let (_, tests) = demo();
    let args = [
        "test",
        "-c",
        path_str(&config),
        path_str(&tests),
        "--format",
        "junit",
    ];
    let (code, out, err) = portcullis(args);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("<?xml version=\"1.0\""), "{out}");
    assert_eq!(out.matches("<testcase ").count(), 16, "{out}");
    assert_eq!(out.matches("<failure ").count(), 1, "{out}");
    assert!(out.contains("failures=\"1\""), "{out}");
    // Balanced elements: every opened testsuite/testcase-with-body is closed.
    assert_eq!(
        out.matches("<testsuite ").count(),
        out.matches("</testsuite>").count()
    );
    assert_eq!(
        out.matches("<testcase ").count(),
        out.matches("/>").count() + out.matches("</testcase>").count()
    );
}

#[test]
fn a_case_naming_an_unknown_scope_or_a_bad_expectation_is_an_error_at_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = demo();
    for (case, why) in [
        (
            "    scopes: [raed:items]\n    expect: allow",
            "unknown scope `raed:items`",
        ),
        (
            "    user: nobody\n    expect: allow",
            "unknown user `nobody`",
        ),
        ("    expect: 418", "`expect: 418`"),
        ("    expect: allowed", "`expect: allowed`"),
        (
            "    scopes: [read:items]\n    anonymous: true\n    expect: 401",
            "give one of",
        ),
    ] {
        let tests = dir.path().join("cases.yaml");
        let text = format!("cases:\n  - request: GET /items/1\n{case}\n");
        std::fs::write(&tests, text).expect("write cases");
        let (code, out, err) = portcullis(["test", "-c", path_str(&config), path_str(&tests)]);
        assert_eq!(code, 1, "{case}: {out}{err}");
        assert!(
            err.contains(&format!("{}:2: ", path_str(&tests))),
            "{case}: {err}"
        );
        assert!(err.contains(why), "{case}: {err}");
    }
}

#[test]
fn check_with_tests_warns_about_routes_no_case_reaches_and_strict_fails_on_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _) = demo();
    let tests = dir.path().join("cases.yaml");
    std::fs::write(
        &tests,
        "cases:\n  - { request: GET /public/x, expect: allow }\n  - { request: GET /items/1, expect: 401 }\n",
    )
    .expect("write cases");
    let (code, out, err) = portcullis([
        "check",
        "-c",
        path_str(&config),
        "--tests",
        path_str(&tests),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for untested in ["delete-item", "write-items", "admin", "internal"] {
        assert!(out.contains(&format!("`{untested}`")), "{untested}: {out}");
    }
    assert!(!out.contains("`read-items` ("), "{out}");
    assert!(!out.contains("`public` ("), "{out}");
    let (code, out, _) = portcullis([
        "check",
        "-c",
        path_str(&config),
        "--strict",
        "--tests",
        path_str(&tests),
    ]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn check_format_json_reports_errors_with_position_and_warnings_with_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        "scopes: { read: Read }\nupstreams: { app: \"echo:\" }\nroutes:\n  - { path: /a/**, upstream: app, scopes: [raed] }\n",
    )
    .expect("write config");
    let (code, out, _) = portcullis(["check", "-c", path_str(&config), "--format", "json"]);
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(report["valid"], false);
    let error = &report["errors"][0];
    assert_eq!(error["line"], 4, "{report}");
    assert!(error["column"].is_u64(), "{report}");
    assert_eq!(error["code"], "invalid-config");
    assert!(error["message"].as_str().unwrap_or("").contains("raed"));

    let (demo_config, tests) = demo();
    let args = [
        "check",
        "-c",
        path_str(&demo_config),
        "--format",
        "json",
        "--tests",
        path_str(&tests),
    ];
    let (code, out, _) = portcullis(args);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(report["valid"], true);
    let codes: Vec<&str> = report["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["code"].as_str())
        .collect();
    // The demo runs without key or TLS files on purpose; its tests reach every route.
    assert_eq!(
        codes,
        ["key-generated", "key-generated", "tls-missing"],
        "{report}"
    );

    // Warnings about one entry point at its line.
    std::fs::write(
        &config,
        "scopes: { read: Read, spare: Spare }\nupstreams: { app: \"echo:\", idle: \"echo:\" }\nroutes:\n  - { id: all, path: /a/**, upstream: app, scopes: [read] }\n  - { id: never, path: /a/b, upstream: app, public: true }\n",
    )
    .expect("write config");
    let (code, out, _) = portcullis(["check", "-c", path_str(&config), "--format", "json"]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    let at = |code: &str| -> (serde_json::Value, serde_json::Value) {
        let warning = report["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["code"] == code)
            .unwrap_or_else(|| panic!("no {code} warning: {report}"));
        (warning["line"].clone(), warning["column"].clone())
    };
    assert_eq!(at("route-shadowed").0, 5, "{report}");
    assert_eq!(at("scope-unused").0, 1, "{report}");
    assert_eq!(at("upstream-unused").0, 2, "{report}");
    assert!(at("route-shadowed").1.is_u64());
}

#[test]
fn version_names_the_crate_version_and_build_features() {
    let (code, out, _) = portcullis(["--version"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("portcullis {} (", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    assert!(out.contains("features"), "{out}");
}
