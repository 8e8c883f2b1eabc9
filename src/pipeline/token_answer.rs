//! What the token endpoint answers with: the RFC 6749 §5.1 JSON token response, and the
//! claims an issued token carries about its user. Shared by the password and refresh grants.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;

use crate::auth::jwt::{IssuedToken, UserClaims};
use crate::auth::refresh::RefreshToken;
use crate::auth::user::User;
use crate::body::ResponseBody;
use crate::error::no_store;

/// The JSON token response (RFC 6749 §5.1).
pub fn token_body(
    issued: &IssuedToken,
    scopes: &[String],
    refresh: Option<&RefreshToken>,
) -> String {
    let mut body = serde_json::json!({
        "access_token": issued.token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
        "scope": scopes.join(" "),
    });
    if let Some(refresh) = refresh {
        body["refresh_token"] = refresh.as_str().into();
    }
    body.to_string()
}

/// 200 with `body`, uncacheable.
pub fn token_response(body: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body.into()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(response.headers_mut());
    response
}

/// What an issued token says about `user`: its credential version (so a password change
/// ends it) and the profile fields `tokens.claims` asks for.
pub fn user_claims(user: &User) -> UserClaims<'_> {
    UserClaims {
        credential_version: Some(&user.credential_version),
        email: user.profile.email.as_deref(),
        name: user.profile.name.as_deref(),
    }
}
