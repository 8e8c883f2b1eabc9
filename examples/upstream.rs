//! A minimal fast upstream for load tests: plain HTTP/1.1 on one port, answering every
//! request 200 with a short body. Usage: `upstream [ADDR] [WORKERS]` (default 127.0.0.1:9000).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;

const BODY: &[u8] = b"{\"ok\":true,\"items\":[1,2,3]}\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:9000".into())
        .parse()?;
    let workers = match args.next() {
        Some(n) => n.parse()?,
        None => 1,
    };
    let listeners = portcullis::server::bind(addr, workers)?;
    eprintln!("upstream listening on http://{addr} ({workers} workers)");
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            std::thread::spawn(move || -> std::io::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    loop {
                        let (stream, _) = listener.accept().await?;
                        let _ = stream.set_nodelay(true);
                        tokio::spawn(async move {
                            let service = service_fn(|_request| async {
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                    BODY,
                                ))))
                            });
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                })
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}
