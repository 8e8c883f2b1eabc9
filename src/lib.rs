//! Portcullis: a TLS reverse-proxy authentication gateway.
//!
//! It terminates TLS, serves an OAuth2 password-grant login endpoint that issues signed JWT
//! access tokens, validates the bearer token on every request, applies per-route scope rules
//! from `gateway.yaml`, and streams allowed requests to unmodified upstream apps with identity
//! headers no client can forge.
//!
//! The layers, top to bottom (a module imports only from layers below it; see
//! `docs/ARCHITECTURE.md` for the codemap, the life of a request and the invariants):
//! - [`cli`]: the `portcullis` commands; [`reload`]: SIGHUP and file-watch reloads.
//! - [`server`]: listeners, thread-per-core workers, the connection loop, the admin listener.
//! - [`pipeline`]: [`pipeline::handle`] runs a request through its phases.
//! - [`state`]: one immutable [`state::Snapshot`] per config generation behind one pointer,
//!   plus the process-wide tables that outlive reloads.
//! - [`config`]: `gateway.yaml` → a validated [`config::Config`]; [`tls`]: certificates.
//! - [`forward`]: upstream client, header hygiene, body limits; [`ops`]: metrics and logs;
//!   [`conn`]: per-connection machinery below HTTP (raw-head facts, deadlines, tunnels).
//! - [`auth`]: tokens, passwords, lockouts, revocations; [`policy`]: pure routing and access
//!   decisions.
//! - [`error`]: every failure and its response; [`body`]: the response body; [`clock`].

#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod error;
pub mod fleet;
pub mod forward;
pub mod issuers;
pub mod ops;
pub mod pipeline;
pub mod policy;
pub mod reload;
pub mod server;
pub mod state;
pub mod tls;

pub use server::{bind, run};
