//! A bare TLS pass-through proxy on the same stack as the gateway (hyper + rustls,
//! thread-per-core, one pooled upstream client per core) but with no authentication, no
//! routing and no header rewriting: the baseline the load benchmark compares against.
//!
//! Usage: `cargo run --release --example passthrough -- LISTEN UPSTREAM [WORKERS [CERT KEY]]`,
//! e.g. `127.0.0.1:8444 127.0.0.1:9000`. CERT and KEY are PEM files (the load benchmark gives
//! every peer the same certificate); without them a self-signed development certificate is
//! made, as the gateway does when its config has no `tls:`.
//!
//! It forwards with hyper-util's pooled client, the usual choice for a bare hyper proxy. With
//! `PASSTHROUGH_CLIENT=gateway` it forwards with the gateway's own upstream client instead
//! (`portcullis::forward::client`, a per-thread pool without hashing or per-request tasks):
//! the like-for-like yardstick, so that what remains between the two is the gateway's own
//! work (authentication, routing, header rewriting, logging, metrics).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST};
use hyper::http::uri::{Authority, Uri};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portcullis::body::ResponseBody;
use portcullis::config::TlsPaths;
use portcullis::forward::client::{self, Origin};
use portcullis::forward::request_body::{BodyLimits, GuardedBody};
use tokio::signal::unix::{signal, SignalKind};
use tokio_rustls::TlsAcceptor;

/// How requests reach the upstream.
#[derive(Clone)]
enum Forwarder {
    /// hyper-util's pooled client (behind an `Arc`: cloned per request, and the variants
    /// stay alike in size).
    Legacy(Arc<Client<HttpConnector, Incoming>>, Arc<str>),
    /// The gateway's per-thread pool.
    Gateway(Arc<Authority>),
}

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
    // SIGTERM ends the process through `exit`, so a profile-instrumented build (benches/pgo.py)
    // writes its profile, as the gateway does on its graceful shutdown.
    std::thread::spawn(|| -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut terminate = runtime.block_on(async { signal(SignalKind::terminate()) })?;
        runtime.block_on(terminate.recv());
        std::process::exit(0)
    });
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
    let forwarder = if std::env::var("PASSTHROUGH_CLIENT").as_deref() == Ok("gateway") {
        let authority = upstream
            .parse()
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
        Forwarder::Gateway(Arc::new(authority))
    } else {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(connector);
        Forwarder::Legacy(Arc::new(client), upstream)
    };
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let forwarder = forwarder.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let service = service_fn(move |request| forward(forwarder.clone(), request));
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
    forwarder: Forwarder,
    request: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    parts.version = hyper::Version::HTTP_11;
    let response = match forwarder {
        Forwarder::Legacy(client, upstream) => {
            parts.uri = match format!("http://{upstream}{path}").parse() {
                Ok(uri) => uri,
                Err(_) => return Ok(bad_gateway()),
            };
            client.request(Request::from_parts(parts, body)).await.ok()
        }
        Forwarder::Gateway(authority) => {
            parts.uri = match Uri::try_from(path) {
                Ok(uri) => uri,
                Err(_) => return Ok(bad_gateway()),
            };
            if !parts.headers.contains_key(HOST) {
                if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                    parts.headers.insert(HOST, host);
                }
            }
            let limits = BodyLimits {
                read_timeout: Duration::from_secs(60),
                min_rate: 1,
                max_size: None,
            };
            let origin = Origin {
                authority: &authority,
                tls: None,
                connect_timeout: Duration::from_secs(5),
            };
            let request = Request::from_parts(parts, GuardedBody::new(body, limits));
            client::send(origin, request).await.ok()
        }
    };
    match response {
        Some(response) => Ok(response.map(ResponseBody::Stream)),
        None => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = hyper::StatusCode::BAD_GATEWAY;
    response
}
