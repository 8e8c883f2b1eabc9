//! `https://` upstreams (SPEC "upstreams", "Decisions", "Forwarding"): real TLS upstream servers
//! on 127.0.0.1 with test CAs. Verification is always on: the configured CA, the server name,
//! mutual TLS, a CA bundle fixed on disk and reloaded, WebSocket tunnels, `check`'s errors, and
//! redirects.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;
use portcullis::reload;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// The upstream's server config: `leaf` as its certificate, and when `client_ca` is given a
/// client certificate issued by it required. Speaks only `http/1.1` in ALPN, so a gateway
/// that offered nothing else is what it meets.
fn server_config(leaf: &Issued, client_ca: Option<&TestCa>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
                .unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = builder
        .with_single_cert(vec![leaf.der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A TLS upstream whose certificate, for `names`, `ca` issued.
async fn tls_upstream(ca: &TestCa, names: &[&str], client_ca: Option<&TestCa>) -> Upstream {
    Upstream::start_tls(server_config(&ca.issue("upstream", names), client_ca)).await
}

/// A gateway whose `up` upstream is `url` with the `tls:` block `{ tls }` (none when empty),
/// `files` (name, content) written first next to its config, where relative paths resolve.
async fn gateway(url: &str, tls: &str, files: &[(&str, &str)]) -> Gateway {
    let pki = TestPki::new();
    for (name, content) in files {
        std::fs::write(pki.dir.path().join(name), content).unwrap();
    }
    let upstream = if tls.is_empty() {
        url.to_owned()
    } else {
        format!("{{ url: {url}, tls: {{ {tls} }} }}")
    };
    let config_path = pki.dir.path().join("gateway.yaml");
    std::fs::write(&config_path, config_text(&pki, &fixture_yaml(&upstream))).unwrap();
    Gateway::start_at(pki, config_path).await
}

fn assert_bad_gateway(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.json()["error"], "bad_gateway", "{}", reply.text());
}

// ---------------------------------------------------------------------------------------------
// Verification against the configured CA

#[tokio::test]
async fn an_upstream_whose_certificate_the_configured_ca_issued_is_reached_over_tls() {
    let ca = TestCa::new("Upstream CA");
    let up = tls_upstream(&ca, &["127.0.0.1"], None).await;
    let gw = gateway(
        &up.url(),
        "ca: upstream-ca.pem",
        &[("upstream-ca.pem", &ca.cert_pem)],
    )
    .await;
    for client in [gw.h1(), gw.h2()] {
        let reply = client.get("/public/hello?x=1", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-upstream"), Some("recording"));
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.target == "/public/hello?x=1"));
    assert!(seen.iter().all(|s| s.version == http::Version::HTTP_11));
    assert!(seen.iter().all(|s| s.client_cert.is_none()));
    assert_eq!(up.failed_handshakes(), 0);
}

#[tokio::test]
async fn an_upstream_certificate_from_another_ca_is_refused_with_502_and_nothing_is_sent() {
    let ca = TestCa::new("Upstream CA");
    let other = TestCa::new("Some Other CA");
    let up = tls_upstream(&ca, &["127.0.0.1"], None).await;
    let gw = gateway(
        &up.url(),
        "ca: other-ca.pem",
        &[("other-ca.pem", &other.cert_pem)],
    )
    .await;
    for client in [gw.h1(), gw.h2()] {
        assert_bad_gateway(&client.get("/public/hello", &[]).await);
    }
    assert_eq!(up.count(), 0, "a request crossed a refused handshake");
    assert!(up.connections() >= 1, "the gateway never tried");
    // The upstream's side of the refused handshake (the gateway's alert) may land a moment
    // after the gateway has answered its client.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.failed_handshakes() == 0 {
        assert!(Instant::now() < deadline, "no handshake failed upstream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The name verified

#[tokio::test]
async fn the_certificate_must_name_the_server_name_and_server_name_overrides_the_url_host() {
    let ca = TestCa::new("Upstream CA");
    let up = tls_upstream(&ca, &["upstream.test"], None).await;
    let files = [("upstream-ca.pem", ca.cert_pem.as_str())];

    // The URL's host, 127.0.0.1, is not a name the certificate holds.
    let gw = gateway(&up.url(), "ca: upstream-ca.pem", &files).await;
    assert_bad_gateway(&gw.h1().get("/public/a", &[]).await);
    // Neither is another name.
    let gw = gateway(
        &up.url(),
        "ca: upstream-ca.pem, server_name: other.test",
        &files,
    )
    .await;
    assert_bad_gateway(&gw.h1().get("/public/a", &[]).await);
    assert_eq!(up.count(), 0);

    // The name it holds, while the connection still goes to the URL's address.
    let gw = gateway(
        &up.url(),
        "ca: upstream-ca.pem, server_name: upstream.test",
        &files,
    )
    .await;
    let reply = gw.h1().get("/public/a", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(up.count(), 1);
    // Host stays the client's: server_name is only what TLS sends and checks.
    assert_eq!(
        up.last().unwrap().header("host").as_deref(),
        Some("localhost")
    );
}

// ---------------------------------------------------------------------------------------------
// Mutual TLS

#[tokio::test]
async fn an_upstream_that_requires_a_client_certificate_gets_the_configured_one() {
    let ca = TestCa::new("Upstream CA");
    let clients = TestCa::new("Gateway Client CA");
    let up = tls_upstream(&ca, &["127.0.0.1"], Some(&clients)).await;
    let client = clients.issue("portcullis-gateway", &[]);
    let files = [
        ("upstream-ca.pem", ca.cert_pem.as_str()),
        ("gw-client.pem", client.cert_pem.as_str()),
        ("gw-client-key.pem", client.key_pem.as_str()),
    ];

    let gw = gateway(&up.url(), "ca: upstream-ca.pem", &files).await;
    assert_bad_gateway(&gw.h1().get("/public/a", &[]).await);
    assert_eq!(up.count(), 0, "served without a client certificate");

    let gw = gateway(
        &up.url(),
        "ca: upstream-ca.pem, client_cert: gw-client.pem, client_key: gw-client-key.pem",
        &files,
    )
    .await;
    let reply = gw.h1().get("/public/a", &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let presented = up
        .last()
        .unwrap()
        .client_cert
        .expect("a client certificate");
    assert_eq!(presented, client.der);
    // The subject's common name, as encoded in the certificate the upstream received.
    let der: &[u8] = presented.as_ref();
    assert!(der.windows(18).any(|w| w == b"portcullis-gateway"));
}

// ---------------------------------------------------------------------------------------------
// Hot reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_the_ca_bundle_on_disk_takes_effect_without_a_restart() {
    let ca = TestCa::new("Upstream CA");
    let wrong = TestCa::new("Wrong CA");
    let up = tls_upstream(&ca, &["127.0.0.1"], None).await;
    let gw = gateway(
        &up.url(),
        "ca: upstream-ca.pem",
        &[("upstream-ca.pem", &wrong.cert_pem)],
    )
    .await;
    let _watcher = reload::spawn(gw.config_path.clone(), gw.shared.clone());
    let client = gw.h1();
    assert_bad_gateway(&client.get("/public/a", &[]).await);
    let generation = gw.shared.snapshot().generation;

    // Rewritten in place, as an operator's `cp` does; the config file is untouched.
    std::fs::write(gw.pki.dir.path().join("upstream-ca.pem"), &ca.cert_pem).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = client.get("/public/a", &[]).await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert_bad_gateway(&reply);
        assert!(
            Instant::now() < deadline,
            "still 502 after the CA was fixed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.shared.snapshot().generation > generation);
    assert_eq!(up.count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Redirects

#[tokio::test]
async fn a_location_at_the_https_upstreams_own_origin_is_rewritten_to_the_client_origin() {
    let ca = TestCa::new("Upstream CA");
    let up = tls_upstream(&ca, &["127.0.0.1"], None).await;
    let gw = gateway(
        &up.url(),
        "ca: upstream-ca.pem",
        &[("upstream-ca.pem", &ca.cert_pem)],
    )
    .await;
    let port = up.addr.port();
    for (location, want) in [
        (
            format!("https://127.0.0.1:{port}/next?x=1"),
            "https://localhost/next?x=1".to_owned(),
        ),
        (
            format!("HTTPS://127.0.0.1:{port}"),
            "https://localhost".to_owned(),
        ),
        // Another scheme on the same host and port is another origin.
        (
            format!("http://127.0.0.1:{port}/next"),
            format!("http://127.0.0.1:{port}/next"),
        ),
        ("/relative".to_owned(), "/relative".to_owned()),
    ] {
        let reply = gw
            .h1()
            .get("/public/redirect", &[("x-test-location", &location)])
            .await;
        assert_eq!(reply.status, StatusCode::FOUND, "{location}");
        assert_eq!(reply.header("location"), Some(want.as_str()), "{location}");
    }
}

// ---------------------------------------------------------------------------------------------
// WebSocket

#[tokio::test]
async fn a_websocket_upgrade_is_tunnelled_to_an_https_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new("Upstream CA");
    let up = tls_upstream(&ca, &["127.0.0.1"], None).await;
    let gw = gateway(
        &up.url(),
        "ca: upstream-ca.pem",
        &[("upstream-ca.pem", &ca.cert_pem)],
    )
    .await;
    let mut stream = gw.h1().tls().await;
    stream
        .write_all(
            b"GET /public/ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte))
            .await
            .expect("101 in time")
            .expect("101");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo_through(&mut stream, b"over tls both ways").await;
}

// ---------------------------------------------------------------------------------------------
// Config errors: `portcullis check`

/// `portcullis check` on `yaml` written as `gateway.yaml` in a directory holding `files`:
/// (exit code, stdout + stderr, the config's path).
fn check(yaml: &str, files: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let path = dir.path().join("gateway.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, stdout, stderr) = portcullis(["check".as_ref(), "-c".as_ref(), path.as_os_str()]);
    (
        code,
        format!("{stdout}\n{stderr}"),
        path.display().to_string(),
    )
}

/// A config whose only upstream, `billing` at `url`, has the `tls:` lines given (each
/// indented under it), starting at line 7.
fn billing(url: &str, tls: &[&str]) -> String {
    let mut yaml = format!(
        "listen: 127.0.0.1:8443\ntokens:\n  secret: \"{SECRET}\"\nupstreams:\n  billing:\n    url: {url}\n"
    );
    if !tls.is_empty() {
        yaml.push_str("    tls:\n");
        for line in tls {
            yaml.push_str(&format!("      {line}\n"));
        }
    }
    yaml.push_str("routes:\n  - { id: b, path: /b/**, upstream: billing, public: true }\n");
    yaml
}

fn assert_error_at(checked: &(i32, String, String), line: u64, fragment: &str) {
    let (code, output, path) = checked;
    assert_eq!(*code, 1, "{output}");
    let at = format!("{path}:{line}:");
    assert!(
        output
            .lines()
            .any(|l| l.contains(&at) && l.contains("upstreams.billing") && l.contains(fragment)),
        "expected `{at}COL: …upstreams.billing…{fragment}…`:\n{output}"
    );
}

#[test]
fn check_accepts_an_https_upstream_and_names_file_line_and_upstream_for_each_tls_mistake() {
    let ca = TestCa::new("Upstream CA");
    let client = ca.issue("gw", &[]);
    let other = ca.issue("other", &[]);
    let files = [
        ("ca.pem", ca.cert_pem.as_str()),
        ("client.pem", client.cert_pem.as_str()),
        ("client-key.pem", client.key_pem.as_str()),
        ("other-key.pem", other.key_pem.as_str()),
        ("garbage.pem", "not a certificate\n"),
    ];
    let url = "https://billing.internal:9443";
    let good = [
        "ca: ca.pem",
        "server_name: billing.internal",
        "client_cert: client.pem",
        "client_key: client-key.pem",
    ];
    let (code, output, _) = check(&billing(url, &good), &files);
    assert_eq!(code, 0, "{output}");

    // Line 7 is `tls:`, its keys follow from line 8.
    let http = billing("http://127.0.0.1:9000", &["ca: ca.pem"]);
    assert_error_at(
        &check(&http, &files),
        8,
        "only an https:// upstream takes `tls:`",
    );
    let echo = billing("\"echo:\"", &["ca: ca.pem"]);
    assert_error_at(
        &check(&echo, &files),
        8,
        "only an https:// upstream takes `tls:`",
    );

    let lonely = billing(url, &["ca: ca.pem", "client_cert: client.pem"]);
    assert_error_at(&check(&lonely, &files), 9, "needs `client_key`");
    let lonely = billing(url, &["client_key: client-key.pem"]);
    assert_error_at(&check(&lonely, &files), 8, "needs `client_cert`");

    let missing = billing(url, &["ca: no-such-ca.pem"]);
    assert_error_at(&check(&missing, &files), 8, "cannot read");
    let garbage = billing(url, &["ca: garbage.pem"]);
    assert_error_at(&check(&garbage, &files), 8, "no CERTIFICATE");

    let mismatch = billing(
        url,
        &[
            "ca: ca.pem",
            "client_cert: client.pem",
            "client_key: other-key.pem",
        ],
    );
    assert_error_at(&check(&mismatch, &files), 9, "not the key of client_cert");

    let bad_name = billing(url, &["ca: ca.pem", "server_name: \"not a name\""]);
    assert_error_at(&check(&bad_name, &files), 9, "not a valid DNS name");

    let typo = billing(url, &["ca: ca.pem", "skip_verify: true"]);
    let (code, output, path) = check(&typo, &files);
    assert_eq!(code, 1, "{output}");
    assert!(
        output.contains(&format!("{path}:9:")) && output.contains("skip_verify"),
        "{output}"
    );
}
