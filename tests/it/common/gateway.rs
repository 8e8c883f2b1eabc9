//! The gateway under test: a real gateway on 127.0.0.1:0 started through the library entry
//! point (`portcullis::bind` + `portcullis::run`) on a config file, and the config fixtures
//! the tests share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use portcullis::config::Config;
use portcullis::state::{Shared, Snapshot};

use super::client::{Client, Proto};
use super::pki::{tls_block, TestPki};

/// A 32+ byte secret shared by tests that mint their own tokens.
pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

/// Argon2id (OWASP parameters) hash of `secret123`.
pub const SECRET123_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$w87WW2eFT7vy9UDFIxPMUA$WRM+jGFRlegpsoIlTVNrQc+1XHa3/a1NZzkq1GFfarI";

/// The whole config file for `yaml` (a config without `listen`/`tls`): an ephemeral loopback
/// port and `pki`'s certificate added.
pub fn config_text(pki: &TestPki, yaml: &str) -> String {
    format!("listen: 127.0.0.1:0\n{}{yaml}", tls_block(pki))
}

/// A running gateway. Dropping it shuts it down.
pub struct Gateway {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    pub pki: TestPki,
    pub config_path: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    /// Start a gateway on `yaml` (a full config without `listen`/`tls`, which are added).
    pub async fn start(yaml: &str) -> Gateway {
        let pki = TestPki::new();
        let config_path = pki.dir.path().join("gateway.yaml");
        std::fs::write(&config_path, config_text(&pki, yaml)).expect("write config");
        Self::start_at(pki, config_path).await
    }

    /// Rewrite this gateway's config file in place with `yaml` (as [`Gateway::start`] takes it).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(&self.config_path, config_text(&self.pki, yaml)).expect("write config");
    }

    /// Start on an already written config file.
    pub async fn start_at(pki: TestPki, config_path: PathBuf) -> Gateway {
        let config = Config::load(&config_path).unwrap_or_else(|e| panic!("config: {e}"));
        let snapshot = Snapshot::build(config, 1).expect("snapshot");
        let shared = Shared::new(snapshot);
        let listeners = portcullis::bind("127.0.0.1:0".parse().expect("addr"), 2).expect("bind");
        let addr = listeners[0].local_addr().expect("local addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(portcullis::run(listeners, shared.clone(), async move {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            shared,
            pki,
            config_path,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A client for this gateway speaking HTTP/1.1.
    pub fn h1(&self) -> Client {
        Client::new(self.addr, &self.pki.ca_der, Proto::H1)
    }

    /// A client for this gateway speaking HTTP/2.
    pub fn h2(&self) -> Client {
        Client::new(self.addr, &self.pki.ca_der, Proto::H2)
    }

    /// Stop accepting, drain, and wait for the server to finish.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A standard config around `upstream`: the THREATS fixture routes.
///
/// `/public/**` anonymous; `/api/**` GET needs `read`, POST/PUT/PATCH need `write`, DELETE
/// needs `admin`; `/admin/**` needs `admin`; `/internal/**` deny; everything else 404.
/// Users: alice (read), bob (read write), root (admin), all with password `secret123`.
pub fn fixture_yaml(upstream: &str) -> String {
    format!(
        r#"tokens:
  issuer: https://gw.test
  audience: gw-upstreams
  secret: "{SECRET}"
  ttl: 5m
  leeway: 30s
scopes:
  read: Read
  write: {{ description: Write, implies: [read] }}
  admin: {{ description: Admin, implies: ["*"] }}
users:
  alice: {{ password: "{SECRET123_HASH}", scopes: [read] }}
  bob: {{ password: "{SECRET123_HASH}", scopes: [read, write] }}
  root: {{ password: "{SECRET123_HASH}", scopes: [admin] }}
upstreams:
  up: {upstream}
  echo: "echo:"
routes:
  - {{ id: public, path: /public/**, upstream: up, public: true }}
  - {{ id: api-read, path: /api/**, methods: [GET], upstream: up, scopes: [read] }}
  - {{ id: api-write, path: /api/**, methods: [POST, PUT, PATCH], upstream: up, scopes: [write] }}
  - {{ id: api-delete, path: /api/**, methods: [DELETE], upstream: up, scopes: [admin] }}
  - {{ id: admin, path: /admin/**, upstream: up, scopes: [admin] }}
  - {{ id: internal, path: /internal/**, deny: true }}
  - {{ id: echo, path: /echo/**, upstream: echo, public: true }}
"#
    )
}

/// Wait until a fresh client gets 200 for `GET path` (for example once connection slots are
/// free again); panics with `what` after `within`. A refused attempt panics inside the
/// client, so each runs as its own task.
pub async fn until_answered(gw: &Gateway, path: &str, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let client = gw.h1();
        let path = path.to_owned();
        let attempt = tokio::spawn(async move { client.get(&path, &[]).await });
        let reply = tokio::time::timeout(Duration::from_secs(2), attempt).await;
        if matches!(&reply, Ok(Ok(r)) if r.status == StatusCode::OK) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
