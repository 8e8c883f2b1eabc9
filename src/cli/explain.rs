//! `portcullis explain METHOD PATH`: the decision the gateway would take, computed by the
//! same functions the server calls ([`crate::policy::decision::evaluate`]), with the status
//! it would answer.

use std::path::Path;
use std::process::ExitCode;

use crate::auth::bearer::identify;
use crate::config::Config;
use crate::error::Failure;
use crate::policy::authz::ScopeSet;
use crate::policy::decision::{self, Described, Destination, Permit, Rules};

/// What `explain` is asked about.
pub struct ExplainRequest<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub host: Option<&'a str>,
    /// `Origin`: with `OPTIONS` and `request_method`, a CORS preflight; otherwise whether the
    /// answer would carry `Access-Control-Allow-Origin`.
    pub origin: Option<&'a str>,
    /// `Access-Control-Request-Method` of a preflight.
    pub request_method: Option<&'a str>,
    /// `Access-Control-Request-Headers` of a preflight.
    pub request_headers: Option<&'a str>,
}

/// The rules of `config`, as the decision functions take them.
pub fn rules(config: &Config) -> Rules<'_> {
    Rules {
        routes: &config.routes,
        login_path: &config.login.path,
        vocabulary: &config.vocabulary,
    }
}

pub fn explain(
    path: &Path,
    request: &ExplainRequest<'_>,
    scopes: Option<Vec<String>>,
    token: Option<String>,
    claims: Option<String>,
) -> ExitCode {
    let Some(config) = super::load_or_report(path) else {
        return ExitCode::FAILURE;
    };
    let Ok(method) = http::Method::from_bytes(request.method.as_bytes()) else {
        eprintln!("error: `{}` is not an HTTP method token", request.method);
        return ExitCode::FAILURE;
    };
    let claims = match claims
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
    {
        None => None,
        Some(Ok(value)) if value.is_object() => Some(value),
        Some(_) => {
            eprintln!("error: `--claims` takes a JSON object, e.g. '{{\"org\": {{\"id\": 42}}}}'");
            return ExitCode::FAILURE;
        }
    };
    let (granted, token_claims) = match granted_scopes(&config, scopes, token) {
        Some((granted, kept)) => (Some(granted), kept),
        None => (None, None),
    };
    let claims = claims.or(token_claims);
    if let (Some(origin), Some(asked), true) = (
        request.origin,
        request.request_method,
        method == http::Method::OPTIONS,
    ) {
        if let Some(code) = explain_preflight(&config, request, origin, asked) {
            return code;
        }
    }
    let verdict = decision::evaluate(
        rules(&config),
        Described {
            method: &method,
            host: request.host,
            target: request.target,
            granted: granted.as_ref(),
            claims: claims.as_ref(),
        },
    );
    let target_path = request.target.split('?').next().unwrap_or(request.target);
    println!(
        "path:     {}",
        verdict.path.as_deref().unwrap_or(target_path)
    );
    match &verdict.destination {
        None => {}
        Some(Destination::OptionsStar) => {
            println!("decision: 204 No Content (OPTIONS * is answered by the gateway)");
            return ExitCode::SUCCESS;
        }
        Some(Destination::Login) => println!("endpoint: login (served by the gateway)"),
        Some(Destination::Logout) => println!("endpoint: logout (served by the gateway)"),
        Some(Destination::Revoke) => println!("endpoint: revoke (served by the gateway)"),
        Some(Destination::WellKnown(_)) => {
            println!("endpoint: published document (served by the gateway, no token)")
        }
        Some(Destination::NoRoute) => println!("route:    none"),
        Some(Destination::Route { index, route }) => {
            println!("route:    #{} {} ({})", index + 1, route.id, route.pattern);
        }
    }
    match (&verdict.outcome, &verdict.destination) {
        (Err(failure), _) => print_refusal(failure),
        (Ok(Some(permit)), Some(Destination::Route { route, .. })) => {
            let upstream = route.upstream.as_deref().unwrap_or("?");
            let why = match permit {
                Permit::Public => "public route",
                Permit::ScopesSatisfied => "scopes satisfied",
            };
            println!("decision: forwarded to `{upstream}` ({why})");
        }
        (Ok(_), Some(Destination::Login)) => println!("decision: answered by the login endpoint"),
        (Ok(_), Some(Destination::WellKnown(_))) => {
            println!("decision: answered by the gateway (published document)")
        }
        (Ok(_), Some(Destination::Revoke)) => {
            println!("decision: answered by the revocation endpoint")
        }
        (Ok(_), _) => println!("decision: answered by the logout endpoint"),
    }
    if let (Some(origin), Some(destination)) = (request.origin, &verdict.destination) {
        let policy = decision::cors_policy(destination, config.cors.as_deref());
        match (policy, http::HeaderValue::from_str(origin)) {
            (None, _) => println!("cors:     no policy here: no CORS headers are added"),
            (Some(_), Err(_)) => println!("cors:     `{origin}` is not a valid Origin value"),
            (Some(policy), Ok(value)) => match policy.allow_origin(&value) {
                Some(allowed) => println!(
                    "cors:     Access-Control-Allow-Origin: {} (Vary: Origin)",
                    allowed.to_str().unwrap_or("")
                ),
                None => println!("cors:     origin not allowed: no CORS headers"),
            },
        }
    }
    ExitCode::SUCCESS
}

