//! Limits on the gRPC listener's connections: a deadline for a new connection to
//! prove itself, a total and a per-address cap, and eviction of the oldest
//! connection still unproven when a cap is reached.
//!
//! A connection is *unproven* until it has delivered its first application bytes
//! (on TLS: after the handshake; on plain TCP: any bytes, normally the HTTP/2
//! preface). An unproven connection is closed when `General.ConnectionTimeout`
//! passes. When a new connection would exceed `Korder.MaxConnections` or
//! `Korder.MaxConnectionsPerAddress`, the oldest unproven connection (of the same
//! address, for the per-address cap) is closed to make room; only when every
//! counted connection is proven is the new one refused. Idle sockets that never
//! speak therefore cannot lock working clients out.
//!
//! ```text
//! accept ─▶ Connections::admit (evict oldest unproven / refuse) ─▶ Guarded<TcpStream>
//!                                                                     │ deadline until proven
//!                                                                     ▼ closed on eviction
//!                                                          TLS handshake / tonic
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Sleep;
use tokio_stream::wrappers::ReceiverStream;

use korder_types::sync::MutexExt;

/// Connection limits of the gRPC listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a new connection may stay unproven (`General.ConnectionTimeout`).
    pub handshake_timeout: Duration,
    /// Most connections open at once (`Korder.MaxConnections`).
    pub max_connections: usize,
    /// Most connections open at once from one IP address
    /// (`Korder.MaxConnectionsPerAddress`).
    pub max_per_address: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(5),
            max_connections: 4096,
            max_per_address: 1024,
        }
    }
}

/// Pause after a failed `accept` (e.g. out of file descriptors) before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Accepted connections queued for the gRPC server.
const ACCEPTED_QUEUE_LEN: usize = 64;

/// What a connection and the table share.
#[derive(Debug, Default)]
struct ConnState {
    proven: AtomicBool,
    closed: AtomicBool,
    waker: AtomicWaker,
}

impl ConnState {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }
}

#[derive(Debug)]
struct Entry {
    address: IpAddr,
    state: Arc<ConnState>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    /// Open connections by id; ids grow, so the first entries are the oldest.
    open: BTreeMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(n) = self.per_address.get_mut(&entry.address) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&entry.address);
            }
        }
        Some(entry)
    }

    /// Closes the oldest unproven connection (of `address` when given); whether
    /// there was one.
    fn evict_oldest_unproven(&mut self, address: Option<IpAddr>) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, e)| {
                !e.state.proven.load(Ordering::Acquire) && address.is_none_or(|a| a == e.address)
            })
            .map(|(&id, _)| id);
        match victim.and_then(|id| self.remove(id)) {
            Some(entry) => {
                entry.state.close();
                true
            }
            None => false,
        }
    }
}

/// The open connections of one listener.
#[derive(Clone, Debug)]
pub struct Connections {
    limits: ConnectionLimits,
    table: Arc<Mutex<Table>>,
    metrics: Option<Arc<crate::Metrics>>,
}

/// Why a new connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `MaxConnectionsPerAddress` connections of this address are open and proven.
    #[error(
        "{0} connections from this address are open and in use (Korder.MaxConnectionsPerAddress)"
    )]
    PerAddress(usize),
    /// `MaxConnections` connections are open and proven.
    #[error("{0} connections are open and in use (Korder.MaxConnections)")]
    Total(usize),
}

impl Connections {
    /// An empty table with `limits`.
    pub fn new(limits: ConnectionLimits) -> Self {
        assert!(limits.max_connections > 0 && limits.max_per_address > 0);
        Connections {
            limits,
            table: Arc::new(Mutex::new(Table::default())),
            metrics: None,
        }
    }

    /// Counts admitted and closed connections in `grpc_comm_conn_opened`/`_closed`.
    pub fn with_metrics(mut self, metrics: Arc<crate::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The limits.
    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table.lock_unpoisoned().open.len()
    }

