//! Command line: `run` (default), `check`, `explain`, `test`, `hash-password`, `schema`.

mod check;
mod explain;
mod gen_key;
mod rule_test;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::ops::log_sink::{self, LogSink, LogSinkGuard};
use crate::reload;
use crate::state::{Shared, Snapshot};

/// Portcullis: a TLS reverse-proxy authentication gateway.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version = VERSION, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (for `run` when no subcommand is given).
    #[arg(
        short,
        long,
        env = "PORTCULLIS_CONFIG",
        default_value = "gateway.yaml",
        global = true
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve (the default).
    Run,
    /// Validate the config; print routes, users, scopes and warnings. Exit 1 if invalid.
    Check {
        /// Treat warnings as errors.
        #[arg(long)]
        strict: bool,
        /// Also warn about routes that no case of these rule-test files reaches.
        #[arg(long, num_args = 1..)]
        tests: Vec<PathBuf>,
        /// `text` for people, `json` for CI annotations.
        #[arg(long, value_enum, default_value = "text")]
        format: check::CheckFormat,
        /// The version of the config now deployed (e.g. `git show HEAD:gateway.yaml`): fail
        /// if a signing key it has is removed while tokens it signed may still be valid.
        #[arg(long)]
        previous: Option<PathBuf>,
    },
    /// Run rule-test files: each case's request must get its expected decision. Exit 1 if
    /// any does not.
    Test {
        /// Rule-test files (YAML: `cases:` of request, who, expect).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// `text` prints one line per failing case; `junit` prints a JUnit XML report.
        #[arg(long, value_enum, default_value = "text")]
        format: TestFormat,
    },
    /// Show which rule matches METHOD PATH (as normalised) and the decision.
    Explain {
        method: String,
        path: String,
        /// Pretend the caller holds these scopes (comma-separated).
        #[arg(long, conflicts_with = "token", value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// Decide for this bearer token (its scopes and, for `claims:` conditions, its claims).
        #[arg(long)]
        token: Option<String>,
        /// The caller's token claims as a JSON object, for routes' `claims:` conditions (with
        /// `--scopes`; a `--token` brings its own).
        #[arg(long, conflicts_with = "token")]
        claims: Option<String>,
        /// The request's Host, for host-scoped rules (none: only rules without `host:` match,
        /// as for an HTTP/1.0 request without Host).
        #[arg(long)]
        host: Option<String>,
        /// The request's Origin: with OPTIONS and `--request-method`, explain a CORS
        /// preflight; otherwise, whether the answer would grant this origin.
        #[arg(long)]
        origin: Option<String>,
        /// A preflight's Access-Control-Request-Method.
        #[arg(long, requires = "origin")]
        request_method: Option<String>,
        /// A preflight's Access-Control-Request-Headers (comma-separated).
        #[arg(long, requires = "request_method")]
        request_headers: Option<String>,
    },
    /// Read a password from stdin and print its argon2id PHC string.
    HashPassword,
    /// Print the JSON Schema (draft 2020-12) of `gateway.yaml`, for editors and CI.
    Schema,
    /// Make a new private signing key for `tokens.keys` (PKCS#8 PEM, file mode 0600).
    GenKey {
        /// ES256 (P-256) or EdDSA (Ed25519).
        #[arg(long, value_enum)]
        alg: gen_key::KeyAlgorithm,
        /// Write the key to this new file (never overwritten); without it, print it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `--version`: the crate version and what it was built with, the enabled cargo features
/// included.
#[cfg(not(feature = "otlp"))]
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (cargo features: none; TLS: rustls with ring)"
);
#[cfg(feature = "otlp")]
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (cargo features: otlp; TLS: rustls with ring)"
);

/// How `portcullis test` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TestFormat {
    Text,
    Junit,
}

/// Run the parsed command; the exit code is the process's.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::Check {
            strict,
            tests,
            format,
            previous,
        } => check::check(
            &cli.config,
            &check::CheckOptions {
                strict,
                tests: &tests,
                format,
                previous: previous.as_deref(),
            },
        ),
        Command::Test { files, format } => {
            rule_test::test(&cli.config, &files, format == TestFormat::Junit)
        }
        Command::Explain {
            method,
            path,
            scopes,
            token,
            claims,
            host,
            origin,
            request_method,
            request_headers,
        } => {
            let request = explain::ExplainRequest {
                method: &method,
                target: &path,
                host: host.as_deref(),
                origin: origin.as_deref(),
                request_method: request_method.as_deref(),
                request_headers: request_headers.as_deref(),
            };
            explain::explain(&cli.config, &request, scopes, token, claims)
        }
        Command::HashPassword => hash_password(),
        Command::GenKey { alg, out } => gen_key::gen_key(alg, out.as_deref()),
        Command::Schema => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{}", crate::config::schema());
            ExitCode::SUCCESS
        }
    }
}

pub(crate) fn load_or_report(path: &Path) -> Option<Config> {
    match Config::load(path) {
        Ok(config) => Some(config),
        Err(err) => {
            eprintln!("error: {err}");
            None
        }
    }
}

/// Logs go through a dedicated writer thread so serving threads never block on stderr; the
/// returned guard flushes it on exit.
fn init_tracing(format: LogFormat) -> Option<LogSinkGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Buffered: the writer thread flushes once per batch it drains, so lines handed over one
    // at a time (threads that do not batch) share one write(2). A serving thread's 32 KiB
    // batch is larger than the buffer and goes straight through, without a copy.
    let stderr = std::io::BufWriter::with_capacity(16 * 1024, std::io::stderr());
    let (writer, guard) = match LogSink::start(log_sink::DEFAULT_LIMIT_BYTES, stderr) {
        Ok(pair) => pair,
        Err(err) => {
            eprintln!("error: cannot start the log writer: {err}");
            return None;
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(crate::ops::log_buffer::BatchingWriter::new(writer, format));
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    Some(guard)
}

fn run(path: &Path) -> ExitCode {
    let Some(config) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let _log_guard = init_tracing(config.log_format);
    if config.secret_is_random {
        tracing::warn!(
            "tokens.secret not set: using a random secret; tokens die with this process"
        );
    }
    if config.tls.is_none() {
        tracing::warn!("no `tls:` section: serving a self-signed development certificate");
    }
    let listen = config.listen;
    let admin = config.admin;
    let snapshot = match Snapshot::build(config, 1) {
        Ok(snapshot) => snapshot,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let shared = Shared::new(snapshot);
    let listeners = match crate::server::bind(listen, crate::server::default_workers()) {
        Ok(listeners) => listeners,
        Err(err) => {
            eprintln!("error: cannot listen on {listen}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        if let Some(admin) = admin {
            let admin_listener = tokio::net::TcpListener::bind(admin).await?;
            tracing::info!(address = %admin, "admin listener (healthz, readyz, metrics)");
            tokio::spawn(crate::server::admin::serve(admin_listener, shared.clone()));
        }
        let _watcher = reload::spawn(path.to_owned(), shared.clone());
        tracing::info!(address = %listen, workers = listeners.len(), "portcullis listening on https://{listen}");
        crate::server::run(listeners, shared, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        match rpassword::prompt_password("Password: ") {
            Ok(p) => p,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut text = String::new();
        if let Err(err) = stdin.lock().read_to_string(&mut text) {
            eprintln!("error: cannot read stdin: {err}");
            return ExitCode::FAILURE;
        }
        text.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        eprintln!("error: empty password");
        return ExitCode::FAILURE;
    }
    match crate::auth::password::hash_password(password.as_bytes()) {
        Ok(hash) => {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{hash}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
