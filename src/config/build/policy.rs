//! The policy blocks of the builder: `cors:` (top level and per route) and a route's
//! `claims:` conditions, each complaint at its own `file:line:col`.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::Method;

use super::file::{ClaimConditionFile, CorsFile, Spanned};
use super::methods::ExtraMethods;
use super::*;
use crate::policy::claim_path::ClaimPath;
use crate::policy::claims::{ClaimCondition, ClaimRules, ClaimTest, Scalar};
use crate::policy::cors::{parse_origin, CorsPolicy, CorsSpec, Origins};

/// Browsers cap a cached preflight lower still (Chromium at 2h); a longer value is a typo.
const MAX_CORS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

impl Builder {
    /// A `cors:` block; `key` names it in complaints (`cors`, `routes[3] (/x): cors`).
    pub(super) fn cors(
        &self,
        raw: &Spanned<CorsFile>,
        key: &str,
        extra_methods: &ExtraMethods,
    ) -> Result<Arc<CorsPolicy>, ConfigError> {
        let c = &raw.value;
        let mut origins = Vec::with_capacity(c.allow_origins.len());
        let mut any = false;
        for origin in &c.allow_origins {
            let text = parse_origin(&origin.value)
                .map_err(|e| self.at(origin, format!("{key}.allow_origins: {e}")))?;
            if text == "*" {
                any = true;
            } else {
                origins.push(HeaderValue::from_str(&text).map_err(|_| {
                    self.at(origin, format!("{key}.allow_origins: not header text"))
                })?);
            }
        }
        if any && !origins.is_empty() {
            return Err(self.at(
                raw,
                format!("{key}.allow_origins: `*` already grants every origin; list origins or give `*` alone"),
            ));
        }
        let methods = match &c.allow_methods {
            None => vec![Method::GET, Method::HEAD, Method::POST],
            Some(list) if list.is_empty() => {
                return Err(self.at(raw, format!("{key}.allow_methods: `[]` would refuse every preflight; omit it for GET, HEAD, POST")))
            }
            Some(list) => list
                .iter()
                .map(|m| {
                    extra_methods
                        .rule_method(&m.value)
                        .map_err(|e| self.at(m, format!("{key}.allow_methods: {e}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let header_names = |list: &[Spanned<String>], field: &str| {
            list.iter()
                .map(|h| {
                    if h.value == "*" {
                        return Err(self.at(h, format!("{key}.{field}: list header names; `*` is not accepted (it never covers `Authorization`)")));
                    }
                    HeaderName::from_bytes(h.value.as_bytes())
                        .map(|_| h.value.clone())
                        .map_err(|_| self.at(h, format!("{key}.{field}: `{}` is not a header name", h.value)))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let headers = match &c.allow_headers {
            None => vec!["Authorization".to_owned(), "Content-Type".to_owned()],
            Some(list) => header_names(list, "allow_headers")?,
        };
        let expose = header_names(&c.expose_headers, "expose_headers")?;
        let max_age = match &c.max_age {
            None => None,
            Some(v) => Some(
                self.required_duration(v, &format!("{key}.max_age"), MAX_CORS_MAX_AGE)?
                    .as_secs(),
            ),
        };
        let spec = CorsSpec {
            origins: if any {
                Origins::Any
            } else {
                Origins::List(origins)
            },
            methods,
            headers,
            expose,
            max_age_secs: max_age,
            credentials: c.allow_credentials,
        };
        CorsPolicy::new(spec)
            .map(Arc::new)
            .map_err(|e| self.at(raw, format!("{key}: {e}")))
    }

    /// A route's `claims:` list; `key` names the route in complaints.
    pub(super) fn claim_rules(
        &self,
        raw: &[Spanned<ClaimConditionFile>],
        key: &str,
    ) -> Result<ClaimRules, ConfigError> {
        raw.iter()
            .map(|spanned| {
                claim_condition(&spanned.value)
                    .map_err(|e| self.at(spanned, format!("{key}: claims: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(ClaimRules::new)
    }
}

fn claim_condition(c: &ClaimConditionFile) -> Result<ClaimCondition, String> {
    let path = ClaimPath::parse(&c.claim.value)?;
    let scalar = |value: &serde_json::Value, op: &str| {
        Scalar::from_value(value).ok_or_else(|| {
            format!(
                "`{path}`: `{op}` takes a string, number or boolean, not {}",
                kind(value)
            )
        })
    };
    let given = [
        c.equals.is_some(),
        c.any_of.is_some(),
        c.contains.is_some(),
        c.exists.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(format!(
            "`{path}`: give exactly one of `equals`, `any_of`, `contains`, `exists`"
        ));
    }
    let test = if let Some(v) = &c.equals {
        ClaimTest::Equals(scalar(v, "equals")?)
    } else if let Some(v) = &c.contains {
        ClaimTest::Contains(scalar(v, "contains")?)
    } else if let Some(v) = &c.any_of {
        let serde_json::Value::Array(items) = v else {
            return Err(format!("`{path}`: `any_of` takes a list, not {}", kind(v)));
        };
        if items.is_empty() {
            return Err(format!("`{path}`: `any_of: []` can never hold"));
        }
        ClaimTest::AnyOf(
            items
                .iter()
                .map(|item| scalar(item, "any_of"))
                .collect::<Result<_, _>>()?,
        )
    } else {
        match &c.exists {
            Some(serde_json::Value::Bool(b)) => ClaimTest::Exists(*b),
            Some(v) => {
                return Err(format!(
                    "`{path}`: `exists` takes true or false, not {}",
                    kind(v)
                ))
            }
            None => return Err(format!("`{path}`: no test")),
        }
    };
    Ok(ClaimCondition::new(path, test))
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// Every distinct claim path the routes' conditions read: what a verified identity keeps.
pub(super) fn claim_paths(routes: &[crate::policy::routes::Route]) -> Vec<ClaimPath> {
    let mut paths: Vec<ClaimPath> = Vec::new();
    for condition in routes.iter().flat_map(|r| r.claims.conditions()) {
        if !paths.contains(&condition.path) {
            paths.push(condition.path.clone());
        }
    }
    paths
}
