//! TLS for the gRPC server (`General.TLS`), optional mutual TLS, and the Deliver
//! TLS binding check.
//!
//! ```text
//! TcpListener ─accept─▶ Connections (limits) ─▶ handshake task ─▶ TlsConn ─▶ tonic
//!                              │ ServerConfig of the moment
//!                              ▼
//!               TlsAcceptor: server key pair + client roots =
//!                 ClientRootCAs ∪ TLS roots/intermediates of every org MSP
//!                 of every channel (rebuilt when any channel's config
//!                 sequence, or the set of channels, changes)
//! ```
//!
//! Every connection carries a [`TlsConnectInfo`] in its requests' extensions: the
//! client's certificate (when it presented one) and whether client certificates are
//! required. Deliver reads it through [`TlsBinding::of_request`] to check that a seek
//! request's `tls_cert_hash` matches the connection's certificate.
//!
//! This module never blocks the accept loop on a handshake and never holds a lock
//! across an `.await`.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use korder_channelconfig::Bundle;
use korder_channelconfig::bundle::CONSORTIUMS_GROUP;
use korder_proto::Message;
use korder_proto::msp::{FabricMspConfig, MspConfig};
use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::connections::{Connections, Guarded, Proof};
use crate::registrar::Registrar;
use korder_types::ids::ConfigSeq;
use korder_types::sync::MutexExt;

/// Handshaken connections queued for the gRPC server.
const ACCEPTED_QUEUE_LEN: usize = 64;

/// ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";

/// Why the server's TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path} ({key}): {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The configuration key that names it.
        key: &'static str,
        /// The I/O error.
        source: io::Error,
    },
    /// A PEM file holds no usable item of the expected kind.
    #[error("{path} ({key}): {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The configuration key that names it.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Client certificates are required but no root certificate is known.
    #[error(
        "General.TLS.ClientAuthRequired is set but no client root certificate is known (General.TLS.ClientRootCAs and the channels' MSP TLS roots are all empty or unusable)"
    )]
    NoClientRoots,
    /// `Operations.TLS.ClientRootCAs` holds no usable certificate, and one is needed.
    #[error(
        "Operations.TLS.ClientRootCAs holds no usable certificate (needed when Operations.TLS.ClientAuthRequired is true)"
    )]
    NoOperationsClientRoots,
    /// The client certificate verifier could not be built.
    #[error("building the client certificate verifier: {0}")]
    Verifier(String),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("building the TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a seek request fails the TLS binding check (answered with BAD_REQUEST).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindingError {
    /// The request's channel header carries no `tls_cert_hash`.
    #[error("client did not include a TLS certificate hash")]
    MissingHash,
    /// The connection has no client certificate to compare with.
    #[error("client did not send a TLS certificate on the connection")]
    NoPeerCertificate,
    /// The hash is not SHA-256 of the connection's client certificate.
    #[error(
        "the TLS certificate hash in the request does not match the connection's client certificate"
    )]
    Mismatch,
}

/// The server's TLS material, read from `General.TLS`.
#[derive(Debug)]
pub struct TlsSettings {
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth_required: bool,
    client_roots: Vec<CertificateDer<'static>>,
}

impl TlsSettings {
    /// Reads the server certificate chain (`General.TLS.Certificate`), its key
    /// (`General.TLS.PrivateKey`, PKCS#8, SEC1 or PKCS#1 PEM) and, when
    /// `client_auth_required`, the static client roots (`General.TLS.ClientRootCAs`).
    pub fn load(
        certificate: &Path,
        private_key: &Path,
        client_auth_required: bool,
        client_root_cas: &[PathBuf],
    ) -> Result<Self, TlsError> {
        let keys = [
            "General.TLS.Certificate",
            "General.TLS.PrivateKey",
            "General.TLS.ClientRootCAs",
        ];
        let roots: &[PathBuf] = if client_auth_required {
            client_root_cas
        } else {
            &[]
        };
        Self::load_as(keys, certificate, private_key, client_auth_required, roots)
    }

