//! The serde mirror of the policy blocks: `cors:` (top level and per route) and a route's
//! `claims:` conditions. Part of [`super`], the only module that knows YAML.

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// `cors:` — cross-origin access granted by the gateway. At the top level: the default for
/// routes without their own and the policy of the gateway's endpoints (login, logout,
/// `/.well-known/`); on a route: that route's, replacing the default.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsFile {
    /// Origins granted, exactly as browsers send them (`https://app.example`,
    /// `http://localhost:3000`); `"*"` for any origin (not with `allow_credentials`); `"null"`
    /// only when listed. `[]`: the gateway owns CORS here and grants nothing.
    #[schemars(with = "Vec<String>")]
    pub allow_origins: Vec<Spanned<String>>,
    /// Methods a preflight may ask for (default `[GET, HEAD, POST]`).
    #[schemars(with = "Option<Vec<String>>")]
    pub allow_methods: Option<Vec<Spanned<String>>>,
    /// Request headers a preflight may ask for (default `[Authorization, Content-Type]`).
    #[schemars(with = "Option<Vec<String>>")]
    pub allow_headers: Option<Vec<Spanned<String>>>,
    /// Response headers the page may read, besides `WWW-Authenticate` and `Retry-After`
    /// (always exposed).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub expose_headers: Vec<Spanned<String>>,
    /// How long browsers may cache a preflight answer (duration, at most 1d).
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Spanned<String>>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies and TLS client certificates
    /// cross-origin); needs listed origins.
    #[serde(default)]
    pub allow_credentials: bool,
}

/// One condition of a route's `claims:`: a dotted `claim` path and exactly one of `equals`,
/// `any_of`, `contains` or `exists`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimConditionFile {
    /// Dotted path into the token's claims, e.g. `org.id`, `realm_access.roles`.
    #[schemars(with = "String")]
    pub claim: Spanned<String>,
    /// The claim is this string, number or boolean (same type).
    #[schemars(with = "Option<ScalarSchema>")]
    pub equals: Option<serde_json::Value>,
    /// The claim is one of these.
    #[schemars(with = "Option<Vec<ScalarSchema>>")]
    pub any_of: Option<serde_json::Value>,
    /// The claim is an array holding this member.
    #[schemars(with = "Option<ScalarSchema>")]
    pub contains: Option<serde_json::Value>,
    /// `true`: the claim is present (not null); `false`: it is absent.
    #[schemars(with = "Option<bool>")]
    pub exists: Option<serde_json::Value>,
}

/// A value a claim condition compares with (for the schema only).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ScalarSchema {
    String(String),
    Number(f64),
    Bool(bool),
}