    /// Counts `stream` from `remote`, closing the oldest unproven connection when a
    /// limit is reached. `proven_on_read`: the first bytes read prove the
    /// connection (plain TCP); otherwise the caller proves it (TLS, after the
    /// handshake) through [`Guarded::proof`].
    pub fn admit<S>(
        &self,
        stream: S,
        remote: SocketAddr,
        proven_on_read: bool,
    ) -> Result<Guarded<S>, Refusal> {
        let address = remote.ip();
        let mut table = self.table.lock_unpoisoned();
        let from_address = table.per_address.get(&address).copied().unwrap_or(0);
        if from_address >= self.limits.max_per_address {
            if !table.evict_oldest_unproven(Some(address)) {
                return Err(Refusal::PerAddress(from_address));
            }
            tracing::debug!(%remote, "closed the oldest unproven connection of this address to admit a new one");
        }
        if table.open.len() >= self.limits.max_connections {
            if !table.evict_oldest_unproven(None) {
                return Err(Refusal::Total(table.open.len()));
            }
            tracing::debug!(%remote, "closed the oldest unproven connection to admit a new one");
        }
        let id = table.next_id;
        table.next_id += 1;
        let state = Arc::new(ConnState::default());
        table.open.insert(
            id,
            Entry {
                address,
                state: Arc::clone(&state),
            },
        );
        *table.per_address.entry(address).or_insert(0) += 1;
        drop(table);
        if let Some(m) = &self.metrics {
            m.grpc_conn_opened.inc();
        }
        Ok(Guarded {
            stream,
            state,
            deadline: Some(Box::pin(tokio::time::sleep(self.limits.handshake_timeout))),
            timeout: self.limits.handshake_timeout,
            proven_on_read,
            id,
            table: Arc::clone(&self.table),
            remote,
            metrics: self.metrics.clone(),
        })
    }
}

/// Marks a connection proven; held by the layer that sees its application bytes.
#[derive(Clone, Debug)]
pub struct Proof(Arc<ConnState>);

impl Proof {
    /// The connection delivered application bytes: no deadline any more, and no
    /// eviction.
    pub fn prove(&self) {
        self.0.proven.store(true, Ordering::Release);
    }

    /// Whether it already did.
    pub fn is_proven(&self) -> bool {
        self.0.proven.load(Ordering::Acquire)
    }
}

/// A counted connection: it fails once evicted or once its deadline passes while
/// unproven, and leaves the table when dropped.
pub struct Guarded<S> {
    stream: S,
    state: Arc<ConnState>,
    deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    proven_on_read: bool,
    id: u64,
    table: Arc<Mutex<Table>>,
    remote: SocketAddr,
    metrics: Option<Arc<crate::Metrics>>,
}

impl<S> std::fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("id", &self.id)
            .field("remote", &self.remote)
            .finish()
    }
}

impl<S> Guarded<S> {
    /// The handle that proves this connection.
    pub fn proof(&self) -> Proof {
        Proof(Arc::clone(&self.state))
    }

    /// The connection.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The client's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// `Err` when the connection must end: evicted, or unproven past its deadline.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        self.state.waker.register(cx.waker());
        if self.state.closed.load(Ordering::Acquire) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed to make room for a new connection",
            ));
        }
        if self.state.proven.load(Ordering::Acquire) {
            self.deadline = None;
        } else if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "no handshake or request within {} ms (General.ConnectionTimeout)",
                    self.timeout.as_millis()
                ),
            ));
        }
        Ok(())
    }
}

