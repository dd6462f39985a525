//! Catching a channel up from the other orderers of its ordering service: the
//! block puller.
//!
//! ```text
//!  endpoints (Bundle::orderer_endpoints, minus the node's own)
//!      │ one at a time
//!      ▼
//!  Deliver (signed SeekInfo, next..=to or next..newest) ──▶ block
//!      │                                                     │ off the runtime
//!      │ failure: connect, status ≠ SUCCESS, stall,          ▼
//!      │ refused block ─▶ drop the endpoint,      BlockVerifier::verify ─ refused ─┐
//!      │ try the next one from the same block            │ verified              │
//!      │                                                 ▼                       │
//!      └───────────────────────────────────────────  sink (the caller appends) ◀─┘ never
//! ```
//!
//! Guarantees:
//! - a block reaches the sink only once [`BlockVerifier`] accepted it as the next
//!   block (hash chain, data hash, BlockValidation signatures, config sequence);
//!   a refused block is never handed out, and the verifier's state does not move;
//! - blocks reach the sink in order, each once, with no gap;
//! - every network wait has a timeout (connect, and each message of the stream);
//! - when every endpoint failed, the error names each one and its reason.
//!
//! What it must never do: write to the ledger itself, touch the registrar, or
//! trust a block because of where it came from.

pub mod verify;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_ledger::BlockNumber;
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{Block, ChannelHeader, Envelope, Header, HeaderType, Payload, Status};
use korder_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use korder_proto::orderer::{
    DeliverResponse, SeekInfo, SeekNewest, SeekPosition, SeekSpecified, deliver_response,
    seek_info, seek_position,
};
use korder_proto::{Message, Timestamp};
use korder_types::sync::MutexExt;
use rustls::RootCertStore;
use rustls::client::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::metrics::Metrics;

pub use verify::{BlockVerifier, TrustedEnd, Verified, VerifyError, config_envelope};

/// The TLS side of the puller's connections: the roots that the other orderers'
/// server certificates must chain to (the channel's orderer organisations' TLS
/// CAs, [`crate::tls::orderer_tls_roots`]) and the node's own certificate and key
/// (`General.TLS`), presented as a client certificate.
#[derive(Debug)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// SHA-256 of the client certificate, for the seek request's `tls_cert_hash`.
    cert_hash: Bytes,
}

/// Why a [`ClientTls`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientTlsError {
    /// No trust root.
    #[error("no TLS root certificate to trust the other orderers with")]
    NoRoots,
    /// A root certificate or the client certificate and key were refused.
    #[error("client TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

impl ClientTls {
    /// TLS trusting `roots`, presenting `chain` (leaf first) with `key`.
    pub fn new(
        roots: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ClientTls, ClientTlsError> {
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root)?;
        }
        if store.is_empty() {
            return Err(ClientTlsError::NoRoots);
        }
        let cert_hash = chain
            .first()
            .map(|leaf| Bytes::copy_from_slice(&sha256(leaf.as_ref())))
            .unwrap_or_default();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(store)
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            config: Arc::new(config),
            cert_hash,
        })
    }

    /// The node's client TLS towards `bundle`'s orderers: its `General.TLS`
    /// certificate and key, and the TLS CAs of the channel's orderer organisations.
    pub fn for_channel(
        bundle: &korder_channelconfig::Bundle,
        node_tls: &crate::tls::TlsSettings,
    ) -> Result<ClientTls, ClientTlsError> {
        ClientTls::new(
            crate::tls::orderer_tls_roots(bundle),
            node_tls.certificate_chain().to_vec(),
            node_tls.private_key(),
        )
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// How far to pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullEnd {
    /// Through this block (waiting for an endpoint that lags, up to the stall
    /// timeout).
    Through(BlockNumber),
    /// Up to the height the serving endpoint has when the request reaches it.
    EndpointHeight,
}

