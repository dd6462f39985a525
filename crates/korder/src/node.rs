//! Assembles and runs one ordering node from its configuration: signing identity,
//! ledger, logs (embedded or Kafka per channel), registrar, gRPC server; shuts down
//! on SIGINT/SIGTERM within `Korder.ShutdownGracePeriod`, with every chain's block in
//! flight written and every Deliver stream ended.
//!
//! Start-up checks everything it can before it changes anything on disk: the
//! signing identity, TLS files and genesis block are read, then the data
//! directories are locked, then the listeners are bound, and only then are the
//! ledger opened and the chains started.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use korder_channelconfig::Bundle;
use korder_config::{BlockMetadata, Bootstrap, Config, LogBackend, ResolvedLog};
use korder_kafka::{KafkaConfig, KafkaLog};
use korder_ledger::{Ledgers, StoreOptions};
use korder_log::{EmbeddedLog, EmbeddedLogOptions};
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::Block;
use korder_server::blockwriter::MetadataLayout;
use korder_server::chain::{
    BoxFuture, ChainHandle, ChainParams, LogTiming, RetryPolicy, StartError, start_chain,
    start_chain_checked,
};
use korder_server::msgprocessor::FilterOptions;
use korder_server::throttle::Throttle;
use korder_server::{
    AtomicBroadcastService, CatchUpSettings, DeliverConfig, LogFactory, Metrics, NodeOptions,
    Registrar,
};
use tokio::runtime::Handle;

use crate::lock::DirLock;

/// Most threads the runtime runs blocking work on (validation batches, log reads,
/// ledger and log opens): enough to keep the cores and the disk busy, and a bound
/// on the node's threads whatever its channel count (idle ones exit after 10 s).
const MAX_BLOCKING_THREADS: usize = 32;

/// Raises the soft limit on open files to the hard limit, as Go programs (Fabric's
/// orderer among them) do at start: a node keeps a few files open per channel, and
/// many systems start services with a soft limit of 1,024.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        let raised = rustix::process::Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(from = current, to = maximum, "open-files limit raised"),
            Err(e) => {
                tracing::warn!(limit = current, error = %e, "cannot raise the open-files limit")
            }
        }
    }
}

/// Runs the node until SIGINT/SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("korder")
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(serve(config));
    // Tasks still running (streams past the grace period) are dropped, not awaited.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_LIMIT);
    // A Kafka request cut short above (a start-up probe on a blocking thread) still
    // holds its client until the request's own timeout; the process may exit only
    // once every client is destroyed.
    let live = korder_kafka::live_clients();
    if live > 0 {
        tracing::info!(clients = live, "waiting for the Kafka clients to close");
        if !korder_kafka::wait_for_clients_closed(KAFKA_CLOSE_LIMIT) {
            tracing::warn!(
                clients = korder_kafka::live_clients(),
                limit = ?KAFKA_CLOSE_LIMIT,
                "Kafka clients still open at exit"
            );
        }
    }
    result
}

/// How long the runtime's remaining tasks get once `serve` has returned.
const RUNTIME_SHUTDOWN_LIMIT: Duration = Duration::from_millis(250);

/// Longest wait at exit for Kafka clients still finishing a request.
const KAFKA_CLOSE_LIMIT: Duration = Duration::from_secs(30);

