//! Cross-origin resource sharing as the gateway answers it: which origins a route (or the
//! gateway's own endpoints) grants, and the preflight check. The header values are rendered
//! once, when the config is built; a request only compares and clones them.
//!
//! Pure: no I/O. `null` is granted only when `allow_origins` lists it literally (never by `*`),
//! and `*` is answered as `*`, never as the caller's origin echoed.

use http::header::HeaderValue;
use http::Method;

use crate::error::CorsRefusal;

/// Response headers always readable by the page on a granted origin: the bearer challenge
/// (401/403) and when to retry (429/503), besides those the config adds.
pub const ALWAYS_EXPOSED: [&str; 2] = ["WWW-Authenticate", "Retry-After"];

/// The `Vary` of every preflight answer, granted or not.
pub const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// Which origins are granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// `*`: any origin but `null`, answered `Access-Control-Allow-Origin: *`.
    Any,
    /// Exactly these serialized origins (`https://app.example`, or `null` when listed).
    List(Vec<HeaderValue>),
}

/// A validated CORS policy: a route's `cors:` or the top-level default.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    origins: Origins,
    methods: Vec<Method>,
    /// Lowercase header names a preflight may ask for.
    headers: Vec<String>,
    credentials: bool,
    /// Rendered once: `Access-Control-Allow-Methods`, `-Allow-Headers`, `-Expose-Headers`,
    /// `-Max-Age`.
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose_headers: HeaderValue,
    max_age: Option<HeaderValue>,
}

/// The settings a policy is built from (validated by the config layer).
#[derive(Debug, Clone)]
pub struct CorsSpec {
    pub origins: Origins,
    pub methods: Vec<Method>,
    /// Header names, any case.
    pub headers: Vec<String>,
    pub expose: Vec<String>,
    pub max_age_secs: Option<u64>,
    pub credentials: bool,
}

impl CorsPolicy {
    /// Render the policy. `Err` for a combination browsers refuse or that would grant too
    /// much: `*` with credentials, `null` with credentials, values that are not header text.
    pub fn new(spec: CorsSpec) -> Result<CorsPolicy, String> {
        if spec.credentials {
            match &spec.origins {
                Origins::Any => {
                    return Err("`allow_origins: [\"*\"]` cannot be combined with `allow_credentials: true`; list the origins".into())
                }
                Origins::List(list) if list.iter().any(|o| o == "null") => {
                    return Err("the `null` origin (sandboxed frames, `file:` pages, redirects) cannot be granted with `allow_credentials: true`".into())
                }
                Origins::List(_) => {}
            }
        }
        let value = |text: String| {
            HeaderValue::from_str(&text).map_err(|_| format!("`{text}` is not a header value"))
        };
        let join = |items: &mut dyn Iterator<Item = &str>| items.collect::<Vec<_>>().join(", ");
        let allow_methods = value(join(&mut spec.methods.iter().map(Method::as_str)))?;
        let allow_headers = match spec.headers.is_empty() {
            true => None,
            false => Some(value(join(&mut spec.headers.iter().map(String::as_str)))?),
        };
        let mut exposed: Vec<&str> = ALWAYS_EXPOSED.to_vec();
        for name in &spec.expose {
            if !exposed.iter().any(|e| e.eq_ignore_ascii_case(name)) {
                exposed.push(name);
            }
        }
        let expose_headers = value(join(&mut exposed.into_iter()))?;
        Ok(CorsPolicy {
            origins: spec.origins,
            methods: spec.methods,
            headers: spec
                .headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            credentials: spec.credentials,
            allow_methods,
            allow_headers,
            expose_headers,
            max_age: spec.max_age_secs.map(HeaderValue::from),
        })
    }

    /// The `Access-Control-Allow-Origin` value for `origin`, when it is granted: `*`, or the
    /// origin itself (a clone of the request's value: no copy of its bytes).
    pub fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any if origin != "null" => Some(HeaderValue::from_static("*")),
            Origins::Any => None,
            Origins::List(list) => list.iter().any(|o| o == origin).then(|| origin.clone()),
        }
    }

    /// A preflight asking for `method` with `request_headers`
    /// (`Access-Control-Request-Headers`, a comma-separated list) from `origin`: the
    /// `Access-Control-Allow-Origin` to answer with, or why it gets none.
    pub fn check_preflight(
        &self,
        origin: &HeaderValue,
        method: &Method,
        request_headers: Option<&HeaderValue>,
    ) -> Result<HeaderValue, CorsRefusal> {
        let allow_origin = self.allow_origin(origin).ok_or(CorsRefusal::Origin)?;
        if !self.methods.contains(method) {
            return Err(CorsRefusal::Method);
        }
        if let Some(list) = request_headers {
            let list = list.to_str().map_err(|_| CorsRefusal::Headers)?;
            let allowed = |name: &str| self.headers.iter().any(|h| h.eq_ignore_ascii_case(name));
            if !list
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .all(allowed)
            {
                return Err(CorsRefusal::Headers);
            }
        }
        Ok(allow_origin)
    }

    pub fn credentials(&self) -> bool {
        self.credentials
    }

    /// Header values rendered at config build, cloned per answer.
    pub fn allow_methods(&self) -> HeaderValue {
        self.allow_methods.clone()
    }

    pub fn allow_headers(&self) -> Option<HeaderValue> {
        self.allow_headers.clone()
    }

    pub fn expose_headers(&self) -> HeaderValue {
        self.expose_headers.clone()
    }

    pub fn max_age(&self) -> Option<HeaderValue> {
        self.max_age.clone()
    }

    pub fn allow_credentials(&self) -> Option<HeaderValue> {
        self.credentials.then(|| HeaderValue::from_static("true"))
    }

    /// Whether a preflight could ever be granted (`allow_origins: []` turns CORS off for a
    /// route while the gateway still owns it).
    pub fn grants_nothing(&self) -> bool {
        matches!(&self.origins, Origins::List(list) if list.is_empty())
    }
}

