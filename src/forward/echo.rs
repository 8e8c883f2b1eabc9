//! The built-in `echo:` upstream: answers 200 with JSON describing the request it received,
//! after all gateway rewriting. For demos and smoke tests.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use serde_json::{json, Map, Value};

use crate::body::ResponseBody;

/// Answer `request` with a JSON echo of its method, path, query and headers.
pub fn respond<B>(request: &Request<B>) -> Response<ResponseBody> {
    let mut headers = Map::new();
    for (name, value) in request.headers() {
        let value = Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned());
        match headers.get_mut(name.as_str()) {
            Some(Value::Array(values)) => values.push(value),
            Some(existing) => *existing = Value::Array(vec![existing.take(), value]),
            None => {
                headers.insert(name.as_str().to_owned(), value);
            }
        }
    }
    let body = json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "headers": headers,
    });
    let mut response = Response::new(ResponseBody::full(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
