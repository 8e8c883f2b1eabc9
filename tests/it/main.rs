//! The integration tests, as one test binary: every module below is a topic, and `common` is
//! the harness they share (a real gateway, real upstreams, real TLS clients, a test PKI and
//! independently minted tokens), compiled once for all of them.
//!
//! `cargo test` runs them all; `cargo test --test it tokens::` runs one topic.

mod common;

mod architecture;
mod browser;
mod check;
mod claims;
mod cli_auth;
mod cors;
mod deploy;
mod explain;
mod fleet;
mod headers;
mod hygiene;
mod issuers;
mod keys;
mod limits;
mod login;
mod ops;
mod otlp;
mod paths;
mod proxy;
mod rate_limits;
mod refresh;
mod reload;
mod routing;
mod rule_tests;
mod schema;
mod smoke;
mod smuggling;
mod threats;
mod tls_resumption;
mod tokens;
mod trace;
mod upstream_tls;
mod users;
mod websocket;