/// Check `text` as an `allow_origins` entry: `*`, `null`, or a serialized origin
/// (`scheme://host[:port]`, lowercase, no path, no default port) as browsers send it.
pub fn parse_origin(text: &str) -> Result<String, String> {
    if text == "*" || text == "null" {
        return Ok(text.to_owned());
    }
    let bad = |why: &str| format!("`{text}` is not an origin: {why}");
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| bad("write `https://host` or `https://host:port`"))?;
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return Err(bad("the scheme must be `http` or `https`")),
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '*']) {
        return Err(bad(
            "no path, query, user or wildcard; browsers send only scheme://host[:port]",
        ));
    }
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad("browsers send origins in lowercase"));
    }
    let host = match rest.rsplit_once(':') {
        // An IPv6 literal without a port: `[::1]`.
        Some((host, port)) if !port.ends_with(']') => {
            if port == default_port {
                return Err(bad("browsers omit the default port"));
            }
            if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("the port must be a number"));
            }
            host
        }
        _ => rest,
    };
    let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':');
    if host.is_empty() || !host.bytes().all(valid) {
        return Err(bad("the host is not a DNS name or IP address"));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(origins: &[&str], credentials: bool) -> CorsSpec {
        CorsSpec {
            origins: if origins == ["*"] {
                Origins::Any
            } else {
                Origins::List(
                    origins
                        .iter()
                        .map(|o| HeaderValue::from_str(o).expect("value"))
                        .collect(),
                )
            },
            methods: vec![Method::GET, Method::POST],
            headers: vec!["Authorization".into(), "Content-Type".into()],
            expose: vec!["X-Total".into(), "www-authenticate".into()],
            max_age_secs: Some(600),
            credentials,
        }
    }

    fn hv(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).expect("value")
    }

    #[test]
    fn origins_are_granted_exactly_and_null_only_when_listed() {
        let listed = CorsPolicy::new(spec(&["https://app.example"], true)).expect("policy");
        assert_eq!(
            listed.allow_origin(&hv("https://app.example")),
            Some(hv("https://app.example"))
        );
        for other in [
            "https://app.example.evil",
            "https://evil-app.example",
            "http://app.example",
            "https://APP.example",
            "https://app.example:8443",
            "null",
            "",
        ] {
            assert_eq!(listed.allow_origin(&hv(other)), None, "{other}");
        }
        let any = CorsPolicy::new(spec(&["*"], false)).expect("policy");
        assert_eq!(any.allow_origin(&hv("https://x.example")), Some(hv("*")));
        assert_eq!(any.allow_origin(&hv("null")), None);
        let null = CorsPolicy::new(spec(&["null"], false)).expect("policy");
        assert_eq!(null.allow_origin(&hv("null")), Some(hv("null")));
    }

    #[test]
    fn credentials_never_go_with_star_or_null() {
        assert!(CorsPolicy::new(spec(&["*"], true)).is_err());
        assert!(CorsPolicy::new(spec(&["https://a.example", "null"], true)).is_err());
        assert!(CorsPolicy::new(spec(&["https://a.example"], true)).is_ok());
    }

    #[test]
    fn preflights_need_the_origin_the_method_and_every_header() {
        let policy = CorsPolicy::new(spec(&["https://app.example"], false)).expect("policy");
        let app = hv("https://app.example");
        let check = |origin: &HeaderValue, method: Method, headers: Option<&str>| {
            policy.check_preflight(origin, &method, headers.map(hv).as_ref())
        };
        assert_eq!(check(&app, Method::GET, None), Ok(app.clone()));
        assert_eq!(
            check(&app, Method::POST, Some("authorization, content-type")),
            Ok(app.clone())
        );
        assert_eq!(
            check(&app, Method::POST, Some("AUTHORIZATION")),
            Ok(app.clone())
        );
        assert_eq!(
            check(&hv("https://evil.example"), Method::GET, None),
            Err(CorsRefusal::Origin)
        );
        assert_eq!(check(&app, Method::DELETE, None), Err(CorsRefusal::Method));
        assert_eq!(
            check(&app, Method::GET, Some("authorization,x-secret")),
            Err(CorsRefusal::Headers)
        );
    }

    #[test]
    fn header_values_are_rendered_once() {
        let policy = CorsPolicy::new(spec(&["https://app.example"], true)).expect("policy");
        assert_eq!(policy.allow_methods(), "GET, POST");
        assert_eq!(
            policy.allow_headers(),
            Some(hv("Authorization, Content-Type"))
        );
        assert_eq!(
            policy.expose_headers(),
            "WWW-Authenticate, Retry-After, X-Total"
        );
        assert_eq!(policy.max_age(), Some(hv("600")));
        assert_eq!(policy.allow_credentials(), Some(hv("true")));
    }

    #[test]
    fn allow_origins_entries_must_be_serialized_origins() {
        for ok in [
            "https://app.example",
            "http://localhost:3000",
            "https://[::1]:8443",
            "https://[::1]",
            "http://127.0.0.1:8080",
            "*",
            "null",
        ] {
            assert_eq!(parse_origin(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in [
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://App.example",
            "https://app.example:443",
            "http://app.example:80",
            "ftp://app.example",
            "https://*.example",
            "https://user@app.example",
            "https://app.example:x",
            "https://",
            "NULL",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