/// The puller's settings.
#[derive(Clone)]
pub struct PullerConfig {
    /// The channel.
    pub channel: String,
    /// Addresses (`host:port`) to pull from, in order of preference
    /// ([`korder_channelconfig::Bundle::orderer_endpoints`]).
    pub endpoints: Vec<String>,
    /// The node's own address, skipped when listed.
    pub own_endpoint: Option<String>,
    /// The node's signer: Deliver requests are signed as a peer signs them.
    pub signer: Arc<SigningIdentity>,
    /// TLS, or plain TCP when `None`.
    pub tls: Option<Arc<ClientTls>>,
    /// Longest wait to connect to an endpoint.
    pub connect_timeout: Duration,
    /// Longest wait for the next message of a Deliver stream.
    pub stall_timeout: Duration,
    /// A progress line is logged every this many blocks (and at the end).
    pub progress_every_blocks: u64,
    /// Where `korder_catchup_blocks_pulled` and `_refused` are counted.
    pub metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for PullerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullerConfig")
            .field("channel", &self.channel)
            .field("endpoints", &self.endpoints)
            .field("own_endpoint", &self.own_endpoint)
            .field("tls", &self.tls.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("stall_timeout", &self.stall_timeout)
            .field("progress_every_blocks", &self.progress_every_blocks)
            .finish_non_exhaustive()
    }
}

impl PullerConfig {
    /// [`PullerConfig::new`] for `bundle`'s channel and its orderer endpoints
    /// ([`korder_channelconfig::Bundle::orderer_endpoints`]).
    pub fn for_channel(
        bundle: &korder_channelconfig::Bundle,
        signer: Arc<SigningIdentity>,
    ) -> PullerConfig {
        PullerConfig::new(
            bundle.channel_id.clone(),
            bundle.orderer_endpoints(),
            signer,
        )
    }

    /// Settings with the defaults of Fabric's `General.Cluster` (`DialTimeout` and
    /// `ReplicationPullTimeout`, 5 s each), a progress line every 100 blocks, plain
    /// TCP, no metrics.
    pub fn new(
        channel: impl Into<String>,
        endpoints: Vec<String>,
        signer: Arc<SigningIdentity>,
    ) -> PullerConfig {
        PullerConfig {
            channel: channel.into(),
            endpoints,
            own_endpoint: None,
            signer,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(5),
            progress_every_blocks: 100,
            metrics: None,
        }
    }
}

/// Why one endpoint was dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointFailure {
    /// No connection within the timeout, or the connection failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The Deliver call or its stream failed.
    #[error("deliver failed: {0}")]
    Stream(String),
    /// No message within the stall timeout.
    #[error("no message for {stall_timeout:?} while waiting for block {next}")]
    Stalled {
        next: BlockNumber,
        stall_timeout: Duration,
    },
    /// The stream ended with a status other than SUCCESS.
    #[error("answered {status:?} while block {next} was wanted")]
    Status { status: Status, next: BlockNumber },
    /// The stream ended (SUCCESS or closed) before the wanted block.
    #[error("ended its stream before block {want} (next block {next})")]
    EndedEarly {
        next: BlockNumber,
        want: BlockNumber,
    },
    /// It sent a block that failed verification.
    #[error("sent a block that was refused: {0}")]
    Refused(#[from] VerifyError),
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    /// No endpoint to pull from (after skipping the node's own).
    #[error("channel {channel}: no orderer endpoint to pull block {next} from")]
    NoEndpoints { channel: String, next: BlockNumber },
    /// Every endpoint failed; the blocks before `next` were handed out.
    #[error("channel {channel}: every orderer endpoint failed at block {next}: {}",
        failures.iter().map(|(e, f)| format!("{e}: {f}")).collect::<Vec<_>>().join("; "))]
    AllEndpointsFailed {
        channel: String,
        next: BlockNumber,
        failures: Vec<(String, EndpointFailure)>,
    },
    /// The sink refused a verified block; the pull stopped there.
    #[error("channel {channel}: block {number} could not be stored: {reason}")]
    Sink {
        channel: String,
        number: BlockNumber,
        reason: String,
    },
    /// The Deliver request could not be signed.
    #[error("channel {channel}: cannot sign the Deliver request: {reason}")]
    Sign { channel: String, reason: String },
}

/// What a successful pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullReport {
    /// Blocks verified and handed to the sink.
    pub blocks: u64,
    /// The next block the verifier expects now.
    pub next: BlockNumber,
    /// Endpoints dropped on the way, with their reasons (as text).
    pub dropped: Vec<(String, String)>,
}

