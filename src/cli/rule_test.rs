//! `portcullis test FILE…`: rule tests. Each case is a request as an operator describes it
//! and the decision it must get; every case runs through [`crate::policy::decision::evaluate`],
//! the functions the server decides with, without a server or an upstream.
//!
//! ```yaml
//! cases:
//!   - name: readers list items          # optional
//!     request: GET /items/42
//!     host: api.example.com             # optional
//!     scopes: [read:items]              # or `user: alex`, or `anonymous: true` (the default)
//!     claims: { org: { id: 42 } }       # optional: the token's claims, for `claims:` rules
//!     expect: allow items-read          # `allow`, `allow <route id>`, or 400/401/403/404/405
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;

use crate::config::file::{self, Spanned};
use crate::config::Config;
use crate::policy::authz::ScopeSet;
use crate::policy::decision::{self, Described, Destination};

/// The shape of a rule-test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasesFile {
    cases: Vec<Spanned<CaseFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    name: Option<String>,
    request: String,
    host: Option<String>,
    scopes: Option<Vec<String>>,
    user: Option<String>,
    #[serde(default)]
    anonymous: bool,
    /// The caller's token claims, for routes' `claims:` conditions.
    claims: Option<serde_json::Value>,
    expect: ExpectFile,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ExpectFile {
    Status(u16),
    Text(String),
}

/// What a case expects, or what it got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Served: forwarded on a route or answered by a gateway endpoint, named by id.
    Allow(Option<String>),
    Status(u16),
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Decision::Allow(None) => f.write_str("allow"),
            Decision::Allow(Some(id)) => write!(f, "allow {id}"),
            Decision::Status(status) => write!(f, "{status}"),
        }
    }
}

/// Statuses a decision can end in before any upstream is involved.
const DECIDED_STATUSES: [u16; 6] = [204, 400, 401, 403, 404, 405];

/// One case, ready to run.
struct Case {
    file: PathBuf,
    line: u64,
    label: String,
    method: http::Method,
    target: String,
    host: Option<String>,
    granted: Option<ScopeSet>,
    claims: Option<serde_json::Value>,
    expect: Decision,
}

/// A case's result.
pub struct Outcome {
    label: String,
    file: PathBuf,
    line: u64,
    expected: String,
    actual: String,
    /// The rule that decided, for the failure line.
    decided_by: String,
    passed: bool,
    /// The route the request matched, if any (0-based), for coverage.
    pub route: Option<usize>,
}

/// Load every case of `files` (validated against `config`) and run it.
pub fn run_files(config: &Config, files: &[PathBuf]) -> Result<Vec<Outcome>, String> {
    let mut outcomes = Vec::new();
    for path in files {
        for case in load(config, path)? {
            outcomes.push(run_case(config, case));
        }
    }
    Ok(outcomes)
}

fn load(config: &Config, path: &Path) -> Result<Vec<Case>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let parsed: CasesFile = file::parse(&text).map_err(|e| match e.location {
        Some((line, col)) => format!("{}:{line}:{col}: {}", path.display(), e.message),
        None => format!("{}: {}", path.display(), e.message),
    })?;
    parsed
        .cases
        .iter()
        .map(|case| {
            let line = case.referenced.line();
            build_case(config, path, line, &case.value)
                .map_err(|why| format!("{}:{line}: {why}", path.display()))
        })
        .collect()
}

fn build_case(config: &Config, path: &Path, line: u64, raw: &CaseFile) -> Result<Case, String> {
    let (method, target) = raw
        .request
        .split_once(' ')
        .ok_or("`request` is `METHOD TARGET`, e.g. `GET /items/1`")?;
    let method = http::Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("`{method}` is not an HTTP method token"))?;
    let vocabulary = &config.vocabulary;
    let granted = match (&raw.scopes, &raw.user, raw.anonymous) {
        (Some(scopes), None, false) => {
            if let Some(unknown) = scopes.iter().find(|s| vocabulary.id(s).is_none()) {
                return Err(format!("unknown scope `{unknown}`"));
            }
            Some(vocabulary.expand(scopes.iter().map(String::as_str)))
        }
        (None, Some(user), false) => {
            let record = config
                .users
                .get(&user.to_ascii_lowercase())
                .ok_or_else(|| format!("unknown user `{user}`"))?;
            // A disabled user's tokens are refused: they decide as an anonymous caller.
            (!record.disabled).then(|| record.holds.clone())
        }
        (None, None, _) => None,
        _ => return Err("give one of `scopes`, `user` or `anonymous: true`".into()),
    };
    if raw.claims.as_ref().is_some_and(|c| !c.is_object()) {
        return Err("`claims` is a mapping: the token's claims, e.g. `{ org: { id: 42 } }`".into());
    }
    let expect = match &raw.expect {
        ExpectFile::Status(status) => Decision::Status(*status),
        ExpectFile::Text(text) => match text.split_once(' ') {
            None if text == "allow" => Decision::Allow(None),
            Some(("allow", id)) => Decision::Allow(Some(id.trim().to_owned())),
            _ => Decision::Status(text.parse().map_err(|_| bad_expect(text))?),
        },
    };
    if let Decision::Status(status) = expect {
        if !DECIDED_STATUSES.contains(&status) {
            return Err(bad_expect(&status.to_string()));
        }
    }
    Ok(Case {
        file: path.to_owned(),
        line,
        label: raw.name.clone().unwrap_or_else(|| raw.request.clone()),
        method,
        target: target.trim().to_owned(),
        host: raw.host.clone(),
        granted,
        claims: raw.claims.clone(),
        expect,
    })
}

