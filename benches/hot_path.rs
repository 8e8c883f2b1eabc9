//! Per-request costs on the hot path: path normalisation, bearer-token verification cold and
//! through the verified-token cache, and upstream header rewriting.
//!
//! `cargo bench --bench hot_path`

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{HeaderMap, HeaderValue};
use portcullis::auth::bearer::authenticate;
use portcullis::config::Config;
use portcullis::headers;
use portcullis::state::{Shared, Snapshot};

const CONFIG: &str = r#"
listen: 127.0.0.1:0
tokens: { issuer: bench, secret: "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz" }
scopes: { read: Read, write: { description: Write, implies: [read] } }
upstreams: { app: "echo:" }
routes:
  - { path: /items/**, upstream: app, scopes: [read] }
"#;

fn normalisation(c: &mut Criterion) {
    let mut group = c.benchmark_group("path");
    for (name, path) in [
        ("plain", "/api/v1/items/42"),
        ("dots_and_escapes", "/api/./v1//items/%7Euser/../42%20x"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| portcullis::path::normalise(black_box(path)))
        });
    }
    group.finish();
}

fn tokens(c: &mut Criterion) {
    let config = Config::from_text(Path::new("bench.yaml"), CONFIG).expect("config");
    let shared = Shared::new(Snapshot::build(config, 1).expect("snapshot"));
    let snapshot = shared.snapshot();
    let now = portcullis::service::unix_now();
    let token = snapshot
        .keys
        .issue("alice", &["read", "write"], now)
        .expect("issue")
        .token;
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );

    let mut group = c.benchmark_group("token");
    group.bench_function("verify_cold", |b| {
        b.iter(|| snapshot.keys.verify(black_box(&token), now))
    });
    authenticate(&shared, &snapshot, &headers, now).expect("valid");
    group.bench_function("authenticate_cached", |b| {
        b.iter(|| authenticate(&shared, &snapshot, black_box(&headers), now))
    });
    group.finish();
}

fn header_rewriting(c: &mut Criterion) {
    let mut client = HeaderMap::new();
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("authorization", "Bearer abc.def.ghi"),
        ("cookie", "session=abc"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-user", "mallory"),
        ("connection", "keep-alive"),
        ("content-type", "application/json"),
    ] {
        client.insert(
            http::header::HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    c.bench_function("headers/strip_request", |b| {
        b.iter_batched(
            || client.clone(),
            |mut map| {
                headers::strip_request(&mut map);
                map
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, normalisation, tokens, header_rewriting);
criterion_main!(benches);
