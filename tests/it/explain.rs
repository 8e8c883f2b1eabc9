//! `portcullis explain` tells the truth: for every request in a grid of methods, paths, hosts
//! and credentials, the status it predicts is the status the running gateway answers with.
#![allow(clippy::unwrap_used)]

use crate::common::*;

use std::process::Command;

use bytes::Bytes;
use http_body_util::Full;

fn yaml(upstream: &str) -> String {
    let fixture = fixture_yaml(upstream);
    // Host-scoped rules ahead of the fixture's: the same path is open on one host only.
    fixture.replace(
        "routes:\n",
        "routes:\n  - { id: a-open, path: /hosted/**, host: a.test, upstream: up, public: true }\n  \
         - { id: hosted-closed, path: /hosted/**, deny: true }\n",
    )
}

/// The status `explain` predicts: the first three-digit number on its decision line, or 200
/// for "forwarded" (the recording upstream answers 200).
fn predicted(config: &std::path::Path, method: &str, path: &str, host: &str, scopes: &str) -> u16 {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.env_remove("PORTCULLIS_CONFIG")
        .args(["explain", "-c"])
        .arg(config)
        .args([method, path, "--host", host]);
    if !scopes.is_empty() {
        cmd.args(["--scopes", scopes]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("decision:"))
        .unwrap_or_else(|| {
            panic!(
                "no decision for {method} {path} on {host}:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    if line.contains("forwarded") {
        return 200;
    }
    line.split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 3)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no status in {line:?}"))
}

#[tokio::test]
async fn explain_predicts_the_status_the_gateway_answers_with() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&yaml(&up.url())).await;
    let config = gw.config_path.clone();
    let methods = ["GET", "POST", "DELETE", "delete", "Get", "TRACE", "PUT"];
    let paths = [
        "/api/x",
        "/admin/x",
        "/public/x",
        "/internal/x",
        "/hosted/x",
        "/nowhere",
        "/public/../admin/x",
        "/api/a%2Fb",
        "/login",
        "/logout",
    ];
    let hosts = ["localhost", "A.TEST:8443"];
    let credentials = ["", "read", "admin"];
    let mut mismatches = Vec::new();
    let mut cases = 0;
    for method in methods {
        for path in paths {
            for host in hosts {
                for scopes in credentials {
                    // Login and logout with bodies are covered elsewhere; here only their
                    // routing (method refusals) is compared.
                    if (path == "/login" || path == "/logout") && method == "POST" {
                        continue;
                    }
                    let client = gw.h1();
                    let mut request = client.request(method, path);
                    let headers = request.headers_mut().unwrap();
                    headers.insert("host", host.parse().unwrap());
                    if !scopes.is_empty() {
                        let token = fixture_token("root", scopes);
                        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
                    }
                    let request = request.body(Full::new(Bytes::new())).unwrap();
                    let got = client.send(request).await.status.as_u16();
                    let want = predicted(&config, method, path, host, scopes);
                    cases += 1;
                    if got != want {
                        mismatches.push(format!(
                            "{method} {path} Host: {host} scopes [{scopes}]: gateway {got}, explain {want}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {cases} cases differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

/// `explain OPTIONS … --origin … --request-method …` predicts what the gateway answers a real
/// preflight: the status and the `Access-Control-Allow-Origin` granted (or none).
#[tokio::test]
async fn explain_predicts_preflights_as_the_gateway_answers_them() {
    let up = Upstream::start().await;
    let yaml = format!(
        "{}cors:\n  allow_origins: [\"https://app.test\"]\n  allow_methods: [GET, POST, DELETE]\n  allow_headers: [Authorization, Content-Type]\n",
        fixture_yaml(&up.url())
    );
    let gw = Gateway::start(&yaml).await;
    let grid = [
        ("/api/x", "https://app.test", "GET", None),
        (
            "/api/x",
            "https://app.test",
            "DELETE",
            Some("authorization"),
        ),
        ("/api/x", "https://app.test", "PUT", None),
        ("/api/x", "https://evil.test", "GET", None),
        ("/api/x", "https://app.test", "GET", Some("x-custom")),
        ("/internal/x", "https://app.test", "GET", None),
        ("/nowhere", "https://app.test", "GET", None),
        ("/login", "https://app.test", "POST", Some("content-type")),
        ("/logout", "https://app.test", "GET", None),
    ];
    for (path, origin, method, headers) in grid {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
        cmd.env_remove("PORTCULLIS_CONFIG")
            .args(["explain", "-c"])
            .arg(&gw.config_path)
            .args([
                "OPTIONS",
                path,
                "--origin",
                origin,
                "--request-method",
                method,
            ]);
        if let Some(headers) = headers {
            cmd.args(["--request-headers", headers]);
        }
        let out = String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned();
        let decision = out
            .lines()
            .find(|l| l.starts_with("decision:"))
            .unwrap_or("");
        let predicted: u16 = decision
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 3)
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("{path} {origin} {method}: {out}"));
        let predicted_origin = out
            .lines()
            .find_map(|l| l.strip_prefix("cors:     Access-Control-Allow-Origin: "))
            .map(str::to_owned);
        let mut request_headers = vec![
            ("origin", origin),
            ("access-control-request-method", method),
        ];
        if let Some(headers) = headers {
            request_headers.push(("access-control-request-headers", headers));
        }
        let reply = gw
            .h1()
            .call("OPTIONS", path, &request_headers, Bytes::new())
            .await;
        let case = format!("{path} {origin} {method} {headers:?}:\n{out}");
        assert_eq!(reply.status.as_u16(), predicted, "{case}");
        assert_eq!(
            reply
                .header("access-control-allow-origin")
                .map(str::to_owned),
            predicted_origin,
            "{case}"
        );
    }
}
