//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2 (hyper-util's auto builder), with
//! a deadline for the first request head whatever stage a connection is in (TCP, TLS
//! handshake, protocol sniffing, HTTP/1 head, HTTP/2 preface), an idle timeout between
//! requests, a bound on the head's size, a bounded read of request bodies a handler refused
//! (so that the client reads its answer instead of a reset), an accept loop that survives
//! running out of file descriptors, and graceful shutdown that lets requests in flight
//! finish for at most [`DRAIN`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::DRAIN;

/// How to serve: TLS or not, and the connection limits.
#[derive(Clone, Default)]
pub struct ServeOptions {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub limits: Limits,
}

/// What a plain-HTTP client gets on the TLS port instead of a silent close (as Go's server).
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A request body the handler did not read to its end is read on and dropped, up to this
/// much and for this long, before the connection lets go of it. Clients send the body
/// before they read the answer (Python's `requests`), or treat a reset as the outcome when
/// it comes first (Go's HTTP/1 transport, curl's HTTP/2 upload); a refusal (401, 403, 413,
/// 429) must reach them. Past the bound, HTTP/1 closes the connection and HTTP/2 resets
/// the stream with `NO_ERROR` after the complete response (RFC 9113 §8.1). A client that
/// pauses for [`DISCARD_MAX_PAUSE`] has stopped sending (or stalled, which is why the body
/// was dropped): there is nothing to wait for.
const DISCARD_MAX_BYTES: u64 = 64 << 20;
const DISCARD_MAX_TIME: Duration = Duration::from_secs(10);
const DISCARD_MAX_PAUSE: Duration = Duration::from_secs(2);

/// Pause before the next `accept` when the process is out of descriptors (or memory):
/// the pending connection stays in the kernel's backlog, so retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    opts: ServeOptions,
) -> std::io::Result<()> {
    let limits = opts.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // A peer that stops answering pings is gone; free its streams.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let acceptor = opts.tls.map(TlsAcceptor::from);
    // `stop` tells every connection to finish (graceful shutdown); each connection task holds
    // a clone of `alive`, so `recv()` on its receiver returns once the last one has ended.
    let (stop_tx, stop) = watch::channel(false);
    let (alive, mut all_ended) = mpsc::channel::<Infallible>(1);
    let mut refused = 0u64;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) if out_of_resources(&e) => {
                    // Once per episode: at one line per retry the log would fill up too.
                    if refused == 0 {
                        tracing::error!(
                            error = %e,
                            "cannot accept connections: out of file descriptors; \
                             retrying every {ACCEPT_BACKOFF:?}"
                        );
                    }
                    refused += 1;
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
                Err(e) => {
                    // The peer gave up before accept (ECONNABORTED and the like).
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if refused > 0 {
            tracing::info!(retries = refused, "accepting connections again");
            refused = 0;
        }
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            builder: builder.clone(),
            router: router.clone(),
            peer,
            limits,
            stop: stop.clone(),
            _alive: alive.clone(),
        };
        let acceptor = acceptor.clone();
        tokio::spawn(conn.run(stream, acceptor));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive);
    tokio::select! {
        _ = all_ended.recv() => {}
        _ = tokio::time::sleep(DRAIN) => {
            tracing::warn!("requests still running after {DRAIN:?}; exiting anyway");
        }
    }
    Ok(())
}

/// `accept` errors that say the process or system ran out of something, not the peer.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// One accepted connection and what it needs to be served.
struct Conn {
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    peer: SocketAddr,
    limits: Limits,
    stop: watch::Receiver<bool>,
    /// Dropped when the connection ends; see `serve_with`.
    _alive: mpsc::Sender<Infallible>,
}