    /// The operations endpoint's material (`Operations.TLS`): as [`TlsSettings::load`],
    /// but the `ClientRootCAs` are read in any case, as a client that presents a
    /// certificate must chain to them even when none is required.
    pub fn load_operations(
        certificate: &Path,
        private_key: &Path,
        client_auth_required: bool,
        client_root_cas: &[PathBuf],
    ) -> Result<Self, TlsError> {
        let keys = [
            "Operations.TLS.Certificate",
            "Operations.TLS.PrivateKey",
            "Operations.TLS.ClientRootCAs",
        ];
        Self::load_as(
            keys,
            certificate,
            private_key,
            client_auth_required,
            client_root_cas,
        )
    }

    fn load_as(
        [cert_key, key_key, roots_key]: [&'static str; 3],
        certificate: &Path,
        private_key: &Path,
        client_auth_required: bool,
        client_root_cas: &[PathBuf],
    ) -> Result<Self, TlsError> {
        let cert_chain = read_certs(certificate, cert_key)?;
        let key_pem = read_file(private_key, key_key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            path: private_key.to_path_buf(),
            key: key_key,
            reason: format!("no private key: {e}"),
        })?;
        let mut client_roots = Vec::new();
        for path in client_root_cas {
            client_roots.extend(read_certs(path, roots_key)?);
        }
        Ok(TlsSettings {
            cert_chain,
            key,
            client_auth_required,
            client_roots,
        })
    }

    /// Whether client certificates are required.
    pub fn client_auth_required(&self) -> bool {
        self.client_auth_required
    }

    /// The node's certificate chain (`General.TLS.Certificate`), which it also
    /// presents as a client to other orderers.
    pub fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    /// A copy of the node's private key (`General.TLS.PrivateKey`).
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The server configuration of the operations endpoint (HTTP/1.1), as Fabric's:
    /// a client certificate is verified against the static client roots when given,
    /// and required when `client_auth_required`.
    pub fn operations_server_config(&self) -> Result<ServerConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = if self.client_roots.is_empty() && !self.client_auth_required {
            builder.with_no_client_auth()
        } else {
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(self.client_roots.clone());
            if ignored > 0 {
                tracing::warn!(
                    ignored,
                    "operations TLS client root certificates that cannot be used"
                );
            }
            if added == 0 {
                return Err(TlsError::NoOperationsClientRoots);
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider);
            let verifier = if self.client_auth_required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?,
            )
        };
        let mut config = builder.with_single_cert(self.cert_chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

fn read_file(path: &Path, key: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        key,
        source,
    })
}

fn read_certs(path: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            key,
            reason: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            key,
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Where the client roots beyond `ClientRootCAs` come from: the channels' MSPs.
pub trait ChannelRoots: Send + Sync + 'static {
    /// A value that changes whenever the roots may have changed (the channel ids
    /// and their config sequences). Called on every handshake: keep it cheap.
    fn version(&self) -> Vec<(String, ConfigSeq)>;
    /// The TLS root and intermediate certificates (DER) of every organisation MSP
    /// of every channel.
    fn tls_roots(&self) -> Vec<CertificateDer<'static>>;
}

impl ChannelRoots for Registrar {
    fn version(&self) -> Vec<(String, ConfigSeq)> {
        self.channel_ids()
            .into_iter()
            .filter_map(|id| {
                let seq = self.channel(&id)?.state.sequence();
                Some((id, seq))
            })
            .collect()
    }

    fn tls_roots(&self) -> Vec<CertificateDer<'static>> {
        self.channel_ids()
            .into_iter()
            .filter_map(|id| self.channel(&id))
            .flat_map(|c| bundle_tls_roots(&c.state.bundle()))
            .collect()
    }
}

/// The TLS root and intermediate certificates (DER) of every organisation MSP of a
/// channel config: orderer and application organisations, and on the system channel
/// every consortium member. Idemix MSPs have none; undecodable entries are skipped
/// (the bundle already validated them).
pub fn bundle_tls_roots(bundle: &Bundle) -> Vec<CertificateDer<'static>> {
    let mut msps: Vec<MspConfig> = bundle
        .orderer_orgs
        .iter()
        .chain(&bundle.application_orgs)
        .filter_map(|o| o.msp.clone())
        .collect();
    let consortiums = bundle
        .config
        .channel_group
        .as_ref()
        .and_then(|g| g.groups.get(CONSORTIUMS_GROUP));
    for consortium in consortiums.iter().flat_map(|g| g.groups.values()) {
        for org in consortium.groups.values() {
            if let Some(v) = org.values.get("MSP")
                && let Ok(msp) = MspConfig::decode(v.value.as_ref())
            {
                msps.push(msp);
            }
        }
    }
    msp_tls_roots(&msps)
}