/// Pulls a channel's blocks from other orderers, verified before they are handed out.
#[derive(Debug, Clone)]
pub struct BlockPuller {
    config: PullerConfig,
}

/// How one endpoint's attempt ended.
enum Attempt {
    /// The range is complete.
    Done,
    /// The endpoint is dropped; the pull goes on with another.
    Failed(EndpointFailure),
    /// The pull stops.
    Fatal(PullError),
}

/// What the blocking step did with one block.
enum Step {
    Stored(Box<BlockVerifier>),
    Refused(VerifyError),
    SinkFailed(String),
}

impl BlockPuller {
    /// A puller with these settings.
    pub fn new(config: PullerConfig) -> BlockPuller {
        BlockPuller { config }
    }

    /// The endpoints it will try, in order (the node's own left out).
    pub fn endpoints(&self) -> Vec<&str> {
        self.config
            .endpoints
            .iter()
            .filter(|e| Some(*e) != self.config.own_endpoint.as_ref())
            .map(String::as_str)
            .collect()
    }

    /// Pulls the blocks after the verifier's last trusted one up to `end`, verifying
    /// each with `verifier` and then handing it to `sink`, in order. On a failure the
    /// endpoint is dropped and the next one continues from the same block; the
    /// verifier always holds the last block handed out.
    ///
    /// The sink runs on the blocking pool, one block at a time. Dropping the
    /// returned future may leave one verified block handed to the sink but not yet
    /// recorded in `verifier`: after a cancelled pull, build the verifier again from
    /// the ledger's last block ([`BlockVerifier::after`]).
    pub async fn pull<S, E>(
        &self,
        verifier: &mut BlockVerifier,
        end: PullEnd,
        sink: S,
    ) -> Result<PullReport, PullError>
    where
        S: FnMut(&Block) -> Result<(), E> + Send + 'static,
        E: std::fmt::Display,
    {
        let channel = &self.config.channel;
        let sink = Arc::new(Mutex::new(sink));
        let mut report = PullReport {
            blocks: 0,
            next: verifier.next_number(),
            dropped: Vec::new(),
        };
        if let PullEnd::Through(to) = end
            && verifier.next_number() > to
        {
            return Ok(report);
        }
        let endpoints = self.endpoints();
        if endpoints.is_empty() {
            return Err(PullError::NoEndpoints {
                channel: channel.clone(),
                next: verifier.next_number(),
            });
        }
        let mut failures = Vec::new();
        for endpoint in endpoints {
            if let PullEnd::Through(to) = end
                && verifier.next_number() > to
            {
                break;
            }
            match self
                .pull_from(endpoint, verifier, end, &sink, &mut report)
                .await
            {
                Attempt::Done => {
                    report.next = verifier.next_number();
                    tracing::info!(channel = %channel, endpoint, blocks = report.blocks, next = %report.next, "pulled blocks from another orderer");
                    report.dropped = failures
                        .into_iter()
                        .map(|(e, f): (String, EndpointFailure)| (e, f.to_string()))
                        .collect();
                    return Ok(report);
                }
                Attempt::Failed(failure) => {
                    tracing::warn!(channel = %channel, endpoint, next = %verifier.next_number(), reason = %failure, "dropping an orderer endpoint for this pull");
                    failures.push((endpoint.to_string(), failure));
                }
                Attempt::Fatal(e) => return Err(e),
            }
        }
        if let PullEnd::Through(to) = end
            && verifier.next_number() > to
        {
            report.next = verifier.next_number();
            report.dropped = failures
                .into_iter()
                .map(|(e, f)| (e, f.to_string()))
                .collect();
            return Ok(report);
        }
        Err(PullError::AllEndpointsFailed {
            channel: channel.clone(),
            next: verifier.next_number(),
            failures,
        })
    }

