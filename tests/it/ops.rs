//! Operations against the real binary: admin endpoints, metrics, the access log (and what it
//! must never contain), SIGHUP reload, graceful SIGTERM drain, JSON logs.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;

/// Parse Prometheus / OpenMetrics text strictly enough to catch garbage: every line is a
/// comment or `name{labels} value`. Returns (series, value) pairs.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not `series value`: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value in {line:?}"));
        samples.push((series.to_owned(), value));
    }
    samples
}

async fn metrics(proc: &Proc) -> Vec<(String, f64)> {
    let (status, body) = admin_get(proc.admin, "/metrics").await.expect("/metrics");
    assert_eq!(status, 200, "{body}");
    parse_prometheus(&body)
}

fn requests_total(samples: &[(String, f64)]) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| {
            s.starts_with("portcullis_requests_total{") || s == "portcullis_requests_total"
        })
        .map(|(_, v)| v)
        .sum()
}

/// Remove ANSI colour sequences from pretty log output.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn with_slow_route(up: &Upstream) -> String {
    format!(
        "{}  - {{ id: slow, path: /slow/**, upstream: up, public: true }}\n",
        fixture_yaml(&up.url())
    )
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_healthz_and_readyz_answer_200() {
    let up = Upstream::start().await;
    let mut proc = Proc::start(&fixture_yaml(&up.url())).await;
    let (status, _) = admin_get(proc.admin, "/healthz").await.unwrap();
    assert_eq!(status, 200);
    let (status, body) = admin_get(proc.admin, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    proc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_requests_total_increases_after_a_proxied_request() {
    let up = Upstream::start().await;
    let mut proc = Proc::start(&fixture_yaml(&up.url())).await;
    let before = metrics(&proc).await;
    let reply = proc.h1().get("/public/counted", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(up.last().unwrap().target, "/public/counted");

    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let after = metrics(&proc).await;
        if requests_total(&after) >= requests_total(&before) + 1.0 {
            assert!(
                after
                    .iter()
                    .any(|(s, v)| s.starts_with("portcullis_requests_total{")
                        && s.contains("route=\"public\"")
                        && s.contains("method=\"GET\"")
                        && s.contains("200")
                        && *v >= 1.0),
                "no per-route sample for the public route: {after:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "portcullis_requests_total did not increase: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = admin_get(proc.admin, "/metrics").await.unwrap().1;
    assert!(
        text.contains("portcullis_request_duration_seconds"),
        "no latency histogram:\n{text}"
    );
    proc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_records_the_request_and_never_the_password_token_or_cookie() {
    let up = Upstream::start().await;
    let mut proc = Proc::start(&fixture_yaml(&up.url())).await;
    let client = proc.h1();
    let password = "secret123";
    let token = client.token("alice", password).await;
    let reply = client
        .get(
            "/api/items?q=querysecret",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("cookie", "session=SECRETCOOKIE123"),
                ("x-request-id", "ops-test-request-0001"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let request_id = reply
        .header("x-request-id")
        .expect("x-request-id returned")
        .to_owned();
    // Refused for a missing scope: the log still names who was refused.
    let refused = client
        .call(
            "DELETE",
            "/api/items/1",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-request-id", "ops-test-refused-0002"),
            ],
            "",
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    // A failed login too: its (wrong) password must not be logged either.
    assert_eq!(
        client.login("alice", "WrongPassw0rdXYZ").await.status,
        StatusCode::BAD_REQUEST
    );

    let log = strip_ansi(&proc.terminate().await);
    let access = log
        .lines()
        .find(|l| l.contains(&request_id) && l.contains("api-read") && l.contains("200"))
        .unwrap_or_else(|| {
            panic!(
                "no access-log line with request id {request_id}, route api-read and 200:\n{log}"
            )
        });
    assert!(
        access.contains("/api/items"),
        "the normalised path is missing: {access}"
    );
    assert!(
        access.contains("trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
        "the caller's trace id is in the line: {access}"
    );
    assert!(access.contains("alice"), "the user is missing: {access}");
    let refused_line = log
        .lines()
        .find(|l| l.contains("ops-test-refused-0002"))
        .unwrap_or_else(|| panic!("no access-log line for the refused request:\n{log}"));
    assert!(
        refused_line.contains("403") && refused_line.contains("alice"),
        "a refused caller must be named: {refused_line}"
    );
    for secret in [
        password,
        "WrongPassw0rdXYZ",
        token.as_str(),
        "SECRETCOOKIE123",
        "Bearer ",
    ] {
        assert!(!log.contains(secret), "the log contains {secret:?}:\n{log}");
    }
    // The token's signature alone must not appear either (e.g. logged without its header).
    let signature = token.rsplit('.').next().unwrap();
    assert!(
        !log.contains(signature),
        "the log contains the token signature"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_config() {
    let up = Upstream::start().await;
    let flip_public = format!(
        "{}  - {{ id: flip, path: /flip/**, upstream: up, public: true }}\n",
        fixture_yaml(&up.url())
    );
    let flip_deny = format!(
        "{}  - {{ id: flip, path: /flip/**, deny: true }}\n",
        fixture_yaml(&up.url())
    );
    // The config is a symlink into a subdirectory the file watcher does not see, so only
    // SIGHUP can make the gateway notice the edit.
    let mut proc = Proc::start_with(&flip_public, true).await;
    let client = proc.h1();
    assert_eq!(client.get("/flip/x", &[]).await.status, StatusCode::OK);
    proc.write_config(&flip_deny);

    signal(proc.pid, "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = client.get("/flip/x", &[]).await.status;
        if status == StatusCode::FORBIDDEN {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} 5 s after SIGHUP:\n{}",
            proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The process is still serving after the signal.
    assert_eq!(
        client.get("/public/alive", &[]).await.status,
        StatusCode::OK
    );
    proc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_an_invalid_file_keeps_the_old_config_and_keeps_running() {
    let up = Upstream::start().await;
    let mut proc = Proc::start(&fixture_yaml(&up.url())).await;
    let client = proc.h1();
    let text = proc.write_config(&format!(
        "{}  - {{ id: broken, path: /x/**\n",
        fixture_yaml(&up.url())
    ));
    signal(proc.pid, "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    let position = format!("{}:{}:", proc.config_path.display(), text.lines().count());
    while !proc.stderr().contains(&position) {
        assert!(
            Instant::now() < deadline,
            "the rejected reload was not logged with {position}COL:\n{}",
            proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proc.child.try_wait().unwrap().is_none(),
        "the process died on a bad reload"
    );
    assert_eq!(
        client.get("/public/still", &[]).await.status,
        StatusCode::OK
    );
    assert_eq!(
        client.get("/internal/x", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    proc.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0_within_the_grace_period() {
    let up = Upstream::start().await;
    let mut proc = Proc::start(&format!(
        "limits: {{ shutdown_grace: 10s }}\n{}",
        with_slow_route(&up)
    ))
    .await;
    let client = proc.h1();
    let in_flight = tokio::spawn(async move { client.get("/slow/2000/drain", &[]).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !up.seen().iter().any(|s| s.target == "/slow/2000/drain") {
        assert!(
            Instant::now() < deadline,
            "the slow request never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let signalled = Instant::now();
    signal(proc.pid, "TERM");

    // While draining, /readyz says so (load balancers stop sending traffic).
    let mut saw_draining = false;
    while !in_flight.is_finished() {
        if let Ok((503, _)) = admin_get(proc.admin, "/readyz").await {
            saw_draining = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let reply = tokio::time::timeout(Duration::from_secs(12), in_flight)
        .await
        .expect("the in-flight request hung")
        .unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "in-flight request: {}",
        reply.text()
    );
    assert!(
        reply.text().contains("/slow/2000/drain"),
        "{}",
        reply.text()
    );
    let status = proc.wait_exit(Duration::from_secs(12)).await;
    assert!(status.success(), "exit status {status}:\n{}", proc.stderr());
    assert!(
        signalled.elapsed() < Duration::from_secs(11),
        "took {:?} to exit",
        signalled.elapsed()
    );
    assert!(saw_draining, "/readyz never reported 503 while draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nothing_in_flight_exits_0_promptly() {
    let up = Upstream::start().await;
    let mut proc = Proc::start(&fixture_yaml(&up.url())).await;
    let _ = proc.h1().get("/public/x", &[]).await;
    signal(proc.pid, "TERM");
    let status = proc.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status}:\n{}", proc.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_for_connections_that_never_sent_a_request() {
    let up = Upstream::start().await;
    let mut proc = Proc::start(&format!(
        "limits: {{ shutdown_grace: 30s, header_read_timeout: 20s }}\n{}",
        fixture_yaml(&up.url())
    ))
    .await;
    // TLS done, then silence: nothing is in progress on either, so nothing to wait for.
    let _silent_h1 = proc.h1().tls().await;
    let _silent_h2 = proc.h2().tls().await;
    signal(proc.pid, "TERM");
    let status = proc.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status}:\n{}", proc.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_writes_access_log_lines_as_json_objects() {
    let up = Upstream::start().await;
    let mut proc = Proc::start(&format!(
        "log: {{ format: json }}\n{}",
        fixture_yaml(&up.url())
    ))
    .await;
    let client = proc.h1();
    let token = fixture_token("bob", "read write");
    let reply = client
        .get(
            "/api/things",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("x-request-id", "ops-json-request-0002"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let request_id = reply
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    let denied = client.get("/internal/secret", &[]).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);

    let log = proc.terminate().await;
    let lines_with_id: Vec<&str> = log.lines().filter(|l| l.contains(&request_id)).collect();
    assert!(
        !lines_with_id.is_empty(),
        "request id {request_id} not logged:\n{log}"
    );
    let mut access = None;
    for line in &lines_with_id {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value.is_object(), "{line}");
        if serde_json::to_string(&value).unwrap().contains("api-read") {
            access = Some(value);
        }
    }
    let access = access.unwrap_or_else(|| panic!("no JSON access line naming the route:\n{log}"));
    let text = access.to_string();
    assert!(text.contains("/api/things"), "{text}");
    assert!(text.contains("200"), "{text}");
    assert!(text.contains("bob"), "{text}");
    assert!(!log.contains(&token), "the token was logged");
    // The denied request has its own JSON line with 403.
    assert!(
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| {
                let t = v.to_string();
                t.contains("/internal/secret") && t.contains("403")
            }),
        "no JSON access line for the denied request:\n{log}"
    );
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn the_admin_listener_backs_off_instead_of_spinning_when_out_of_file_descriptors() {
    let up = Upstream::start().await;
    let proc = Proc::start(&fixture_yaml(&up.url())).await;
    let limited = Command::new("prlimit")
        .arg(format!("--pid={}", proc.pid))
        .arg("--nofile=64:64")
        .status()
        .expect("prlimit");
    assert!(limited.success());
    // Hold admin connections until the gateway's accepts fail with EMFILE; the rest wait in
    // the listen backlog, so every accept attempt fails at once.
    let mut held = Vec::new();
    for _ in 0..100 {
        if let Ok(stream) = tokio::net::TcpStream::connect(proc.admin).await {
            held.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cpu_ticks(proc.pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(proc.pid) - before;
    // A loop retrying at once burns a whole core (≈100 ticks a second); backing off, it idles.
    assert!(
        used < 30,
        "{used} ticks of CPU in 1 s while out of file descriptors"
    );
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !matches!(admin_get(proc.admin, "/healthz").await, Ok((200, _))) {
        assert!(Instant::now() < deadline, "admin did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alerts_use_only_metrics_the_gateway_exports() {
    let up = Upstream::start().await;
    let mut proc = Proc::start(&fixture_yaml(&up.url())).await;
    let client = proc.h1();
    // One of each kind of event, so every family has samples.
    let token = client.token("alice", "secret123").await;
    assert_eq!(
        client.get_with_token("/api/items", &token).await.status,
        StatusCode::OK
    );
    let (status, text) = admin_get(proc.admin, "/metrics").await.expect("/metrics");
    assert_eq!(status, 200);
    let exported: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for file in ["grafana-dashboard.json", "prometheus-alerts.yaml"] {
        let used = std::fs::read_to_string(root.join(file)).expect("read example");
        let names = crate::deploy::metric_names(&used);
        assert!(names.len() >= 4, "{file}: {names:?}");
        for name in names {
            // Counters without samples yet still announce themselves in `# TYPE`.
            let family = name.trim_end_matches("_total");
            let announced = text.contains(&format!("# TYPE {family} "));
            assert!(
                exported.contains(&name.as_str()) || announced,
                "{file} uses {name}, which /metrics does not export:\n{text}"
            );
        }
    }
    proc.terminate().await;
}

/// An upstream that answers every request with a chunked body of `chunks` × 1 KiB, one chunk
/// every `gap`: a slow streamed download.
async fn start_trickling_upstream(chunks: usize, gap: Duration) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                for _ in 0..chunks {
                    tokio::time::sleep(gap).await;
                    let mut chunk = b"400\r\n".to_vec();
                    chunk.extend_from_slice(&[b'x'; 1024]);
                    chunk.extend_from_slice(b"\r\n");
                    if stream.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = stream.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_download_logs_the_time_to_its_last_byte_and_the_bytes_sent() {
    let up = Upstream::start().await;
    let trickle = start_trickling_upstream(6, Duration::from_millis(150)).await;
    let yaml = fixture_yaml(&up.url()).replace(
        "upstreams:\n",
        &format!("upstreams:\n  slow: http://{trickle}\n"),
    ) + "  - { id: download, path: /download/**, upstream: slow, public: true }\n";
    let mut proc = Proc::start(&yaml).await;
    let started = Instant::now();
    let reply = proc
        .h1()
        .get("/download/x", &[("x-request-id", "ops-test-download-0003")])
        .await;
    let took = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body.len(), 6 * 1024);
    assert!(took >= Duration::from_millis(800), "downloaded in {took:?}");

    let log = strip_ansi(&proc.terminate().await);
    let line = log
        .lines()
        .find(|l| l.contains("ops-test-download-0003"))
        .unwrap_or_else(|| panic!("no access-log line for the download:\n{log}"));
    let field = |name: &str| -> f64 {
        let value = line
            .split(' ')
            .find_map(|part| part.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} in {line}"))
    };
    // The line covers the whole transfer (six chunks 150 ms apart), not just the head.
    assert_eq!(field("bytes_out"), 6.0 * 1024.0, "{line}");
    assert!(field("total_ms") >= 800.0, "{line}");
    assert!(field("headers_ms") < 300.0, "{line}");
}