/// The TLS root and intermediate certificates (DER) of a channel's orderer
/// organisations only: what a node trusts when it connects to the channel's other
/// orderers as a client.
pub fn orderer_tls_roots(bundle: &Bundle) -> Vec<CertificateDer<'static>> {
    let msps: Vec<MspConfig> = bundle
        .orderer_orgs
        .iter()
        .filter_map(|o| o.msp.clone())
        .collect();
    msp_tls_roots(&msps)
}

/// The TLS roots and intermediates of X.509 MSPs (idemix MSPs have none;
/// undecodable entries are skipped, the bundle already validated them).
fn msp_tls_roots(msps: &[MspConfig]) -> Vec<CertificateDer<'static>> {
    let mut out = Vec::new();
    for msp in msps {
        // Type 0 is a Fabric (X.509) MSP; others carry no TLS certificates.
        if msp.r#type != 0 {
            continue;
        }
        let Ok(fabric) = FabricMspConfig::decode(msp.config.as_ref()) else {
            continue;
        };
        for pem in fabric
            .tls_root_certs
            .iter()
            .chain(&fabric.tls_intermediate_certs)
        {
            out.extend(
                CertificateDer::pem_slice_iter(pem)
                    .filter_map(Result::ok)
                    .map(CertificateDer::into_owned),
            );
        }
    }
    out
}

type Cached = (Vec<(String, ConfigSeq)>, Arc<ServerConfig>);

struct AcceptorInner {
    settings: TlsSettings,
    channels: Arc<dyn ChannelRoots>,
    cache: Mutex<Option<Cached>>,
}

/// Makes TLS connections with the server configuration of the moment: client roots
/// follow the channels' configs.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: Arc<AcceptorInner>,
}

impl std::fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field(
                "client_auth_required",
                &self.inner.settings.client_auth_required,
            )
            .finish_non_exhaustive()
    }
}

impl TlsAcceptor {
    /// An acceptor for `settings` taking channel roots from `channels`.
    ///
    /// Builds the configuration once to report a bad key pair now; a missing client
    /// root is only logged (a later channel config may bring one; until then every
    /// client is refused).
    pub fn new(settings: TlsSettings, channels: Arc<dyn ChannelRoots>) -> Result<Self, TlsError> {
        let acceptor = TlsAcceptor {
            inner: Arc::new(AcceptorInner {
                settings,
                channels,
                cache: Mutex::new(None),
            }),
        };
        match acceptor.server_config() {
            Ok(_) => {}
            Err(TlsError::NoClientRoots) => {
                tracing::error!("{}", TlsError::NoClientRoots);
                // Prove the key pair anyway, without client authentication.
                acceptor.build(Vec::new(), false)?;
            }
            Err(e) => return Err(e),
        }
        Ok(acceptor)
    }

    /// Whether client certificates are required.
    pub fn client_auth_required(&self) -> bool {
        self.inner.settings.client_auth_required
    }

    /// The current server configuration, rebuilt when the channels changed.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let settings = &self.inner.settings;
        if !settings.client_auth_required {
            if let Some((_, config)) = self.inner.cache.lock_unpoisoned().as_ref() {
                return Ok(config.clone());
            }
            let config = Arc::new(self.build(Vec::new(), false)?);
            *self.inner.cache.lock_unpoisoned() = Some((Vec::new(), config.clone()));
            return Ok(config);
        }
        let version = self.inner.channels.version();
        if let Some((v, config)) = self.inner.cache.lock_unpoisoned().as_ref()
            && *v == version
        {
            return Ok(config.clone());
        }
        let mut roots = settings.client_roots.clone();
        roots.extend(self.inner.channels.tls_roots());
        let config = Arc::new(self.build(roots, true)?);
        tracing::info!(
            channels = version.len(),
            "TLS client roots rebuilt from the channels' configs"
        );
        *self.inner.cache.lock_unpoisoned() = Some((version, config.clone()));
        Ok(config)
    }

    fn build(
        &self,
        client_roots: Vec<CertificateDer<'static>>,
        client_auth: bool,
    ) -> Result<ServerConfig, TlsError> {
        let settings = &self.inner.settings;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let builder = if client_auth {
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(client_roots);
            if ignored > 0 {
                tracing::warn!(ignored, "TLS client root certificates that cannot be used");
            }
            if added == 0 {
                return Err(TlsError::NoClientRoots);
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config =
            builder.with_single_cert(settings.cert_chain.clone(), settings.key.clone_key())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(config)
    }

    /// Performs the server side of the handshake on `tcp`; the connection's
    /// deadline (`General.ConnectionTimeout`) bounds it.
    pub async fn accept(&self, tcp: Guarded<TcpStream>) -> io::Result<TlsConn> {
        let config = self.server_config().map_err(io::Error::other)?;
        let local_addr = tcp.get_ref().local_addr().ok();
        let remote_addr = Some(tcp.remote());
        let proof = tcp.proof();
        let stream = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
        let peer_certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Bytes::copy_from_slice(c.as_ref()));
        Ok(TlsConn {
            info: TlsConnectInfo {
                local_addr,
                remote_addr,
                peer_certificate,
                client_auth_required: self.client_auth_required(),
            },
            stream,
            proof,
        })
    }
}

