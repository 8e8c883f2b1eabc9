//! Heap allocations per request on the gateway's serving thread, counted by a global
//! allocator.
//!
//! A real gateway (one serving thread) runs in this process next to a real TLS client, a real
//! upstream and the bare pass-through proxy of `examples/passthrough.rs` (one thread), the
//! baseline: what hyper, hyper-util and rustls allocate on their own. The allocator counts
//! only on threads not marked as harness threads, so the client's and upstream's allocations
//! are not in the figures. Each scenario sends requests one at a time over one keep-alive
//! connection, after a warm-up that fills pools and caches, and reports allocations (and
//! bytes) per request.
//!
//! `cargo bench --bench allocations`
//!
//! Access logging is off here (no subscriber is installed); in the binary an access line is
//! rendered into a per-thread buffer that is handed over every 32 KiB, one allocation per
//! ~100 requests.

// The counting allocator is the one place in the repository that needs `unsafe`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portcullis::config::Config;
use portcullis::state::{Shared, Snapshot};
use tokio::net::TcpListener;

#[path = "../examples/passthrough.rs"]
#[allow(dead_code)]
mod passthrough;

/// The integration tests' TLS client and test PKI.
#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code, unused_imports)]
mod common;

// ---------------------------------------------------------------------------------------------
// The counting allocator

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the benchmark's own threads (client, upstream, main): not counted.
    static HARNESS: Cell<bool> = const { Cell::new(false) };
}

fn count(size: usize) {
    // `try_with`: allocations during thread teardown must not touch a destroyed slot.
    if !HARNESS.try_with(Cell::get).unwrap_or(true) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting has no effect
// on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn snapshot_counts() -> (u64, u64) {
    (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    )
}

// ---------------------------------------------------------------------------------------------
// Harness

const SECRET: &str = "bench-secret-0123456789abcdefghijklmnopqrstuvwxyz";
const WARM_UP: usize = 2_000;
const MEASURED: usize = 20_000;

