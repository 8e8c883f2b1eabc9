//! Bearer JWT validation (THREATS J-01…J-26): what makes the gateway refuse a token, and the
//! controls that show each refusal is about the property under test.

mod claims;
mod encoding;
mod header;