/// Chooses each channel's log: the embedded log, or a Kafka topic, as
/// `Korder.LogBackend` and the channel's ConsensusType say.
struct NodeLogs {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl NodeLogs {
    fn kafka_config(&self, brokers: &[String]) -> anyhow::Result<KafkaConfig> {
        let k = &self.config.kafka;
        let mut c = KafkaConfig::new(brokers.iter().cloned());
        c.retry = k.retry.clone();
        c.topic_replication_factor = i16::try_from(k.topic_replication_factor)
            .context("Kafka.Topic.ReplicationFactor is too large")?;
        c.verbose = k.verbose;
        c.tls.enabled = k.tls.enabled;
        if k.tls.enabled {
            let read = |src: &Option<korder_config::PemSource>,
                        key: &str|
             -> anyhow::Result<Option<String>> {
                match src {
                    Some(s) => Ok(Some(String::from_utf8_lossy(&s.read(key)?).into_owned())),
                    None => Ok(None),
                }
            };
            c.tls.private_key_pem = read(&k.tls.private_key, "Kafka.TLS.PrivateKey")?;
            c.tls.certificate_pem = read(&k.tls.certificate, "Kafka.TLS.Certificate")?;
            c.tls.root_cas_pem = read(&k.tls.root_cas, "Kafka.TLS.RootCAs")?
                .into_iter()
                .collect();
        }
        c.sasl_plain.enabled = k.sasl_plain.enabled;
        c.sasl_plain.user = k.sasl_plain.user.clone();
        c.sasl_plain.password = k.sasl_plain.password.clone();
        if self.config.metrics.provider != korder_config::MetricsProvider::Disabled {
            c.statistics = Some(kafka_statistics(self.metrics.clone()));
        }
        Ok(c)
    }
}

/// How often the Kafka clients report the statistics behind `consensus_kafka_*`.
const KAFKA_STATISTICS_INTERVAL: Duration = Duration::from_secs(5);

/// The Kafka clients' statistics, recorded as Fabric's `consensus_kafka_*` gauges.
fn kafka_statistics(metrics: Arc<Metrics>) -> korder_kafka::StatsConfig {
    let hook = move |f: &korder_kafka::KafkaFigures| {
        let m = &metrics;
        for (id, b) in &f.brokers {
            let id = [id.to_string()];
            let id = [id[0].as_str()];
            m.kafka_incoming_byte_rate
                .with_label_values(&id)
                .set_f64(b.incoming_byte_rate);
            m.kafka_outgoing_byte_rate
                .with_label_values(&id)
                .set_f64(b.outgoing_byte_rate);
            m.kafka_request_rate
                .with_label_values(&id)
                .set_f64(b.request_rate);
            m.kafka_response_rate
                .with_label_values(&id)
                .set_f64(b.response_rate);
            m.kafka_request_size
                .with_label_values(&id)
                .set_f64(b.request_size);
            m.kafka_response_size
                .with_label_values(&id)
                .set_f64(b.response_size);
            m.kafka_request_latency
                .with_label_values(&id)
                .set_f64(b.request_latency_ms);
        }
        for (topic, t) in &f.topics {
            let topic = [topic.as_str()];
            m.kafka_record_send_rate
                .with_label_values(&topic)
                .set_f64(t.record_send_rate);
            m.kafka_batch_size
                .with_label_values(&topic)
                .set_f64(t.batch_size);
            m.kafka_records_per_request
                .with_label_values(&topic)
                .set_f64(t.records_per_request);
            m.kafka_compression_ratio
                .with_label_values(&topic)
                .set_f64(t.compression_ratio);
        }
    };
    korder_kafka::StatsConfig {
        interval: KAFKA_STATISTICS_INTERVAL,
        hook: Arc::new(hook),
    }
}

impl LogFactory for NodeLogs {
    fn shared_log(&self, bundle: &Bundle) -> Result<bool, String> {
        let backend = self
            .config
            .korder
            .log_backend
            .resolve_channel(&bundle.channel_id, &bundle.orderer.consensus_type)
            .map_err(|e| e.to_string())?;
        Ok(backend == ResolvedLog::Kafka)
    }