/// Accepts TCP connections on `listener` within the limits of `connections` and
/// yields them once their TLS handshake succeeded, for
/// `tonic::transport::Server::serve_with_incoming_shutdown`.
///
/// Each handshake runs in its own task, bounded by the connection's deadline;
/// the accept loop never waits for one. Failed handshakes are logged and dropped,
/// never yielded. The accept loop ends when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    connections: Connections,
) -> ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE_LEN);
    let closed = tx.clone();
    tokio::spawn(async move {
        let accept = crate::connections::accept_loop(listener, connections, false, move |tcp| {
            if tx.is_closed() {
                return false;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let remote = tcp.remote();
                match acceptor.accept(tcp).await {
                    Ok(conn) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(e) => tracing::info!(%remote, error = %e, "TLS handshake failed"),
                }
            });
            true
        });
        tokio::select! {
            _ = closed.closed() => {}
            _ = accept => {}
        }
    });
    ReceiverStream::new(rx)
}

/// What a TLS connection tells request handlers; found in every request's
/// extensions (`request.extensions().get::<TlsConnectInfo>()`).
#[derive(Clone, Debug)]
pub struct TlsConnectInfo {
    /// The server's address of the connection.
    pub local_addr: Option<SocketAddr>,
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// DER of the first certificate the client presented, if any.
    pub peer_certificate: Option<Bytes>,
    /// Whether the server required a client certificate (`ClientAuthRequired`).
    pub client_auth_required: bool,
}

/// A server-side TLS connection, as tonic serves it.
pub struct TlsConn {
    info: TlsConnectInfo,
    stream: tokio_rustls::server::TlsStream<Guarded<TcpStream>>,
    proof: Proof,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("info", &self.info).finish()
    }
}

impl TlsConn {
    /// The connection's information.
    pub fn info(&self) -> &TlsConnectInfo {
        &self.info
    }
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> TlsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before && !self.proof.is_proven() {
            self.proof.prove();
        }
        r
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
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

/// DER of the client certificate of the connection a request came on, if the
/// connection is TLS and the client presented one.
pub fn peer_certificate<T>(request: &tonic::Request<T>) -> Option<&[u8]> {
    request
        .extensions()
        .get::<TlsConnectInfo>()
        .and_then(|i| i.peer_certificate.as_deref())
}

/// Checks a seek request's TLS binding.
///
/// When `required` (TLS enabled with `ClientAuthRequired`), `tls_cert_hash` (from
/// the request's channel header) must be non-empty and equal SHA-256 of
/// `peer_cert_der`, the DER of the first certificate the client presented on the
/// connection. When not required, everything passes.
pub fn check_binding(
    tls_cert_hash: &[u8],
    peer_cert_der: Option<&[u8]>,
    required: bool,
) -> Result<(), BindingError> {
    if !required {
        return Ok(());
    }
    if tls_cert_hash.is_empty() {
        return Err(BindingError::MissingHash);
    }
    let cert = peer_cert_der.ok_or(BindingError::NoPeerCertificate)?;
    if sha256(cert).as_slice() != tls_cert_hash {
        return Err(BindingError::Mismatch);
    }
    Ok(())
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The TLS binding facts of one Deliver stream, taken from its request once, before
/// `into_inner()`: whether the binding is required and the client's certificate.
///
/// ```text
/// let binding = TlsBinding::of_request(&request);
/// let inbound = request.into_inner();
/// // for every seek envelope, after decoding its channel header `ch`:
/// if let Err(e) = binding.check(&ch.tls_cert_hash) { /* BAD_REQUEST */ }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsBinding {
    required: bool,
    peer_certificate: Option<Bytes>,
}

impl TlsBinding {
    /// The binding of `request`'s connection: required only on TLS connections of a
    /// server with `ClientAuthRequired`; never on plain TCP.
    pub fn of_request<T>(request: &tonic::Request<T>) -> Self {
        match request.extensions().get::<TlsConnectInfo>() {
            Some(info) => TlsBinding {
                required: info.client_auth_required,
                peer_certificate: info.peer_certificate.clone(),
            },
            None => TlsBinding::default(),
        }
    }

