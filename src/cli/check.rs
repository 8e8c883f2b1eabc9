//! `portcullis check`: validate the config, print what it does and its warnings; with
//! `--tests`, also warn about routes no rule test reaches; with `--format json`, print one
//! JSON object for CI annotations instead.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;

use super::rule_test;
use crate::auth::keys::stranded_keys;
use crate::config::lint::{self, Warning};
use crate::config::{Config, ConfigError};
use crate::reload::describe_stranded;

/// How `check` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

/// What `check` was asked to do besides validating.
#[derive(Debug)]
pub struct CheckOptions<'a> {
    pub strict: bool,
    pub tests: &'a [PathBuf],
    pub format: CheckFormat,
    pub previous: Option<&'a Path>,
}

pub fn check(path: &Path, options: &CheckOptions<'_>) -> ExitCode {
    let CheckOptions {
        strict,
        tests,
        format,
        previous,
    } = *options;
    let config = match Config::load(path).and_then(|config| match previous {
        Some(previous) => removed_keys(path, &config, previous).map(|()| config),
        None => Ok(config),
    }) {
        Ok(config) => config,
        Err(err) => {
            match format {
                CheckFormat::Text => eprintln!("error: {err}"),
                CheckFormat::Json => print_json(path, Some(&err), &[], false),
            }
            return ExitCode::FAILURE;
        }
    };
    let report = lint::report(&config);
    let mut warnings = report.warnings;
    let (mut issuer_text, issuer_warnings) = probe_issuers(&config);
    // The report's text already lists these; only later warnings are printed separately.
    let listed = warnings.len();
    warnings.extend(issuer_warnings);
    let (state_text, state_warnings) = probe_state(&config);
    issuer_text.push_str(&state_text);
    warnings.extend(state_warnings);
    if !tests.is_empty() {
        match coverage(&config, tests) {
            Ok(unreached) => warnings.extend(unreached),
            Err(message) => {
                let err = ConfigError {
                    file: path.to_owned(),
                    position: None,
                    message,
                };
                match format {
                    CheckFormat::Text => eprintln!("error: {err}"),
                    CheckFormat::Json => print_json(path, Some(&err), &warnings, false),
                }
                return ExitCode::FAILURE;
            }
        }
    }
    let failing = strict && !warnings.is_empty();
    match format {
        CheckFormat::Json => print_json(path, None, &warnings, failing),
        CheckFormat::Text => {
            print!("{}{issuer_text}", report.text);
            for warning in &warnings[listed..] {
                println!("warning: {}", warning.message);
            }
            let file = path.display();
            match (warnings.len(), failing) {
                (0, _) => println!("{file}: OK"),
                (n, true) => println!("{file}: {n} warning(s), failing because of --strict"),
                (n, false) => println!("{file}: OK with {n} warning(s)"),
            }
        }
    }
    if failing {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// An error when `config` drops a signing key that `previous` has while tokens it signed may
/// still be valid.
fn removed_keys(path: &Path, config: &Config, previous: &Path) -> Result<(), ConfigError> {
    let before = Config::ring_states(previous)?;
    let now: Vec<_> = config
        .tokens
        .ring
        .keys()
        .iter()
        .map(|k| k.state())
        .collect();
    let lifetime = (config.tokens.ttl + config.tokens.leeway).as_secs();
    let clock = crate::clock::unix_now();
    let stranded = stranded_keys(&before, &now, lifetime, clock);
    if stranded.is_empty() {
        return Ok(());
    }
    Err(ConfigError {
        file: path.to_owned(),
        position: config.positions.keys.first().copied().flatten(),
        message: stranded
            .iter()
            .map(|key| describe_stranded(key, clock))
            .collect::<Vec<_>>()
            .join("; "),
    })
}

/// Fetch every external issuer's discovery and keys once and say what was found; an issuer
/// that cannot be reached is a warning (the gateway would start and keep retrying).
fn probe_issuers(config: &Config) -> (String, Vec<Warning>) {
    let mut text = String::new();
    let mut warnings = Vec::new();
    if config.issuers.is_empty() {
        return (text, warnings);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            text.push_str(&format!("issuers: not checked ({err})\n"));
            return (text, warnings);
        }
    };
    text.push_str(&format!("issuers ({}):\n", config.issuers.len()));
    for issuer in &config.issuers {
        let name = &issuer.policy.name;
        match runtime.block_on(crate::issuers::probe(issuer)) {
            Ok(probe) => text.push_str(&format!(
                "  {name:<16} {} — keys from {}: {}\n",
                issuer.policy.issuer,
                probe.jwks_uri,
                probe.keys.describe().join(", ")
            )),
            Err(err) => {
                text.push_str(&format!(
                    "  {name:<16} {} — unreachable\n",
                    issuer.policy.issuer
                ));
                warnings.push(Warning {
                    code: "issuer-unreachable",
                    position: None,
                    message: format!("issuer `{name}`: {err}"),
                });
            }
        }
    }
    (text, warnings)
}

/// Refresh tokens and where the shared state lives; with `state.redis`, one PING (an
/// unreachable Redis is a warning: it may be reachable only from where the gateway runs).
fn probe_state(config: &Config) -> (String, Vec<Warning>) {
    let mut text = String::new();
    let mut warnings = Vec::new();
    if let Some(refresh) = &config.refresh {
        let secs =
            |s: u64| crate::config::units::format_duration(std::time::Duration::from_secs(s));
        text.push_str(&format!(
            "refresh tokens: ttl {}, max lifetime {}, reuse grace {}\n",
            secs(refresh.ttl),
            secs(refresh.max_lifetime),
            secs(refresh.reuse_grace)
        ));
    }
    let crate::config::StateSettings::Redis(redis) = &config.state else {
        text.push_str("state: memory (this process)\n");
        return (text, warnings);
    };
    let url = crate::config::redact_url(&redis.url);
    let reached = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| err.to_string())
        .and_then(|runtime| {
            runtime.block_on(async {
                let state = crate::fleet::redis_state::RedisState::new(redis.clone())
                    .map_err(|err| err.to_string())?;
                state.probe().await.map_err(|err| err.to_string())
            })
        });
    match reached {
        Ok(()) => text.push_str(&format!(
            "state: redis {url} (prefix `{}`), reachable\n",
            redis.key_prefix
        )),
        Err(err) => {
            text.push_str(&format!(
                "state: redis {url} (prefix `{}`), unreachable\n",
                redis.key_prefix
            ));
            warnings.push(Warning {
                code: "state-unreachable",
                position: None,
                message: format!("state.redis: {url}: {err}"),
            });
        }
    }
    (text, warnings)
}

