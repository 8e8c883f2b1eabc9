//! Per-request costs on the hot path: path normalisation, bearer-token verification cold and
//! through the verified-token cache, and upstream header rewriting.
//!
//! `cargo bench --bench hot_path`

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt as _;
use http::header::{HeaderMap, HeaderValue};
use portcullis::auth::bearer::identify;
use portcullis::config::Config;
use portcullis::forward::headers;
use portcullis::pipeline::authenticate::authenticate;
use portcullis::state::{Shared, Snapshot};

const CONFIG: &str = r#"
listen: 127.0.0.1:0
tokens: TOKENS
scopes: { read: Read, write: { description: Write, implies: [read] } }
users: { alice: { password: "$argon2id$v=19$m=19456,t=2,p=1$w87WW2eFT7vy9UDFIxPMUA$WRM+jGFRlegpsoIlTVNrQc+1XHa3/a1NZzkq1GFfarI", scopes: [write] } }
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
            b.iter(|| portcullis::policy::path::normalise(black_box(path)))
        });
    }
    group.finish();
}

/// The token config for each signing algorithm measured: the `tokens.secret` HMAC key the
/// earlier figures used (group `token`), and ring keys generated for the process.
const TOKEN_CONFIGS: [(&str, &str); 3] = [
    (
        "token",
        r#"{ issuer: bench, secret: "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz" }"#,
    ),
    (
        "token_es256",
        "{ issuer: bench, keys: [{ kid: k, algorithm: ES256, status: active }] }",
    ),
    (
        "token_eddsa",
        "{ issuer: bench, keys: [{ kid: k, algorithm: EdDSA, status: active }] }",
    ),
];

/// `authenticate` never awaits on a cache hit or for a local token: poll it once.
fn authenticate_now(
    shared: &Shared,
    snapshot: &Snapshot,
    headers: &HeaderMap,
    now: u64,
) -> Option<std::sync::Arc<portcullis::auth::bearer::Identity>> {
    authenticate(shared, snapshot, headers, now)
        .now_or_never()
        .expect("ready at once")
        .expect("valid")
}

fn tokens(c: &mut Criterion) {
    for (group_name, tokens) in TOKEN_CONFIGS {
        let text = CONFIG.replace("TOKENS", tokens);
        let config = Config::from_text(Path::new("bench.yaml"), &text).expect("config");
        let shared = Shared::new(Snapshot::build(config, 1).expect("snapshot"));
        let snapshot = shared.snapshot();
        let now = portcullis::clock::unix_now();
        let token = snapshot
            .keys
            .issue("alice", &["read", "write"], Default::default(), now)
            .expect("issue")
            .token;
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );

        let mut group = c.benchmark_group(group_name);
        group.bench_function("verify_cold", |b| {
            b.iter(|| snapshot.keys.verify(black_box(&token), now))
        });
        // A cache miss: verification, the user-store check and the scope intersection.
        group.bench_function("identify_cold", |b| {
            b.iter(|| {
                identify(
                    &snapshot.keys,
                    &snapshot.config.vocabulary,
                    &snapshot.config.users,
                    black_box(&token),
                    now,
                    &snapshot.config.claim_paths,
                )
            })
        });
        authenticate_now(&shared, &snapshot, &headers, now);
        group.bench_function("authenticate_cached", |b| {
            b.iter(|| authenticate_now(&shared, &snapshot, black_box(&headers), now))
        });
        group.finish();
    }
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

/// The raw HTTP/1 head scanner on adversarial input: its cost per byte must not grow with
/// what came before (the old history search was quadratic on the first input).
fn head_scanning(c: &mut Criterion) {
    use criterion::Throughput;
    use portcullis::conn::framing::HeadScanner;

    let line = "POST /public/burst ";
    let padded = format!(
        "POST /public/burst HTTP/1.1\r\nHost: gw.test\r\nX-Pad: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        line.repeat(12 * 1024 / line.len())
    );
    let chunked_body = {
        let mut s = String::from("POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        for _ in 0..1024 {
            s.push_str("400\r\n");
            s.push_str(&"GET /x HTTP/1.1\r\n\r\n".repeat(1024 / 19));
            s.push_str(&"y".repeat(1024 - (1024 / 19) * 19));
            s.push_str("\r\n");
        }
        s.push_str("0\r\n\r\n");
        s
    };
    let tiny_pipelined = "GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(512);
    let inputs = [
        (
            "padded_heads_256k",
            padded.repeat(256 * 1024 / padded.len()),
        ),
        ("chunked_body_1m", chunked_body),
        ("tiny_pipelined", tiny_pipelined),
    ];
    let mut group = c.benchmark_group("head_scanner");
    for (name, input) in &inputs {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut scanner = HeadScanner::new(1024 * 1024);
                // hyper reads in pieces; 4 KiB is a typical TLS record's plaintext.
                for piece in input.as_bytes().chunks(4096) {
                    scanner.feed(black_box(piece));
                }
                black_box(scanner.next_head())
            })
        });
    }
    group.finish();
}

