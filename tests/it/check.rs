//! `portcullis check -c FILE`: exit codes, `file:line:col` for every kind of config error,
//! the printed route table, and the warnings (`--strict` turns them into failures).
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What one `portcullis check` run produced.
struct Checked {
    code: i32,
    stdout: String,
    stderr: String,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Checked {
    /// stdout and stderr together (where a message goes is not part of the contract).
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// The lines of the combined output that mention warnings.
    fn warnings(&self) -> Vec<String> {
        self.all()
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("warn"))
            .map(str::to_owned)
            .collect()
    }
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn run_check(path: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![OsStr::new("check"), OsStr::new("-c"), path.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    portcullis(args)
}

/// Write `yaml` to a fresh `gateway.yaml` and run `portcullis check` on it.
fn check(yaml: &str, extra: &[&str]) -> Checked {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let (code, stdout, stderr) = run_check(&path, extra);
    Checked {
        code,
        stdout,
        stderr,
        path,
        _dir: dir,
    }
}

/// A config that is valid and has nothing to warn about. One entry per line, so a test can
/// insert or replace line N and know where the error is.
fn clean_lines() -> Vec<String> {
    [
        "listen: 127.0.0.1:8443".to_owned(),                 // 1
        "tls:".to_owned(),                                   // 2
        "  cert: /etc/portcullis/gateway.pem".to_owned(),    // 3
        "  key: /etc/portcullis/gateway-key.pem".to_owned(), // 4
        "tokens:".to_owned(),                                // 5
        format!("  secret: \"{SECRET}\""),                   // 6
        "  ttl: 5m".to_owned(),                              // 7
        "scopes:".to_owned(),                                // 8
        "  read: Read".to_owned(),                           // 9
        "  write: { description: Write, implies: [read] }".to_owned(), // 10
        "users:".to_owned(),                                 // 11
        format!("  alice: {{ password: \"{SECRET123_HASH}\", scopes: [read] }}"), // 12
        format!("  bob: {{ password: \"{SECRET123_HASH}\", scopes: [write] }}"), // 13
        "upstreams:".to_owned(),                             // 14
        "  app: http://127.0.0.1:9000".to_owned(),           // 15
        "routes:".to_owned(),                                // 16
        "  - { id: open-docs, path: /public/**, upstream: app, public: true }".to_owned(), // 17
        "  - { id: items-read, path: /items/**, methods: [GET], upstream: app, scopes: [read] }"
            .to_owned(), // 18
        "  - { id: items-write, path: /items/**, methods: [POST], upstream: app, scopes: [write] }"
            .to_owned(), // 19
        "  - { id: internal, path: /internal/**, deny: true }".to_owned(), // 20
    ]
    .into()
}

fn text(lines: &[String]) -> String {
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// `lines` with line `n` (1-based) replaced.
fn replace_line(n: usize, with: &str) -> String {
    let mut lines = clean_lines();
    lines[n - 1] = with.to_owned();
    text(&lines)
}

/// `lines` with `line` inserted so that it becomes line `n` (1-based).
fn insert_line(n: usize, line: &str) -> String {
    let mut lines = clean_lines();
    lines.insert(n - 1, line.to_owned());
    text(&lines)
}

/// `lines` with `line` appended at the end (it becomes line 21).
fn append_line(line: &str) -> String {
    insert_line(clean_lines().len() + 1, line)
}

/// Assert the run failed with exit 1 and an error at `FILE:line:COL`; returns the error line.
fn assert_error_at(checked: &Checked, line: u64) -> String {
    assert_eq!(
        checked.code, 1,
        "expected exit 1 for an invalid config:\n{checked:?}"
    );
    let file = checked.path.display().to_string();
    let needle = format!("{file}:{line}:");
    let Some(text_line) = checked.stderr.lines().find(|l| l.contains(&needle)) else {
        panic!("stderr does not name `{needle}COL`:\n{checked:?}");
    };
    let at = text_line.find(&needle).unwrap() + needle.len();
    let digits: String = text_line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let column: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("no column after `{needle}` in {text_line:?}"));
    assert!(column >= 1, "columns are 1-based: {text_line:?}");
    assert!(
        text_line[at + digits.len()..].starts_with(':'),
        "expected `FILE:LINE:COL:` in {text_line:?}"
    );
    text_line.to_owned()
}

// ---------------------------------------------------------------------------------------------
// Valid configs

#[test]
fn the_repository_gateway_yaml_passes_check_and_its_routes_are_listed() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.yaml"));
    let (code, stdout, stderr) = run_check(path, &[]);
    assert_eq!(
        code, 0,
        "--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    );
    for (id, pattern) in [
        ("public", "/public/**"),
        ("delete-item", "/items/{id}"),
        ("write-items", "/items/**"),
        ("read-items", "/items/**"),
        ("admin", "/admin/**"),
        ("internal", "/internal/**"),
    ] {
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().any(|w| w == id) && l.contains(pattern)),
            "route `{id}` ({pattern}) is not listed on one line:\n{stdout}"
        );
    }
}

