//! `https://` upstreams: the rustls client configuration an upstream is reached with, built
//! once per config generation from its `tls:` settings (so `check` reports every problem, and
//! no request ever parses a certificate).
//!
//! Verification is always on: the upstream's certificate must chain to the trusted roots and
//! name the server name. There is deliberately no way to skip it.
//!
//! The trusted roots default to the operating system's store, read with
//! `rustls-native-certs` rather than compiled in with `webpki-roots`: it reads local files
//! only (no network, at build or run time), it follows the trust the operator manages
//! (an internal CA added with `update-ca-certificates`, a distrusted root removed by an OS
//! update, `SSL_CERT_FILE` / `SSL_CERT_DIR`), and it is read again on every reload rather
//! than frozen at build time. An empty store is a config error, not a gateway that fails every
//! request: give the upstream a `tls.ca` then.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// Upstreams are spoken to over HTTP/1.1 (as plain-HTTP ones are), which also keeps WebSocket
/// upgrades possible; the protocol is still named in ALPN so a server that insists on ALPN
/// agrees to it.
const ALPN: &[u8] = b"http/1.1";

/// How the gateway reaches one `https://` upstream.
pub struct UpstreamTls {
    /// The client configuration every connection to this upstream uses.
    pub client: Arc<ClientConfig>,
    /// Sent as SNI (for a DNS name) and verified in the upstream's certificate.
    pub server_name: ServerName<'static>,
    /// The CA bundle trusted instead of the system roots, when one is configured.
    pub ca: Option<PathBuf>,
    /// The certificate presented for mutual TLS, when one is configured.
    pub client_cert: Option<PathBuf>,
}

impl fmt::Debug for UpstreamTls {
    // The client config holds the private key's signer: say only what the settings are.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

/// The certificate and key an upstream is shown for mutual TLS, as PEM text.
#[derive(Debug, Clone, Copy)]
pub struct ClientIdentityPem<'a> {
    pub cert: &'a [u8],
    pub key: &'a [u8],
}

/// A server name as written in `server_name` or a URL's host: a DNS name or an IP address
/// (an IPv6 address with or without its brackets).
pub fn server_name(text: &str) -> Result<ServerName<'static>, String> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    ServerName::try_from(bare.to_owned())
        .map_err(|_| format!("`{text}` is not a valid DNS name or IP address"))
}

/// The system's trusted roots (see the module doc for why these).
pub fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unusable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "no system root certificates could be loaded{why}; give the upstream a `tls.ca` bundle"
        ));
    }
    Ok(roots)
}

/// The roots of a PEM CA bundle: every certificate in it must be usable as a trust anchor.
pub fn bundle_roots(pem_text: &[u8]) -> Result<RootCertStore, String> {
    let certs = certificates(pem_text)?;
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        roots
            .add(cert)
            .map_err(|e| format!("certificate {} is not a usable CA: {e}", index + 1))?;
    }
    Ok(roots)
}

/// The client configuration for an upstream trusting `roots` and, for mutual TLS, presenting
/// `identity`. Same crypto provider and protocol versions as the gateway's own listener.
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<ClientIdentityPem<'_>>,
) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let chain = certificates(identity.cert).map_err(|e| format!("client_cert: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(identity.key).map_err(|e| match e {
                pem::Error::NoItemsFound => "client_key: no PRIVATE KEY block found".to_owned(),
                other => format!("client_key: {other}"),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => {
                        "client_key is not the key of client_cert".to_owned()
                    }
                    other => format!("client_cert / client_key: {other}"),
                })?
        }
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in a PEM text; at least one.
fn certificates(pem_text: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA, and a leaf for `names` it signed: (CA PEM, leaf PEM, leaf key PEM).
    fn issue(names: &[&str]) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (ca_cert.pem(), leaf.pem(), key.serialize_pem())
    }

    #[test]
    fn server_names_are_dns_names_or_ip_addresses() {
        for good in ["billing.internal", "localhost", "127.0.0.1", "::1", "[::1]"] {
            assert!(server_name(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "bad..name", "[::1", "-x.test/"] {
            let err = server_name(bad).unwrap_err();
            assert!(err.contains("not a valid DNS name"), "{bad}: {err}");
        }
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
    }

    #[test]
    fn a_bundle_must_hold_certificates_and_only_usable_ones() {
        let (ca, _, key) = issue(&["x.test"]);
        assert_eq!(bundle_roots(ca.as_bytes()).unwrap().len(), 1);
        let two = format!("{ca}{}", issue(&["y.test"]).0);
        assert_eq!(bundle_roots(two.as_bytes()).unwrap().len(), 2);
        for bad in ["", "not pem at all", key.as_str()] {
            let err = bundle_roots(bad.as_bytes()).unwrap_err();
            assert!(err.contains("no CERTIFICATE"), "{bad:?}: {err}");
        }
        let truncated = &ca[..ca.len() / 2];
        assert!(bundle_roots(truncated.as_bytes()).is_err());
    }

    #[test]
    fn a_client_identity_needs_a_certificate_and_its_own_key() {
        let (ca, cert, key) = issue(&["gw-client"]);
        let roots = Arc::new(bundle_roots(ca.as_bytes()).unwrap());
        let config = client_config(roots.clone(), None).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(!config.client_auth_cert_resolver.has_certs());

        fn identity<'a>(cert: &'a str, key: &'a str) -> ClientIdentityPem<'a> {
            ClientIdentityPem {
                cert: cert.as_bytes(),
                key: key.as_bytes(),
            }
        }
        let config = client_config(roots.clone(), Some(identity(&cert, &key))).unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());

        let (_, _, other_key) = issue(&["other"]);
        let err = client_config(roots.clone(), Some(identity(&cert, &other_key))).unwrap_err();
        assert!(err.contains("not the key of client_cert"), "{err}");
        let err = client_config(roots.clone(), Some(identity(&cert, &cert))).unwrap_err();
        assert!(err.contains("client_key: no PRIVATE KEY"), "{err}");
        let err = client_config(roots, Some(identity(&key, &key))).unwrap_err();
        assert!(err.contains("client_cert: no CERTIFICATE"), "{err}");
    }
}