    /// One endpoint's attempt: connect, ask, verify and hand out what arrives.
    async fn pull_from<S, E>(
        &self,
        endpoint: &str,
        verifier: &mut BlockVerifier,
        end: PullEnd,
        sink: &Arc<Mutex<S>>,
        report: &mut PullReport,
    ) -> Attempt
    where
        S: FnMut(&Block) -> Result<(), E> + Send + 'static,
        E: std::fmt::Display,
    {
        let channel = match self.connect(endpoint).await {
            Ok(c) => c,
            Err(e) => return Attempt::Failed(e),
        };
        let request = match self.seek_request(verifier.next_number(), end) {
            Ok(r) => r,
            Err(e) => return Attempt::Fatal(e),
        };
        let mut client = AtomicBroadcastClient::new(channel)
            .max_decoding_message_size(crate::service::MAX_MESSAGE_BYTES);
        let stall_timeout = self.config.stall_timeout;
        let call = client.deliver(tokio_stream::iter([request]));
        let mut stream = match tokio::time::timeout(stall_timeout, call).await {
            Err(_) => {
                return Attempt::Failed(EndpointFailure::Stalled {
                    next: verifier.next_number(),
                    stall_timeout,
                });
            }
            Ok(Err(status)) => return Attempt::Failed(EndpointFailure::Stream(status.to_string())),
            Ok(Ok(response)) => response.into_inner(),
        };
        loop {
            let next = verifier.next_number();
            let message = match tokio::time::timeout(stall_timeout, stream.message()).await {
                Err(_) => {
                    return Attempt::Failed(EndpointFailure::Stalled {
                        next,
                        stall_timeout,
                    });
                }
                Ok(Err(status)) => {
                    return Attempt::Failed(EndpointFailure::Stream(status.to_string()));
                }
                Ok(Ok(m)) => m,
            };
            let block = match message {
                Some(DeliverResponse {
                    r#type: Some(deliver_response::Type::Block(block)),
                }) => block,
                Some(DeliverResponse {
                    r#type: Some(deliver_response::Type::Status(code)),
                }) => {
                    let status = Status::try_from(code).unwrap_or(Status::Unknown);
                    let want_end = verifier.pending_end().map(|e| e.number);
                    return match (status, end) {
                        (Status::Success, PullEnd::EndpointHeight) => match want_end {
                            Some(want) if next <= want => {
                                Attempt::Failed(EndpointFailure::EndedEarly { next, want })
                            }
                            _ => Attempt::Done,
                        },
                        (Status::Success, PullEnd::Through(to)) if next > to => Attempt::Done,
                        (Status::Success, PullEnd::Through(want)) => {
                            Attempt::Failed(EndpointFailure::EndedEarly { next, want })
                        }
                        (status, _) => Attempt::Failed(EndpointFailure::Status { status, next }),
                    };
                }
                Some(DeliverResponse { r#type: None }) | None => {
                    let want = match end {
                        PullEnd::Through(to) => to,
                        PullEnd::EndpointHeight => next,
                    };
                    return Attempt::Failed(EndpointFailure::EndedEarly { next, want });
                }
            };
            match self.verify_and_store(verifier, block, sink).await {
                Step::Stored(updated) => {
                    *verifier = *updated;
                    report.blocks += 1;
                    self.count(|m| &m.catchup_blocks_pulled);
                    let every = self.config.progress_every_blocks.max(1);
                    if report.blocks.is_multiple_of(every) {
                        tracing::info!(channel = %self.config.channel, endpoint, block = %next, blocks = report.blocks, "pulling blocks from another orderer");
                    }
                }
                Step::Refused(e) => {
                    self.count(|m| &m.catchup_blocks_refused);
                    return Attempt::Failed(EndpointFailure::Refused(e));
                }
                Step::SinkFailed(reason) => {
                    return Attempt::Fatal(PullError::Sink {
                        channel: self.config.channel.clone(),
                        number: next,
                        reason,
                    });
                }
            }
        }
    }

    /// Verifies `block` on a copy of the verifier and hands it to the sink, off the
    /// runtime (signature checks and the sink's writes are blocking work).
    async fn verify_and_store<S, E>(
        &self,
        verifier: &BlockVerifier,
        block: Block,
        sink: &Arc<Mutex<S>>,
    ) -> Step
    where
        S: FnMut(&Block) -> Result<(), E> + Send + 'static,
        E: std::fmt::Display,
    {
        let mut candidate = Box::new(verifier.clone());
        let sink = sink.clone();
        let step = tokio::task::spawn_blocking(move || {
            if let Err(e) = candidate.verify(&block) {
                return Step::Refused(e);
            }
            let mut sink = sink.lock_unpoisoned();
            match (*sink)(&block) {
                Ok(()) => Step::Stored(candidate),
                Err(e) => Step::SinkFailed(e.to_string()),
            }
        })
        .await;
        step.unwrap_or_else(|e| Step::SinkFailed(format!("the verifying task failed: {e}")))
    }

    fn count(&self, metric: impl Fn(&Metrics) -> &crate::metrics::Metric) {
        if let Some(m) = &self.config.metrics {
            metric(m).with_label_values(&[&self.config.channel]).inc();
        }
    }

    /// A gRPC channel to `endpoint`, over TLS when configured.
    async fn connect(&self, endpoint: &str) -> Result<Channel, EndpointFailure> {
        let failed = |e: &dyn std::fmt::Display| EndpointFailure::Connect(e.to_string());
        let uri = Endpoint::from_shared(format!("http://{endpoint}"))
            .map_err(|e| failed(&e))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true);
        let connecting = async {
            match &self.config.tls {
                None => uri.connect().await.map_err(|e| failed(&e)),
                Some(tls) => {
                    let name = server_name(endpoint)?;
                    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                    let address = endpoint.to_string();
                    uri.connect_with_connector(tower::service_fn(move |_: Uri| {
                        let connector = connector.clone();
                        let name = name.clone();
                        let address = address.clone();
                        async move {
                            let tcp = tokio::net::TcpStream::connect(address).await?;
                            tcp.set_nodelay(true)?;
                            let tls = connector.connect(name, tcp).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                        }
                    }))
                    .await
                    .map_err(|e| failed(&e))
                }
            }
        };
        match tokio::time::timeout(self.config.connect_timeout, connecting).await {
            Ok(r) => r,
            Err(_) => Err(EndpointFailure::Connect(format!(
                "no connection within {:?}",
                self.config.connect_timeout
            ))),
        }
    }