fn config_text(upstream: SocketAddr, cert: &Path, key: &Path) -> String {
    let mut routes = String::new();
    // 50 routes, the one measured near the end, as in the load benchmark.
    for i in 0..49 {
        routes.push_str(&format!(
            "  - {{ id: r{i}, path: /svc{i}/**, upstream: app, scopes: [read] }}\n"
        ));
    }
    format!(
        r#"listen: 127.0.0.1:0
tls: {{ cert: {cert}, key: {key} }}
tokens: {{ issuer: bench, audience: apps, secret: "{SECRET}" }}
scopes: {{ read: Read, write: {{ description: Write, implies: [read] }} }}
# Tokens must name a current user.
users: {{ alice: {{ password: "$argon2id$v=19$m=19456,t=2,p=1$w87WW2eFT7vy9UDFIxPMUA$WRM+jGFRlegpsoIlTVNrQc+1XHa3/a1NZzkq1GFfarI", scopes: [read] }} }}
upstreams: {{ app: "http://{upstream}" }}
# CORS on every route: requests without `Origin` must not pay for it.
cors: {{ allow_origins: ["https://app.example"] }}
routes:
{routes}  - {{ id: items, path: /api/items/**, methods: [GET], upstream: app, scopes: [read] }}
  - {{ id: public, path: /public/**, upstream: app, public: true }}
  - {{ id: claims, path: /claims/**, upstream: app, scopes: [read], claims: [{{ claim: contractor, exists: false }}] }}
"#,
        cert = cert.display(),
        key = key.display(),
    )
}

/// A fixed small answer, like an API returning a short JSON document.
async fn upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|_request: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                    br#"{"id":1,"name":"widget"}"#,
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One GET over `conn`; the response body is read to its end. Returns the status.
async fn get(
    client: &common::Client,
    conn: &mut common::Connection,
    path: &str,
    token: Option<&str>,
    origin: Option<&str>,
) -> u16 {
    let mut request = client.request("GET", path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let request = request.body(Full::new(Bytes::new())).expect("request");
    conn.send(request).await.status.as_u16()
}

struct Scenario {
    name: &'static str,
    passthrough: bool,
    h2: bool,
    path: &'static str,
    authorised: bool,
    status: u16,
    /// An `Origin` the config's CORS policy grants.
    origin: Option<&'static str>,
}

fn main() {
    HARNESS.set(true);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| HARNESS.set(true))
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let upstream_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream_addr = upstream_listener.local_addr().expect("addr");
    tokio::spawn(upstream(upstream_listener));

    let pki = common::TestPki::new();
    let text = config_text(upstream_addr, &pki.cert_path, &pki.key_path);
    let config = Config::from_text(Path::new("bench.yaml"), &text).expect("config");
    let shared = Shared::new(Snapshot::build(config, 1).expect("snapshot"));
    let server_tls = shared.snapshot().tls.clone();
    let token = shared
        .snapshot()
        .keys
        .issue(
            "alice",
            &["read"],
            Default::default(),
            portcullis::clock::unix_now(),
        )
        .expect("token")
        .token;
    let listeners = portcullis::bind("127.0.0.1:0".parse().expect("addr"), 1).expect("bind");
    let addr = listeners[0].local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(portcullis::run(listeners, shared, async {
        let _ = stopped.await;
    }));

    // The baseline on its own (counted) thread, as the example runs it; it lives as long
    // as the process.
    let baseline_listener = portcullis::bind("127.0.0.1:0".parse().expect("addr"), 1)
        .expect("bind")
        .remove(0);
    let baseline = baseline_listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let acceptor = tokio_rustls::TlsAcceptor::from(server_tls);
        let upstream: Arc<str> = upstream_addr.to_string().into();
        runtime.block_on(passthrough::serve(baseline_listener, acceptor, upstream))
    });

    let scenarios = [
        Scenario {
            passthrough: false,
            name: "h1 authorised GET, proxied",
            h2: false,
            path: "/api/items/42",
            authorised: true,
            status: 200,
            origin: None,
        },
        Scenario {
            name: "h1 GET via pass-through",
            passthrough: true,
            h2: false,
            path: "/api/items/42",
            authorised: true,
            status: 200,
            origin: None,
        },
        Scenario {
            passthrough: false,
            name: "h2 authorised GET, proxied",
            h2: true,
            path: "/api/items/42",
            authorised: true,
            status: 200,
            origin: None,
        },
        Scenario {
            name: "h2 GET via pass-through",
            passthrough: true,
            h2: true,
            path: "/api/items/42",
            authorised: true,
            status: 200,
            origin: None,
        },
        Scenario {
            passthrough: false,
            name: "h1 public GET, proxied",
            h2: false,
            path: "/public/x",
            authorised: false,
            status: 200,
            origin: None,
        },
        Scenario {
            passthrough: false,
            name: "h1 missing token (401)",
            h2: false,
            path: "/api/items/42",
            authorised: false,
            status: 401,
            origin: None,
        },
        Scenario {
            passthrough: false,
            name: "h1 no route (404)",
            h2: false,
            path: "/nowhere",
            authorised: true,
            status: 404,
            origin: None,
        },
        Scenario {
            passthrough: false,
            name: "h1 authorised GET, claims: rule",
            h2: false,
            path: "/claims/x",
            authorised: true,
            status: 200,
            origin: None,
        },
        Scenario {
            passthrough: false,
            name: "h1 authorised GET, CORS Origin",
            h2: false,
            path: "/api/items/42",
            authorised: true,
            status: 200,
            origin: Some("https://app.example"),
        },
    ];
    println!("gateway heap allocations per request (1 serving thread, {MEASURED} requests each, after {WARM_UP} warm-up)\n");
    println!(
        "{:<32} {:>12} {:>14}",
        "scenario", "allocs/req", "bytes/req"
    );
    for scenario in &scenarios {
        let target = if scenario.passthrough { baseline } else { addr };
        let proto = if scenario.h2 {
            common::Proto::H2
        } else {
            common::Proto::H1
        };
        let client = common::Client::new(target, &pki.ca_der, proto);
        let mut conn = client.connect().await;
        let token = scenario.authorised.then_some(token.as_str());
        for _ in 0..WARM_UP {
            let status = get(&client, &mut conn, scenario.path, token, scenario.origin).await;
            assert_eq!(status, scenario.status);
        }
        let (allocs_before, bytes_before) = snapshot_counts();
        for _ in 0..MEASURED {
            let status = get(&client, &mut conn, scenario.path, token, scenario.origin).await;
            assert_eq!(status, scenario.status);
        }
        let (allocs_after, bytes_after) = snapshot_counts();
        let per = |a: u64, b: u64| (b - a) as f64 / MEASURED as f64;
        println!(
            "{:<32} {:>12.2} {:>14.0}",
            scenario.name,
            per(allocs_before, allocs_after),
            per(bytes_before, bytes_after)
        );
    }
    let _ = stop.send(());
    let _ = gateway.await;
}
