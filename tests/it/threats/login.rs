//! THREATS L-03: user enumeration by login timing.

use crate::common::*;

use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// L-03: enumeration by timing (coarse: the machine is shared, so only a gross difference, such
// as skipping the password hash for unknown users, is asserted).

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_take_comparable_time() {
    // THREATS L-03
    let up = Upstream::start().await;
    let yaml = format!(
        "{}login:\n  path: /login\n  lockout: {{ failures: 1000, window: 1m, duration: 1s }}\n",
        fixture_yaml(&up.url())
    );
    let gw = Gateway::start(&yaml).await;
    let client = gw.h1();
    // One connection for every attempt, so TLS handshakes are not part of the measurement.
    let mut conn = client.connect().await;
    let attempt = |user: &str| {
        let body = format!("username={user}&password=wrong-password");
        client
            .request("POST", "/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    // Warm up both paths.
    conn.send(attempt("alice")).await;
    conn.send(attempt("nobody-here")).await;
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..12 {
        for (user, into) in [("alice", &mut known), ("nobody-here", &mut unknown)] {
            let user = if i % 2 == 0 {
                user.to_owned()
            } else {
                user.to_uppercase()
            };
            let started = Instant::now();
            let reply = conn.send(attempt(&user)).await;
            into.push(started.elapsed());
            assert_eq!(reply.status, 400, "{user}: {}", reply.text());
        }
    }
    let (known, unknown) = (median(known), median(unknown));
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.33..=3.0).contains(&ratio),
        "median wrong-password {known:?} vs unknown-user {unknown:?} (ratio {ratio:.2})"
    );
}
