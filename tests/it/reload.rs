//! Hot reload against a real in-process gateway: direct `reload()` calls and the file watcher,
//! keep-alive connections across a swap, invalid edits, certificate rotation, metrics, and
//! in-flight requests finishing on the config they started with.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use portcullis::reload::{self, ReloadOutcome};
use rustls::pki_types::ServerName;

const FLIP_PUBLIC: &str = "  - { id: flip, path: /flip/**, upstream: up, public: true }\n";
const FLIP_DENY: &str = "  - { id: flip, path: /flip/**, deny: true }\n";
const SLOW_PUBLIC: &str = "  - { id: slow, path: /slow/**, upstream: up, public: true }\n";
const SLOW_DENY: &str = "  - { id: slow, path: /slow/**, deny: true }\n";

/// The body of a config (without `listen`/`tls`): the fixture plus extra routes.
fn body(up: &Upstream, extra_routes: &[&str]) -> String {
    let mut yaml = fixture_yaml(&up.url());
    for route in extra_routes {
        yaml.push_str(route);
    }
    yaml
}

/// Write a sibling temp file and rename it over the config, as editors and `mv` do.
fn replace_config(gw: &Gateway, body: &str) {
    let tmp = gw.config_path.with_file_name(".gateway.yaml.tmp");
    std::fs::write(&tmp, config_text(&gw.pki, body)).expect("write temp config");
    std::fs::rename(&tmp, &gw.config_path).expect("rename over config");
}

fn reload_now(gw: &Gateway) -> ReloadOutcome {
    reload::reload(&gw.config_path, &gw.shared)
}

fn assert_applied(outcome: &ReloadOutcome) -> u64 {
    match outcome {
        ReloadOutcome::Applied { generation } => *generation,
        other => panic!("expected Applied, got {other:?}"),
    }
}

