//! Listen: the server's listeners as axum sees them — one that stops accepting for good the
//! moment the server decides to leave (so a client reconnecting during an upgrade waits in the
//! backlog for the successor), and the TCP peer address its requests carry.

/// A listener that stops accepting, for good, the moment `closing` turns true (checked before
/// every accept, so nothing is accepted once the server has decided to leave).
pub struct Closable<L> {
    /// The listener.
    pub inner: L,
    /// Turns true when the server decides to leave.
    pub closing: tokio::sync::watch::Receiver<bool>,
}

impl<L: axum::serve::Listener> axum::serve::Listener for Closable<L>
where
    L::Addr: Sync,
{
    type Io = L::Io;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        tokio::select! {
            biased;
            _ = closed(&mut self.closing) => std::future::pending().await,
            conn = self.inner.accept() => conn,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

async fn closed(closing: &mut tokio::sync::watch::Receiver<bool>) {
    if closing.wait_for(|c| *c).await.is_err() {
        // The server is going away anyway: accept nothing more.
        std::future::pending::<()>().await;
    }
}

/// A TCP peer's address (the connect info of requests on the TCP listener).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<L> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Closable<L>>>
    for Peer
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, Closable<L>>) -> Self {
        Peer(*stream.remote_addr())
    }
}