    /// A binding with these facts (for tests and callers without a request).
    pub fn new(required: bool, peer_certificate: Option<Bytes>) -> Self {
        TlsBinding {
            required,
            peer_certificate,
        }
    }

    /// Whether seek requests must carry the client certificate's hash.
    pub fn required(&self) -> bool {
        self.required
    }

    /// [`check_binding`] of `tls_cert_hash` against this connection.
    pub fn check(&self, tls_cert_hash: &[u8]) -> Result<(), BindingError> {
        check_binding(
            tls_cert_hash,
            self.peer_certificate.as_deref(),
            self.required,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use korder_msp::devpki::{DevPki, IssuedCert};
    use rustls::ClientConfig;
    use rustls::pki_types::ServerName;

    const CERT: &[u8] = b"a client certificate, DER";

    /// An unrequired binding passes whatever the hash and certificate.
    #[test]
    fn binding_not_required_passes() {
        assert_eq!(check_binding(b"", None, false), Ok(()));
        assert_eq!(check_binding(b"junk", Some(CERT), false), Ok(()));
    }

    /// A required binding needs a hash, a certificate, and their match.
    #[test]
    fn binding_required_checks_hash() {
        let good = sha256(CERT);
        assert_eq!(check_binding(&good, Some(CERT), true), Ok(()));
        assert_eq!(
            check_binding(b"", Some(CERT), true),
            Err(BindingError::MissingHash)
        );
        assert_eq!(
            check_binding(&good, None, true),
            Err(BindingError::NoPeerCertificate)
        );
        let mut bad = good;
        bad[0] ^= 1;
        assert_eq!(
            check_binding(&bad, Some(CERT), true),
            Err(BindingError::Mismatch)
        );
        assert_eq!(
            check_binding(&good[..31], Some(CERT), true),
            Err(BindingError::Mismatch)
        );
    }

    /// A request without TLS connection info has no binding; with it, the binding follows it.
    #[test]
    fn binding_of_request_reads_connect_info() {
        let plain = tonic::Request::new(());
        assert_eq!(TlsBinding::of_request(&plain), TlsBinding::default());
        assert!(peer_certificate(&plain).is_none());

        let mut tls = tonic::Request::new(());
        tls.extensions_mut().insert(TlsConnectInfo {
            local_addr: None,
            remote_addr: None,
            peer_certificate: Some(Bytes::from_static(CERT)),
            client_auth_required: true,
        });
        let binding = TlsBinding::of_request(&tls);
        assert!(binding.required());
        assert_eq!(peer_certificate(&tls), Some(CERT));
        assert_eq!(binding.check(&sha256(CERT)), Ok(()));
        assert_eq!(binding.check(b""), Err(BindingError::MissingHash));
    }

    /// Channel roots that a test changes at will.
    #[derive(Default)]
    struct FakeChannels {
        state: Mutex<(u64, Vec<CertificateDer<'static>>)>,
    }

    impl FakeChannels {
        fn set(&self, roots_pem: &[&str]) {
            let mut st = self.state.lock_unpoisoned();
            st.0 += 1;
            st.1 = roots_pem
                .iter()
                .flat_map(|p| CertificateDer::pem_slice_iter(p.as_bytes()))
                .map(|c| c.expect("PEM"))
                .collect();
        }
    }

    impl ChannelRoots for FakeChannels {
        fn version(&self) -> Vec<(String, ConfigSeq)> {
            vec![("ch".into(), ConfigSeq::new(self.state.lock_unpoisoned().0))]
        }
        fn tls_roots(&self) -> Vec<CertificateDer<'static>> {
            self.state.lock_unpoisoned().1.clone()
        }
    }

    fn hosts() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into()]
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        server_pki: DevPki,
        channels: Arc<FakeChannels>,
        acceptor: TlsAcceptor,
    }

