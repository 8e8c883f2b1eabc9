//! What a client connection carries below the request pipeline: the raw HTTP/1 head facts
//! hyper hides ([`framing`] follows the stream, [`head`] judges each head), fed by an observing stream wrapper ([`observed_io`]); the
//! HTTP/2 idle timeout ([`idle`]); the stalled-reader write deadline ([`write_deadline`]);
//! and WebSocket [`tunnel`]s after a 101.
//!
//! Byte-level machinery with no knowledge of routes, tokens or config snapshots.
//! Must never import `pipeline`, `server` or `state`.

pub mod framing;
pub mod head;
pub mod idle;
pub mod observed_io;
pub mod tunnel;
pub mod write_deadline;
