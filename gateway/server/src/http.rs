//! HTTP: serving one listener's connections (hyper, HTTP/1.1 with upgrades to WebSocket).
//! axum's own `serve` bounds neither the connections open at once nor the time a request's
//! headers may take, so a client that opens connections and sends nothing (or a header a byte
//! a minute) held a file descriptor each for good: 20,000 idle connections made every request
//! fail with "Too many open files", the CLI's over the Unix socket included. Here:
//!
//! - At most [`MAX_OPEN`] connections per listener at once. Past it the listener is not
//!   accepted from: the kernel's backlog holds the next ones, which wait (TCP pushes back);
//!   nothing is refused or dropped. The two listeners count apart, so TCP clients cannot
//!   lock out the local CLI.
//! - A request's headers must arrive within [`HEADER_TIMEOUT`], and a keep-alive connection
//!   idle that long is closed (hyper's header timer runs while it waits for the next request).
//! - A connection upgraded to a WebSocket leaves the count at the upgrade: WebSockets have
//!   their own bound (`limits.max_connections`) and no idle timeout (a viewer may watch for
//!   hours).
//! - A write that makes no progress for [`WRITE_STALL`] fails, and its connection ends: a
//!   client that stops reading (a page's asset it never takes, a WebSocket viewer gone without
//!   closing) no longer holds its connection and its unsent bytes for good. A WebSocket viewer
//!   that comes back reconnects and resumes at its exact offset. (A request body that never
//!   comes is bounded by `access::BODY_TIMEOUT`.)
//!
//! Every connection's task belongs to the loop (a `JoinSet`), never spawned and forgotten: on
//! `stop` accepting ends, each connection finishes the request in flight and closes, and the
//! loop returns once all have (the caller bounds that wait).

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

use crate::listen::Peer;

/// Most connections one listener serves at once.
pub const MAX_OPEN: usize = 1024;
/// How long a connection accepted before a stop has to send its request before it is closed.
const LAST_REQUEST: Duration = Duration::from_millis(200);

/// Longest a request's headers may take to arrive, and a keep-alive connection may stay idle.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest a write may wait for its client to read before the connection ends.
pub const WRITE_STALL: Duration = Duration::from_secs(60);

/// A connection whose writes fail after [`WRITE_STALL`] without progress.
struct Stall<T> {
    /// The connection.
    inner: T,
    /// Since when the current write has waited, while it waits.
    waiting: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Stall<T> {
    /// `Pending` from a write: starts (or checks) the stall timer, which fails it at its end.
    fn stalled(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Error> {
        let timer = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_STALL)));
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing for a minute",
            )),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Stall<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Runs one write-side poll of `$self.inner`, failing it after a stall (see [`Stall`]).
macro_rules! bounded {
    ($self:ident, $cx:ident, $poll:expr) => {{
        match $poll {
            std::task::Poll::Pending => match $self.stalled($cx) {
                std::task::Poll::Ready(e) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            },
            ready => {
                $self.waiting = None;
                ready
            }
        }
    }};
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Stall<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        bounded!(
            this,
            cx,
            std::pin::Pin::new(&mut this.inner).poll_write(cx, buf)
        )
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        bounded!(
            this,
            cx,
            std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
        )
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        bounded!(this, cx, std::pin::Pin::new(&mut this.inner).poll_flush(cx))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        bounded!(
            this,
            cx,
            std::pin::Pin::new(&mut this.inner).poll_shutdown(cx)
        )
    }
}

/// Serves `listener` with `router` until `stop` turns true, then until its connections are
/// done. `peer` gives a TCP connection's address to its requests (`ConnectInfo<Peer>`).
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    peer: fn(&L::Addr) -> Option<Peer>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()>
where
    L: Listener,
{
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_OPEN));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Finished connections are collected as the loop goes (bounded memory).
        while let Some(done) = connections.try_join_next() {
            if let Err(e) = done {
                tracing::warn!(error = %e, "an HTTP connection's task failed");
            }
        }
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            permit = open.clone().acquire_owned() => match permit {
                Ok(p) => p,
                // invariant: the semaphore is never closed; leave rather than spin.
                Err(_) => break,
            },
        };
        let (io, addr) = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let connect_info = peer(&addr);
        let service = router
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                if let Some(p) = connect_info {
                    req.extensions_mut().insert(ConnectInfo(p));
                }
                req.map(axum::body::Body::new)
            });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let mut stop = stop.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder
                .serve_connection(
                    TokioIo::new(Stall {
                        inner: io,
                        waiting: None,
                    }),
                    service,
                )
                .with_upgrades();
            tokio::pin!(conn);
            // On stop, a moment for the request a client may have sent already: hyper closes a
            // connection whose request it has not read yet at once, and the client, its
            // request unread, gets a reset (a CLI call during an upgrade failed so).
            let last_request = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
            tokio::pin!(last_request);
            let (mut stop_seen, mut stopping) = (false, false);
            let served = loop {
                tokio::select! {
                    served = conn.as_mut() => break served,
                    _ = stop.wait_for(|s| *s), if !stop_seen => {
                        stop_seen = true;
                        last_request
                            .as_mut()
                            .reset(tokio::time::Instant::now() + LAST_REQUEST);
                    }
                    () = &mut last_request, if stop_seen && !stopping => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    while let Some(done) = connections.join_next().await {
        if let Err(e) = done {
            tracing::warn!(error = %e, "an HTTP connection's task failed");
        }
    }
    Ok(())
}
