//! TLS: PEM loading, the rustls `ServerConfig` (ALPN `h2` + `http/1.1`, session resumption
//! from [`resumption`]) and the development certificate used when `gateway.yaml` has no
//! `tls:` section.

mod resumption;
pub mod tickets;

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{TicketSecret, TlsPaths};

/// A certificate or key that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("certificate and key do not fit together: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate the development certificate: {0}")]
    DevCert(#[from] rcgen::Error),
    #[error(transparent)]
    Tickets(#[from] tickets::NoTicketKey),
}

/// The protocols offered by ALPN, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Build the server config from PEM files.
pub fn server_config(paths: &TlsPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&paths.cert)?;
    let key = load_key(&paths.key)?;
    let ticket_secret = paths.session_ticket_key.as_ref().map(|file| &file.secret);
    build(certs, key, ticket_secret)
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, for development only. Made
/// once per process, so reloads keep serving the certificate clients already accepted.
pub fn dev_server_config() -> Result<Arc<ServerConfig>, TlsError> {
    static DEV: std::sync::OnceLock<Arc<ServerConfig>> = std::sync::OnceLock::new();
    if let Some(config) = DEV.get() {
        return Ok(config.clone());
    }
    let config = new_dev_server_config()?;
    Ok(DEV.get_or_init(|| config).clone())
}

fn new_dev_server_config() -> Result<Arc<ServerConfig>, TlsError> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).map_err(|reason| {
        TlsError::Pem {
            path: "development key".into(),
            reason: reason.to_owned(),
        }
    })?;
    build(vec![cert], key, None)
}

fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ticket_secret: Option<&TicketSecret>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    resumption::enable(&mut config, ticket_secret)?;
    // 0-RTT stays off (the default): a replayed login POST must be impossible.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |reason: String| TlsError::Pem {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
