//! The authentication side of the command line: `portcullis hash-password` produces hashes the
//! gateway accepts, and `portcullis explain` reports the decision a request would get.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const OWASP_PREFIX: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

fn portcullis() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.env_remove("PORTCULLIS_CONFIG");
    cmd
}

/// Run `portcullis hash-password` with `stdin` piped in.
fn hash_password(stdin: &str) -> Output {
    let mut child = portcullis()
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fixture config (no `tls:`: a dev certificate is fine for the CLI) in a temp dir.
fn fixture_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, fixture_yaml("http://127.0.0.1:9")).unwrap();
    (dir, path)
}

/// `portcullis explain -c FILE METHOD PATH EXTRA…`: (exit code, stdout + stderr).
fn explain(config: &Path, method: &str, path: &str, extra: &[&str]) -> (Option<i32>, String) {
    let out = portcullis()
        .arg("explain")
        .arg("-c")
        .arg(config)
        .arg(method)
        .arg(path)
        .args(extra)
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// The lines of `text` that mention `word` (case-insensitive).
fn lines_with<'a>(text: &'a str, word: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.to_ascii_lowercase().contains(word))
        .collect()
}

fn decision(text: &str) -> String {
    let lines = lines_with(text, "decision");
    assert!(!lines.is_empty(), "no decision line in:\n{text}");
    lines.join("\n")
}

// ---------------------------------------------------------------------------------------------
// hash-password

#[tokio::test]
async fn hash_password_prints_an_owasp_argon2id_hash_that_the_gateway_accepts() {
    let password = "correct horse battery staple";
    let out = hash_password(&format!("{password}\n"));
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let hash = text.trim();
    assert!(hash.starts_with(OWASP_PREFIX), "{hash}");
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text:?}");
    assert!(!text.contains(password), "the password is never printed");

    let up = Upstream::start().await;
    let yaml = fixture_yaml(&up.url()).replace(
        "users:\n",
        &format!("users:\n  carol: {{ password: \"{hash}\", scopes: [write] }}\n"),
    );
    let gw = Gateway::start(&yaml).await;
    let c = gw.h1();
    // The trailing newline from stdin was not part of the password.
    let newline = format!("{password}\n");
    let (right, with_newline) =
        tokio::join!(c.login("carol", password), c.login("carol", &newline));
    assert_eq!(right.status, 200, "{}", right.text());
    assert_eq!(right.json()["scope"], "write");
    assert_eq!(with_newline.status, 400, "{}", with_newline.text());
    assert_eq!(with_newline.json()["error"], "invalid_grant");
}

#[test]
fn hash_password_salts_every_hash_and_refuses_empty_input() {
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| hash_password("same password\n"));
        let b = s.spawn(|| hash_password("same password\n"));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (a, b) = (stdout(&a), stdout(&b));
    assert!(a.starts_with(OWASP_PREFIX) && b.starts_with(OWASP_PREFIX));
    assert_ne!(a.trim(), b.trim(), "a fresh random salt each time");
    let empty = hash_password("");
    assert!(!empty.status.success(), "empty password must fail");
    assert!(
        !stdout(&empty).contains("$argon2"),
        "no hash for empty input"
    );
}

// ---------------------------------------------------------------------------------------------
// explain

