//! The upstream client: per serving thread, a pool of HTTP/1.1 keep-alive connections for
//! each upstream origin, plain or over rustls.
//!
//! Serving is thread-per-core, each thread a current-thread runtime, so the pool is a
//! thread-local list with no lock and no hashing: a request takes an idle connection of its
//! origin, sends, and parks the connection again as soon as the response head is in. A
//! parked connection still streaming that response is not ready, so the next request passes
//! it by until hyper's connection task has finished the exchange. (hyper-util's pooled
//! client spends a boxed future, three hashed map lookups and a spawned task per request on
//! the same job.)

use std::cell::RefCell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use http::uri::Authority;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::TrySendError;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::upstream_tls::UpstreamTls;
use crate::forward::request_body::GuardedBody;

/// How long an idle upstream connection is kept for reuse.
pub const POOL_IDLE: Duration = Duration::from_secs(30);

/// Where a connection goes: the upstream's authority and, for `https://`, the TLS settings of
/// the config generation that built it.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'u> {
    pub authority: &'u Authority,
    pub tls: Option<&'u Arc<UpstreamTls>>,
    pub connect_timeout: Duration,
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting took longer than the connect timeout")]
    TimedOut,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the upstream's authority names no address")]
    NoAddress,
    #[error("HTTP/1.1 handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// Why an upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Send `request` (origin-form URI, with a Host header) to `origin`: handed at once to an idle
/// pooled connection, or to a new one once it is made. A request that a pooled connection
/// closed under before writing any of it is sent again, once, on a new connection: the
/// upstream never saw it. The future resolves with the response head.
pub fn send<'o>(
    origin: Origin<'o>,
    request: Request<GuardedBody>,
) -> Sending<'o, impl Future<Output = Result<Response<Incoming>, TrySendError<Request<GuardedBody>>>>>
{
    match checkout(&origin) {
        Some(mut sender) => {
            let answer = sender.try_send_request(request);
            Sending {
                origin,
                pooled: Some(answer),
                sender: Some(sender),
                fresh: None,
            }
        }
        None => Sending {
            origin,
            pooled: None,
            sender: None,
            fresh: Some(Box::pin(send_on_new_connection(origin, request))),
        },
    }
}

/// A request and its connection on the rare path: connecting (TCP, TLS, handshake) first.
type FreshSend<'o> =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, SendError>> + Send + 'o>>;

pin_project_lite::pin_project! {
    /// An exchange in flight, from [`send`]. A hand-written future, not an `async fn`: the
    /// request is already with hyper, and this state is all the caller's future holds for the
    /// upstream leg (an `async fn` would also keep the request it was called with).
    pub struct Sending<'o, F> {
        origin: Origin<'o>,
        // The pooled connection's answer, and the connection to park again after it.
        #[pin]
        pooled: Option<F>,
        sender: Option<SendRequest<GuardedBody>>,
        // Boxed: its state (connecting) would otherwise double the size of every exchange.
        fresh: Option<FreshSend<'o>>,
    }
}

impl<F> std::fmt::Debug for Sending<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sending")
            .field("origin", &self.origin)
            .field("pooled", &self.pooled.is_some())
            .field("fresh", &self.fresh.is_some())
            .finish()
    }
}

impl<'o, F> Future for Sending<'o, F>
where
    F: Future<Output = Result<Response<Incoming>, TrySendError<Request<GuardedBody>>>>,
{
    type Output = Result<Response<Incoming>, SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(answer) = this.pooled.as_mut().as_pin_mut() {
            let unsent = match ready!(answer.poll(cx)) {
                Ok(response) => {
                    this.pooled.set(None);
                    let sender = this.sender.take();
                    return Poll::Ready(Ok(match sender {
                        Some(sender) => park(this.origin, sender, response),
                        None => response,
                    }));
                }
                Err(mut err) => match err.take_message() {
                    Some(unsent) => unsent,
                    None => {
                        this.pooled.set(None);
                        return Poll::Ready(Err(err.into_error().into()));
                    }
                },
            };
            this.pooled.set(None);
            *this.sender = None;
            *this.fresh = Some(Box::pin(send_on_new_connection(*this.origin, unsent)));
        }
        match this.fresh {
            Some(fresh) => fresh.as_mut().poll(cx),
            None => panic!("an upstream exchange was polled after it completed"),
        }
    }
}

