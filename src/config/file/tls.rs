//! The serde mirror of the TLS blocks: the listener's `tls:` and an upstream's `tls:`. Part of
//! [`super`], the only module that knows YAML.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// `tls:` — PEM certificate chain and private key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain (`${VAR}` allowed).
    #[schemars(with = "String")]
    pub cert: Spanned<String>,
    /// PEM private key (`${VAR}` allowed).
    #[schemars(with = "String")]
    pub key: Spanned<String>,
    /// A file of 32 to 4096 random bytes (e.g. `openssl rand 80`) that session ticket keys
    /// are derived from; every replica given the same file resumes the others' sessions.
    /// Omitted: random keys per process (`${VAR}` allowed).
    #[schemars(with = "Option<String>")]
    pub session_ticket_key: Option<Spanned<String>>,
}

/// `upstreams.<name>.tls:` — how the gateway verifies an `https://` upstream and, for mutual
/// TLS, which certificate it presents. There is no switch to skip verification.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// PEM bundle of CA certificates trusted for this upstream, replacing the system roots
    /// (`${VAR}` allowed; relative to this file).
    #[schemars(with = "Option<String>")]
    pub ca: Option<Spanned<String>>,
    /// Name sent as SNI and verified in the upstream's certificate (DNS name or IP address;
    /// default: the URL's host).
    #[schemars(with = "Option<String>")]
    pub server_name: Option<Spanned<String>>,
    /// PEM certificate chain presented to the upstream (mutual TLS; needs `client_key`).
    #[schemars(with = "Option<String>")]
    pub client_cert: Option<Spanned<String>>,
    /// PEM private key of `client_cert`.
    #[schemars(with = "Option<String>")]
    pub client_key: Option<Spanned<String>>,
}
