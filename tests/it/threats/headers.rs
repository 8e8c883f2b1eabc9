//! THREATS H-13, H-14: malformed header syntax and non-UTF-8 header values over raw HTTP/1.1.

use crate::common::*;

use super::{assert_refused, h1_raw};

// ---------------------------------------------------------------------------------------------
// H-13: malformed header syntax; H-14: non-UTF-8 header values.

#[tokio::test]
async fn malformed_header_lines_are_refused_with_400_and_never_forwarded() {
    // THREATS H-13
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    let cases: [(&str, &[u8]); 6] = [
        (
            "space before colon",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A : b\r\n\r\n",
        ),
        (
            "tab before colon",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A\t: b\r\n\r\n",
        ),
        (
            "obs-fold continuation",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\n c\r\n\r\n",
        ),
        (
            "NUL in a value",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: b\x00c\r\n\r\n",
        ),
        (
            "bare CR in a value",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: b\rX-Forwarded-User: root\r\n\r\n",
        ),
        (
            "obs-fold hiding an identity header",
            b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\n\tX-Forwarded-User: root\r\n\r\n",
        ),
    ];
    for (label, request) in cases {
        up.clear();
        let answer = h1_raw(&gw, request).await;
        assert_refused(label, &answer, &up, 400);
    }
    // Sanity: the same request without the defect is forwarded.
    let answer = h1_raw(
        &gw,
        b"GET /public/x HTTP/1.1\r\nHost: localhost\r\nX-A: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
}

#[tokio::test]
async fn non_utf8_header_values_never_skip_the_token_check_or_carry_identity() {
    // THREATS H-14
    let up = Upstream::start().await;
    let gw = Gateway::start(&fixture_yaml(&up.url())).await;
    // A protected route with junk bytes in an unrelated header and no token: still 401.
    let answer = h1_raw(
        &gw,
        b"GET /admin/users HTTP/1.1\r\nHost: localhost\r\nX-Foo: \xff\xfe\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_refused("X-Foo: \\xff\\xfe, no token", &answer, &up, 401);
    // Junk in the Authorization header itself: an invalid token, never a pass or a 500.
    for value in [
        &b"Bearer \xff\xfe"[..],
        b"\xffBearer x",
        b"Bearer a.b\xff.c",
    ] {
        up.clear();
        let mut request =
            b"GET /admin/users HTTP/1.1\r\nHost: localhost\r\nAuthorization: ".to_vec();
        request.extend_from_slice(value);
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let answer = h1_raw(&gw, &request).await;
        assert!(
            matches!(answer.status, 400 | 401),
            "Authorization {:?}: {answer:?}",
            String::from_utf8_lossy(value)
        );
        assert_eq!(up.count(), 0, "reached the upstream: {:?}", up.seen());
    }
    // An identity header with junk bytes never reaches the upstream; a valid token still sets
    // the gateway's own identity.
    up.clear();
    let token = fixture_token("alice", "read");
    let mut request =
        format!("GET /api/items HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n")
            .into_bytes();
    request.extend_from_slice(b"X-Forwarded-User: \xffroot\r\nConnection: close\r\n\r\n");
    let answer = h1_raw(&gw, &request).await;
    assert!(matches!(answer.status, 200 | 400), "{answer:?}");
    if answer.status == 200 {
        let seen = up.last().expect("forwarded");
        assert_eq!(seen.all("x-forwarded-user"), vec!["alice".to_owned()]);
    } else {
        assert_eq!(up.count(), 0);
    }
}