/// Routes that none of the rule tests in `tests` reach, as warnings.
fn coverage(config: &Config, tests: &[PathBuf]) -> Result<Vec<Warning>, String> {
    let outcomes = rule_test::run_files(config, tests)?;
    let routes = config.routes.routes();
    Ok(rule_test::unreached_routes(config, &outcomes)
        .into_iter()
        .map(|index| Warning {
            code: "route-untested",
            position: config.positions.routes.get(index).copied().flatten(),
            message: format!(
                "route #{} `{}` ({}) is reached by no rule test",
                index + 1,
                routes[index].id,
                routes[index].pattern
            ),
        })
        .collect())
}

/// `{"file", "valid", "errors": [...], "warnings": [...]}` with `file`, `line`, `column`,
/// `code` and `message` on each entry (`line`/`column` null where unknown).
fn print_json(path: &Path, error: Option<&ConfigError>, warnings: &[Warning], failing: bool) {
    let errors: Vec<_> = error
        .map(|err| {
            json!({
                "file": err.file.display().to_string(),
                "line": err.position.map(|(line, _)| line),
                "column": err.position.map(|(_, column)| column),
                "code": "invalid-config",
                "message": err.message,
            })
        })
        .into_iter()
        .collect();
    let warnings: Vec<_> = warnings
        .iter()
        .map(|w| {
            json!({
                "file": path.display().to_string(),
                "line": w.position.map(|(line, _)| line),
                "column": w.position.map(|(_, column)| column),
                "code": w.code,
                "message": w.message,
            })
        })
        .collect();
    let report = json!({
        "file": path.display().to_string(),
        "valid": error.is_none() && !failing,
        "errors": errors,
        "warnings": warnings,
    });
    println!("{report}");
}
