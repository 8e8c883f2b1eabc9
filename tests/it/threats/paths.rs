//! THREATS P-20: OPTIONS is not anonymous on a protected route.

use crate::common::*;

use super::assert_refused;

// ---------------------------------------------------------------------------------------------
// P-20: OPTIONS is not anonymous on a protected route (no route is marked as CORS preflight).

#[tokio::test]
async fn options_on_a_protected_route_needs_the_same_token_as_any_method() {
    // THREATS P-20
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    for (proto, client) in [("HTTP/1.1", gw.h1()), ("HTTP/2", gw.h2())] {
        up.clear();
        let reply = client.call("OPTIONS", "/admin/users", &[], "").await;
        let answer = Answer::from_reply(&reply);
        assert_refused(&format!("{proto} OPTIONS /admin/users"), &answer, &up, 401);
        assert!(
            answer
                .header("www-authenticate")
                .is_some_and(|c| c.starts_with("Bearer")),
            "{answer:?}"
        );
        // `/api/**` lists methods and none of them is OPTIONS: never forwarded, token or not.
        let read = format!("Bearer {}", fixture_token("alice", "read"));
        for headers in [vec![], vec![("authorization", read.as_str())]] {
            let reply = client.call("OPTIONS", "/api/items", &headers, "").await;
            assert!(
                matches!(reply.status.as_u16(), 401 | 403 | 404 | 405),
                "{proto} OPTIONS /api/items: {} {}",
                reply.status,
                reply.text()
            );
            assert_eq!(up.count(), 0, "{proto} OPTIONS /api/items was forwarded");
        }
        // With the admin token it is an ordinary request on the admin rule.
        let admin = format!("Bearer {}", fixture_token("root", "admin"));
        let reply = client
            .call("OPTIONS", "/admin/users", &[("authorization", &admin)], "")
            .await;
        assert_eq!(reply.status, 200, "{proto}: {}", reply.text());
        assert_eq!(up.last().expect("forwarded").method, "OPTIONS");
    }
}
