//! Command line: `run` (default), `check`, `explain`, `hash-password`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::auth::bearer::identify;
use crate::config::{lint, Config, LogFormat};
use crate::error::Failure;
use crate::ops::log_sink::{self, LogSink, LogSinkGuard};
use crate::policy::authz::ScopeSet;
use crate::policy::decision::{Destination, Permit};
use crate::reload;
use crate::state::{Shared, Snapshot};

/// Portcullis: a TLS reverse-proxy authentication gateway.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
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
    },
    /// Show which rule matches METHOD PATH (as normalised) and the decision.
    Explain {
        method: String,
        path: String,
        /// Pretend the caller holds these scopes (comma-separated).
        #[arg(long, conflicts_with = "token", value_delimiter = ',')]
        scopes: Option<Vec<String>>,
        /// Decide for this bearer token.
        #[arg(long)]
        token: Option<String>,
        /// The request's Host, for host-scoped rules (none: only rules without `host:` match,
        /// as for an HTTP/1.0 request without Host).
        #[arg(long)]
        host: Option<String>,
    },
    /// Read a password from stdin and print its argon2id PHC string.
    HashPassword,
}

/// Run the parsed command; the exit code is the process's.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run(&cli.config),
        Command::Check { strict } => check(&cli.config, strict),
        Command::Explain {
            method,
            path,
            scopes,
            token,
            host,
        } => {
            let request = ExplainRequest {
                method: &method,
                target: &path,
                host: host.as_deref(),
            };
            explain(&cli.config, &request, scopes, token)
        }
        Command::HashPassword => hash_password(),
    }
}

fn load_or_report(path: &Path) -> Option<Config> {
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
    // Buffered: the writer thread flushes once per batch it drains, so under load many
    // lines share one write(2) instead of one each.
    let stderr = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
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

fn check(path: &Path, strict: bool) -> ExitCode {
    let Some(config) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let report = lint::report(&config);
    print!("{}", report.text);
    if report.warnings.is_empty() {
        println!("{}: OK", path.display());
        ExitCode::SUCCESS
    } else if strict {
        println!(
            "{}: {} warning(s), failing because of --strict",
            path.display(),
            report.warnings.len()
        );
        ExitCode::FAILURE
    } else {
        println!(
            "{}: OK with {} warning(s)",
            path.display(),
            report.warnings.len()
        );
        ExitCode::SUCCESS
    }
}

/// What `explain` is asked about.
struct ExplainRequest<'a> {
    method: &'a str,
    target: &'a str,
    host: Option<&'a str>,
}

/// Print the decision the gateway would take, computed by the same functions the server
/// calls ([`crate::policy::decision`]), with the status it would answer.
fn explain(
    path: &Path,
    request: &ExplainRequest<'_>,
    scopes: Option<Vec<String>>,
    token: Option<String>,
) -> ExitCode {
    let Some(config) = load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let Ok(method) = http::Method::from_bytes(request.method.as_bytes()) else {
        eprintln!("error: `{}` is not an HTTP method token", request.method);
        return ExitCode::FAILURE;
    };
    let target_path = request.target.split('?').next().unwrap_or(request.target);
    let host = match request
        .host
        .map(crate::policy::decision::routing_host)
        .transpose()
    {
        Ok(host) => host.unwrap_or_default(),
        Err(failure) => return print_refusal(&failure),
    };
    let routed = match crate::policy::decision::route(
        &config.routes,
        &config.login.path,
        &method,
        &host,
        target_path,
    ) {
        Ok(routed) => routed,
        Err(failure) => {
            println!("path:     {target_path}");
            return print_refusal(&failure);
        }
    };
    println!("path:     {}", routed.path);
    let endpoint = match routed.destination {
        Destination::OptionsStar => {
            println!("decision: 204 No Content (OPTIONS * is answered by the gateway)");
            return ExitCode::SUCCESS;
        }
        Destination::Login => "login",
        Destination::Logout => "logout",
        Destination::NoRoute => {
            println!("route:    none");
            return print_refusal(&Failure::NotFound);
        }
        Destination::Route { index, route } => {
            println!("route:    #{} {} ({})", index + 1, route.id, route.pattern);
            let granted = granted_scopes(&config, scopes, token);
            let decision =
                crate::policy::decision::decide(route, granted.as_ref(), &config.vocabulary);
            return match decision {
                Ok(permit) => {
                    let upstream = route.upstream.as_deref().unwrap_or("?");
                    let why = match permit {
                        Permit::Public => "public route",
                        Permit::ScopesSatisfied => "scopes satisfied",
                    };
                    println!("decision: forwarded to `{upstream}` ({why})");
                    ExitCode::SUCCESS
                }
                Err(failure) => print_refusal(&failure),
            };
        }
    };
    println!("endpoint: {endpoint} (served by the gateway)");
    match crate::policy::decision::check_endpoint_method(&method) {
        Ok(()) => println!("decision: answered by the {endpoint} endpoint"),
        Err(failure) => {
            print_refusal(&failure);
        }
    }
    ExitCode::SUCCESS
}

/// The caller's scopes, expanded through `implies`: given with `--scopes`, or from a token
/// checked as the server checks it (signature, claims, the user store; revocations live
/// only in the running server and are not known here).
fn granted_scopes(
    config: &Config,
    scopes: Option<Vec<String>>,
    token: Option<String>,
) -> Option<ScopeSet> {
    match (scopes, token) {
        (Some(list), _) => Some(config.vocabulary.expand(list.iter().map(String::as_str))),
        (None, Some(token)) => {
            let keys = crate::auth::jwt::TokenKeys::new(config.tokens.clone());
            let now = crate::clock::unix_now();
            match identify(&keys, &config.vocabulary, &config.users, &token, now) {
                Ok(identity) => {
                    println!(
                        "token:    valid, sub={}, scope={}",
                        identity.token.subject, identity.scopes_header
                    );
                    Some(identity.granted.clone())
                }
                Err(err) => {
                    println!("token:    invalid ({err})");
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// A refusal as the gateway answers it: status, reason phrase and the body's description.
fn print_refusal(failure: &Failure) -> ExitCode {
    let status = failure.status();
    println!(
        "decision: {} {} ({})",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        failure.description()
    );
    ExitCode::SUCCESS
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