    fn remove_log(&self, bundle: &Bundle) -> Result<(), String> {
        let backend = self
            .config
            .korder
            .log_backend
            .resolve_channel(&bundle.channel_id, &bundle.orderer.consensus_type)
            .map_err(|e| e.to_string())?;
        match backend {
            // The topic is shared with the other nodes of the channel: it stays.
            ResolvedLog::Kafka => Ok(()),
            ResolvedLog::Embedded => {
                let dir = self.config.embedded_log_dir().join(&bundle.channel_id);
                match std::fs::remove_dir_all(&dir) {
                    Ok(()) => {
                        tracing::info!(channel = %bundle.channel_id, dir = %dir.display(), "embedded log removed");
                        Ok(())
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(format!("{}: {e}", dir.display())),
                }
            }
        }
    }

    fn start_chain(&self, bundle: &Bundle, params: ChainParams) -> Result<ChainHandle, StartError> {
        let channel = bundle.channel_id.clone();
        let backend = self
            .config
            .korder
            .log_backend
            .resolve_channel(&channel, &bundle.orderer.consensus_type)
            .map_err(|e| StartError::NotServed {
                channel: channel.clone(),
                reason: e.to_string(),
            })?;
        match backend {
            ResolvedLog::Embedded => {
                let dir = self.config.embedded_log_dir().join(&channel);
                let options = EmbeddedLogOptions {
                    segment_size_bytes: self.config.korder.embedded_log_segment_bytes,
                    ..EmbeddedLogOptions::default()
                };
                // A log that cannot be opened (damaged data, say) stops this channel,
                // with the reason in /healthz, and no other: one attempt.
                let first = EmbeddedLog::open(&dir, options.clone())
                    .map(Arc::new)
                    .map_err(|e| format!("{}: {e}", dir.display()));
                let bounded = {
                    let runtime = params.runtime.clone();
                    let store = params.store.clone();
                    let channel = channel.clone();
                    let metrics = self.metrics.clone();
                    move |log: &Arc<EmbeddedLog>| {
                        crate::cmd::log::keep_bounded(
                            &runtime,
                            log.clone(),
                            store.clone(),
                            channel.clone(),
                            metrics.clone(),
                        );
                    }
                };
                start_chain(
                    embedded_opener(first, dir, options, bounded),
                    params,
                    LogTiming::LOCAL,
                )
            }
            ResolvedLog::Kafka => {
                let config = self
                    .kafka_config(&bundle.orderer.kafka_brokers)
                    .map_err(|e| StartError::Log {
                        channel: channel.clone(),
                        reason: crate::error_text(&e),
                    })?;
                // A ledger with blocks cut from the topic needs that topic, not a
                // new one.
                let mut config = config;
                config.create_missing_topic = params.store.height() <= 1;
                let timing = LogTiming {
                    retry: RetryPolicy {
                        short_interval: config.retry.short_interval,
                        short_total: config.retry.short_total,
                        long_interval: config.retry.long_interval,
                        long_total: config.retry.long_total,
                    },
                    read_timeout: config.retry.read_timeout,
                    append_timeout: config.retry.write_timeout,
                };
                let topic = channel.clone();
                let opener = Box::new(
                    move || -> BoxFuture<'static, Result<Arc<KafkaLog>, String>> {
                        let config = config.clone();
                        let topic = topic.clone();
                        Box::pin(async move {
                            KafkaLog::open(config, &topic)
                                .await
                                .map(Arc::new)
                                .map_err(|e| e.to_string())
                        })
                    },
                );
                start_chain_checked(opener, params, timing)
            }
        }
    }
}

/// Opens a channel's embedded log for its chain: first the log opened at start-up;
/// on later calls (the chain rebuilding itself after an I/O error) the previous log
/// is closed and the directory opened again, so that a log stopped by a failed
/// write recovers once the disk takes writes.
fn embedded_opener(
    first: Result<Arc<EmbeddedLog>, String>,
    dir: std::path::PathBuf,
    options: EmbeddedLogOptions,
    bounded: impl Fn(&Arc<EmbeddedLog>) + Send + Sync + 'static,
) -> korder_server::chain::LogOpener<EmbeddedLog> {
    if let Ok(log) = &first {
        bounded(log);
    }
    // The first open's outcome, then the log in use (closed before reopening).
    let state = Arc::new(tokio::sync::Mutex::new((
        Some(first),
        None::<Arc<EmbeddedLog>>,
    )));
    let bounded = Arc::new(bounded);
    Box::new(
        move || -> BoxFuture<'static, Result<Arc<EmbeddedLog>, String>> {
            let state = state.clone();
            let dir = dir.clone();
            let options = options.clone();
            let bounded = bounded.clone();
            Box::pin(async move {
                let mut slot = state.lock().await;
                if let Some(first) = slot.0.take() {
                    if let Ok(log) = &first {
                        slot.1 = Some(log.clone());
                    }
                    return first;
                }
                if let Some(previous) = slot.1.take() {
                    previous.close().await;
                }
                let reopened = tokio::task::spawn_blocking(move || {
                    EmbeddedLog::open(&dir, options).map_err(|e| format!("{}: {e}", dir.display()))
                })
                .await
                .map_err(|e| format!("opening the log: {e}"))??;
                let log = Arc::new(reopened);
                bounded(&log);
                slot.1 = Some(log.clone());
                Ok(log)
            })
        },
    )
}

