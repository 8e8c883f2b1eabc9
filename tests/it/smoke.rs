use crate::common::*;

#[tokio::test]
async fn login_then_protected_route_over_h1_and_h2() {
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    for client in [gw.h1(), gw.h2()] {
        let token = client.token("alice", "secret123").await;
        let reply = client.get_with_token("/api/items", &token).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let seen = up.last().expect("upstream saw the request");
        assert_eq!(seen.target, "/api/items");
        assert_eq!(seen.all("x-forwarded-user"), vec!["alice"]);
    }
}
