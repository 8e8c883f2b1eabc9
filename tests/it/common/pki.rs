//! The test PKI: a per-test CA, a server certificate for 127.0.0.1/localhost signed by it,
//! and the `tls:` config block that points a gateway at them.

use std::path::PathBuf;

use rustls::pki_types::CertificateDer;

/// A test CA and a server certificate for 127.0.0.1/localhost signed by it, written as PEM.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    pub ca_der: CertificateDer<'static>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_der, cert_pem, key_pem) = issue_server_cert("Portcullis Test CA");
        let cert_path = dir.path().join("gateway.pem");
        let key_path = dir.path().join("gateway-key.pem");
        std::fs::write(&cert_path, cert_pem).expect("write cert");
        std::fs::write(&key_path, key_pem).expect("write key");
        TestPki {
            dir,
            ca_der,
            cert_path,
            key_path,
        }
    }
}

/// Make a CA and a leaf certificate for 127.0.0.1 + localhost: (CA DER, leaf PEM, key PEM).
pub fn issue_server_cert(ca_name: &str) -> (CertificateDer<'static>, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
    let leaf_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("leaf params");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    (ca_cert.der().clone(), leaf.pem(), leaf_key.serialize_pem())
}

/// The `tls:` block pointing at the test PKI, to splice into a config.
pub fn tls_block(pki: &TestPki) -> String {
    format!(
        "tls:\n  cert: {}\n  key: {}\n",
        pki.cert_path.display(),
        pki.key_path.display()
    )
}

/// A test CA for certificates other than the gateway's own: TLS upstreams' server
/// certificates and the client certificates the gateway presents to them.
pub struct TestCa {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A certificate a [`TestCa`] issued, with its key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("ca key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("ca cert");
        TestCa {
            cert_pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate with common name `cn` for `names` (DNS names or IP addresses; none for a
    /// client certificate).
    pub fn issue(&self, cn: &str, names: &[&str]) -> Issued {
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}
