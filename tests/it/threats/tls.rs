//! THREATS: TLS versions and suites, no 0-RTT, and no cleartext HTTP.

use crate::common::*;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::raw_h2::SETTINGS;

// ---------------------------------------------------------------------------------------------
// X-01 … X-04: TLS.

/// A TLS 1.0 ClientHello (record and handshake version 3.1, no supported_versions extension).
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn a_tls10_client_hello_is_refused_without_a_server_hello() {
    // THREATS X-01
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(&tls10_client_hello()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut reply)).await;
    // Either an alert record (0x15) or a plain close; never a handshake record (ServerHello).
    assert!(
        reply.first().is_none_or(|b| *b == 0x15),
        "answered with {:02x?}",
        &reply[..reply.len().min(16)]
    );
}

#[tokio::test]
async fn tls12_and_tls13_both_negotiate_only_aead_ecdhe_suites() {
    // THREATS X-01
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(gw.pki.ca_der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.expect("handshake");
        let conn = tls.get_ref().1;
        assert_eq!(conn.protocol_version(), Some(version.version));
        let suite = format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite());
        assert!(
            suite.contains("GCM") || suite.contains("CHACHA20_POLY1305"),
            "{suite}"
        );
        if version.version == rustls::ProtocolVersion::TLSv1_2 {
            assert!(suite.contains("ECDHE"), "{suite}");
        }
    }
}

/// A client session store that records the 0-RTT allowance of every TLS 1.3 ticket received.
#[derive(Debug)]
struct TicketSpy {
    inner: rustls::client::ClientSessionMemoryCache,
    max_early_data: std::sync::Mutex<Vec<u32>>,
}

impl rustls::client::ClientSessionStore for TicketSpy {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.max_early_data
            .lock()
            .unwrap()
            .push(value.max_early_data_size());
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

#[tokio::test]
async fn tls13_tickets_never_allow_early_data_and_resumptions_accept_none() {
    // THREATS X-02: 0-RTT would let a login POST be replayed.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let spy = Arc::new(TicketSpy {
        inner: rustls::client::ClientSessionMemoryCache::new(16),
        max_early_data: std::sync::Mutex::new(Vec::new()),
    });
    let mut config = (*tls_client_config(&gw.pki.ca_der, &[b"http/1.1"])).clone();
    config.enable_early_data = true;
    config.resumption = rustls::client::Resumption::store(spy.clone());
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let request = b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for round in 0..2 {
        let tcp = TcpStream::connect(gw.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.expect("handshake");
        tls.write_all(request).await.unwrap();
        tls.flush().await.unwrap();
        let answer = parse_raw(&read_until_close(&mut tls, Duration::from_secs(3)).await);
        assert_eq!(answer.status, 200, "round {round}: {answer:?}");
        assert!(
            !tls.get_ref().1.is_early_data_accepted(),
            "round {round}: the gateway accepted 0-RTT data"
        );
    }
    let allowances = spy.max_early_data.lock().unwrap().clone();
    assert!(
        allowances.iter().all(|n| *n == 0),
        "tickets offering early data: {allowances:?}"
    );
    assert_eq!(up.count(), 2, "each request was forwarded exactly once");
}

#[tokio::test]
async fn cleartext_http1_and_h2c_prior_knowledge_get_no_http_answer() {
    // THREATS X-04 (and L-12: the login endpoint exists only behind TLS): the one listener
    // speaks TLS only.
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let cases: [(&str, &[u8]); 3] = [
        (
            "HTTP/1.1",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        ),
        (
            "login",
            b"POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 34\r\n\r\nusername=alice&password=secret123",
        ),
        ("h2c prior knowledge", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
    ];
    for (label, bytes) in cases {
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        let _ = tcp.write_all(bytes).await;
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut reply)).await;
        assert!(
            !reply.starts_with(b"HTTP/") && !reply.windows(4).any(|w| w == b"HTTP"),
            "{label}: cleartext answer {:?}",
            String::from_utf8_lossy(&reply)
        );
        // An h2 server preface starts with a SETTINGS frame (type 4 at byte 3).
        assert!(
            reply.len() < 9 || reply[3] != SETTINGS || reply[0] == 0x15,
            "{label}: spoke HTTP/2 in cleartext: {:02x?}",
            &reply[..reply.len().min(16)]
        );
    }
    assert_eq!(up.count(), 0, "a cleartext request reached the upstream");
}
