//! CORS as a real browser sees it: headless Chromium loads a page from another origin (a
//! plain-HTTP server on 127.0.0.1 started here) whose script logs in through the gateway with
//! `fetch` (`POST /login`, JSON, so preflighted), calls a protected route with the token, and
//! reads `WWW-Authenticate` on a 401. It must work from the allowed origin and fail from
//! another (`http://localhost:PORT` is a different origin from `http://127.0.0.1:PORT`).
//!
//! Needs a Chromium binary (`chromium`, `chromium-browser`, `google-chrome`, or the path in
//! `PORTCULLIS_CHROMIUM`). Without one the test is skipped with a message, unless
//! `PORTCULLIS_REQUIRE_CHROMIUM=1` (as CI sets it), which makes it fail.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long one page may take, all fetches included, before the browser is killed.
const PAGE_DEADLINE: Duration = Duration::from_secs(60);

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>cors</title></head><body>
<pre id="result">pending</pre>
<script>
(async () => {
  const gw = new URLSearchParams(location.search).get("gw");
  const out = {};
  try {
    const login = await fetch(gw + "/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: "alice", password: "secret123" }),
    });
    out.login = login.status;
    const token = (await login.json()).access_token;
    const api = await fetch(gw + "/api/items", { headers: { "Authorization": "Bearer " + token } });
    out.api = api.status;
    out.target = (await api.json()).target;
    const anonymous = await fetch(gw + "/api/items");
    out.anonymous = anonymous.status;
    out.challenge = anonymous.headers.get("WWW-Authenticate");
  } catch (e) {
    out.error = e.name + ": " + e.message;
  }
  document.getElementById("result").textContent = "RESULT" + JSON.stringify(out) + "END";
})();
</script></body></html>
"#;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PORTCULLIS_CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Serve [`PAGE`] to every request, over plain HTTP/1.1 on 127.0.0.1.
async fn page_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// Load `url` in headless Chromium and return what the page wrote into `#result`.
async fn run_page(browser: PathBuf, url: String) -> Value {
    tokio::task::spawn_blocking(move || {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--ignore-certificate-errors",
                "--virtual-time-budget=20000",
                "--dump-dom",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(&url)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", browser.display()));
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if started.elapsed() > PAGE_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chromium did not finish {url} within {PAGE_DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let output = child.wait_with_output().unwrap();
        let dom = String::from_utf8_lossy(&output.stdout);
        let Some(json) = dom
            .split_once("RESULT")
            .and_then(|(_, rest)| rest.split_once("END"))
            .map(|(json, _)| json)
        else {
            panic!(
                "no result in the page's DOM for {url}:\n{dom}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        // `--dump-dom` escapes text the HTML way.
        let json = json
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_page_from_an_allowed_origin_logs_in_and_calls_a_route_and_another_origin_cannot() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("PORTCULLIS_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "PORTCULLIS_REQUIRE_CHROMIUM=1 but no chromium found (install it or set PORTCULLIS_CHROMIUM)"
        );
        eprintln!("skipped: no chromium binary (set PORTCULLIS_CHROMIUM or install chromium)");
        return;
    };
    let page = page_server().await;
    let up = Upstream::start().await;
    let gw = Gateway::start(&format!(
        r#"tokens:
  issuer: https://gw.test
  secret: "{SECRET}"
  ttl: 5m
scopes:
  read: Read
users:
  alice: {{ password: "{SECRET123_HASH}", scopes: [read] }}
cors:
  allow_origins: ["http://127.0.0.1:{port}"]
upstreams:
  up: {up}
routes:
  - {{ id: api, path: /api/**, upstream: up, scopes: [read] }}
"#,
        port = page.port(),
        up = up.url(),
    ))
    .await;
    let gateway = format!("https://localhost:{}", gw.addr.port());

    let allowed = run_page(
        browser.clone(),
        format!("http://127.0.0.1:{}/?gw={gateway}", page.port()),
    )
    .await;
    assert_eq!(allowed["error"], Value::Null, "{allowed}");
    assert_eq!(allowed["login"], 200, "{allowed}");
    assert_eq!(allowed["api"], 200, "{allowed}");
    assert_eq!(allowed["target"], "/api/items", "{allowed}");
    assert_eq!(allowed["anonymous"], 401, "{allowed}");
    assert_eq!(
        allowed["challenge"]
            .as_str()
            .and_then(|c| challenge_without_metadata(Some(c))),
        Some(r#"Bearer realm="portcullis""#),
        "the page reads the challenge: {allowed}"
    );
    assert_eq!(
        up.count(),
        1,
        "only the authorised call reached the upstream"
    );

    let refused = run_page(
        browser,
        format!("http://localhost:{}/?gw={gateway}", page.port()),
    )
    .await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("TypeError")),
        "the browser blocks another origin: {refused}"
    );
    assert_eq!(refused["login"], Value::Null, "{refused}");
    assert_eq!(
        up.count(),
        1,
        "nothing from the other origin reached the upstream"
    );
}