/// A preflight (`OPTIONS` + `--origin` + `--request-method`), decided as the server does:
/// routed as the method it asks about, answered under the CORS policy that governs it. `None`
/// when no policy governs it: then it is an ordinary `OPTIONS`, explained as such.
fn explain_preflight(
    config: &Config,
    request: &ExplainRequest<'_>,
    origin: &str,
    asked: &str,
) -> Option<ExitCode> {
    let Ok(asked) = http::Method::from_bytes(asked.as_bytes()) else {
        eprintln!("error: `{asked}` is not an HTTP method token");
        return Some(ExitCode::FAILURE);
    };
    let host = match request.host.map(decision::routing_host).transpose() {
        Ok(host) => host.unwrap_or_default(),
        Err(failure) => {
            print_refusal(&failure);
            return Some(ExitCode::SUCCESS);
        }
    };
    let target = request.target.split('?').next().unwrap_or(request.target);
    let routed = match decision::route(&config.routes, &config.login.path, &asked, &host, target) {
        Ok(routed) => routed,
        Err(failure) => {
            print_refusal(&failure);
            return Some(ExitCode::SUCCESS);
        }
    };
    let policy = decision::cors_policy(&routed.destination, config.cors.as_deref())?;
    println!("path:     {}", routed.path);
    if let Destination::Route { index, route } = &routed.destination {
        println!("route:    #{} {} ({})", index + 1, route.id, route.pattern);
    }
    println!("preflight: {asked} from {origin}");
    let Ok(origin) = http::HeaderValue::from_str(origin) else {
        eprintln!("error: `{origin}` is not a valid Origin value");
        return Some(ExitCode::FAILURE);
    };
    let headers = request
        .request_headers
        .and_then(|h| http::HeaderValue::from_str(h).ok());
    match decision::preflight(
        &routed.destination,
        policy,
        &origin,
        &asked,
        headers.as_ref(),
    ) {
        Ok(allowed) => {
            println!("decision: 204 No Content (preflight answered by the gateway, not forwarded)");
            println!(
                "cors:     Access-Control-Allow-Origin: {}",
                allowed.to_str().unwrap_or("")
            );
            println!(
                "cors:     Access-Control-Allow-Methods: {}",
                policy.allow_methods().to_str().unwrap_or("")
            );
            if let Some(allowed) = policy.allow_headers() {
                println!(
                    "cors:     Access-Control-Allow-Headers: {}",
                    allowed.to_str().unwrap_or("")
                );
            }
            if policy.credentials() {
                println!("cors:     Access-Control-Allow-Credentials: true");
            }
        }
        Err(failure) => print_refusal(&failure),
    }
    Some(ExitCode::SUCCESS)
}

/// The caller's scopes, expanded through `implies`: given with `--scopes`, or from a token
/// checked as the server checks it (signature, claims, the user store; revocations live
/// only in the running server and are not known here), with the claims the routes'
/// conditions read.
fn granted_scopes(
    config: &Config,
    scopes: Option<Vec<String>>,
    token: Option<String>,
) -> Option<(ScopeSet, Option<serde_json::Value>)> {
    match (scopes, token) {
        (Some(list), _) => Some((
            config.vocabulary.expand(list.iter().map(String::as_str)),
            None,
        )),
        (None, Some(token)) => {
            if let Some(issuer) = external_issuer(config, &token) {
                println!(
                    "token:    from external issuer `{issuer}`: its keys are fetched by the running gateway, not here; give --scopes instead"
                );
                return None;
            }
            let keys = crate::auth::jwt::TokenKeys::new(config.tokens.clone());
            let now = crate::clock::unix_now();
            let keep = &config.claim_paths;
            match identify(&keys, &config.vocabulary, &config.users, &token, now, keep) {
                Ok(identity) => {
                    println!(
                        "token:    valid, sub={}, scope={}",
                        identity.token.subject, identity.scopes_header
                    );
                    let claims = identity.token.claims.clone();
                    Some((identity.granted.clone(), Some(claims)))
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
fn print_refusal(failure: &Failure) {
    let status = failure.status();
    println!(
        "decision: {} {} ({})",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        failure.description()
    );
}

/// The configured external issuer a token claims to come from, if any.
fn external_issuer(config: &Config, token: &str) -> Option<String> {
    let head = crate::auth::jwt::read_head(token).ok()?;
    let iss = crate::auth::bearer::claimed_issuer(&head).ok()??;
    config
        .issuers
        .iter()
        .find(|issuer| issuer.policy.issuer == iss)
        .map(|issuer| issuer.policy.name.clone())
}