#[test]
fn a_clean_config_passes_check_even_with_strict_and_prints_no_warning() {
    let checked = check(&text(&clean_lines()), &["--strict"]);
    assert_eq!(checked.code, 0, "{checked:?}");
    assert!(
        checked.warnings().is_empty(),
        "unexpected warnings: {checked:?}"
    );
}

#[test]
fn check_prints_the_route_table_in_order_with_ids_patterns_and_upstreams() {
    let checked = check(&text(&clean_lines()), &[]);
    assert_eq!(checked.code, 0, "{checked:?}");
    let mut last: Option<usize> = None;
    for (id, pattern) in [
        ("open-docs", "/public/**"),
        ("items-read", "/items/**"),
        ("items-write", "/items/**"),
        ("internal", "/internal/**"),
    ] {
        let Some(index) = checked
            .stdout
            .lines()
            .position(|l| l.split_whitespace().any(|w| w == id) && l.contains(pattern))
        else {
            panic!("route `{id}` ({pattern}) not listed on one line: {checked:?}");
        };
        if let Some(previous) = last {
            assert!(
                index > previous,
                "routes not listed in file order: {checked:?}"
            );
        }
        last = Some(index);
    }
    let read_line = checked
        .stdout
        .lines()
        .find(|l| l.contains("items-read"))
        .unwrap();
    assert!(
        read_line.contains("app"),
        "upstream missing from {read_line:?}"
    );
    assert!(
        read_line.contains("GET"),
        "methods missing from {read_line:?}"
    );
    assert!(
        read_line.contains("read"),
        "required scope missing from {read_line:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors with their position

#[test]
fn an_unknown_top_level_key_is_an_error_naming_its_line_and_the_key() {
    let checked = check(&insert_line(3, "listn: 127.0.0.1:9443"), &[]);
    let line = assert_error_at(&checked, 3);
    assert!(
        line.contains("listn"),
        "the message does not name the key: {line:?}"
    );
}

#[test]
fn an_unknown_key_inside_a_route_is_an_error_naming_its_line_and_the_key() {
    let checked = check(
        &replace_line(
            18,
            "  - { id: items-read, path: /items/**, method: [GET], upstream: app, scopes: [read] }",
        ),
        &[],
    );
    let line = assert_error_at(&checked, 18);
    assert!(
        line.contains("method"),
        "the message does not name the key: {line:?}"
    );
}

#[test]
fn a_route_saying_neither_public_deny_nor_scopes_is_an_error_at_that_route() {
    let checked = check(
        &append_line("  - { id: forgot, path: /forgot/**, upstream: app }"),
        &[],
    );
    let line = assert_error_at(&checked, 21);
    assert!(
        line.contains("/forgot/**") || line.contains("forgot"),
        "{line:?}"
    );
}

#[test]
fn an_unknown_scope_in_a_route_is_an_error_naming_the_scope_and_its_line() {
    let checked = check(
        &replace_line(18, "  - { id: items-read, path: /items/**, methods: [GET], upstream: app, scopes: [reed] }"),
        &[],
    );
    let line = assert_error_at(&checked, 18);
    assert!(
        line.contains("reed"),
        "the message does not name the scope: {line:?}"
    );
}

#[test]
fn an_unknown_scope_in_any_scopes_is_an_error_naming_the_scope_and_its_line() {
    let checked = check(
        &replace_line(18, "  - { id: items-read, path: /items/**, methods: [GET], upstream: app, any_scopes: [read, raed] }"),
        &[],
    );
    let line = assert_error_at(&checked, 18);
    assert!(
        line.contains("raed"),
        "the message does not name the scope: {line:?}"
    );
}

#[test]
fn an_unknown_scope_given_to_a_user_is_an_error_naming_the_scope_and_the_users_line() {
    let checked = check(
        &replace_line(
            13,
            &format!("  bob: {{ password: \"{SECRET123_HASH}\", scopes: [wirte] }}"),
        ),
        &[],
    );
    let line = assert_error_at(&checked, 13);
    assert!(
        line.contains("wirte"),
        "the message does not name the scope: {line:?}"
    );
}

#[test]
fn a_route_naming_an_unknown_upstream_is_an_error_naming_it_and_its_line() {
    let checked = check(
        &replace_line(19, "  - { id: items-write, path: /items/**, methods: [POST], upstream: nowhere, scopes: [write] }"),
        &[],
    );
    let line = assert_error_at(&checked, 19);
    assert!(
        line.contains("nowhere"),
        "the message does not name the upstream: {line:?}"
    );
}

#[test]
fn a_duration_with_an_unknown_unit_is_an_error_at_its_line() {
    let checked = check(&replace_line(7, "  ttl: 5x"), &[]);
    let line = assert_error_at(&checked, 7);
    assert!(
        line.contains("5x"),
        "the message does not quote the value: {line:?}"
    );
}

/// The clean config plus a block-style `login.lockout` whose keys start at line 23.
fn with_lockout(keys: &[&str]) -> String {
    let mut lines = clean_lines();
    lines.push("login:".to_owned()); // 21
    lines.push("  lockout:".to_owned()); // 22
    lines.extend(keys.iter().map(|k| format!("    {k}")));
    text(&lines)
}

/// A full lockout with `ipv6_prefix: prefix` on line 26.
fn with_ipv6_prefix(prefix: &str) -> String {
    with_lockout(&[
        "failures: 5",
        "window: 15m",
        "duration: 15m",
        &format!("ipv6_prefix: {prefix}"),
    ])
}

#[test]
fn an_ipv6_lockout_prefix_between_1_and_128_is_accepted() {
    for prefix in ["1", "48", "64", "128"] {
        let checked = check(&with_ipv6_prefix(prefix), &["--strict"]);
        assert_eq!(checked.code, 0, "ipv6_prefix {prefix}: {checked:?}");
    }
}

#[test]
fn an_ipv6_lockout_prefix_outside_1_to_128_is_an_error_at_its_line_naming_the_range() {
    for prefix in ["0", "129", "4294967297"] {
        let checked = check(&with_ipv6_prefix(prefix), &[]);
        let line = assert_error_at(&checked, 26);
        assert!(
            line.contains("login.lockout.ipv6_prefix") && line.contains("128"),
            "ipv6_prefix {prefix}: the message does not name the key and range: {line:?}"
        );
    }
}

#[test]
fn the_per_subject_revocation_cap_must_be_between_1_and_10000() {
    let login =
        |cap: &str| append_line(&format!("login: {{ max_revocations_per_subject: {cap} }}"));
    for cap in ["0", "10001"] {
        let line = assert_error_at(&check(&login(cap), &[]), 21);
        assert!(
            line.contains("login.max_revocations_per_subject") && line.contains("10000"),
            "cap {cap}: {line:?}"
        );
    }
    for cap in ["1", "10000"] {
        let checked = check(&login(cap), &["--strict"]);
        assert_eq!(checked.code, 0, "cap {cap}: {checked:?}");
    }
}

#[test]
fn a_token_ttl_beyond_a_year_is_an_error_at_its_line_naming_the_key_and_the_maximum() {
    for ttl in ["999999999999h", "366d", "8785h", "99999999999999999999d"] {
        let checked = check(&replace_line(7, &format!("  ttl: {ttl}")), &[]);
        let line = assert_error_at(&checked, 7);
        assert!(
            line.contains("tokens.ttl") && line.contains("365d"),
            "ttl {ttl}: the message does not name the key and the maximum: {line:?}"
        );
    }
    let checked = check(&replace_line(7, "  ttl: 365d"), &[]);
    assert_eq!(checked.code, 0, "a year is allowed: {checked:?}");
}

#[test]
fn a_lockout_window_or_duration_beyond_a_year_is_an_error_at_its_line() {
    for (window, duration, key, at) in [
        ("15m", "999999999999h", "login.lockout.duration", 25),
        ("400d", "15m", "login.lockout.window", 24),
    ] {
        let yaml = with_lockout(&[
            "failures: 5",
            &format!("window: {window}"),
            &format!("duration: {duration}"),
        ]);
        let line = assert_error_at(&check(&yaml, &[]), at);
        assert!(
            line.contains(key) && line.contains("365d"),
            "the message does not name {key} and the maximum: {line:?}"
        );
    }
    let yaml = with_lockout(&["failures: 5", "window: 365d", "duration: 8760h"]);
    let checked = check(&yaml, &[]);
    assert_eq!(checked.code, 0, "a year is allowed: {checked:?}");
}

#[test]
fn a_timeout_beyond_a_day_is_an_error_at_its_line_naming_the_key_and_the_maximum() {
    for key in [
        "header_read_timeout",
        "idle_timeout",
        "body_read_timeout",
        "write_timeout",
        "shutdown_grace",
    ] {
        let yaml = format!("{}limits:\n  {key}: 25h\n", text(&clean_lines()));
        let line = assert_error_at(&check(&yaml, &[]), 22);
        assert!(
            line.contains(&format!("limits.{key}")) && line.contains("1d"),
            "the message does not name limits.{key} and the maximum: {line:?}"
        );
        let yaml = format!("{}limits:\n  {key}: 1d\n", text(&clean_lines()));
        assert_eq!(check(&yaml, &[]).code, 0, "{key}: a day is allowed");
    }
    for key in ["timeout", "connect_timeout"] {
        let upstream = format!("  app: {{ url: http://127.0.0.1:9000, {key}: 9999999999d }}");
        let line = assert_error_at(&check(&replace_line(15, &upstream), &[]), 15);
        assert!(
            line.contains("upstreams.app") && line.contains(key) && line.contains("1d"),
            "the message does not name the upstream's {key} and the maximum: {line:?}"
        );
    }
    let line = assert_error_at(&check(&insert_line(8, "  leeway: 2d"), &[]), 8);
    assert!(
        line.contains("tokens.leeway") && line.contains("1d"),
        "{line:?}"
    );
}

#[test]
fn an_argon2id_hash_with_a_salt_under_8_bytes_is_an_error_naming_the_user_and_its_line() {
    // `c2FsdA` is the 4-byte salt `salt`: argon2 cannot verify against it.
    let short = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$WRM+jGFRlegpsoIlTVNrQc+1XHa3/a1NZzkq1GFfarI";
    let user = format!("  bob: {{ password: \"{short}\", scopes: [write] }}");
    let checked = check(&replace_line(13, &user), &[]);
    let line = assert_error_at(&checked, 13);
    assert!(
        line.contains("bob") && line.contains("salt") && line.contains('8'),
        "the message does not name the user and the salt minimum: {line:?}"
    );
    assert!(!checked.all().contains(short), "check printed the hash");
    // Exactly 8 bytes (`saltsalt`) is enough.
    let eight = short.replace("c2FsdA", "c2FsdHNhbHQ");
    let user = format!("  bob: {{ password: \"{eight}\", scopes: [write] }}");
    let checked = check(&replace_line(13, &user), &["--strict"]);
    assert_eq!(checked.code, 0, "{checked:?}");
}

/// Route line 18 with `methods: [list]`.
fn read_route_with_methods(list: &str) -> String {
    replace_line(
        18,
        &format!(
            "  - {{ id: items-read, path: /items/**, methods: [{list}], upstream: app, scopes: [read] }}"
        ),
    )
}

#[test]
fn a_method_that_is_not_an_rfc_9110_method_is_an_error_at_its_line_naming_it() {
    for method in ["get", "Post", "DELET", "PROPFIND", "CONNECT", "TRACE"] {
        let checked = check(&read_route_with_methods(method), &[]);
        let line = assert_error_at(&checked, 18);
        assert!(line.contains(method), "{method}: {line:?}");
    }
}

#[test]
fn every_rfc_9110_method_and_patch_is_accepted_in_a_rule() {
    let yaml = append_line(
        "  - { id: all, path: /all/**, methods: [GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH], upstream: app, scopes: [read] }",
    );
    let checked = check(&yaml, &["--strict"]);
    assert_eq!(checked.code, 0, "{checked:?}");
}

#[test]
fn extra_methods_declares_extension_methods_that_rules_may_then_list() {
    let mut lines = clean_lines();
    lines.insert(
        0,
        "extra_methods: [PROPFIND, MKCOL, VERSION-CONTROL]".to_owned(),
    );
    lines.push(
        "  - { id: dav, path: /dav/**, methods: [PROPFIND, MKCOL, GET], upstream: app, scopes: [write] }"
            .to_owned(),
    );
    let checked = check(&text(&lines), &["--strict"]);
    assert_eq!(checked.code, 0, "{checked:?}");
    assert!(
        checked
            .stdout
            .lines()
            .any(|l| l.contains("dav") && l.contains("PROPFIND")),
        "{checked:?}"
    );
    // Declared, but still case-sensitive in rules.
    let last = lines.len() - 1;
    lines[last] = lines[last].replace("PROPFIND", "propfind");
    let line = assert_error_at(&check(&text(&lines), &[]), 22);
    assert!(line.contains("propfind"), "{line:?}");
}

#[test]
fn an_extra_method_that_is_not_an_uppercase_token_or_is_refused_anyway_is_an_error_at_its_line() {
    for method in [
        "propfind",
        "\"PROP FIND\"",
        "\"MKCOL;\"",
        "TRACE",
        "CONNECT",
        "GET",
    ] {
        let checked = check(&insert_line(1, &format!("extra_methods: [{method}]")), &[]);
        let line = assert_error_at(&checked, 1);
        assert!(
            line.contains("extra_methods") && line.contains(method.trim_matches('"')),
            "{method}: {line:?}"
        );
    }
    // Block style: the error names the entry's own line.
    let mut lines = clean_lines();
    lines.splice(
        0..0,
        ["extra_methods:", "  - PROPFIND", "  - mkcol"].map(str::to_owned),
    );
    let line = assert_error_at(&check(&text(&lines), &[]), 3);
    assert!(line.contains("mkcol"), "{line:?}");
}

#[test]
fn a_secret_shorter_than_32_bytes_is_an_error_at_its_line() {
    // 31 bytes: one short of the minimum.
    let checked = check(
        &replace_line(6, "  secret: \"0123456789abcdefghijklmnopqrstu\""),
        &[],
    );
    let line = assert_error_at(&checked, 6);
    assert!(
        line.contains("32"),
        "the message does not say the minimum: {line:?}"
    );
}

#[test]
fn a_secret_of_exactly_32_bytes_is_accepted() {
    let checked = check(
        &replace_line(6, "  secret: \"0123456789abcdefghijklmnopqrstuv\""),
        &[],
    );
    assert_eq!(checked.code, 0, "{checked:?}");
}

#[test]
fn a_missing_environment_variable_is_an_error_naming_it_and_its_line() {
    let checked = check(
        &replace_line(6, "  secret: ${PORTCULLIS_TEST_SURELY_UNSET_42}"),
        &[],
    );
    let line = assert_error_at(&checked, 6);
    assert!(
        line.contains("PORTCULLIS_TEST_SURELY_UNSET_42"),
        "the message does not name the variable: {line:?}"
    );
}

#[test]
fn an_environment_variable_that_is_set_is_substituted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.yaml");
    std::fs::write(
        &path,
        replace_line(6, "  secret: ${PORTCULLIS_TEST_SECRET_FOR_CHECK}"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["check", "-c"])
        .arg(&path)
        .env("PORTCULLIS_TEST_SECRET_FOR_CHECK", SECRET)
        .output()
        .expect("run check");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn invalid_yaml_syntax_is_an_error_at_its_line() {
    // An unclosed flow mapping: the parser can only notice on this line or the next.
    let checked = check(
        &replace_line(
            18,
            "  - { id: items-read, path: /items/**, methods: [GET], upstream: app, scopes: [read]",
        ),
        &[],
    );
    assert_eq!(checked.code, 1, "{checked:?}");
    let file = checked.path.display().to_string();
    let line = (18..=19)
        .find(|n| checked.stderr.contains(&format!("{file}:{n}:")))
        .unwrap_or_else(|| panic!("no position on line 18 or 19: {checked:?}"));
    assert_error_at(&checked, line);
}

#[test]
fn bad_indentation_is_an_error_at_its_line() {
    let checked = check(
        &replace_line(10, " write: { description: Write, implies: [read] }"),
        &[],
    );
    assert_error_at(&checked, 10);
}

#[test]
fn a_tab_in_indentation_is_an_error_at_its_line() {
    let checked = check(&replace_line(15, "\tapp: http://127.0.0.1:9000"), &[]);
    assert_error_at(&checked, 15);
}

#[test]
fn a_missing_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nope.yaml");
    let (code, stdout, stderr) = run_check(&path, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("nope.yaml"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Warnings, and `--strict`

/// A valid config with one thing to warn about: exit 0 and a warning line containing every
/// one of `mentions`; with `--strict`, exit 1.
fn assert_warns(yaml: &str, mentions: &[&str]) {
    let checked = check(yaml, &[]);
    assert_eq!(
        checked.code, 0,
        "a warning must not fail check without --strict: {checked:?}"
    );
    let warnings = checked.warnings();
    assert!(
        warnings
            .iter()
            .any(|w| mentions.iter().all(|m| w.contains(m))),
        "no warning mentioning {mentions:?}: {checked:?}"
    );
    let strict = check(yaml, &["--strict"]);
    assert_eq!(
        strict.code, 1,
        "--strict must fail on a warning: {strict:?}"
    );
}

#[test]
fn a_route_shadowed_by_an_earlier_one_is_warned_about_and_fails_strict() {
    let yaml = format!(
        "{}{}",
        append_line("  - { id: a-all, path: /a/**, upstream: app, public: true }"),
        "  - { id: a-b, path: /a/b, upstream: app, scopes: [write] }\n"
    );
    assert_warns(&yaml, &["a-b"]);
}

#[test]
fn a_route_not_covered_by_an_earlier_one_is_not_called_shadowed() {
    // `/a/b` first, then `/a/**`: both reachable.
    let yaml = format!(
        "{}{}",
        append_line("  - { id: a-b, path: /a/b, upstream: app, scopes: [write] }"),
        "  - { id: a-all, path: /a/**, upstream: app, public: true }\n"
    );
    let checked = check(&yaml, &["--strict"]);
    assert_eq!(checked.code, 0, "{checked:?}");
}

#[test]
fn a_scope_no_route_requires_is_warned_about_and_fails_strict() {
    assert_warns(&insert_line(11, "  delete: Delete things"), &["delete"]);
}

#[test]
fn an_upstream_no_route_uses_is_warned_about_and_fails_strict() {
    assert_warns(
        &insert_line(16, "  spare: http://127.0.0.1:9001"),
        &["spare"],
    );
}

#[test]
fn a_bcrypt_password_hash_is_warned_about_as_deprecated_and_fails_strict() {
    let hash = bcrypt::hash("carol-password", 4).expect("bcrypt");
    assert!(hash.starts_with("$2b$"), "{hash}");
    let yaml = insert_line(
        14,
        &format!("  carol: {{ password: \"{hash}\", scopes: [read] }}"),
    );
    let checked = check(&yaml, &[]);
    assert_eq!(checked.code, 0, "{checked:?}");
    assert!(
        checked.warnings().iter().any(|w| w.contains("carol")
            && (w.to_ascii_lowercase().contains("bcrypt")
                || w.to_ascii_lowercase().contains("deprecated"))),
        "no deprecated-hash warning naming carol: {checked:?}"
    );
    assert!(
        !checked.all().contains(&hash),
        "check printed the password hash: {checked:?}"
    );
    let strict = check(&yaml, &["--strict"]);
    assert_eq!(strict.code, 1, "{strict:?}");
}

#[test]
fn a_weak_argon2id_hash_is_warned_about_as_deprecated() {
    let weak = "$argon2id$v=19$m=4096,t=1,p=1$w87WW2eFT7vy9UDFIxPMUA$WRM+jGFRlegpsoIlTVNrQc+1XHa3/a1NZzkq1GFfarI";
    let yaml = insert_line(
        14,
        &format!("  dave: {{ password: \"{weak}\", scopes: [read] }}"),
    );
    assert_warns(&yaml, &["dave"]);
}

#[test]
fn strict_with_several_warnings_still_prints_them_all() {
    let yaml = insert_line(16, "  spare: http://127.0.0.1:9001");
    let mut lines: Vec<String> = yaml.lines().map(str::to_owned).collect();
    lines.insert(10, "  delete: Delete things".to_owned());
    let checked = check(&text(&lines), &["--strict"]);
    assert_eq!(checked.code, 1, "{checked:?}");
    let warnings = checked.warnings().join("\n");
    assert!(warnings.contains("spare"), "{checked:?}");
    assert!(warnings.contains("delete"), "{checked:?}");
}

#[cfg(not(feature = "otlp"))]
#[test]
fn trace_otlp_in_a_build_without_the_feature_is_an_error_saying_so() {
    let n = clean_lines().len() + 1;
    let yaml = format!(
        "{}trace:\n  otlp: {{ endpoint: \"http://127.0.0.1:4318/v1/traces\" }}\n",
        text(&clean_lines())
    );
    let checked = check(&yaml, &[]);
    let line = assert_error_at(&checked, n as u64 + 1);
    assert!(line.contains("lacks the `otlp` cargo feature"), "{line}");
}
