//! Forwarding to upstreams: each serving thread's pooled HTTP/1.1 connections, plain and over
//! TLS ([`client`]), the exchange under its deadline and response rewriting ([`proxy`]),
//! header hygiene in both directions ([`headers`]), the client body's size cap and slow-body
//! deadline ([`request_body`]) and the built-in echo upstream ([`echo`]).
//!
//! Knows nothing of tokens or rules: it is handed a request that was already allowed.
//! Must never import `pipeline`, `state` or `auth`.

pub mod client;
pub mod echo;
pub mod headers;
pub mod proxy;
pub mod request_body;
pub mod trace;
