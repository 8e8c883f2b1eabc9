//! A mock identity provider on 127.0.0.1 over TLS (its own test CA): OIDC discovery and a
//! JWK Set at Keycloak's paths, keys the test can add and remove, an endpoint the test can
//! take down, a discovery document that can lie about its issuer, and fetch counters. Tokens
//! are minted here with `jsonwebtoken` from the mock's own keys, independently of the
//! gateway's signing code.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::pki::TestCa;

/// The realm path, as Keycloak lays it out.
const REALM: &str = "/realms/test";

struct SigningKey {
    kid: String,
    alg: &'static str,
    pair: rcgen::KeyPair,
}

#[derive(Default)]
struct State {
    keys: Vec<SigningKey>,
    /// Published as they are (keys whose private half lives elsewhere, e.g. RSA from Python).
    raw_jwks: Vec<Value>,
    /// When set, discovery names this issuer instead of the real one.
    discovery_issuer: Option<String>,
}

/// A running mock provider. Dropping it stops it.
pub struct MockIdp {
    /// `https://127.0.0.1:PORT/realms/test`.
    pub issuer: String,
    /// Its CA certificate, written where a gateway config can name it.
    pub ca_path: PathBuf,
    _dir: tempfile::TempDir,
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    discovery_fetches: Arc<AtomicUsize>,
    jwks_fetches: Arc<AtomicUsize>,
    serving: Serving,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockIdp {
    pub async fn start() -> MockIdp {
        let ca = TestCa::new("Mock IdP CA");
        let leaf = ca.issue("idp", &["127.0.0.1", "localhost"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_path = dir.path().join("idp-ca.pem");
        std::fs::write(&ca_path, &ca.cert_pem).expect("write ca");
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der.clone()], key)
            .expect("cert");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = format!("https://127.0.0.1:{}{REALM}", addr.port());
        let state = Arc::new(Mutex::new(State::default()));
        let down = Arc::new(AtomicBool::new(false));
        let (discovery_fetches, jwks_fetches) = (Arc::default(), Arc::default());
        let serving = Serving {
            issuer: issuer.clone(),
            state: state.clone(),
            discovery_fetches: Arc::clone(&discovery_fetches),
            jwks_fetches: Arc::clone(&jwks_fetches),
        };
        let is_down = down.clone();
        let kept = serving.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                if is_down.load(Ordering::SeqCst) {
                    drop(tcp); // taken down: connections are refused at once
                    continue;
                }
                let (acceptor, serving) = (acceptor.clone(), serving.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request| {
                        let serving = serving.clone();
                        async move { Ok::<_, Infallible>(serving.respond(&request)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        MockIdp {
            issuer,
            ca_path,
            _dir: dir,
            state,
            down,
            discovery_fetches,
            jwks_fetches,
            serving: kept,
            task,
        }
    }

    /// The JWK Set it publishes now, as text.
    pub fn jwks_text(&self) -> String {
        self.serving.jwks().to_string()
    }

    /// Publish a new signing key (`ES256` or `EdDSA`).
    pub fn add_key(&self, kid: &str, alg: &'static str) {
        let rcgen_alg = match alg {
            "ES256" => &rcgen::PKCS_ECDSA_P256_SHA256,
            _ => &rcgen::PKCS_ED25519,
        };
        let pair = rcgen::KeyPair::generate_for(rcgen_alg).expect("key");
        lock(&self.state).keys.push(SigningKey {
            kid: kid.to_owned(),
            alg,
            pair,
        });
    }

    /// Publish a JWK as it is.
    pub fn publish_jwk(&self, jwk: Value) {
        lock(&self.state).raw_jwks.push(jwk);
    }

    /// Take the endpoint down (connections closed at once) or bring it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Make discovery name another issuer.
    pub fn lie_about_issuer(&self, issuer: &str) {
        lock(&self.state).discovery_issuer = Some(issuer.to_owned());
    }

    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn discovery_fetches(&self) -> usize {
        self.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Claims this provider would put in an access token for `user`, valid for five minutes,
    /// for audience `portcullis`, merged with `extra`.
    pub fn claims(&self, user: &str, extra: Value) -> Value {
        let now = super::now();
        let mut claims = json!({
            "iss": self.issuer, "aud": ["account", "portcullis"], "sub": format!("id-{user}"),
            "preferred_username": user, "iat": now, "exp": now + 300, "jti": uuid(),
        });
        if let (Some(base), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        claims
    }

    /// A token signed with the published key `kid`.
    pub fn mint(&self, kid: &str, claims: &Value) -> String {
        let state = lock(&self.state);
        let key = state.keys.iter().find(|k| k.kid == kid).expect("kid");
        sign(&key.kid, key.alg, &key.pair, claims)
    }
}

/// Sign `claims` with `pair` under `alg`, header naming `kid`.
pub fn sign(kid: &str, alg: &str, pair: &rcgen::KeyPair, claims: &Value) -> String {
    let der = pair.serialize_der();
    let (algorithm, key) = match alg {
        "ES256" => (
            jsonwebtoken::Algorithm::ES256,
            jsonwebtoken::EncodingKey::from_ec_der(&der),
        ),
        _ => (
            jsonwebtoken::Algorithm::EdDSA,
            jsonwebtoken::EncodingKey::from_ed_der(&der),
        ),
    };
    let mut header = jsonwebtoken::Header::new(algorithm);
    header.kid = Some(kid.to_owned());
    header.typ = Some("JWT".to_owned());
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

fn uuid() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Clone)]
struct Serving {
    issuer: String,
    state: Arc<Mutex<State>>,
    discovery_fetches: Arc<AtomicUsize>,
    jwks_fetches: Arc<AtomicUsize>,
}

impl Serving {
    fn respond(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let jwks_path = format!("{REALM}/protocol/openid-connect/certs");
        let (status, body) = if path == format!("{REALM}/.well-known/openid-configuration") {
            self.discovery_fetches.fetch_add(1, Ordering::SeqCst);
            let issuer = lock(&self.state)
                .discovery_issuer
                .clone()
                .unwrap_or_else(|| self.issuer.clone());
            let jwks_uri = format!("{}/protocol/openid-connect/certs", self.issuer);
            (
                StatusCode::OK,
                json!({"issuer": issuer, "jwks_uri": jwks_uri}),
            )
        } else if path == jwks_path {
            self.jwks_fetches.fetch_add(1, Ordering::SeqCst);
            (StatusCode::OK, self.jwks())
        } else {
            (StatusCode::NOT_FOUND, json!({"error": "not found"}))
        };
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("max-age=300"),
        );
        response
    }

    /// The public half of every published key, written out by hand.
    fn jwks(&self) -> Value {
        let state = lock(&self.state);
        let keys: Vec<Value> = state
            .keys
            .iter()
            .map(|key| {
                let raw = key.pair.public_key_raw();
                match key.alg {
                    "ES256" => json!({
                        "kty": "EC", "crv": "P-256", "kid": key.kid, "alg": "ES256", "use": "sig",
                        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
                    }),
                    _ => json!({
                        "kty": "OKP", "crv": "Ed25519", "kid": key.kid, "alg": "EdDSA", "use": "sig",
                        "x": URL_SAFE_NO_PAD.encode(raw),
                    }),
                }
            })
            .chain(state.raw_jwks.iter().cloned())
            .collect();
        json!({ "keys": keys })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