/// Whether the ledger at `location` holds any channel, read without creating anything.
fn ledger_has_channels(location: &Path) -> anyhow::Result<bool> {
    let chains = location.join("chains");
    match std::fs::read_dir(&chains) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", chains.display())),
    }
}

/// The genesis block to bootstrap from when the ledger is empty.
fn genesis_block(config: &Config) -> anyhow::Result<Option<Block>> {
    if ledger_has_channels(&config.file_ledger.location)? {
        return Ok(None);
    }
    match config.general.bootstrap() {
        Bootstrap::File(path) => {
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "the ledger is empty and the genesis block {} cannot be read (General.GenesisFile / General.BootstrapFile)",
                    path.display()
                )
            })?;
            let block = Block::decode(bytes.as_slice())
                .with_context(|| format!("{} is not a block", path.display()))?;
            Ok(Some(block))
        }
        Bootstrap::Provisional { profile, .. } => bail!(
            "General.GenesisMethod provisional (profile {profile}) is not supported: make a genesis block (korder init, or configtxgen) and set General.GenesisFile"
        ),
        // No channel at all: channels are joined through the channel participation
        // API (Admin endpoint).
        Bootstrap::None => Ok(None),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let began = Instant::now();
    let config = Arc::new(config);
    // Watched from the start: a signal during start-up is handled once serving
    // begins, never by the default action.
    let signals = Signals::new()?;
    // Everything that can be refused is checked before anything is created.
    let signer =
        SigningIdentity::load_msp_dir(&config.general.local_msp_dir, &config.general.local_msp_id)
            .with_context(|| {
                format!(
                    "loading the signing identity from {} (General.LocalMSPDir, MSP id {})",
                    config.general.local_msp_dir.display(),
                    config.general.local_msp_id
                )
            })?;
    signer
        .check_not_expired(SystemTime::now())
        .context("the node's signing certificate")?;
    let tls_settings = tls_settings(&config)?;
    let admin_tls = admin_tls(&config)?;
    let genesis = genesis_block(&config)?;
    let _locks = lock_data_dirs(&config)?;
    // Bound before any chain starts, so that a port in use stops the node here;
    // listening (clients can connect) only once the channels are loaded.
    let addr = format!(
        "{}:{}",
        config.general.listen_address, config.general.listen_port
    );
    let context = || format!("listening on {addr} (General.ListenAddress/ListenPort)");
    let socket = bind_socket(&addr).await.with_context(context)?;
    let (ops_listener, ops_addr) =
        korder_server::operations::bind(&config.operations.listen_address)
            .await
            .with_context(|| {
                format!(
                    "listening on {} (Operations.ListenAddress)",
                    config.operations.listen_address
                )
            })?;
    let admin = match &config.admin {
        Some(a) => {
            let (listener, address) = korder_server::operations::bind(&a.listen_address)
                .await
                .with_context(|| {
                    format!("listening on {} (Admin.ListenAddress)", a.listen_address)
                })?;
            Some(AdminListener {
                listener,
                address,
                tls: admin_tls,
            })
        }
        None => None,
    };
    let ledgers = Ledgers::open_dir(&config.file_ledger.location, StoreOptions::default())
        .with_context(|| {
            format!(
                "opening the ledger at {}",
                config.file_ledger.location.display()
            )
        })?;
    // The lock is held: the ledger cannot have gained channels since the check.
    let genesis = if ledgers.channels()?.is_empty() {
        genesis
    } else {
        None
    };
    let metrics = Arc::new(
        Metrics::with_provider(&metrics_provider(&config)).context("registering metrics")?,
    );
    crate::logging::count_entries_in(metrics.clone());
    let statsd = start_statsd(&config, &metrics).await?;
    let logs = Arc::new(NodeLogs {
        config: config.clone(),
        metrics: metrics.clone(),
    });
    let handle = Handle::current();
    let reg_metrics = metrics.clone();
    let options = NodeOptions {
        filters: FilterOptions {
            no_expiration_checks: config.general.authentication.no_expiration_checks,
        },
        block_metadata: match config.korder.block_metadata {
            BlockMetadata::Fabric2 => MetadataLayout::Fabric2,
            BlockMetadata::Fabric14 => MetadataLayout::Fabric14,
        },
        early_cut: Some(config.korder.early_cut).filter(|d| !d.is_zero()),
        catch_up: CatchUpSettings {
            own_endpoint: Some(format!(
                "{}:{}",
                config.general.listen_address, config.general.listen_port
            )),
            tls: self::tls_settings(&config)?.map(Arc::new),
        },
    };
    let registrar = tokio::task::spawn_blocking(move || {
        Registrar::start(
            ledgers,
            genesis,
            logs,
            Arc::new(signer),
            handle,
            reg_metrics,
            options,
        )
    })
    .await
    .context("registrar start-up")??;
    let listener = match socket.listen(LISTEN_BACKLOG).with_context(context) {
        Ok(l) => l,
        Err(e) => {
            let r = registrar.clone();
            let _ = tokio::task::spawn_blocking(move || r.halt_all()).await;
            return Err(e);
        }
    };
    let served = run_server(
        signals,
        &config,
        &registrar,
        metrics,
        tls_settings,
        listener,
        (ops_listener, ops_addr),
        admin,
        began,
    )
    .await;
    if let Some((stop, sender)) = statsd {
        // One last flush with what the shutdown recorded.
        let _ = stop.send(true);
        let _ = tokio::time::timeout(STATSD_FINAL_FLUSH_LIMIT, sender).await;
    }
    if served.is_err() {
        // The chains must not outlive the runtime they read their logs through.
        let r = registrar.clone();
        let _ = tokio::task::spawn_blocking(move || r.halt_all()).await;
    }
    served
}

