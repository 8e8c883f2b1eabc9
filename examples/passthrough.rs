//! A bare TLS pass-through proxy on the same stack as the gateway (hyper + rustls,
//! thread-per-core, one pooled upstream client per core) but with no authentication, no
//! routing and no header rewriting: the baseline the load benchmark compares against.
//!
//! Usage: `cargo run --release --example passthrough -- LISTEN UPSTREAM [WORKERS [CERT KEY]]`,
//! e.g. `127.0.0.1:8444 127.0.0.1:9000`. CERT and KEY are PEM files (the load benchmark gives
//! every peer the same certificate); without them a self-signed development certificate is
//! made, as the gateway does when its config has no `tls:`.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portcullis::body::ResponseBody;
use portcullis::config::TlsPaths;
use tokio_rustls::TlsAcceptor;

type Upstream = Client<HttpConnector, Incoming>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8444".into())
        .parse()?;
    let upstream: Arc<str> = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9000".into())
        .into();
    let workers = match args.next() {
        Some(n) => n.parse()?,
        None => portcullis::server::default_workers(),
    };
    let tls = match (args.next(), args.next()) {
        (Some(cert), Some(key)) => portcullis::tls::server_config(&TlsPaths {
            cert: cert.into(),
            key: key.into(),
            session_ticket_key: None,
        })?,
        (None, _) => portcullis::tls::dev_server_config()?,
        (Some(_), None) => return Err("CERT needs a KEY after it".into()),
    };
    let listeners = portcullis::server::bind(listen, workers)?;
    eprintln!("passthrough listening on https://{listen} → http://{upstream} ({workers} workers)");
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let tls = tls.clone();
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(serve(listener, TlsAcceptor::from(tls), upstream))
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// Serve one listener on the current (single-threaded) runtime. Also used by the
/// allocation benchmark as its baseline.
pub async fn serve(
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    upstream: Arc<str>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let service =
                service_fn(move |request| forward(client.clone(), upstream.clone(), request));
            let io = TokioIo::new(tls);
            if h2 {
                // hyper's HTTP/2 defaults: none of initial_stream_window_size,
                // initial_connection_window_size, adaptive_window, max_frame_size,
                // max_send_buf_size, max_concurrent_streams or a timer measurably changed
                // h2 throughput or CPU per request here (small responses, 8 x 4 streams).
                let _ = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, service)
                    .await;
            } else {
                let _ = http1::Builder::new().serve_connection(io, service).await;
            }
        });
    }
}

async fn forward(
    client: Upstream,
    upstream: Arc<str>,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.uri = match format!("http://{upstream}{path}").parse() {
        Ok(uri) => uri,
        Err(_) => return Ok(bad_gateway()),
    };
    parts.version = hyper::Version::HTTP_11;
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(ResponseBody::Stream)),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = hyper::StatusCode::BAD_GATEWAY;
    response
}