    /// A server key pair from one PKI; `static_roots` become ClientRootCAs.
    fn fixture(client_auth: bool, static_roots: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let server_pki = DevPki::generate("OrdererMSP", "example.com").expect("pki");
        let tls = server_pki.issue_tls("orderer", &hosts()).expect("tls");
        server_pki
            .write_tls_dir(dir.path().join("tls"), &tls)
            .expect("write");
        let mut roots = Vec::new();
        for (i, pem) in static_roots.iter().enumerate() {
            let p = dir.path().join(format!("root{i}.pem"));
            std::fs::write(&p, pem).expect("write root");
            roots.push(p);
        }
        let settings = TlsSettings::load(
            &dir.path().join("tls/server.crt"),
            &dir.path().join("tls/server.key"),
            client_auth,
            &roots,
        )
        .expect("settings");
        let channels = Arc::new(FakeChannels::default());
        let acceptor = TlsAcceptor::new(settings, channels.clone()).expect("acceptor");
        Fixture {
            _dir: dir,
            server_pki,
            channels,
            acceptor,
        }
    }

    /// Runs one handshake between `acceptor` and a client trusting `server_ca_pem`,
    /// presenting `client` if given; the server side's outcome.
    async fn handshake(
        acceptor: &TlsAcceptor,
        server_ca_pem: &str,
        client: Option<&IssuedCert>,
    ) -> io::Result<TlsConnectInfo> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = acceptor.clone();
        let server = tokio::spawn(async move {
            let (tcp, remote) = listener.accept().await.expect("accept");
            let tcp = Connections::new(crate::connections::ConnectionLimits::default())
                .admit(tcp, remote, false)
                .expect("admitted");
            acceptor.accept(tcp).await.map(|c| c.info().clone())
        });
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(server_ca_pem.as_bytes()) {
            roots.add(c.expect("PEM")).expect("root");
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match client {
            Some(c) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).expect("cert")],
                    PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key"),
                )
                .expect("client cert"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let client_side = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await;
        let result = server.await.expect("server task");
        // With TLS 1.3 the client may finish before the server refuses its certificate.
        drop(client_side);
        result
    }

    /// Without client authentication any TLS client connects and no certificate is recorded.
    #[tokio::test]
    async fn server_only_tls_accepts_any_client() {
        let f = fixture(false, &[]);
        let info = handshake(&f.acceptor, f.server_pki.tls_ca_cert_pem(), None)
            .await
            .expect("handshake");
        assert!(!info.client_auth_required);
        assert!(info.peer_certificate.is_none());
        assert!(!TlsBinding::new(info.client_auth_required, None).required());
    }