impl Conn {
    async fn run(self, stream: TcpStream, acceptor: Option<TlsAcceptor>) {
        // The first request head is due `header_timeout` after accept, TLS handshake
        // included: a client that connects and stays silent must not keep a descriptor.
        let activity = Activity::new(Instant::now());
        let Some(acceptor) = acceptor else {
            return self.serve(stream, activity).await;
        };
        let deadline = activity.first_head_due(self.limits.header_timeout);
        let mut stop = self.stop.clone();
        let tls = tokio::select! {
            tls = handshake(acceptor, stream, self.peer, deadline) => tls,
            // Shutting down: a connection with no request yet has nothing to finish.
            _ = stop.wait_for(|stopping| *stopping) => None,
        };
        let Some(tls) = tls else {
            return;
        };
        self.serve(tls, activity).await
    }

    /// Serve HTTP on `io` until the peer or the server closes it, or it is idle too long.
    async fn serve<I>(self, io: I, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            builder,
            router,
            peer,
            limits,
            mut stop,
            _alive,
        } = self;
        let act = Arc::clone(&activity);
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            // Counted from the head to the end of both bodies: a connection is idle only
            // when no request is in flight.
            let busy = act.begin();
            let discard = !expects_continue(&req);
            let mut req = req.map(|b| RequestBody::new(b, discard, busy.clone()));
            req.extensions_mut().insert(ConnectInfo(peer));
            let resp = tower::ServiceExt::oneshot(router.clone(), req);
            async move {
                let resp = resp.await?;
                Ok::<_, Infallible>(resp.map(|inner| ResponseBody { inner, _busy: busy }))
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            let due = activity.due(limits.header_timeout, limits.idle_timeout);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.changed(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = tokio::time::sleep_until(due) => {
                    if activity.due(limits.header_timeout, limits.idle_timeout) > Instant::now() {
                        continue;
                    }
                    if closing || !activity.served() {
                        // Nothing in flight: nothing to finish politely. Before the first
                        // head this covers every stage a silent client can stop in (protocol
                        // sniffing, HTTP/1 head, HTTP/2 preface and SETTINGS).
                        tracing::debug!(%peer, "closing an idle connection");
                        return;
                    }
                    // Idle after requests: HTTP/1 closes, HTTP/2 sends GOAWAY. A peer that
                    // does not finish the goodbye within `header_timeout` is dropped.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    activity.restart(Instant::now(), false);
                }
            }
        }
    }
}

