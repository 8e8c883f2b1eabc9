//! The routing half of the builder: extension methods and the route table.

use super::file::Spanned;
use super::methods::ExtraMethods;
use super::units::parse_size;
use super::*;
use crate::policy::authz::{Requirement, Vocabulary};
use crate::policy::claims::ClaimRules;
use crate::policy::cors::CorsPolicy;
use crate::policy::rate_limit::RateLimit;
use crate::policy::routes::{Access, Route, RouteTable};
use std::collections::HashSet;
use std::sync::Arc;

/// What a route inherits from the top level unless it says otherwise.
#[derive(Clone, Copy, Default)]
pub(super) struct RouteDefaults<'a> {
    pub(super) rate_limit: Option<&'a Arc<RateLimit>>,
    pub(super) cors: Option<&'a Arc<CorsPolicy>>,
}

impl Builder {
    pub(super) fn extra_methods(
        &self,
        raw: &[Spanned<String>],
    ) -> Result<ExtraMethods, ConfigError> {
        let mut extra = ExtraMethods::default();
        for name in raw {
            extra
                .declare(&name.value)
                .map_err(|e| self.at(name, format!("extra_methods: {e}")))?;
        }
        Ok(extra)
    }

    pub(super) fn routes(
        &self,
        raw: &[Spanned<file::RouteFile>],
        vocabulary: &Vocabulary,
        upstreams: &ByName<Upstream>,
        extra_methods: &ExtraMethods,
        issuers: &[IssuerSettings],
        defaults: RouteDefaults<'_>,
    ) -> Result<RouteTable, ConfigError> {
        let mut routes = Vec::with_capacity(raw.len());
        let mut ids = HashSet::new();
        for (index, spanned) in raw.iter().enumerate() {
            let r = &spanned.value;
            let here = |message: String| {
                self.at(spanned, format!("routes[{index}] ({}): {message}", r.path))
            };
            let id =
                r.id.clone()
                    .unwrap_or_else(|| format!("route-{}", index + 1));
            if !ids.insert(id.clone()) {
                return Err(here(format!("duplicate route id `{id}`")));
            }
            let access = route_access(r, vocabulary).map_err(here)?;
            let upstream = match (&r.upstream, &access) {
                (None, Access::Deny) => None,
                (None, _) => return Err(here("`upstream` is required unless `deny: true`".into())),
                (Some(name), _) if !upstreams.contains_key(name) => {
                    return Err(here(format!("unknown upstream `{name}`")))
                }
                (Some(name), _) => Some(name.clone()),
            };
            let methods = match &r.methods {
                None => None,
                Some(list) if list.is_empty() => {
                    return Err(here(
                        "`methods: []` would match nothing; omit it for any method".into(),
                    ))
                }
                // Each complaint names the method's own line.
                Some(list) => Some(
                    list.iter()
                        .map(|m| {
                            extra_methods.rule_method(&m.value).map_err(|e| {
                                self.at(m, format!("routes[{index}] ({}): {e}", r.path))
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            let host = r
                .host
                .as_ref()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase());
            let max_body_size = match r.max_body_size.as_deref().map(parse_size) {
                None => None,
                Some(Ok(0)) => return Err(here("max_body_size: must be at least 1B".into())),
                Some(Ok(bytes)) => Some(bytes),
                Some(Err(e)) => return Err(here(format!("max_body_size: {e}"))),
            };
            let route_issuers = match &r.issuers {
                None => None,
                Some(names) if names.is_empty() => {
                    return Err(here(
                        "`issuers: []` would accept no token; omit it for all".into(),
                    ))
                }
                Some(names) => {
                    for name in names {
                        if name != LOCAL_ISSUER && !issuers.iter().any(|i| &i.policy.name == name) {
                            return Err(here(format!(
                                "unknown issuer `{name}` (`local` or a name under `issuers:`)"
                            )));
                        }
                    }
                    Some(names.clone())
                }
            };
            let rate_limit = match (&r.rate_limit, &access) {
                (_, Access::Deny) => None,
                (None, _) => defaults.rate_limit.cloned(),
                (Some(file::RouteRateLimitFile::Off(false)), _) => None,
                (Some(file::RouteRateLimitFile::Off(true)), _) => {
                    return Err(here(
                        "rate_limit: give a limit `{ requests, per }` or `false`".into(),
                    ))
                }
                (Some(file::RouteRateLimitFile::Limit(limit)), _) => Some(Arc::new(
                    rate_limit(limit).map_err(|e| here(format!("rate_limit: {e}")))?,
                )),
            };
            let claims = match &r.claims {
                None => ClaimRules::default(),
                Some(list) if list.is_empty() => {
                    return Err(here("`claims: []` says nothing; omit it".into()))
                }
                Some(_) if !matches!(access, Access::Scopes(_)) => {
                    return Err(here(
                        "`claims:` needs a token: give it with `scopes:` or `any_scopes:`".into(),
                    ))
                }
                Some(list) => self.claim_rules(list, &format!("routes[{index}] ({})", r.path))?,
            };
            let cors = match &r.cors {
                None => defaults.cors.cloned(),
                Some(block) => Some(self.cors(
                    block,
                    &format!("routes[{index}] ({}): cors", r.path),
                    extra_methods,
                )?),
            };
            routes.push(Route {
                claims,
                cors,
                issuers: route_issuers,
                rate_limit,
                id,
                pattern: r.path.clone(),
                methods,
                host,
                case_insensitive: r.case_insensitive,
                access,
                upstream,
                max_body_size,
            });
        }
        RouteTable::compile(routes).map_err(|(index, e)| {
            let at = raw.get(index).map(|s| &s.referenced);
            self.err(at, format!("routes[{index}]: {e}"))
        })
    }
}

/// Exactly one of `public`, `deny`, or scopes: forgetting a line must never open a path.
fn route_access(r: &file::RouteFile, vocabulary: &Vocabulary) -> Result<Access, String> {
    let wants_scopes = r.scopes.is_some() || r.any_scopes.is_some();
    match (r.public, r.deny, wants_scopes) {
        (false, false, false) => Err(
            "say who may pass: `public: true`, `deny: true`, or `scopes:` / `any_scopes:`".into(),
        ),
        (true, false, false) => Ok(Access::Public),
        (false, true, false) => Ok(Access::Deny),
        (false, false, true) => {
            let ids = |names: &Option<Vec<String>>| -> Result<Vec<_>, String> {
                names
                    .iter()
                    .flatten()
                    .map(|n| {
                        vocabulary.id(n).ok_or_else(|| {
                            format!("unknown scope `{n}` (declare it under `scopes:`)")
                        })
                    })
                    .collect()
            };
            let all = ids(&r.scopes)?;
            let any = ids(&r.any_scopes)?;
            if matches!(&r.any_scopes, Some(list) if list.is_empty()) {
                return Err("`any_scopes: []` can never be satisfied; omit it".into());
            }
            Ok(Access::Scopes(Requirement {
                all: vocabulary.set_of(&all),
                any: vocabulary.set_of(&any),
            }))
        }
        _ => Err("`public`, `deny` and `scopes`/`any_scopes` exclude each other; pick one".into()),
    }
}

/// A `rate_limit:` block, validated: at least one request, a period of 1 ms to 1 day.
pub(super) fn rate_limit(raw: &file::RateLimitFile) -> Result<RateLimit, String> {
    if raw.requests == 0 {
        return Err("`requests` must be at least 1".into());
    }
    let period = parse_duration(&raw.per, Duration::from_secs(24 * 3600))
        .map_err(|e| format!("per: {e}"))?;
    if period.is_zero() {
        return Err("`per` must be positive".into());
    }
    let burst = raw.burst.unwrap_or(raw.requests);
    if burst == 0 {
        return Err("`burst` must be at least 1".into());
    }
    Ok(RateLimit {
        requests: raw.requests,
        period,
        burst,
        headers: raw.headers,
    })
}
