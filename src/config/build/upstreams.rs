//! The upstream half of the builder: URLs, timeouts and, for an `https://` upstream, its TLS
//! client configuration, built here once per config generation (see
//! [`crate::config::upstream_tls`]).

use super::file::{Location, Spanned, UpstreamTlsFile};
use super::units::{interpolate, parse_duration};
use super::upstream_tls::{self, ClientIdentityPem, UpstreamTls};
use super::*;
use http::uri::{Authority, Scheme};
use rustls::RootCertStore;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the files read for the upstreams go: watched with the config, and their contents part
/// of the digest, so saving a CA bundle or client certificate reloads (as the server
/// certificate does).
pub(super) struct Inputs<'a> {
    pub files: &'a mut Vec<PathBuf>,
    pub digest_input: &'a mut String,
    /// The system roots, read at most once per build and only if an upstream needs them.
    system_roots: Option<Arc<RootCertStore>>,
}

impl<'a> Inputs<'a> {
    pub(super) fn new(files: &'a mut Vec<PathBuf>, digest_input: &'a mut String) -> Self {
        Inputs {
            files,
            digest_input,
            system_roots: None,
        }
    }
}

/// What an upstream URL names.
#[derive(Debug)]
enum Origin {
    Http(Authority),
    Https(Authority),
    Echo,
}

impl Builder {
    pub(super) fn upstreams(
        &self,
        raw: &BTreeMap<String, Spanned<file::UpstreamFile>>,
        inputs: &mut Inputs<'_>,
    ) -> Result<ByName<Upstream>, ConfigError> {
        let mut upstreams = ByName::with_capacity_and_hasher(raw.len(), Default::default());
        for (name, spanned) in raw {
            let (url, connect, timeout, pass_token, tls) = match &spanned.value {
                file::UpstreamFile::Url(url) => (url.clone(), None, None, false, None),
                file::UpstreamFile::Full(f) => (
                    f.url.clone(),
                    f.connect_timeout.clone(),
                    f.timeout.clone(),
                    f.pass_token,
                    f.tls.as_ref(),
                ),
            };
            let here = |message: String| self.at(spanned, format!("upstreams.{name}: {message}"));
            let url = interpolate(&url).map_err(here)?;
            let target = match (parse_upstream_url(&url).map_err(here)?, tls) {
                (Origin::Https(authority), tls) => {
                    let tls =
                        self.upstream_tls(name, &spanned.referenced, &authority, tls, inputs)?;
                    UpstreamTarget::Http {
                        scheme: Scheme::HTTPS,
                        authority,
                        tls: Some(Arc::new(tls)),
                    }
                }
                (_, Some(tls)) => {
                    return Err(self.at(
                        tls,
                        format!(
                            "upstreams.{name}.tls: only an https:// upstream takes `tls:` (the URL is `{url}`)"
                        ),
                    ))
                }
                (Origin::Http(authority), None) => UpstreamTarget::Http {
                    scheme: Scheme::HTTP,
                    authority,
                    tls: None,
                },
                (Origin::Echo, None) => UpstreamTarget::Echo,
            };
            let parse = |v: Option<String>, key: &str, default: Duration| match v {
                None => Ok(default),
                Some(v) => parse_duration(&v, MAX_TIMEOUT).map_err(|e| here(format!("{key}: {e}"))),
            };
            upstreams.insert(
                name.clone(),
                Upstream {
                    name: name.clone(),
                    target,
                    connect_timeout: parse(connect, "connect_timeout", Duration::from_secs(3))?,
                    timeout: parse(timeout, "timeout", Duration::from_secs(60))?,
                    pass_token,
                },
            );
        }
        Ok(upstreams)
    }

    /// The TLS client configuration of the `https://` upstream `name` at `authority`, from its
    /// `tls:` block (`raw`, when it has one). Every complaint names the upstream and the
    /// line of the key it is about.
    fn upstream_tls(
        &self,
        name: &str,
        upstream_at: &Location,
        authority: &Authority,
        raw: Option<&Spanned<UpstreamTlsFile>>,
        inputs: &mut Inputs<'_>,
    ) -> Result<UpstreamTls, ConfigError> {
        let settings = raw.map(|r| &r.value);
        let key = |k: &str| format!("upstreams.{name}.tls.{k}");
        let server_name = match settings.and_then(|s| s.server_name.as_ref()) {
            Some(v) => upstream_tls::server_name(&self.string(v, &key("server_name"))?)
                .map_err(|e| self.at(v, format!("{}: {e}", key("server_name"))))?,
            None => upstream_tls::server_name(authority.host()).map_err(|e| {
                self.err(
                    Some(upstream_at),
                    format!("upstreams.{name}: the URL's host: {e}; set `tls.server_name`"),
                )
            })?,
        };

        let (ca, roots) = match settings.and_then(|s| s.ca.as_ref()) {
            Some(v) => {
                let (path, pem) = self.read_tls_file(v, &key("ca"), inputs)?;
                let roots = upstream_tls::bundle_roots(&pem)
                    .map_err(|e| self.at(v, format!("{}: {}: {e}", key("ca"), path.display())))?;
                (Some(path), Arc::new(roots))
            }
            None => {
                let roots = match &inputs.system_roots {
                    Some(roots) => roots.clone(),
                    None => {
                        let roots = upstream_tls::system_roots().map_err(|e| {
                            self.err(Some(upstream_at), format!("upstreams.{name}: {e}"))
                        })?;
                        inputs.system_roots.insert(Arc::new(roots)).clone()
                    }
                };
                (None, roots)
            }
        };

        let cert = settings.and_then(|s| s.client_cert.as_ref());
        let key_file = settings.and_then(|s| s.client_key.as_ref());
        let identity = match (cert, key_file) {
            (None, None) => None,
            (Some(cert), Some(key_file)) => {
                let (cert_path, cert_pem) =
                    self.read_tls_file(cert, &key("client_cert"), inputs)?;
                let (_, key_pem) = self.read_tls_file(key_file, &key("client_key"), inputs)?;
                Some((cert, cert_path, cert_pem, key_pem))
            }
            (Some(cert), None) => {
                return Err(self.at(
                    cert,
                    format!("{}: needs `client_key` too", key("client_cert")),
                ))
            }
            (None, Some(key_file)) => {
                return Err(self.at(
                    key_file,
                    format!("{}: needs `client_cert` too", key("client_key")),
                ))
            }
        };
        let pem = identity
            .as_ref()
            .map(|(_, _, cert, key)| ClientIdentityPem { cert, key });
        let client = upstream_tls::client_config(roots, pem).map_err(|e| {
            let at = identity
                .as_ref()
                .map_or(upstream_at, |(c, ..)| &c.referenced);
            self.err(Some(at), format!("upstreams.{name}.tls: {e}"))
        })?;
        Ok(UpstreamTls {
            client,
            server_name,
            ca,
            client_cert: identity.map(|(_, path, ..)| path),
        })
    }

