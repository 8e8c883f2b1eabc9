//! `portcullis schema` and the JSON Schema it prints: the committed copy the demo config's
//! modeline points at never drifts, and an independent validator (Python `jsonschema`) agrees
//! with `portcullis check` on a table of valid and invalid configs.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::common::{fixture_yaml, portcullis, SECRET123_HASH};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn printed_schema() -> String {
    let (code, schema, stderr) = portcullis(["schema"]);
    assert_eq!(code, 0, "{stderr}");
    schema
}

#[test]
fn the_committed_schema_is_the_one_the_binary_prints_and_the_demo_points_at_it() {
    let committed =
        std::fs::read_to_string(root().join("gateway.schema.json")).expect("gateway.schema.json");
    assert!(
        committed == printed_schema(),
        "gateway.schema.json is stale: regenerate it with `portcullis schema > gateway.schema.json`"
    );
    let demo = std::fs::read_to_string(root().join("gateway.yaml")).expect("gateway.yaml");
    assert!(demo.starts_with("# yaml-language-server: $schema=./gateway.schema.json\n"));
    let schema: serde_json::Value = serde_json::from_str(&committed).expect("JSON");
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    // Descriptions come from the doc comments.
    assert!(schema["properties"]["routes"]["description"]
        .as_str()
        .is_some_and(|d| d.contains("first match")));
}

/// Validates each YAML file named on the command line against the schema (first argument);
/// prints one `valid` or `invalid: …` line per file.
const VALIDATOR: &str = r#"
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
for path in sys.argv[2:]:
    errors = list(validator.iter_errors(yaml.safe_load(open(path))))
    print("valid" if not errors else "invalid: " + errors[0].message)
"#;

/// Whether Python with `jsonschema` and PyYAML is here. `.ci/run` installs both and sets
/// `PORTCULLIS_REQUIRE_SCHEMA_VALIDATOR`, so there their absence is a failure, not a skip.
fn validator_available() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import jsonschema, yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("PORTCULLIS_REQUIRE_SCHEMA_VALIDATOR").is_none(),
            "python3 with jsonschema and PyYAML is required here"
        );
        eprintln!("python3 jsonschema/PyYAML not installed: the schema agreement test is skipped");
    }
    found
}

#[test]
fn the_schema_and_check_agree_on_valid_and_invalid_configs() {
    if !validator_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let schema_path = dir.path().join("schema.json");
    std::fs::write(&schema_path, printed_schema()).expect("write schema");
    let demo = std::fs::read_to_string(root().join("gateway.yaml")).expect("demo");
    let fixture = fixture_yaml("http://127.0.0.1:9");
    let profile = fixture.replace(
        &format!("  alice: {{ password: \"{SECRET123_HASH}\", scopes: [read] }}"),
        &format!(
            "  alice: {{ password: \"{SECRET123_HASH}\", scopes: [read], email: a@example.com, name: \"Zoë\", groups: [eng], attributes: {{ team: x }}, disabled: false }}"
        ),
    );
    let long_forms = format!(
        "{fixture}limits: {{ max_connections: 10, max_body_size: 1MiB, write_timeout: 5s }}\n\
         login: {{ path: /auth, lockout: {{ failures: 3, window: 1m, duration: 5m, ipv6_prefix: 56 }} }}\n\
         log: {{ format: json }}\ntrusted_proxies: [10.0.0.0/8]\nextra_methods: [PROPFIND]\n"
    )
    .replace(
        "  echo: \"echo:\"",
        "  echo: { url: \"echo:\", timeout: 5s, pass_token: true }",
    );
    let cases: Vec<(&str, String, bool)> = vec![
        ("demo", demo.clone(), true),
        ("test fixture", fixture.clone(), true),
        ("users with profiles", profile, true),
        ("long forms", long_forms, true),
        (
            "unknown top-level key",
            format!("{fixture}listn: 127.0.0.1:1\n"),
            false,
        ),
        (
            "unknown route key",
            fixture.replace("id: public, path:", "id: public, pth: /x, path:"),
            false,
        ),
        (
            "methods as a string",
            fixture.replace("methods: [GET]", "methods: GET"),
            false,
        ),
        (
            "max_headers as text",
            format!("{fixture}limits: {{ max_headers: lots }}\n"),
            false,
        ),
        (
            "user without a password",
            fixture.replace(
                &format!("  bob: {{ password: \"{SECRET123_HASH}\", scopes: [read, write] }}"),
                "  bob: { scopes: [read, write] }",
            ),
            false,
        ),
        (
            "unknown user field",
            fixture.replace("scopes: [read] }", "scopes: [read], phone: \"1\" }"),
            false,
        ),
        (
            "routes as a map",
            format!(
                "{}routes: {{ x: 1 }}\n",
                &fixture[..fixture.find("routes:").unwrap_or(0)]
            ),
            false,
        ),
    ];
    let mut paths = Vec::new();
    for (index, (label, text, _)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{index}.yaml"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{label}: {e}"));
        paths.push(path);
    }
    let output = Command::new("python3")
        .arg("-c")
        .arg(VALIDATOR)
        .arg(&schema_path)
        .args(&paths)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts = String::from_utf8_lossy(&output.stdout).into_owned();
    let verdicts: Vec<&str> = verdicts.lines().collect();
    assert_eq!(verdicts.len(), cases.len(), "{verdicts:?}");
    for ((label, _, valid), (path, verdict)) in cases.iter().zip(paths.iter().zip(verdicts)) {
        let schema_says = verdict == "valid";
        let (code, _, stderr) =
            portcullis([OsStr::new("check"), OsStr::new("-c"), path.as_os_str()]);
        assert_eq!(schema_says, *valid, "{label}: the schema says {verdict}");
        assert_eq!(code == 0, *valid, "{label}: check says {stderr}");
    }
}