/// Connect to `origin`, send, and pool the connection for the next request.
async fn send_on_new_connection(
    origin: Origin<'_>,
    request: Request<GuardedBody>,
) -> Result<Response<Incoming>, SendError> {
    let mut sender = connect(&origin).await?;
    let response = sender.send_request(request).await?;
    Ok(park(&origin, sender, response))
}

/// Put `sender` back in this thread's pool unless the exchange took its connection over.
fn park(
    origin: &Origin<'_>,
    sender: SendRequest<GuardedBody>,
    response: Response<Incoming>,
) -> Response<Incoming> {
    if response.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        POOLS.with(|pools| pools.borrow_mut().park(origin, sender));
    }
    response
}

fn checkout(origin: &Origin<'_>) -> Option<SendRequest<GuardedBody>> {
    POOLS.with(|pools| pools.borrow_mut().checkout(origin, Instant::now()))
}

/// A new connection to `origin`, its hyper connection task spawned on this thread.
async fn connect(origin: &Origin<'_>) -> Result<SendRequest<GuardedBody>, ConnectError> {
    let tcp = tokio::time::timeout(
        origin.connect_timeout,
        tcp_connect(origin.authority, origin.tls.is_some()),
    )
    .await
    .map_err(|_| ConnectError::TimedOut)??;
    tcp.set_nodelay(true)?;
    let builder = http1::Builder::new();
    match origin.tls {
        None => {
            let (sender, connection) = builder.handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(async move {
                if let Err(err) = connection.with_upgrades().await {
                    tracing::debug!(error = %err, "upstream connection ended");
                }
            });
            Ok(sender)
        }
        Some(tls) => {
            let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
            let stream = connector.connect(tls.server_name.clone(), tcp).await?;
            let (sender, connection) = builder.handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                if let Err(err) = connection.with_upgrades().await {
                    tracing::debug!(error = %err, "upstream connection ended");
                }
            });
            Ok(sender)
        }
    }
}

/// TCP to the authority's host (an address as it is, a name resolved) and port (the scheme's
/// default when absent); each resolved address tried in turn.
async fn tcp_connect(authority: &Authority, https: bool) -> Result<TcpStream, ConnectError> {
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = authority.host();
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(TcpStream::connect(SocketAddr::new(ip, port)).await?);
    }
    let mut last = ConnectError::NoAddress;
    for address in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(address).await {
            Ok(tcp) => return Ok(tcp),
            Err(err) => last = err.into(),
        }
    }
    Err(last)
}

thread_local! {
    static POOLS: RefCell<Pools> = RefCell::new(Pools::default());
}

/// One serving thread's idle connections, by origin. Upstreams are few: a list beats a map.
#[derive(Default)]
struct Pools {
    origins: Vec<OriginPool>,
    reaper_running: bool,
}

struct OriginPool {
    authority: Authority,
    /// The TLS generation these connections were made with (`None` for plain HTTP). The
    /// `Weak` keeps the allocation, so its address (compared below) is never reused by a
    /// later generation while this pool exists.
    tls: Option<Weak<UpstreamTls>>,
    parked: Vec<Parked>,
}

struct Parked {
    sender: SendRequest<GuardedBody>,
    since: Instant,
}

impl OriginPool {
    fn is_for(&self, origin: &Origin<'_>) -> bool {
        let same_tls = match (&self.tls, origin.tls) {
            (None, None) => true,
            (Some(ours), Some(theirs)) => std::ptr::eq(ours.as_ptr(), Arc::as_ptr(theirs)),
            _ => false,
        };
        same_tls && self.authority == *origin.authority
    }