/// One Ed25519 signature checked by each backend on offer, same key and message: ring (what
/// the gateway uses) and jsonwebtoken's RustCrypto backend (ed25519-dalek).
fn ed25519_backends(c: &mut Criterion) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k".into());
    let claims = serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64});
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&pair.serialize_der()),
    )
    .expect("sign");
    let (message, signature) = token.rsplit_once('.').expect("three parts");
    let signature =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
            .expect("b64");
    let public = pair.public_key_raw().to_vec();
    let mut group = c.benchmark_group("ed25519_backend");
    group.bench_function("ring", |b| {
        b.iter(|| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public)
                .verify(black_box(message.as_bytes()), &signature)
                .is_ok()
        })
    });
    let decoding = jsonwebtoken::DecodingKey::from_ed_der(&public);
    group.bench_function("jsonwebtoken_rust_crypto", |b| {
        b.iter(|| {
            jsonwebtoken::crypto::verify(
                black_box(signature_b64(&token)),
                message.as_bytes(),
                &decoding,
                jsonwebtoken::Algorithm::EdDSA,
            )
            .unwrap_or(false)
        })
    });
    group.finish();
}

fn signature_b64(token: &str) -> &str {
    token.rsplit_once('.').map_or("", |(_, s)| s)
}

/// The per-request cost of a route rate limit: one table hit and the GCRA arithmetic.
fn rate_limiting(c: &mut Criterion) {
    use portcullis::auth::rate_limit::{Caller, RateLimits};
    use portcullis::policy::rate_limit::RateLimit;
    let limits = RateLimits::new(1_000_000, 64);
    let limit = RateLimit {
        requests: u32::MAX,
        period: std::time::Duration::from_secs(1),
        burst: u32::MAX,
        headers: false,
    };
    let caller = Caller::Subject {
        issuer: "local",
        subject: "alice",
    };
    limits.check("api", caller, &limit);
    c.bench_function("rate_limit/check_known_caller", |b| {
        b.iter(|| limits.check(black_box("api"), caller, &limit))
    });
}

/// The per-request cost of CORS on a response: the header work an answer to a browser from
/// an allowed origin gets (upstream CORS headers removed, `Vary`, the grant), next to the
/// same call for a request without `Origin` (what non-browser traffic pays).
fn cors(c: &mut Criterion) {
    use http::Method;
    use portcullis::pipeline::cors::apply;
    use portcullis::policy::cors::{CorsPolicy, CorsSpec, Origins};
    let policy = CorsPolicy::new(CorsSpec {
        origins: Origins::List(vec![
            HeaderValue::from_static("https://app.example"),
            HeaderValue::from_static("https://admin.example"),
        ]),
        methods: vec![Method::GET, Method::POST, Method::DELETE],
        headers: vec!["authorization".into(), "content-type".into()],
        expose: vec!["x-request-id".into()],
        max_age_secs: Some(600),
        credentials: true,
    })
    .expect("policy");
    let origin = HeaderValue::from_static("https://admin.example");
    let mut upstream = HeaderMap::new();
    upstream.insert("content-type", HeaderValue::from_static("application/json"));
    upstream.insert("content-length", HeaderValue::from_static("42"));
    upstream.insert("x-request-id", HeaderValue::from_static("abc"));
    let mut group = c.benchmark_group("cors");
    group.bench_function("apply_allowed_origin", |b| {
        b.iter_batched_ref(
            || upstream.clone(),
            |headers| apply(&policy, Some(black_box(&origin)), headers),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("apply_no_origin", |b| {
        b.iter_batched_ref(
            || upstream.clone(),
            |headers| apply(&policy, None, headers),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    cors,
    normalisation,
    tokens,
    ed25519_backends,
    rate_limiting,
    header_rewriting,
    head_scanning
);
criterion_main!(benches);
