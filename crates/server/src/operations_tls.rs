//! The operations endpoint over TLS (`Operations.TLS`), as Fabric serves it:
//! `/healthz` and `/version` to any TLS client; `/metrics` and `/logspec` only to a
//! client that presented a certificate chaining to `Operations.TLS.ClientRootCAs`
//! (401 otherwise). With `ClientAuthRequired` the handshake itself refuses a
//! client without one. Plain HTTP gets no answer: the handshake fails.
//!
//! The admin endpoint (the channel participation API) is served the same way,
//! with every path needing a certificate ([`serve_router`]).
//!
//! Handshakes run in their own tasks, each bounded by [`HANDSHAKE_TIMEOUT`], so a
//! slow or silent client never holds up the others.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
pub use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::metrics::Metrics;
use crate::registrar::Registrar;

/// Longest a TLS handshake on the operations endpoint may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections whose handshake succeeded, waiting for the HTTP server.
const ACCEPTED_QUEUE_LEN: usize = 64;

/// Paths that need a verified client certificate when TLS is on, as in Fabric.
const CERTIFICATE_PATHS: &[&str] = &["/metrics", "/logspec"];

/// TLS connections of the operations endpoint, for [`axum::serve()`].
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl TlsListener {
    /// Accepts TCP connections on `listener` and performs the server handshake of
    /// `config` on each; `endpoint` names the endpoint in the log (`operations`,
    /// `admin`).
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        endpoint: &'static str,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(ACCEPTED_QUEUE_LEN);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let accept_task = tokio::spawn(async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::debug!(endpoint, error = %e, "accept failed");
                        // Out of descriptors and the like: let them free up.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, remote)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(endpoint, %remote, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::info!(endpoint, %remote, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(TlsListener {
            accepted,
            local,
            accept_task,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(c) => c,
            // The accept task only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// What a request of the operations endpoint knows about its TLS client.
#[derive(Clone, Copy, Debug)]
pub struct OpsPeer {
    pub remote: SocketAddr,
    /// The client presented a certificate (rustls verified it in the handshake).
    pub client_certificate: bool,
}

impl Connected<IncomingStream<'_, TlsListener>> for OpsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        OpsPeer {
            remote: *stream.remote_addr(),
            client_certificate: stream
                .io()
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty()),
        }
    }
}

/// Answers 401 to a request for a path `needs_certificate` names when the client
/// presented no certificate, as Fabric's `RequireCert` middleware does.
async fn require_certificate(
    needs_certificate: fn(&str) -> bool,
    peer: OpsPeer,
    request: Request,
    next: Next,
) -> Response {
    if needs_certificate(request.uri().path()) && !peer.client_certificate {
        tracing::warn!(
            remote = %peer.remote,
            path = request.uri().path(),
            "request refused: a valid client certificate is needed for this path"
        );
        return StatusCode::UNAUTHORIZED.into_response();
    }
    next.run(request).await
}

/// Serves `app` over TLS on `listener` until `shutdown` resolves; a request for a
/// path `needs_certificate` names is answered 401 unless the client presented a
/// certificate. The operations and the admin endpoints both run on this.
pub async fn serve_router(
    endpoint: &'static str,
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: axum::Router,
    needs_certificate: fn(&str) -> bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let app = app.layer(axum::middleware::from_fn(
        move |ConnectInfo(peer): ConnectInfo<OpsPeer>, request: Request, next: Next| {
            require_certificate(needs_certificate, peer, request, next)
        },
    ));
    axum::serve(
        TlsListener::new(listener, config, endpoint)?,
        app.into_make_service_with_connect_info::<OpsPeer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Serves the operations endpoint over TLS on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    registrar: Registrar,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_router(
        "operations",
        listener,
        config,
        crate::operations::router(registrar, metrics),
        |path| CERTIFICATE_PATHS.contains(&path),
        shutdown,
    )
    .await
}