impl<S> Drop for Guarded<S> {
    fn drop(&mut self) {
        self.table.lock_unpoisoned().remove(self.id);
        if let Some(m) = &self.metrics {
            m.grpc_conn_closed.inc();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if self.proven_on_read && buf.filled().len() > before {
            self.state.proven.store(true, Ordering::Release);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Accepts connections on `listener` and hands those `connections` admits to
/// `on_admitted`, which must not wait; it ends when `on_admitted` returns false.
/// `proven_on_read`: as for [`Connections::admit`].
pub async fn accept_loop<F>(
    listener: TcpListener,
    connections: Connections,
    proven_on_read: bool,
    mut on_admitted: F,
) where
    F: FnMut(Guarded<TcpStream>) -> bool + Send + 'static,
{
    {
        loop {
            let (tcp, remote) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%remote, error = %e, "cannot set TCP_NODELAY");
            }
            match connections.admit(tcp, remote, proven_on_read) {
                Ok(conn) => {
                    if !on_admitted(conn) {
                        return;
                    }
                }
                Err(why) => tracing::debug!(%remote, reason = %why, "connection refused"),
            }
        }
    }
}

/// Accepts plain TCP connections for `tonic::transport::Server::serve_with_incoming_shutdown`,
/// with the limits of `connections`. The accept loop ends when the returned stream
/// is dropped.
pub fn incoming_plain(
    listener: TcpListener,
    connections: Connections,
) -> ReceiverStream<Result<Guarded<TcpStream>, io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_LEN);
    tokio::spawn(async move {
        let closed = tx.clone();
        tokio::select! {
            _ = closed.closed() => {}
            _ = accept_loop(listener, connections, true, move |conn| {
                if tx.is_closed() {
                    return false;
                }
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Ok(conn)).await;
                });
                true
            }) => {}
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn addr(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], port))
    }

    /// When the total cap is reached the oldest unproven connection makes room;
    /// proven ones are never evicted, and when all are proven the new one is refused.
    #[tokio::test]
    async fn full_table_evicts_oldest_unproven() {
        let c = Connections::new(ConnectionLimits {
            handshake_timeout: Duration::from_secs(60),
            max_connections: 3,
            max_per_address: 10,
        });
        let a = c.admit((), addr(1, 1), false).unwrap();
        let b = c.admit((), addr(2, 1), false).unwrap();
        let d = c.admit((), addr(3, 1), false).unwrap();
        a.proof().prove();
        let _e = c.admit((), addr(4, 1), false).unwrap();
        assert!(!a.state.closed.load(Ordering::Acquire));
        assert!(
            b.state.closed.load(Ordering::Acquire),
            "oldest unproven goes"
        );
        assert!(!d.state.closed.load(Ordering::Acquire));
        assert_eq!(c.open(), 3);
        d.proof().prove();
        _e.proof().prove();
        assert_eq!(
            c.admit((), addr(5, 1), false).unwrap_err(),
            Refusal::Total(3)
        );
        drop(b);
        assert_eq!(c.open(), 3);
        drop(a);
        assert_eq!(c.open(), 2);
        assert!(c.admit((), addr(5, 1), false).is_ok());
    }

    /// The per-address cap evicts only connections of that address.
    #[tokio::test]
    async fn per_address_cap_evicts_same_address() {
        let c = Connections::new(ConnectionLimits {
            handshake_timeout: Duration::from_secs(60),
            max_connections: 100,
            max_per_address: 2,
        });
        let other = c.admit((), addr(9, 1), false).unwrap();
        let a1 = c.admit((), addr(1, 1), false).unwrap();
        let a2 = c.admit((), addr(1, 2), false).unwrap();
        a2.proof().prove();
        let _a3 = c.admit((), addr(1, 3), false).unwrap();
        assert!(a1.state.closed.load(Ordering::Acquire));
        assert!(!other.state.closed.load(Ordering::Acquire));
        _a3.proof().prove();
        assert_eq!(
            c.admit((), addr(1, 4), false).unwrap_err(),
            Refusal::PerAddress(2)
        );
    }

    /// An unproven connection fails at its deadline; a proven one does not.
    #[tokio::test]
    async fn unproven_connection_times_out() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let c = Connections::new(ConnectionLimits {
            handshake_timeout: Duration::from_millis(100),
            max_connections: 10,
            max_per_address: 10,
        });
        let (client, server) = tokio::io::duplex(64);
        let mut g = c.admit(server, addr(1, 1), true).unwrap();
        let mut buf = [0u8; 8];
        let err = g.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (mut client2, server2) = tokio::io::duplex(64);
        let mut g2 = c.admit(server2, addr(1, 2), true).unwrap();
        client2.write_all(b"hi").await.unwrap();
        assert_eq!(g2.read(&mut buf).await.unwrap(), 2);
        tokio::time::sleep(Duration::from_millis(300)).await;
        client2.write_all(b"yo").await.unwrap();
        assert_eq!(g2.read(&mut buf).await.unwrap(), 2);
        drop(client);
    }
}
