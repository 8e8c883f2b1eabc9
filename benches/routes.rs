//! Route lookup cost must not grow with the table (issue: 10,000 rules ≤ 1.2x 10 rules).
//! Tables mix literal prefixes, parameters, `*`, `**`, method lists and host rules.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::Method;
use portcullis::policy::authz::{Requirement, Vocabulary};
use portcullis::policy::routes::{Access, Route, RouteTable};

fn scopes(vocab: &Vocabulary, name: &str) -> Access {
    let ids: Vec<_> = vocab.id(name).into_iter().collect();
    Access::Scopes(Requirement {
        all: vocab.set_of(&ids),
        any: Default::default(),
    })
}

/// `n` routes, five per service: `/svc{s}/items/{id}` GET, `/svc{s}/items` POST,
/// `/svc{s}/admin/*/config` PUT on an admin host (deny), `/svc{s}/static/**` GET public,
/// `/svc{s}/**` any method.
fn table(n: usize, vocab: &Vocabulary) -> RouteTable {
    let routes = (0..n)
        .map(|k| {
            let s = k / 5;
            let (pattern, methods, host, access) = match k % 5 {
                0 => (
                    format!("/svc{s}/items/{{id}}"),
                    Some(vec![Method::GET]),
                    None,
                    scopes(vocab, "read"),
                ),
                1 => (
                    format!("/svc{s}/items"),
                    Some(vec![Method::POST]),
                    None,
                    scopes(vocab, "write"),
                ),
                2 => (
                    format!("/svc{s}/admin/*/config"),
                    Some(vec![Method::PUT]),
                    Some("admin.example.com".to_string()),
                    Access::Deny,
                ),
                3 => (
                    format!("/svc{s}/static/**"),
                    Some(vec![Method::GET]),
                    None,
                    Access::Public,
                ),
                _ => (format!("/svc{s}/**"), None, None, scopes(vocab, "write")),
            };
            Route {
                issuers: None,
                rate_limit: None,
                id: format!("route-{k}"),
                pattern,
                methods,
                host,
                case_insensitive: false,
                access,
                upstream: Some(format!("up{}", s % 7)),
                max_body_size: None,
                claims: Default::default(),
                cors: None,
            }
        })
        .collect();
    RouteTable::compile(routes).expect("bench routes are valid")
}

fn bench_find(c: &mut Criterion) {
    let defs = ["read", "write"]
        .iter()
        .map(|s| (s.to_string(), String::new(), Vec::new()))
        .collect();
    let vocab = Vocabulary::new(defs).expect("valid vocabulary");
    let mut group = c.benchmark_group("routes_find");
    for n in [10usize, 1_000, 10_000] {
        let t = table(n, &vocab);
        // The last service's `/items/{id}` route: near the end of the table.
        let last = format!("/svc{}/items/42", (n - 1) / 5);
        assert!(t
            .find(&Method::GET, "api.example.com", &last)
            .is_some_and(|(i, _)| i + 5 >= n));
        let miss = "/nothing/here/42";
        assert!(t.find(&Method::GET, "api.example.com", miss).is_none());
        group.bench_with_input(BenchmarkId::new("hit_near_end", n), &last, |b, p| {
            b.iter(|| {
                t.find(
                    black_box(&Method::GET),
                    black_box("api.example.com"),
                    black_box(p),
                )
            })
        });
        group.bench_with_input(BenchmarkId::new("miss", n), miss, |b, p| {
            b.iter(|| {
                t.find(
                    black_box(&Method::GET),
                    black_box("api.example.com"),
                    black_box(p),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_find);
criterion_main!(benches);
