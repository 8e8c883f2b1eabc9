//! Portcullis: a TLS reverse-proxy authentication gateway.
//!
//! It terminates TLS, serves an OAuth2 password-grant login endpoint that issues signed JWT
//! access tokens, validates the bearer token on every request, applies per-route scope rules
//! from `gateway.yaml`, and streams allowed requests to unmodified upstream apps with identity
//! headers no client can forge.
//!
//! # Layout
//! - [`config`]: `gateway.yaml` → validated [`config::Config`]; `check` lint; hot reload.
//! - [`state`]: one immutable [`state::Snapshot`] per config generation behind one pointer.
//! - [`server`]: thread-per-core workers, TLS handshake deadline, ALPN, graceful drain;
//!   [`conn_activity`]: the HTTP/2 idle timeout.
//! - [`service`]: the request pipeline; [`error`] turns every failure into a response;
//!   [`framing`]: the raw HTTP/1 head facts hyper hides.
//! - [`path`], [`routes`], [`authz`]: pure canonicalisation, matching and scope logic;
//!   [`decision`]: the one decision function the server and `explain` share.
//! - [`auth`]: tokens, password hashing, the login endpoint; [`limit`]: lockouts, revocations.
//! - [`proxy`], [`headers`], [`echo`]: forwarding, header hygiene, the built-in echo upstream;
//!   [`tunnel`]: upgraded (WebSocket) connections.
//! - [`request_body`]: slow-body deadline and size cap; [`write_deadline`]: stalled readers.
//! - [`admin`], [`metrics`] ([`request_stats`] sharded per thread), [`access_log`]: operations.
//!
//! # Life of a request
//! snapshot → hygiene (CONNECT/TRACE 405, Host rules) → normalise target (400) → login or
//! logout endpoint? → match route (404, `deny` 403) → authenticate bearer (401) → authorise
//! scopes (403) → rebuild headers → forward with the body guarded (408/413; 502/504) →
//! access log.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod authz;
pub mod body;
pub mod cli;
pub mod config;
pub mod conn_activity;
pub mod decision;
pub mod echo;
pub mod error;
pub mod framing;
pub mod headers;
pub mod limit;
pub mod log_buffer;
pub mod log_sink;
pub mod metrics;
pub mod observed_io;
pub mod path;
pub mod proxy;
pub mod request_body;
pub mod request_stats;
pub mod routes;
pub mod server;
pub mod service;
pub mod state;
pub mod tls;
pub mod tunnel;
pub mod write_deadline;

pub use server::{bind, run};