    /// Read a file named in an upstream's `tls:` (interpolated, relative to the config's
    /// directory), and record it in `inputs`.
    fn read_tls_file(
        &self,
        value: &Spanned<String>,
        key: &str,
        inputs: &mut Inputs<'_>,
    ) -> Result<(PathBuf, Vec<u8>), ConfigError> {
        let path = self.resolve(&self.string(value, key)?);
        let bytes = std::fs::read(&path)
            .map_err(|e| self.at(value, format!("{key}: cannot read {}: {e}", path.display())))?;
        inputs.digest_input.push_str(&digest_hex_bytes(&bytes));
        if !inputs.files.contains(&path) {
            inputs.files.push(path.clone());
        }
        Ok((path, bytes))
    }
}

fn parse_upstream_url(url: &str) -> Result<Origin, String> {
    if url == "echo:" {
        return Ok(Origin::Echo);
    }
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("`{url}` needs a scheme (http:// or https://)"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "`{url}`: only http:// and https:// upstreams (and `echo:`) are supported"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("`{url}` needs a host"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "`{url}`: credentials in upstream URLs are not supported"
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{url}`: a path prefix is not supported; the request path is forwarded as is"
        ));
    }
    Ok(if scheme == Scheme::HTTPS {
        Origin::Https(authority)
    } else {
        Origin::Http(authority)
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, UpstreamTarget};
    use rustls::pki_types::ServerName;
    use std::path::Path;

    /// A config in `dir` whose one upstream `u` is `upstream` (a YAML value).
    fn build(dir: &Path, upstream: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "tokens:\n  secret: \"0123456789abcdef0123456789abcdef\"\nupstreams:\n  u: {upstream}\nroutes: []\n"
        );
        Config::from_text(&dir.join("gateway.yaml"), &text)
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.self_signed(&key).unwrap().pem()
    }

    fn tls_of(config: &Config) -> &super::UpstreamTls {
        match &config.upstreams["u"].target {
            UpstreamTarget::Http { tls: Some(tls), .. } => tls,
            other => panic!("not https: {other:?}"),
        }
    }

    #[test]
    fn a_ca_bundle_resolves_beside_the_config_is_watched_and_its_content_is_in_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem()).unwrap();
        let upstream = "{ url: \"https://app.internal\", tls: { ca: ca.pem } }";
        let first = build(dir.path(), upstream).unwrap();
        assert_eq!(tls_of(&first).ca.as_deref(), Some(ca.as_path()));
        assert!(first.files.contains(&ca), "{:?}", first.files);
        assert_eq!(
            tls_of(&first).server_name,
            ServerName::try_from("app.internal").unwrap()
        );

        // The same text with another CA in the file is another generation.
        std::fs::write(&ca, ca_pem()).unwrap();
        let second = build(dir.path(), upstream).unwrap();
        assert_ne!(first.digest, second.digest);
        // Each build has its own client config, so no pool outlives the settings it was for.
        assert!(!std::sync::Arc::ptr_eq(
            &tls_of(&first).client,
            &tls_of(&second).client
        ));
    }

    #[test]
    fn the_server_name_defaults_to_the_url_host_brackets_and_all() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_pem()).unwrap();
        for (url, name) in [
            ("https://[::1]:9443", "::1"),
            ("https://10.0.0.7", "10.0.0.7"),
            ("https://Billing.Internal:9443", "Billing.Internal"),
        ] {
            let upstream = format!("{{ url: \"{url}\", tls: {{ ca: ca.pem }} }}");
            let config = build(dir.path(), &upstream).unwrap();
            let want = super::upstream_tls::server_name(name).unwrap();
            assert_eq!(tls_of(&config).server_name, want, "{url}");
        }
    }

    #[test]
    fn without_a_ca_the_system_roots_are_trusted_or_the_config_says_there_are_none() {
        let dir = tempfile::tempdir().unwrap();
        match build(dir.path(), "https://app.internal:9443") {
            Ok(config) => assert!(tls_of(&config).ca.is_none()),
            Err(e) => assert!(e.message.contains("no system root certificates"), "{e}"),
        }
    }

    #[test]
    fn tls_settings_on_a_plain_upstream_are_refused_at_their_line() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["http://127.0.0.1:9", "\"echo:\""] {
            let upstream = format!("{{ url: {url}, tls: {{ server_name: x.test }} }}");
            let err = build(dir.path(), &upstream).unwrap_err();
            assert_eq!(err.position.map(|p| p.0), Some(4), "{err}");
            assert!(err.message.contains("upstreams.u.tls"), "{err}");
        }
    }
}
