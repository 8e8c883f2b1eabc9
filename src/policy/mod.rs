//! The rules, as pure functions: request-target canonicalisation ([`path`]), route matching
//! ([`routes`]), scope vocabulary and requirements ([`authz`]), conditions on token claims
//! ([`claims`]), CORS grants and preflights ([`cors`]), the gateway's decision for a request
//! ([`decision`]) and its published `/.well-known/` documents ([`well_known`]), which the
//! server and `portcullis explain` share.
//!
//! Nothing here does I/O, reads a clock or touches process state: every input is a
//! parameter, so every rule is unit- and property-testable and `explain` can run it offline.
//! Must never import `pipeline`, `state`, `server` or `config`.

pub mod authz;
pub mod claim_path;
pub mod claims;
pub mod cors;
pub mod decision;
pub mod path;
pub mod rate_limit;
pub mod routes;
pub mod well_known;