fn assert_rejected(outcome: &ReloadOutcome) -> String {
    match outcome {
        ReloadOutcome::Rejected { error } => error.clone(),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

/// Poll GET `path` on fresh connections until it answers `want` (bounded).
async fn eventually_status(client: &Client, path: &str, want: StatusCode, within: Duration) {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        let status = client.get(path, &[]).await.status;
        if status == want {
            return;
        }
        last = Some(status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("GET {path} did not become {want} within {within:?} (last: {last:?})");
}

/// The value of `portcullis_reloads_total{outcome="<outcome>"}`, 0 when absent.
fn reloads_total(gw: &Gateway, outcome: &str) -> f64 {
    let text = gw.shared.metrics.render();
    let prefix = format!("portcullis_reloads_total{{outcome=\"{outcome}\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            rest.split_whitespace()
                .next()
                .expect("value")
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("bad value in {rest:?}: {e}"))
        })
        .unwrap_or(0.0)
}

fn get_request(client: &Client, path: &str) -> http::Request<Full<Bytes>> {
    client
        .request("GET", path)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

// ---------------------------------------------------------------------------------------------
// reload() directly

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_changed_from_public_to_deny_applies_to_the_next_request_on_the_same_connections() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[FLIP_PUBLIC])).await;
    let (h1, h2) = (gw.h1(), gw.h2());
    let mut c1 = h1.connect().await;
    let mut c2 = h2.connect().await;
    assert_eq!(
        c1.send(get_request(&h1, "/flip/a")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        c2.send(get_request(&h2, "/flip/a")).await.status,
        StatusCode::OK
    );
    let seen_before = up.count();

    gw.write_config(&body(&up, &[FLIP_DENY]));
    assert_applied(&reload_now(&gw));

    let r1 = c1.send(get_request(&h1, "/flip/b")).await;
    assert_eq!(
        r1.status,
        StatusCode::FORBIDDEN,
        "same h1 connection: {}",
        r1.text()
    );
    let r2 = c2.send(get_request(&h2, "/flip/b")).await;
    assert_eq!(
        r2.status,
        StatusCode::FORBIDDEN,
        "same h2 connection: {}",
        r2.text()
    );
    assert_eq!(
        up.count(),
        seen_before,
        "a denied request reached the upstream"
    );
    // And back again on the same connections.
    gw.write_config(&body(&up, &[FLIP_PUBLIC]));
    assert_applied(&reload_now(&gw));
    assert_eq!(
        c1.send(get_request(&h1, "/flip/c")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        c2.send(get_request(&h2, "/flip/c")).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_applied_reload_gets_a_higher_generation_and_an_unchanged_file_is_not_reapplied() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[FLIP_PUBLIC])).await;
    let first = gw.shared.snapshot().generation;
    assert_eq!(reload_now(&gw), ReloadOutcome::Unchanged);
    assert_eq!(gw.shared.snapshot().generation, first);

    gw.write_config(&body(&up, &[FLIP_DENY]));
    let second = assert_applied(&reload_now(&gw));
    assert!(second > first, "{second} after {first}");
    assert_eq!(gw.shared.snapshot().generation, second);
    gw.write_config(&body(&up, &[FLIP_PUBLIC]));
    let third = assert_applied(&reload_now(&gw));
    assert!(third > second, "{third} after {second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yaml_syntax_error_is_rejected_with_file_and_line_and_the_old_rules_keep_serving() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[FLIP_PUBLIC])).await;
    let generation = gw.shared.snapshot().generation;
    let mut conn = gw.h1().connect().await;

    // The broken route becomes the last line of the file.
    let broken = body(
        &up,
        &[
            FLIP_DENY,
            "  - { id: broken, path: /broken/**, deny: true\n",
        ],
    );
    gw.write_config(&broken);
    let line = config_text(&gw.pki, &broken).lines().count();
    let error = assert_rejected(&reload_now(&gw));
    let file = gw.config_path.display().to_string();
    assert!(
        error.contains(&format!("{file}:{line}:")),
        "error does not name {file}:{line}: {error}"
    );

    assert_eq!(gw.shared.snapshot().generation, generation);
    let reply = conn.send(get_request(&gw.h1(), "/flip/x")).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the old config must keep serving"
    );
    assert_eq!(gw.h2().get("/flip/x", &[]).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_scope_edit_is_rejected_with_file_and_line_and_the_old_rules_keep_serving() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[FLIP_PUBLIC])).await;
    let generation = gw.shared.snapshot().generation;

    let bad = body(
        &up,
        &["  - { id: flip, path: /flip/**, upstream: up, scopes: [raed] }\n"],
    );
    gw.write_config(&bad);
    let line = config_text(&gw.pki, &bad).lines().count();
    let error = assert_rejected(&reload_now(&gw));
    let file = gw.config_path.display().to_string();
    assert!(
        error.contains(&format!("{file}:{line}:")),
        "error does not name {file}:{line}: {error}"
    );
    assert!(
        error.contains("raed"),
        "error does not name the scope: {error}"
    );

    assert_eq!(gw.shared.snapshot().generation, generation);
    assert_eq!(gw.h1().get("/flip/x", &[]).await.status, StatusCode::OK);
    // A later valid edit still applies.
    gw.write_config(&body(&up, &[FLIP_DENY]));
    assert_applied(&reload_now(&gw));
    assert_eq!(
        gw.h1().get("/flip/x", &[]).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_edit_applies_on_reload_new_user_logs_in_and_removed_user_cannot() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[])).await;
    let client = gw.h1();
    assert_eq!(
        client.login("carol", "secret123").await.status,
        StatusCode::BAD_REQUEST
    );
    let edited = fixture_yaml(&up.url()).replace(
        "  alice: {",
        &format!("  carol: {{ password: \"{SECRET123_HASH}\", scopes: [read] }}\n  alicia: {{"),
    );
    assert!(edited.contains("carol"), "fixture changed shape: {edited}");
    gw.write_config(&edited);
    assert_applied(&reload_now(&gw));
    let token = client.token("carol", "secret123").await;
    assert_eq!(
        client.get_with_token("/api/items", &token).await.status,
        StatusCode::OK
    );
    assert_eq!(
        client.login("alice", "secret123").await.status,
        StatusCode::BAD_REQUEST
    );
}