/// How long the last StatsD flush may take at shutdown.
const STATSD_FINAL_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// `Metrics.Provider` as the metrics registry takes it.
fn metrics_provider(config: &Config) -> korder_server::metrics::Provider {
    use korder_config::MetricsProvider as P;
    use korder_server::metrics::Provider;
    match config.metrics.provider {
        P::Disabled => Provider::Disabled,
        P::Prometheus => Provider::Prometheus,
        P::Statsd => Provider::Statsd {
            prefix: config.metrics.statsd.prefix.clone(),
        },
    }
}

/// With the StatsD provider: checks the server (the address resolves; over TCP, it
/// accepts a connection), then flushes every `WriteInterval` until told to stop.
async fn start_statsd(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<
    Option<(
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    )>,
> {
    use korder_server::metrics::statsd::Network;
    let Some(buffer) = metrics.statsd() else {
        return Ok(None);
    };
    let st = &config.metrics.statsd;
    let network = if st.stream() == Some(true) {
        Network::Tcp
    } else {
        Network::Udp
    };
    let sender =
        korder_server::metrics::StatsdSender::connect(network, &st.address, st.write_interval)
            .await
            .with_context(|| {
                format!(
                    "reaching the StatsD server {} over {} (Metrics.Statsd.Address, Network)",
                    st.address, st.network
                )
            })?;
    tracing::info!(address = %sender.address(), network = %st.network, write_interval = ?st.write_interval, prefix = %st.prefix, "sending metrics to StatsD");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(sender.run(buffer, async move {
        let _ = stopped.wait_for(|s| *s).await;
    }));
    Ok(Some((stop, task)))
}

/// Pending connections the gRPC listener queues.
const LISTEN_BACKLOG: u32 = 1024;

/// A socket bound to `addr` (the first of its addresses that binds), not yet listening.
async fn bind_socket(addr: &str) -> std::io::Result<tokio::net::TcpSocket> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a) {
            Ok(()) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{addr} resolves to no address"),
        )
    }))
}