/// `Expect: 100-continue`: the client waits for our go before it sends the body, so a
/// refused body need not (and should not, hyper would send the 100) be read.
fn expects_continue<B>(req: &hyper::Request<B>) -> bool {
    req.headers()
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// The TLS handshake, done by `deadline`; a plain-HTTP request gets a 400 and a close.
async fn handshake(
    acceptor: TlsAcceptor,
    mut stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
        Ok(Ok(1)) => {
            tracing::debug!(%peer, "plain HTTP on the TLS port");
            let _ = tokio::time::timeout_at(deadline, async {
                let _ = stream.write_all(PLAIN_ON_TLS).await;
                let _ = stream.shutdown().await;
            })
            .await;
            return None;
        }
        Ok(_) => return None,
        Err(_) => {
            tracing::debug!(%peer, "no byte before the head deadline");
            return None;
        }
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// What a connection is doing, for its deadlines: how many requests are in flight, since
/// when it has had none, and whether it ever completed a request head.
#[derive(Debug)]
struct Activity(Mutex<ActivityState>);

#[derive(Debug, Clone, Copy)]
struct ActivityState {
    in_flight: usize,
    idle_since: Instant,
    served: bool,
}

impl Activity {
    fn new(now: Instant) -> Arc<Activity> {
        Arc::new(Activity(Mutex::new(ActivityState {
            in_flight: 0,
            idle_since: now,
            served: false,
        })))
    }

    /// std Mutex: held for a few instructions, never across an await.
    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request head arrived; the returned guard (and its clones) keep it in flight.
    fn begin(self: &Arc<Self>) -> Busy {
        let mut s = self.state();
        s.in_flight += 1;
        s.served = true;
        Busy(Arc::clone(self))
    }

    fn served(&self) -> bool {
        self.state().served
    }

    /// Count the idle time from `now` again; `served` picks the timeout that applies.
    fn restart(&self, now: Instant, served: bool) {
        let mut s = self.state();
        s.idle_since = now;
        s.served = served;
    }

    fn first_head_due(&self, header_timeout: Duration) -> Instant {
        self.state().idle_since + header_timeout
    }

    /// When the connection is to be closed if nothing happens until then: `header_timeout`
    /// after accept for the first head, `idle_timeout` after the last request ended. While
    /// requests are in flight, a time to look again.
    fn due(&self, header_timeout: Duration, idle_timeout: Duration) -> Instant {
        let s = *self.state();
        if s.in_flight > 0 {
            return Instant::now() + idle_timeout;
        }
        s.idle_since
            + if s.served {
                idle_timeout
            } else {
                header_timeout
            }
    }
}

/// Keeps one request in flight on its connection; see [`Activity::begin`].
#[derive(Debug)]
struct Busy(Arc<Activity>);

impl Clone for Busy {
    fn clone(&self) -> Busy {
        self.0.begin()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.idle_since = Instant::now();
        }
    }
}

/// The response body, holding its request in flight until hyper has sent it.
struct ResponseBody {
    inner: axum::body::Body,
    _busy: Busy,
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body as handlers see it. Dropped before its end (a refusal, an error), it
/// hands the rest to a task that reads and drops it within [`DISCARD_MAX_BYTES`],
/// [`DISCARD_MAX_TIME`] and [`DISCARD_MAX_PAUSE`], so that the connection does not reset under the client while it
/// still sends.
struct RequestBody {
    /// `None` once dropped.
    inner: Option<Incoming>,
    discard: bool,
    busy: Option<Busy>,
}

impl RequestBody {
    fn new(inner: Incoming, discard: bool, busy: Busy) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            discard,
            busy: Some(busy),
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(HttpBody::size_hint)
            .unwrap_or_default()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if !self.discard || body.is_end_stream() {
            return;
        }
        // Drop runs on a runtime thread (hyper's connection task or a handler); at runtime
        // shutdown there is none and the body is simply dropped.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(discard(body, self.busy.take()));
        }
    }
}

/// Read and drop the rest of a request body, within the bounds.
async fn discard(mut body: Incoming, _busy: Option<Busy>) {
    let deadline = Instant::now() + DISCARD_MAX_TIME;
    let mut left = DISCARD_MAX_BYTES;
    loop {
        let pause_ends = (Instant::now() + DISCARD_MAX_PAUSE).min(deadline);
        let Ok(Some(Ok(frame))) = tokio::time::timeout_at(pause_ends, body.frame()).await else {
            return;
        };
        let n = frame.data_ref().map_or(0, |d| d.len() as u64);
        match left.checked_sub(n) {
            Some(l) => left = l,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_requests_in_flight() {
        let (head, idle) = (Duration::from_secs(5), Duration::from_secs(60));
        let t0 = Instant::now();
        let a = Activity::new(t0);
        // Before the first head: the head timeout from accept.
        assert_eq!(a.due(head, idle), t0 + head);
        assert!(!a.served());
        let busy = a.begin();
        let body = busy.clone();
        tokio::time::advance(Duration::from_secs(100)).await;
        // In flight: never due, only looked at again.
        assert!(a.due(head, idle) > Instant::now());
        drop(busy);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(a.due(head, idle) > Instant::now());
        // The idle time counts from the end of the last body.
        drop(body);
        let ended = Instant::now();
        assert_eq!(a.due(head, idle), ended + idle);
        assert!(a.served());
        a.restart(ended, false);
        assert_eq!(a.due(head, idle), ended + head);
    }

    #[test]
    fn only_resource_errors_back_off() {
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert!(out_of_resources(&emfile));
        let aborted = std::io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert!(!out_of_resources(&aborted));
    }
}