    /// With client authentication, no certificate and a certificate of an unknown CA
    /// are refused; one from a ClientRootCAs CA is accepted and recorded.
    #[tokio::test]
    async fn client_auth_uses_static_roots() {
        let client_pki = DevPki::generate("Org1MSP", "org1.example.com").expect("pki");
        let stranger_pki = DevPki::generate("Org9MSP", "org9.example.com").expect("pki");
        let f = fixture(true, &[client_pki.tls_ca_cert_pem()]);
        let server_ca = f.server_pki.tls_ca_cert_pem();
        assert!(handshake(&f.acceptor, server_ca, None).await.is_err());
        let stranger = stranger_pki.issue_tls("client", &hosts()).expect("cert");
        assert!(
            handshake(&f.acceptor, server_ca, Some(&stranger))
                .await
                .is_err()
        );
        let client = client_pki.issue_tls("client", &hosts()).expect("cert");
        let info = handshake(&f.acceptor, server_ca, Some(&client))
            .await
            .expect("accepted");
        assert!(info.client_auth_required);
        let der = CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).expect("der");
        assert_eq!(info.peer_certificate.as_deref(), Some(der.as_ref()));
        let binding = TlsBinding::new(true, info.peer_certificate.clone());
        assert_eq!(binding.check(&sha256(der.as_ref())), Ok(()));
    }

    /// Client roots follow the channels: a CA added by a config change is trusted for
    /// the next handshake, and trusted no more once removed.
    #[tokio::test]
    async fn client_roots_follow_channel_changes() {
        let static_pki = DevPki::generate("StaticMSP", "static.example.com").expect("pki");
        let org_pki = DevPki::generate("Org2MSP", "org2.example.com").expect("pki");
        let f = fixture(true, &[static_pki.tls_ca_cert_pem()]);
        let server_ca = f.server_pki.tls_ca_cert_pem().to_owned();
        let client = org_pki.issue_tls("client", &hosts()).expect("cert");
        assert!(
            handshake(&f.acceptor, &server_ca, Some(&client))
                .await
                .is_err()
        );
        f.channels.set(&[org_pki.tls_ca_cert_pem()]);
        assert!(
            handshake(&f.acceptor, &server_ca, Some(&client))
                .await
                .is_ok()
        );
        f.channels.set(&[]);
        assert!(
            handshake(&f.acceptor, &server_ca, Some(&client))
                .await
                .is_err()
        );
    }

    /// With client authentication and no root at all, the acceptor starts but refuses every client.
    #[tokio::test]
    async fn no_client_roots_refuses_clients() {
        let f = fixture(true, &[]);
        let client = f.server_pki.issue_tls("client", &hosts()).expect("cert");
        let err = handshake(&f.acceptor, f.server_pki.tls_ca_cert_pem(), Some(&client))
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("no client root"), "{err}");
    }

    /// A key that does not belong to the certificate is refused when the acceptor is built.
    #[test]
    fn mismatched_key_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = DevPki::generate("OrdererMSP", "example.com").expect("pki");
        let a = pki.issue_tls("a", &hosts()).expect("a");
        let b = pki.issue_tls("b", &hosts()).expect("b");
        std::fs::write(dir.path().join("a.crt"), &a.cert_pem).expect("write");
        std::fs::write(dir.path().join("b.key"), &b.key_pem).expect("write");
        let settings = TlsSettings::load(
            &dir.path().join("a.crt"),
            &dir.path().join("b.key"),
            false,
            &[],
        )
        .expect("files parse");
        let err =
            TlsAcceptor::new(settings, Arc::new(FakeChannels::default())).expect_err("mismatch");
        assert!(matches!(err, TlsError::Rustls(_)), "{err}");
    }

    /// A missing or empty certificate file is an error naming the file and the key.
    #[test]
    fn unreadable_material_names_file_and_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let err = TlsSettings::load(&empty, &empty, false, &[]).expect_err("no cert");
        let text = err.to_string();
        assert!(
            text.contains("empty.pem") && text.contains("General.TLS.Certificate"),
            "{text}"
        );
        let missing = dir.path().join("missing.pem");
        let err = TlsSettings::load(&missing, &missing, false, &[]).expect_err("missing");
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }

    /// A real Fabric system channel's consortium members contribute their TLS root and
    /// intermediate certificates, not only the orderer organisations.
    #[test]
    fn bundle_roots_include_consortium_members() {
        let testdata =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fabric-v1.4.12");
        let bytes = std::fs::read(testdata.join("blocks/common-server-genesis.block"))
            .expect("genesis block");
        let block = korder_proto::common::Block::decode(bytes.as_slice()).expect("block");
        let mut bundle = crate::registrar::bundle_of_config_block(&block).expect("bundle");
        let all = bundle_tls_roots(&bundle);
        bundle.orderer_orgs.clear();
        bundle.application_orgs.clear();
        let consortium_only = bundle_tls_roots(&bundle);
        // The orderer org SampleOrg has TLS CA tlsca.example.com; the consortium member
        // Org1 has tlsca.org1.example.com.
        let names = |roots: &[CertificateDer<'_>]| -> Vec<&str> {
            roots
                .iter()
                .map(|der| {
                    ["tlsca.org1.example.com", "tlsca.example.com"]
                        .into_iter()
                        .find(|cn| der.windows(cn.len()).any(|w| w == cn.as_bytes()))
                        .unwrap_or("unknown")
                })
                .collect()
        };
        assert_eq!(names(&consortium_only), ["tlsca.org1.example.com"]);
        let mut all_names = names(&all);
        all_names.sort_unstable();
        assert_eq!(all_names, ["tlsca.example.com", "tlsca.org1.example.com"]);
    }
}