// ---------------------------------------------------------------------------------------------
// The watcher

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_applies_in_place_writes_and_rename_over_replacements() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[FLIP_PUBLIC])).await;
    let _watcher = reload::spawn(gw.config_path.clone(), gw.shared.clone());
    let client = gw.h1();
    let within = Duration::from_secs(5);
    assert_eq!(client.get("/flip/x", &[]).await.status, StatusCode::OK);

    gw.write_config(&body(&up, &[FLIP_DENY]));
    eventually_status(&client, "/flip/x", StatusCode::FORBIDDEN, within).await;

    // Editors write a temp file and rename it over the original (new inode)...
    replace_config(&gw, &body(&up, &[FLIP_PUBLIC]));
    eventually_status(&client, "/flip/x", StatusCode::OK, within).await;
    // ...and the watch must survive that, so do it again, then edit in place once more.
    replace_config(&gw, &body(&up, &[FLIP_DENY]));
    eventually_status(&client, "/flip/x", StatusCode::FORBIDDEN, within).await;
    gw.write_config(&body(&up, &[FLIP_PUBLIC]));
    eventually_status(&client, "/flip/x", StatusCode::OK, within).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_keeps_the_old_config_on_an_invalid_edit_and_applies_the_next_valid_one() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[FLIP_PUBLIC])).await;
    let _watcher = reload::spawn(gw.config_path.clone(), gw.shared.clone());
    let client = gw.h1();
    let rejected_before = reloads_total(&gw, "rejected");

    replace_config(
        &gw,
        &body(
            &up,
            &["  - { id: flip, path: /flip/**, deny: true, bogus: 1 }\n"],
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads_total(&gw, "rejected") <= rejected_before {
        assert!(
            Instant::now() < deadline,
            "the watcher never tried the invalid edit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.get("/flip/x", &[]).await.status, StatusCode::OK);

    replace_config(&gw, &body(&up, &[FLIP_DENY]));
    eventually_status(
        &client,
        "/flip/x",
        StatusCode::FORBIDDEN,
        Duration::from_secs(5),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// No request fails across reloads

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_on_keep_alive_connections_never_fail_while_the_config_flips() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[FLIP_PUBLIC])).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for client in [gw.h1(), gw.h2()] {
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let mut conn = client.connect().await;
            let (mut ok, mut forbidden, mut n) = (0u32, 0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let request = get_request(&client, &format!("/flip/{n}"));
                n += 1;
                match conn.try_send(request).await {
                    Ok(reply) if reply.status == StatusCode::OK => ok += 1,
                    Ok(reply) if reply.status == StatusCode::FORBIDDEN => forbidden += 1,
                    Ok(reply) => {
                        panic!("request {n}: unexpected {}: {}", reply.status, reply.text())
                    }
                    Err(err) => panic!("request {n}: connection error: {err}"),
                }
            }
            (ok, forbidden)
        }));
    }
    let started = Instant::now();
    let mut flips = 0;
    while started.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let next = if flips % 2 == 0 {
            FLIP_DENY
        } else {
            FLIP_PUBLIC
        };
        gw.write_config(&body(&up, &[next]));
        let path = gw.config_path.clone();
        let shared = gw.shared.clone();
        let outcome = tokio::task::spawn_blocking(move || reload::reload(&path, &shared))
            .await
            .unwrap();
        assert_applied(&outcome);
        flips += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for (proto, handle) in ["h1", "h2"].into_iter().zip(loops) {
        let (ok, forbidden) = handle
            .await
            .unwrap_or_else(|e| panic!("{proto} loop failed: {e}"));
        assert!(
            ok > 0 && forbidden > 0,
            "{proto}: {ok} × 200, {forbidden} × 403 over {flips} flips"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// Try a fresh TLS handshake trusting only `ca`.
async fn handshake_trusting(
    gw: &Gateway,
    ca: &rustls::pki_types::CertificateDer<'static>,
) -> Result<(), String> {
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(ca, &[b"http/1.1"]));
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn write_cert(cert: &Path, key: &Path, cert_pem: &str, key_pem: &str) {
    std::fs::write(cert, cert_pem).expect("write cert");
    std::fs::write(key, key_pem).expect("write key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rewritten_in_place_is_served_to_new_handshakes_after_a_reload() {
    // The operator's renewal: same paths, new files (certbot, cert-manager), config untouched.
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[])).await;
    let old_ca = gw.pki.ca_der.clone();
    handshake_trusting(&gw, &old_ca)
        .await
        .expect("old CA before the swap");

    let (new_ca, cert_pem, key_pem) = issue_server_cert("Portcullis Rotated CA");
    write_cert(&gw.pki.cert_path, &gw.pki.key_path, &cert_pem, &key_pem);
    let outcome = reload_now(&gw);
    assert!(
        !matches!(outcome, ReloadOutcome::Rejected { .. }),
        "reload after a certificate rewrite: {outcome:?}"
    );

    let new = handshake_trusting(&gw, &new_ca).await;
    assert!(
        new.is_ok(),
        "handshake trusting only the new CA failed after reload ({outcome:?}): {new:?}"
    );
    let old = handshake_trusting(&gw, &old_ca).await;
    assert!(
        old.is_err(),
        "handshake trusting only the old CA still succeeds after reload ({outcome:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_pointing_tls_at_new_files_serves_the_new_certificate_after_a_reload() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[])).await;
    let old_ca = gw.pki.ca_der.clone();
    let mut conn = gw.h1().connect().await;

    let (new_ca, cert_pem, key_pem) = issue_server_cert("Portcullis Second CA");
    let cert = gw.pki.dir.path().join("gateway-2.pem");
    let key = gw.pki.dir.path().join("gateway-2-key.pem");
    write_cert(&cert, &key, &cert_pem, &key_pem);
    let text = format!(
        "listen: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n{}",
        cert.display(),
        key.display(),
        body(&up, &[])
    );
    std::fs::write(&gw.config_path, text).unwrap();
    assert_applied(&reload_now(&gw));

    handshake_trusting(&gw, &new_ca)
        .await
        .expect("new CA after the reload");
    assert!(
        handshake_trusting(&gw, &old_ca).await.is_err(),
        "old CA still accepted"
    );
    // A connection established before the swap keeps working.
    let reply = conn.send(get_request(&gw.h1(), "/public/still-here")).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_and_key_that_do_not_match_are_rejected_and_the_old_certificate_stays() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[])).await;
    let (_, cert_pem, _) = issue_server_cert("Mismatch CA one");
    let (_, _, other_key_pem) = issue_server_cert("Mismatch CA two");
    let cert = gw.pki.dir.path().join("mismatch.pem");
    let key = gw.pki.dir.path().join("mismatch-key.pem");
    write_cert(&cert, &key, &cert_pem, &other_key_pem);
    let text = format!(
        "listen: 127.0.0.1:0\ntls:\n  cert: {}\n  key: {}\n{}",
        cert.display(),
        key.display(),
        body(&up, &[])
    );
    std::fs::write(&gw.config_path, text).unwrap();
    assert_rejected(&reload_now(&gw));
    handshake_trusting(&gw, &gw.pki.ca_der)
        .await
        .expect("the old certificate keeps serving");
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_metrics_count_applied_and_rejected_outcomes() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[FLIP_PUBLIC])).await;
    let applied = reloads_total(&gw, "applied");
    let rejected = reloads_total(&gw, "rejected");

    gw.write_config(&body(&up, &[FLIP_DENY]));
    assert_applied(&reload_now(&gw));
    assert_eq!(
        reloads_total(&gw, "applied"),
        applied + 1.0,
        "{}",
        gw.shared.metrics.render()
    );
    assert_eq!(reloads_total(&gw, "rejected"), rejected);

    gw.write_config(&body(
        &up,
        &["  - { id: flip, path: /flip/**, deny: yes please\n"],
    ));
    assert_rejected(&reload_now(&gw));
    assert_eq!(
        reloads_total(&gw, "rejected"),
        rejected + 1.0,
        "{}",
        gw.shared.metrics.render()
    );
    assert_eq!(reloads_total(&gw, "applied"), applied + 1.0);
    let text = gw.shared.metrics.render();
    assert!(
        text.contains("portcullis_reloads_total{outcome=\"applied\"}"),
        "{text}"
    );
    assert!(
        text.contains("portcullis_reloads_total{outcome=\"rejected\"}"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// In-flight requests

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_in_flight_request_finishes_on_the_old_config_while_new_ones_see_the_new_one() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&body(&up, &[SLOW_PUBLIC])).await;
    let (h1, h2) = (gw.h1(), gw.h2());

    // One slow request on its own h1 connection, one on an h2 connection we reuse afterwards.
    let slow_h1 = {
        let h1 = h1.clone();
        tokio::spawn(async move { h1.get("/slow/1500/h1", &[]).await })
    };
    let Connection::H2(sender) = h2.connect().await else {
        unreachable!("h2 client opened an h1 connection")
    };
    let mut same_h2 = Connection::H2(sender.clone());
    let slow_h2 = {
        let mut conn = Connection::H2(sender);
        let request = get_request(&h2, "/slow/1500/h2");
        tokio::spawn(async move { conn.send(request).await })
    };

    let deadline = Instant::now() + Duration::from_secs(5);
    while up
        .seen()
        .iter()
        .filter(|s| s.target.starts_with("/slow/"))
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the slow requests never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.write_config(&body(&up, &[SLOW_DENY]));
    assert_applied(&reload_now(&gw));

    let fresh = h1.get("/slow/10/new", &[]).await;
    assert_eq!(
        fresh.status,
        StatusCode::FORBIDDEN,
        "new request after the reload"
    );
    let same = same_h2.send(get_request(&h2, "/slow/10/new")).await;
    assert_eq!(
        same.status,
        StatusCode::FORBIDDEN,
        "new stream on the in-flight h2 connection"
    );

    let old_h1 = tokio::time::timeout(Duration::from_secs(10), slow_h1)
        .await
        .expect("h1 slow request hung")
        .unwrap();
    assert_eq!(
        old_h1.status,
        StatusCode::OK,
        "in-flight h1 request: {}",
        old_h1.text()
    );
    let old_h2 = tokio::time::timeout(Duration::from_secs(10), slow_h2)
        .await
        .expect("h2 slow request hung")
        .unwrap();
    assert_eq!(
        old_h2.status,
        StatusCode::OK,
        "in-flight h2 request: {}",
        old_h2.text()
    );
    assert!(old_h1.text().contains("/slow/1500/h1"), "{}", old_h1.text());
}