    fn is_dead_generation(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.strong_count() == 0)
    }

    /// Drop closed connections and idle ones parked longer than [`POOL_IDLE`].
    fn prune(&mut self, now: Instant) {
        self.parked.retain(|parked| {
            let stale = parked.sender.is_ready() && now - parked.since > POOL_IDLE;
            !parked.sender.is_closed() && !stale
        });
    }
}

impl Pools {
    /// An idle, ready connection to `origin`, or `None`. Connections found closed or idle
    /// past [`POOL_IDLE`] on the way are dropped.
    fn checkout(&mut self, origin: &Origin<'_>, now: Instant) -> Option<SendRequest<GuardedBody>> {
        let pool = self.origins.iter_mut().find(|pool| pool.is_for(origin))?;
        let mut index = 0;
        while let Some(parked) = pool.parked.get(index) {
            if parked.sender.is_closed() {
                pool.parked.swap_remove(index);
            } else if parked.sender.is_ready() {
                let parked = pool.parked.swap_remove(index);
                if now - parked.since <= POOL_IDLE {
                    return Some(parked.sender);
                }
            } else {
                index += 1;
            }
        }
        None
    }

    fn park(&mut self, origin: &Origin<'_>, sender: SendRequest<GuardedBody>) {
        let parked = Parked {
            sender,
            since: Instant::now(),
        };
        match self.origins.iter_mut().find(|pool| pool.is_for(origin)) {
            Some(pool) => pool.parked.push(parked),
            None => {
                // A new origin, or a new generation of one: those of dead generations go.
                self.origins.retain(|pool| !pool.is_dead_generation());
                self.origins.push(OriginPool {
                    authority: origin.authority.clone(),
                    tls: origin.tls.map(Arc::downgrade),
                    parked: vec![parked],
                });
            }
        }
        if !self.reaper_running {
            self.reaper_running = true;
            tokio::spawn(reap_idle());
        }
    }

    /// Drop what has gone stale; whether anything is left to watch.
    fn reap(&mut self, now: Instant) -> bool {
        self.origins.retain_mut(|pool| {
            pool.prune(now);
            !pool.parked.is_empty() && !pool.is_dead_generation()
        });
        self.reaper_running = !self.origins.is_empty();
        self.reaper_running
    }
}