#[test]
fn explain_with_enough_scopes_names_the_normalised_path_the_route_and_forwards() {
    let (_dir, config) = fixture_file();
    let (code, text) = explain(&config, "GET", "/api/x", &["--scopes", "read"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("/api/x"), "{text}");
    assert!(text.contains("api-read"), "route id: {text}");
    let d = decision(&text);
    assert!(d.to_ascii_lowercase().contains("forward"), "{d}");
    assert!(!d.contains("401") && !d.contains("403"), "{d}");
    // The query string is not part of matching.
    let (_, text) = explain(&config, "GET", "/api/x?debug=1", &["--scopes", "read"]);
    assert!(text.contains("api-read"), "{text}");
}

#[test]
fn explain_reports_403_naming_the_missing_scope_and_401_without_credentials() {
    let (_dir, config) = fixture_file();
    let (_, text) = explain(&config, "DELETE", "/api/x", &["--scopes", "write"]);
    assert!(text.contains("api-delete"), "route id: {text}");
    let d = decision(&text);
    assert!(d.contains("403") && d.contains("admin"), "{d}");
    let (_, text) = explain(&config, "POST", "/api/x", &["--scopes", "read"]);
    let d = decision(&text);
    assert!(d.contains("403") && d.contains("write"), "{d}");
    // `write` implies `read`; `admin` implies everything.
    let (_, text) = explain(&config, "GET", "/api/x", &["--scopes", "write"]);
    assert!(
        decision(&text).to_ascii_lowercase().contains("forward"),
        "{text}"
    );
    let (_, text) = explain(&config, "DELETE", "/api/x", &["--scopes", "admin"]);
    assert!(
        decision(&text).to_ascii_lowercase().contains("forward"),
        "{text}"
    );
    // Scopes are whole words.
    let (_, text) = explain(&config, "GET", "/api/x", &["--scopes", "readadmin"]);
    assert!(decision(&text).contains("403"), "{text}");
    // No scopes and no token: 401.
    let (_, text) = explain(&config, "GET", "/api/x", &[]);
    let d = decision(&text);
    assert!(d.contains("401"), "{d}");
    assert!(!d.to_ascii_lowercase().contains("forwarded to"), "{d}");
}

#[test]
fn explain_decides_on_the_normalised_path() {
    let (_dir, config) = fixture_file();
    let (_, text) = explain(&config, "GET", "/public/../admin/x", &["--scopes", "read"]);
    assert!(text.contains("/admin/x"), "{text}");
    let route = lines_with(&text, "route").join("\n");
    assert!(
        route.contains("admin") && !route.contains("public"),
        "matched /admin/**, not /public/**: {route}"
    );
    let d = decision(&text);
    assert!(d.contains("403") && d.contains("admin"), "{d}");
    let (_, text) = explain(&config, "GET", "/public/../admin/x", &[]);
    assert!(decision(&text).contains("401"), "{text}");
    // Encoded dot segments too.
    let (_, text) = explain(&config, "GET", "/public/%2e%2e/admin/x", &[]);
    assert!(decision(&text).contains("401"), "{text}");
    // Repeated slashes are merged.
    let (_, text) = explain(&config, "GET", "//api///x", &["--scopes", "read"]);
    assert!(text.contains("api-read"), "{text}");
}

#[test]
fn explain_refuses_ambiguous_paths_with_400_and_reports_deny_and_404() {
    let (_dir, config) = fixture_file();
    for path in ["/a%2Fb", "/api/a%2Fb", "/api/a%00b", "/api/a%5Cb"] {
        let (_, text) = explain(&config, "GET", path, &["--scopes", "admin"]);
        let d = decision(&text);
        assert!(d.contains("400"), "{path}: {d}");
        assert!(!d.to_ascii_lowercase().contains("forward"), "{path}: {d}");
    }
    let (_, text) = explain(&config, "GET", "/internal/x", &["--scopes", "admin"]);
    assert!(decision(&text).contains("403"), "{text}");
    let (_, text) = explain(&config, "GET", "/publicity", &["--scopes", "admin"]);
    assert!(decision(&text).contains("404"), "{text}");
}

#[test]
fn explain_with_a_token_decides_on_its_verified_scopes() {
    let (_dir, config) = fixture_file();
    let bob = fixture_token("bob", "read write");
    let (code, text) = explain(&config, "GET", "/api/x", &["--token", &bob]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("api-read"), "{text}");
    assert!(
        decision(&text).to_ascii_lowercase().contains("forward"),
        "{text}"
    );
    let (_, text) = explain(&config, "DELETE", "/api/x", &["--token", &bob]);
    let d = decision(&text);
    assert!(d.contains("403") && d.contains("admin"), "{d}");
    // A forged token grants nothing.
    let forged = mint(
        Alg::Hs256,
        &serde_json::json!({"alg":"HS256","typ":"at+jwt"}),
        &fixture_claims("root", "admin"),
        b"not-the-secret-0123456789-abcdefghijklmnop",
    );
    let (_, text) = explain(&config, "GET", "/admin/x", &["--token", &forged]);
    let d = decision(&text);
    assert!(d.contains("401"), "{d}");
    assert!(!d.to_ascii_lowercase().contains("forwarded to"), "{d}");
    // An expired token grants nothing either.
    let mut claims = fixture_claims("root", "admin");
    claims["exp"] = serde_json::json!(now() - 3600);
    claims["iat"] = serde_json::json!(now() - 4000);
    let expired = mint(
        Alg::Hs256,
        &serde_json::json!({"alg":"HS256","typ":"at+jwt"}),
        &claims,
        SECRET.as_bytes(),
    );
    let (_, text) = explain(&config, "GET", "/admin/x", &["--token", &expired]);
    assert!(decision(&text).contains("401"), "{text}");
}