    /// The signed Deliver request for blocks `next..` up to `end`.
    fn seek_request(&self, next: BlockNumber, end: PullEnd) -> Result<Envelope, PullError> {
        let at = |number: u64| SeekPosition {
            r#type: Some(seek_position::Type::Specified(SeekSpecified { number })),
        };
        let (stop, behavior) = match end {
            PullEnd::Through(to) => (at(to.get()), seek_info::SeekBehavior::BlockUntilReady),
            PullEnd::EndpointHeight => (
                SeekPosition {
                    r#type: Some(seek_position::Type::Newest(SeekNewest {})),
                },
                seek_info::SeekBehavior::FailIfNotReady,
            ),
        };
        let info = SeekInfo {
            start: Some(at(next.get())),
            stop: Some(stop),
            behavior: behavior as i32,
            ..Default::default()
        };
        let sign_error = |e: &dyn std::fmt::Display| PullError::Sign {
            channel: self.config.channel.clone(),
            reason: e.to_string(),
        };
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let header = ChannelHeader {
            r#type: HeaderType::DeliverSeekInfo as i32,
            channel_id: self.config.channel.clone(),
            timestamp: Some(Timestamp {
                seconds: since_epoch.as_secs() as i64,
                nanos: since_epoch.subsec_nanos() as i32,
            }),
            tls_cert_hash: self
                .config
                .tls
                .as_ref()
                .map(|t| t.cert_hash.clone())
                .unwrap_or_default(),
            ..Default::default()
        };
        let signer = &self.config.signer;
        let payload = Payload {
            header: Some(Header {
                channel_header: header.encode_to_vec().into(),
                signature_header: signer.new_signature_header().map_err(|e| sign_error(&e))?,
            }),
            data: info.encode_to_vec().into(),
        };
        signer
            .sign_envelope(payload.encode_to_vec().into())
            .map_err(|e| sign_error(&e))
    }
}

/// The TLS server name of `host:port` (a DNS name or an IP address).
fn server_name(endpoint: &str) -> Result<ServerName<'static>, EndpointFailure> {
    let host = endpoint
        .rsplit_once(':')
        .map_or(endpoint, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| EndpointFailure::Connect(format!("bad TLS server name {host:?}: {e}")))
}