/// Closes this thread's idle upstream connections once they have been idle for
/// [`POOL_IDLE`], so a thread that falls quiet does not hold them open; ends when none is
/// left (the next park starts it again).
async fn reap_idle() {
    loop {
        tokio::time::sleep(POOL_IDLE / 2).await;
        if !POOLS.with(|pools| pools.borrow_mut().reap(Instant::now())) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    /// A ready sender over an in-memory pipe, and the pipe's far end (drop it to close).
    async fn connection() -> (SendRequest<GuardedBody>, DuplexStream) {
        let (near, far) = tokio::io::duplex(4096);
        let (mut sender, connection) = http1::handshake(TokioIo::new(near)).await.unwrap();
        tokio::spawn(connection);
        sender.ready().await.unwrap();
        (sender, far)
    }

    fn authority() -> Authority {
        Authority::from_static("127.0.0.1:9")
    }

    fn origin<'u>(authority: &'u Authority, tls: Option<&'u Arc<UpstreamTls>>) -> Origin<'u> {
        Origin {
            authority,
            tls,
            connect_timeout: Duration::from_secs(1),
        }
    }

    /// An `UpstreamTls` as a generation builds one (any roots will do: nothing connects).
    fn upstream_tls() -> Arc<UpstreamTls> {
        use crate::config::upstream_tls::{client_config, server_name};
        let key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        Arc::new(UpstreamTls {
            client: client_config(Arc::new(roots), None).unwrap(),
            server_name: server_name("upstream.test").unwrap(),
            ca: None,
            client_cert: None,
        })
    }

    /// What [`send`]'s one retry rests on: a request handed to a connection that closed before
    /// writing any of it comes back unsent.
    #[tokio::test]
    async fn a_request_on_a_connection_closed_under_it_comes_back_unsent() {
        let (near, far) = tokio::io::duplex(4096);
        let (mut sender, connection) =
            http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(TokioIo::new(near))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.ready().await.unwrap();
        // Closed, but the connection task has not run since: the sender still looks ready.
        drop(far);
        assert!(sender.is_ready());
        let request = Request::get("/again").body(Default::default()).unwrap();
        let mut err = sender.try_send_request(request).await.unwrap_err();
        let unsent = err.take_message().expect("the request is handed back");
        assert_eq!(unsent.uri(), "/again");
    }

    #[tokio::test]
    async fn a_parked_connection_is_taken_again_by_its_origin_only() {
        let mut pools = Pools::default();
        let (here, other) = (authority(), Authority::from_static("127.0.0.1:10"));
        let (sender, _far) = connection().await;
        pools.park(&origin(&here, None), sender);
        let now = Instant::now();
        assert!(pools.checkout(&origin(&other, None), now).is_none());
        let tls = upstream_tls();
        assert!(pools.checkout(&origin(&here, Some(&tls)), now).is_none());
        let sender = pools.checkout(&origin(&here, None), now);
        assert!(sender.is_some(), "the parked connection is reused");
        assert!(
            pools.checkout(&origin(&here, None), now).is_none(),
            "and taken once"
        );
    }

    #[tokio::test]
    async fn closed_connections_and_those_idle_too_long_are_dropped_not_handed_out() {
        let mut pools = Pools::default();
        let here = authority();
        let (closed, far) = connection().await;
        pools.park(&origin(&here, None), closed);
        drop(far);
        // Let the connection task see the end of its stream.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pools
            .checkout(&origin(&here, None), Instant::now())
            .is_none());
        assert_eq!(pools.origins[0].parked.len(), 0);

        let (stale, _far) = connection().await;
        pools.park(&origin(&here, None), stale);
        let later = Instant::now() + POOL_IDLE + Duration::from_secs(1);
        assert!(pools.checkout(&origin(&here, None), later).is_none());
        assert_eq!(pools.origins[0].parked.len(), 0);
    }

    #[tokio::test]
    async fn the_reaper_closes_idle_connections_and_stops_when_none_is_left() {
        let mut pools = Pools::default();
        let here = authority();
        let (sender, _far) = connection().await;
        pools.park(&origin(&here, None), sender);
        assert!(pools.reaper_running);
        assert!(pools.reap(Instant::now()), "a fresh connection is kept");
        assert!(!pools.reap(Instant::now() + POOL_IDLE * 2));
        assert!(pools.origins.is_empty());
        assert!(!pools.reaper_running);
    }

    #[tokio::test]
    async fn each_tls_generation_has_its_own_pool_and_dead_ones_go_on_the_next_new_one() {
        let mut pools = Pools::default();
        let here = authority();
        let first = upstream_tls();
        pools.park(&origin(&here, Some(&first)), connection().await.0);
        pools.park(&origin(&here, Some(&first)), connection().await.0);
        assert_eq!(pools.origins.len(), 1, "one pool per origin and generation");
        let second = upstream_tls();
        pools.park(&origin(&here, Some(&second)), connection().await.0);
        assert_eq!(pools.origins.len(), 2, "both generations are alive");
        // Reloads come and go; each one's pool lasts only until the next one's first park.
        drop(first);
        let mut live = second;
        for _ in 0..10 {
            let next = upstream_tls();
            pools.park(&origin(&here, Some(&next)), connection().await.0);
            assert_eq!(
                pools.origins.len(),
                2,
                "the previous generation is still alive"
            );
            live = next;
        }
        drop(live);
        pools.park(&origin(&here, Some(&upstream_tls())), connection().await.0);
        assert_eq!(pools.origins.len(), 1);
    }
}