/// Locks the ledger directory and, unless every channel is on Kafka, the embedded
/// log directory: a second node on the same data stops here.
fn lock_data_dirs(config: &Config) -> anyhow::Result<Vec<DirLock>> {
    let mut locks = vec![DirLock::acquire(&config.file_ledger.location)?];
    if config.korder.log_backend != LogBackend::Kafka {
        locks.push(DirLock::acquire(&config.embedded_log_dir())?);
    }
    for l in &locks {
        tracing::debug!(lock = %l.path().display(), "data directory locked");
    }
    Ok(locks)
}

/// Serves gRPC until SIGINT/SIGTERM, then shuts down within the grace period.
#[allow(clippy::too_many_arguments)]
async fn run_server(
    signals: Signals,
    config: &Config,
    registrar: &Registrar,
    metrics: Arc<Metrics>,
    tls_settings: Option<korder_server::tls::TlsSettings>,
    listener: tokio::net::TcpListener,
    (ops_listener, ops_addr): (tokio::net::TcpListener, std::net::SocketAddr),
    admin: Option<AdminListener>,
    began: Instant,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let tls = match tls_settings {
        Some(settings) => Some(korder_server::tls::TlsAcceptor::new(
            settings,
            Arc::new(registrar.clone()),
        )?),
        None => None,
    };
    let deliver = DeliverConfig {
        time_window: config.general.authentication.time_window,
        no_expiration_checks: config.general.authentication.no_expiration_checks,
    };
    // General.MaxRecvMsgSize and MaxSendMsgSize.
    // General.Throttling (Fabric 3.x).
    let throttle = config
        .general
        .throttling
        .as_ref()
        .and_then(|t| Throttle::new(t.rate, t.inactivity_timeout));
    if let Some(t) = &config.general.throttling
        && t.rate > 0
    {
        tracing::info!(
            rate = t.rate,
            inactivity_timeout_ms = t.inactivity_timeout.as_millis() as u64,
            "Broadcast throttling on for clients with a TLS certificate"
        );
    }
    let service = AtomicBroadcastService::new(registrar.clone(), deliver)
        .with_message_limits(
            config.general.max_recv_msg_size as usize,
            config.general.max_send_msg_size as usize,
        )
        .with_throttle(throttle);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let ops_tls = operations_tls(config)?
        .map(|s| s.operations_server_config())
        .transpose()?
        .map(Arc::new);
    let ops = match ops_tls {
        Some(tls) => tokio::spawn(korder_server::operations_tls::serve(
            ops_listener,
            tls,
            registrar.clone(),
            metrics.clone(),
            stopped(),
        )),
        None => tokio::spawn(korder_server::operations::serve(
            ops_listener,
            registrar.clone(),
            metrics.clone(),
            stopped(),
        )),
    };
    let admin = admin.map(|a| serve_admin(config, registrar, a, stopped()));
    tracing::info!(
        address = %ops_addr,
        tls = config.operations.tls.enabled,
        client_auth_required = config.operations.tls.enabled && config.operations.tls.client_auth_required,
        "operations endpoint: /healthz /metrics /version"
    );
    tracing::info!(
        address = %local,
        tls = tls.is_some(),
        client_auth_required = tls.as_ref().is_some_and(|t| t.client_auth_required()),
        channels = ?registrar.channel_ids(),
        startup_ms = began.elapsed().as_millis() as u64,
        connection_timeout_ms = config.general.connection_timeout.as_millis() as u64,
        max_connections = config.korder.max_connections,
        max_connections_per_address = config.korder.max_connections_per_address,
        max_concurrent_streams = config.korder.max_concurrent_streams,
        max_recv_msg_size = config.general.max_recv_msg_size,
        max_send_msg_size = config.general.max_send_msg_size,
        "korder is listening"
    );
    // General.Keepalive: the server pings idle connections every ServerInterval and
    // drops those that do not answer within ServerTimeout. (ServerMinInterval, the
    // limit on client pings, has no counterpart in the HTTP/2 server.)
    let keepalive = &config.general.keepalive;
    let mut server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(keepalive.server_interval))
        .http2_keepalive_timeout(Some(keepalive.server_timeout))
        .max_concurrent_streams(Some(config.korder.max_concurrent_streams));
    // General.ConnectionTimeout, Korder.MaxConnections and
    // Korder.MaxConnectionsPerAddress, on TLS and plain TCP alike.
    let connections = korder_server::connections::Connections::new(
        korder_server::connections::ConnectionLimits {
            handshake_timeout: config.general.connection_timeout,
            max_connections: config.korder.max_connections as usize,
            max_per_address: config.korder.max_connections_per_address as usize,
        },
    )
    .with_metrics(metrics.clone());
    let router = server.add_service(service.into_server());
    let shutdown = stopped();
    let mut server = tokio::spawn(async move {
        match tls {
            Some(acceptor) => {
                let incoming = korder_server::tls::incoming(listener, acceptor, connections);
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
            None => {
                let incoming = korder_server::connections::incoming_plain(listener, connections);
                router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
        }
    });
    let ended = tokio::select! {
        () = signals.recv() => None,
        r = &mut server => Some(r),
    };
    // From here on the grace period bounds everything: the listener closes, the
    // chains write their blocks in flight and stop, the ledgers close so that every
    // Deliver stream ends, and whatever is still open at the deadline is dropped.
    let grace = config.korder.shutdown_grace_period;
    let deadline = tokio::time::Instant::now() + grace;
    let _ = stop_tx.send(true);
    tracing::info!(grace_period = ?grace, "shutting down: writing the blocks in flight and ending the streams");
    let halting = {
        let registrar = registrar.clone();
        tokio::task::spawn_blocking(move || {
            registrar.halt_all();
            for id in registrar.channel_ids() {
                if let Some(c) = registrar.channel(&id) {
                    c.store.close();
                }
            }
        })
    };
    if tokio::time::timeout_at(deadline, halting).await.is_err() {
        tracing::error!(grace_period = ?grace, "the chains did not stop within the grace period; exiting anyway");
    }
    let served = match ended {
        Some(r) => Some(r),
        None => match tokio::time::timeout_at(deadline, &mut server).await {
            Ok(r) => Some(r),
            Err(_) => {
                tracing::warn!(grace_period = ?grace, "streams still open at the end of the grace period: closing them");
                server.abort();
                None
            }
        },
    };
    if let Ok(Ok(Err(e))) = tokio::time::timeout_at(deadline, ops).await {
        tracing::warn!(error = %e, "operations endpoint");
    }
    if let Some(admin) = admin
        && let Ok(Ok(Err(e))) = tokio::time::timeout_at(deadline, admin).await
    {
        tracing::warn!(error = %e, "admin endpoint");
    }
    if let Some(r) = served {
        r.context("the gRPC server task")?.context("serving gRPC")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The admin endpoint's listener, bound at start-up, and its TLS configuration.
struct AdminListener {
    listener: tokio::net::TcpListener,
    address: std::net::SocketAddr,
    tls: Option<Arc<korder_server::operations_tls::ServerConfig>>,
}

/// The admin endpoint's TLS server configuration (`Admin.TLS`), when enabled.
fn admin_tls(
    config: &Config,
) -> anyhow::Result<Option<Arc<korder_server::operations_tls::ServerConfig>>> {
    let Some(tls) = config.admin.as_ref().map(|a| &a.tls).filter(|t| t.enabled) else {
        return Ok(None);
    };
    let (Some(certificate), Some(private_key)) = (&tls.certificate, &tls.private_key) else {
        bail!("Admin.TLS.Enabled needs Admin.TLS.Certificate and Admin.TLS.PrivateKey");
    };
    let settings = korder_server::tls::TlsSettings::load_operations(
        certificate,
        private_key,
        tls.client_auth_required,
        &tls.client_root_cas,
    )
    .context("Admin.TLS")?;
    Ok(Some(Arc::new(settings.operations_server_config()?)))
}

/// Serves the admin endpoint (`Admin`): the channel participation API, over TLS
/// with client certificates when `Admin.TLS.Enabled`.
fn serve_admin(
    config: &Config,
    registrar: &Registrar,
    admin: AdminListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    use korder_server::participation;
    // Without a ChannelParticipation section: Fabric 2.5's defaults (off, 1 MiB).
    let settings = match &config.channel_participation {
        Some(p) => participation::Settings {
            enabled: p.enabled,
            max_request_body_bytes: usize::try_from(p.max_request_body_size).unwrap_or(usize::MAX),
        },
        None => participation::Settings {
            enabled: false,
            max_request_body_bytes: participation::DEFAULT_MAX_REQUEST_BODY_BYTES,
        },
    };
    let app = participation::router(registrar.clone(), settings);
    tracing::info!(
        address = %admin.address,
        tls = admin.tls.is_some(),
        client_auth_required = admin.tls.is_some(),
        channel_participation = settings.enabled,
        max_request_body_size = settings.max_request_body_bytes,
        "admin endpoint: /participation/v1/channels"
    );
    match admin.tls {
        Some(tls) => tokio::spawn(korder_server::operations_tls::serve_router(
            "admin",
            admin.listener,
            tls,
            app,
            participation::needs_certificate,
            shutdown,
        )),
        None => tokio::spawn(participation::serve(admin.listener, app, shutdown)),
    }
}

/// The gRPC server's TLS settings when `General.TLS.Enabled`, read at start-up.
fn tls_settings(config: &Config) -> anyhow::Result<Option<korder_server::tls::TlsSettings>> {
    let tls = &config.general.tls;
    if !tls.enabled {
        return Ok(None);
    }
    let (Some(certificate), Some(private_key)) = (&tls.certificate, &tls.private_key) else {
        bail!("General.TLS.Enabled needs General.TLS.Certificate and General.TLS.PrivateKey");
    };
    Ok(Some(korder_server::tls::TlsSettings::load(
        certificate,
        private_key,
        tls.client_auth_required,
        &tls.client_root_cas,
    )?))
}

/// The operations endpoint's TLS server configuration (`Operations.TLS`), when enabled.
fn operations_tls(config: &Config) -> anyhow::Result<Option<korder_server::tls::TlsSettings>> {
    let tls = &config.operations.tls;
    if !tls.enabled {
        return Ok(None);
    }
    let (Some(certificate), Some(private_key)) = (&tls.certificate, &tls.private_key) else {
        bail!(
            "Operations.TLS.Enabled needs Operations.TLS.Certificate and Operations.TLS.PrivateKey"
        );
    };
    let settings = korder_server::tls::TlsSettings::load_operations(
        certificate,
        private_key,
        tls.client_auth_required,
        &tls.client_root_cas,
    )?;
    Ok(Some(settings))
}

/// SIGTERM and SIGINT, watched from the moment this is created.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("watching SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("watching SIGINT")?,
        })
    }

    /// Resolves at the first SIGTERM or SIGINT.
    async fn recv(mut self) {
        tokio::select! {
            _ = self.int.recv() => tracing::info!("SIGINT received"),
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
        }
    }
}