fn bad_expect(text: &str) -> String {
    format!("`expect: {text}`: use `allow`, `allow <route id>` or one of 400, 401, 403, 404, 405")
}

fn run_case(config: &Config, case: Case) -> Outcome {
    let verdict = decision::evaluate(
        super::explain::rules(config),
        Described {
            method: &case.method,
            host: case.host.as_deref(),
            target: &case.target,
            granted: case.granted.as_ref(),
            claims: case.claims.as_ref(),
        },
    );
    let (route, decided_by) = match &verdict.destination {
        Some(Destination::Route { index, route }) => (
            Some(*index),
            format!("rule #{} {} ({})", index + 1, route.id, route.pattern),
        ),
        Some(Destination::NoRoute) => (None, "no rule matches".to_owned()),
        Some(Destination::Login) => (None, "the login endpoint".to_owned()),
        Some(Destination::Logout) => (None, "the logout endpoint".to_owned()),
        Some(Destination::Revoke) => (None, "the revocation endpoint".to_owned()),
        Some(Destination::OptionsStar) => (None, "OPTIONS *".to_owned()),
        Some(Destination::WellKnown(_)) => (None, "a published document".to_owned()),
        None => (None, "refused before routing".to_owned()),
    };
    let actual = match (&verdict.outcome, &verdict.destination) {
        (Err(failure), _) => Decision::Status(failure.status().as_u16()),
        (Ok(_), Some(Destination::OptionsStar)) => Decision::Status(204),
        (Ok(_), Some(Destination::Route { route, .. })) => Decision::Allow(Some(route.id.clone())),
        (Ok(_), Some(Destination::Login)) => Decision::Allow(Some("login".into())),
        (Ok(_), Some(Destination::WellKnown(_))) => Decision::Allow(Some("well-known".into())),
        (Ok(_), Some(Destination::Revoke)) => Decision::Allow(Some("revoke".into())),
        (Ok(_), _) => Decision::Allow(Some("logout".into())),
    };
    let passed = match (&case.expect, &actual) {
        (Decision::Allow(None), Decision::Allow(_)) => true,
        (expected, actual) => expected == actual,
    };
    let actual_text = match &verdict.outcome {
        Err(failure) => format!("{actual} ({})", failure.description()),
        Ok(_) => actual.to_string(),
    };
    Outcome {
        label: case.label,
        file: case.file,
        line: case.line,
        expected: case.expect.to_string(),
        actual: actual_text,
        decided_by,
        passed,
        route,
    }
}

/// `portcullis test`: one line per failing case, then a summary; exit 1 on any failure.
pub fn test(config_path: &Path, files: &[PathBuf], junit: bool) -> ExitCode {
    let Some(config) = super::load_or_report(config_path) else {
        return ExitCode::FAILURE;
    };
    let outcomes = match run_files(&config, files) {
        Ok(outcomes) => outcomes,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    if junit {
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = write!(std::io::stdout(), "{}", junit_report(&outcomes));
    } else {
        for o in outcomes.iter().filter(|o| !o.passed) {
            println!(
                "{}:{}: {}: expected {}, got {} (decided by {})",
                o.file.display(),
                o.line,
                o.label,
                o.expected,
                o.actual,
                o.decided_by
            );
        }
        println!("{} cases, {failed} failed", outcomes.len());
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Routes (0-based) that no case of `outcomes` reached.
pub fn unreached_routes(config: &Config, outcomes: &[Outcome]) -> Vec<usize> {
    let reached: BTreeSet<usize> = outcomes.iter().filter_map(|o| o.route).collect();
    (0..config.routes.routes().len())
        .filter(|index| !reached.contains(index))
        .collect()
}

/// A JUnit XML report: one test suite per file, one test case per rule test.
fn junit_report(outcomes: &[Outcome]) -> String {
    let mut files: Vec<&Path> = Vec::new();
    for o in outcomes {
        if !files.contains(&o.file.as_path()) {
            files.push(&o.file);
        }
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total_failed = outcomes.iter().filter(|o| !o.passed).count();
    let _ = writeln!(
        out,
        "<testsuites name=\"portcullis rule tests\" tests=\"{}\" failures=\"{total_failed}\">",
        outcomes.len()
    );
    for path in files {
        let cases: Vec<&Outcome> = outcomes.iter().filter(|o| o.file == path).collect();
        let failed = cases.iter().filter(|o| !o.passed).count();
        let name = xml(&path.display().to_string());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{name}\" tests=\"{}\" failures=\"{failed}\">",
            cases.len()
        );
        for o in cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{name}\" name=\"{}\" file=\"{name}\" line=\"{}\"",
                xml(&o.label),
                o.line
            );
            if o.passed {
                out.push_str("/>\n");
            } else {
                let message = format!("expected {}, got {}", o.expected, o.actual);
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{}:{}: decided by {}</failure>\n    </testcase>",
                    xml(&message),
                    name,
                    o.line,
                    xml(&o.decided_by)
                );
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Escape text for XML attributes and content.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Most control characters cannot appear in XML 1.0 at all, escaped or not.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_and_quotes() {
        assert_eq!(
            xml(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }
}
