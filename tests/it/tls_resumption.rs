//! TLS session resumption (SPEC "Top-level keys", `tls.session_ticket_key`; "Operations",
//! Reload): a returning client resumes over TLS 1.3 and 1.2, still does after a reload and a
//! SIGHUP, and gateways given the same ticket key file resume each other's sessions while
//! gateways with different files fall back to a full handshake.

use crate::common::*;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use portcullis::reload::{self, ReloadOutcome};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind, SupportedProtocolVersion};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TLS13: &SupportedProtocolVersion = &rustls::version::TLS13;
const TLS12: &SupportedProtocolVersion = &rustls::version::TLS12;

/// The fixture with its `up` upstream being the built-in echo.
fn echo_fixture() -> String {
    fixture_yaml("\"echo:\"")
}

/// A client speaking only `version`, trusting `cas`, keeping the sessions it is given (the
/// rustls default store, as a browser keeps them).
fn resuming_client(
    version: &'static SupportedProtocolVersion,
    cas: &[&CertificateDer<'static>],
) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add((*ca).clone()).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .expect("version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One visit on a new connection: the handshake, then a request read to its end (which is
/// also when a TLS 1.3 client takes in the tickets sent after the handshake). Returns how the
/// handshake went and the answer's status.
async fn visit(addr: SocketAddr, client: &Arc<ClientConfig>) -> (HandshakeKind, u16) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(client.clone()).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("TLS handshake");
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    tls.write_all(b"GET /echo/visit HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write request");
    let answer = parse_raw(&read_until_close(&mut tls, Duration::from_secs(5)).await);
    (kind, answer.status)
}

/// A `tls.session_ticket_key` file of `bytes` in `dir`; the body line that names it (it
/// continues the `tls:` block the harness writes just before the body).
fn ticket_key(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write ticket key");
    format!("  session_ticket_key: {}\n", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_resumes_its_session_over_tls13_and_tls12() {
    let gw = Gateway::start(&echo_fixture()).await;
    for version in [TLS13, TLS12] {
        let client = resuming_client(version, &[&gw.pki.ca_der]);
        assert_eq!(visit(gw.addr, &client).await, (HandshakeKind::Full, 200));
        for again in 1..=3 {
            assert_eq!(
                visit(gw.addr, &client).await,
                (HandshakeKind::Resumed, 200),
                "{version:?}, return {again}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_client_still_resumes_after_a_reload() {
    let gw = Gateway::start(&echo_fixture()).await;
    let tls13 = resuming_client(TLS13, &[&gw.pki.ca_der]);
    let tls12 = resuming_client(TLS12, &[&gw.pki.ca_der]);
    assert_eq!(visit(gw.addr, &tls13).await.0, HandshakeKind::Full);
    assert_eq!(visit(gw.addr, &tls12).await.0, HandshakeKind::Full);

    gw.write_config(&format!(
        "{}  - {{ id: added, path: /added/**, upstream: echo, public: true }}\n",
        echo_fixture()
    ));
    let outcome = reload::reload(&gw.config_path, &gw.shared);
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    assert_eq!(gw.h1().get("/added/x", &[]).await.status, StatusCode::OK);

    assert_eq!(
        visit(gw.addr, &tls13).await,
        (HandshakeKind::Resumed, 200),
        "TLS 1.3 after the reload"
    );
    assert_eq!(
        visit(gw.addr, &tls12).await,
        (HandshakeKind::Resumed, 200),
        "TLS 1.2 after the reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_ticket_key_file_a_client_still_resumes_after_sighup() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key_line = ticket_key(keys.path(), "tickets.key", &[7u8; 80]);
    let proc = Proc::start(&format!("{key_line}{}", echo_fixture())).await;
    let client = resuming_client(TLS13, &[&proc.pki.ca_der]);
    assert_eq!(
        visit(proc.listen, &client).await,
        (HandshakeKind::Full, 200)
    );

    proc.write_config(&format!(
        "{key_line}{}  - {{ id: added, path: /added/**, upstream: echo, public: true }}\n",
        echo_fixture()
    ));
    signal(proc.pid, "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc.h1().get("/added/x", &[]).await.status != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "no reload 5 s after SIGHUP:\n{}",
            proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        visit(proc.listen, &client).await,
        (HandshakeKind::Resumed, 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_given_the_same_ticket_key_resume_each_others_sessions() {
    let keys = tempfile::tempdir().expect("tempdir");
    let key_line = ticket_key(
        keys.path(),
        "fleet.key",
        b"0123456789abcdef0123456789abcdef",
    );
    let body = format!("{key_line}{}", echo_fixture());
    let a = Proc::start(&body).await;
    let b = Proc::start(&body).await;
    let client = resuming_client(TLS13, &[&a.pki.ca_der, &b.pki.ca_der]);

    assert_eq!(visit(a.listen, &client).await, (HandshakeKind::Full, 200));
    assert_eq!(
        visit(b.listen, &client).await,
        (HandshakeKind::Resumed, 200),
        "B resumes A's session"
    );
    assert_eq!(
        visit(a.listen, &client).await,
        (HandshakeKind::Resumed, 200),
        "A resumes the session B handed out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_given_different_ticket_keys_answer_each_others_clients_with_a_full_handshake() {
    let keys = tempfile::tempdir().expect("tempdir");
    let a = Proc::start(&format!(
        "{}{}",
        ticket_key(keys.path(), "a.key", &[1u8; 32]),
        echo_fixture()
    ))
    .await;
    let b = Proc::start(&format!(
        "{}{}",
        ticket_key(keys.path(), "b.key", &[2u8; 32]),
        echo_fixture()
    ))
    .await;
    let client = resuming_client(TLS13, &[&a.pki.ca_der, &b.pki.ca_der]);

    assert_eq!(visit(a.listen, &client).await, (HandshakeKind::Full, 200));
    assert_eq!(
        visit(b.listen, &client).await,
        (HandshakeKind::Full, 200),
        "B cannot open A's ticket: a full handshake, not an error"
    );
    assert_eq!(
        visit(b.listen, &client).await,
        (HandshakeKind::Resumed, 200),
        "B's own ticket resumes"
    );
}

#[test]
fn check_refuses_a_short_or_missing_ticket_key_file_naming_file_and_line() {
    let pki = TestPki::new();
    let config = pki.dir.path().join("gateway.yaml");
    std::fs::write(pki.dir.path().join("short.key"), [9u8; 31]).expect("write key");
    for (file, message) in [
        (
            "short.key",
            "short.key holds 31 bytes; it must hold 32 to 4096",
        ),
        ("absent.key", "tls.session_ticket_key: cannot read"),
    ] {
        // The harness's `tls:` block is lines 2-4; this line continues it.
        let body = format!("  session_ticket_key: {file}\n{}", echo_fixture());
        std::fs::write(&config, config_text(&pki, &body)).expect("write config");
        let (code, _, stderr) = portcullis(["check", "-c", config.to_str().expect("utf-8")]);
        assert_eq!(code, 1, "{stderr}");
        let position = format!("{}:5:23: ", config.display());
        assert!(
            stderr.contains(&position) && stderr.contains(message),
            "want `{position}` and `{message}` in:\n{stderr}"
        );
    }
    std::fs::write(pki.dir.path().join("good.key"), [9u8; 32]).expect("write key");
    let body = format!("  session_ticket_key: good.key\n{}", echo_fixture());
    std::fs::write(&config, config_text(&pki, &body)).expect("write config");
    let (code, stdout, stderr) = portcullis(["check", "-c", config.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}
