//! Test harness, one concern per file: the test CA and certificates (`pki.rs`), a real gateway
//! on 127.0.0.1:0 started through the library entry point and its config fixtures
//! (`gateway.rs`), real TLS clients speaking HTTP/1.1 and HTTP/2 (`client.rs`), raw bytes over
//! TLS and their parsed answers (`raw.rs`), real upstreams on 127.0.0.1:0 (`upstream.rs`) and
//! tokens signed independently of the gateway's code (`mint.rs`), a mock identity
//! provider serving discovery and keys over TLS (`idp.rs`), a real `redis-server` (`redis.rs`),
//! the binary run as a command (`binary.rs`) and as a server process (`process.rs`).
//!
//! Everything is re-exported here, so tests `use crate::common::*`.

mod binary;
mod client;
mod gateway;
mod idp;
mod mint;
mod pki;
mod process;
mod raw;
mod redis;
mod upstream;

pub use binary::*;
pub use client::*;
pub use gateway::*;
pub use idp::*;
pub use mint::*;
pub use pki::*;
pub use process::*;
pub use raw::*;
pub use redis::*;
pub use upstream::*;
