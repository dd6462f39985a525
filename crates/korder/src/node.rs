//! Assembles and runs one ordering node from its configuration: signing identity,
//! ledger, logs (embedded or Kafka per channel), registrar, gRPC server; shuts down
//! cleanly on SIGINT/SIGTERM with every chain's block in flight written.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};
use korder_channelconfig::Bundle;
use korder_config::{Bootstrap, Config, ResolvedLog};
use korder_kafka::{KafkaConfig, KafkaLog};
use korder_ledger::{Ledgers, StoreOptions};
use korder_log::{EmbeddedLog, EmbeddedLogOptions};
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::Block;
use korder_server::chain::{
    BoxFuture, ChainHandle, ChainParams, RetryPolicy, StartError, start_chain, start_chain_checked,
};
use korder_server::msgprocessor::FilterOptions;
use korder_server::{AtomicBroadcastService, DeliverConfig, LogFactory, Metrics, Registrar};
use tokio::runtime::Handle;

/// Runs the node until SIGINT/SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("korder")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

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
        Ok(c)
    }
}

impl LogFactory for NodeLogs {
    fn start_chain(
        &self,
        bundle: &Bundle,
        mut params: ChainParams,
    ) -> Result<ChainHandle, StartError> {
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
                // with the reason in /healthz, and no other.
                params.retry = RetryPolicy::ONCE;
                let opened = EmbeddedLog::open(&dir, options)
                    .map(Arc::new)
                    .map_err(|e| format!("{}: {e}", dir.display()));
                if let Ok(log) = &opened {
                    crate::cmd::log::keep_bounded(
                        &params.runtime,
                        log.clone(),
                        params.store.clone(),
                        channel.clone(),
                        self.metrics.clone(),
                    );
                }
                let opener = Box::new(
                    move || -> BoxFuture<'static, Result<Arc<EmbeddedLog>, String>> {
                        let opened = opened.clone();
                        Box::pin(async move { opened })
                    },
                );
                start_chain(opener, params)
            }
            ResolvedLog::Kafka => {
                let config = self
                    .kafka_config(&bundle.orderer.kafka_brokers)
                    .map_err(|e| StartError::Log {
                        channel: channel.clone(),
                        reason: format!("{e:#}"),
                    })?;
                // A ledger with blocks cut from the topic needs that topic, not a
                // new one.
                let mut config = config;
                config.create_missing_topic = params.store.height() <= 1;
                params.read_timeout = config.retry.read_timeout;
                params.retry = RetryPolicy {
                    short_interval: config.retry.short_interval,
                    short_total: config.retry.short_total,
                    long_interval: config.retry.long_interval,
                    long_total: config.retry.long_total,
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
                start_chain_checked(opener, params)
            }
        }
    }
}

fn genesis_block(config: &Config, ledgers: &Ledgers) -> anyhow::Result<Option<Block>> {
    if !ledgers.channels()?.is_empty() {
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
        Bootstrap::None => bail!(
            "the ledger is empty and General.BootstrapMethod is none: korder needs a system channel genesis block"
        ),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let began = Instant::now();
    let config = Arc::new(config);
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
    let ledgers = Ledgers::open_dir(&config.file_ledger.location, StoreOptions::default())
        .with_context(|| {
            format!(
                "opening the ledger at {}",
                config.file_ledger.location.display()
            )
        })?;
    let genesis = genesis_block(&config, &ledgers)?;
    let metrics = Arc::new(Metrics::new().context("registering metrics")?);
    let logs = Arc::new(NodeLogs {
        config: config.clone(),
        metrics: metrics.clone(),
    });
    let handle = Handle::current();
    let reg_metrics = metrics.clone();
    let filters = FilterOptions {
        no_expiration_checks: config.general.authentication.no_expiration_checks,
    };
    let registrar = tokio::task::spawn_blocking(move || {
        Registrar::start(
            ledgers,
            genesis,
            logs,
            Arc::new(signer),
            handle,
            reg_metrics,
            filters,
        )
    })
    .await
    .context("registrar start-up")??;

    let addr = format!(
        "{}:{}",
        config.general.listen_address, config.general.listen_port
    );
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr} (General.ListenAddress/ListenPort)"))?;
    let local = listener.local_addr()?;
    let tls = tls_acceptor(&config, &registrar)?;
    let deliver = DeliverConfig {
        time_window: config.general.authentication.time_window,
        no_expiration_checks: config.general.authentication.no_expiration_checks,
    };
    let service = AtomicBroadcastService::new(registrar.clone(), deliver);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (ops_listener, ops_addr) =
        korder_server::operations::bind(&config.operations.listen_address)
            .await
            .with_context(|| {
                format!(
                    "listening on {} (Operations.ListenAddress)",
                    config.operations.listen_address
                )
            })?;
    let ops = tokio::spawn(korder_server::operations::serve(
        ops_listener,
        registrar.clone(),
        metrics.clone(),
        stopped(),
    ));
    tracing::info!(address = %ops_addr, "operations endpoint: /healthz /metrics /version");
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
    );
    let router = server.add_service(service.into_server());
    let shutdown = async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
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
    .context("serving gRPC")?;
    if let Ok(Err(e)) = ops.await {
        tracing::warn!(error = %e, "operations endpoint");
    }
    tracing::info!("shutting down: writing the blocks in flight");
    tokio::task::spawn_blocking(move || registrar.halt_all())
        .await
        .context("halting the chains")?;
    tracing::info!("stopped");
    Ok(())
}

/// The gRPC server's TLS acceptor when `General.TLS.Enabled`; with
/// `ClientAuthRequired`, client roots are `ClientRootCAs` plus the TLS roots of every
/// channel's organisations, following config changes.
fn tls_acceptor(
    config: &Config,
    registrar: &Registrar,
) -> anyhow::Result<Option<korder_server::tls::TlsAcceptor>> {
    let tls = &config.general.tls;
    if !tls.enabled {
        return Ok(None);
    }
    let (Some(certificate), Some(private_key)) = (&tls.certificate, &tls.private_key) else {
        bail!("General.TLS.Enabled needs General.TLS.Certificate and General.TLS.PrivateKey");
    };
    let settings = korder_server::tls::TlsSettings::load(
        certificate,
        private_key,
        tls.client_auth_required,
        &tls.client_root_cas,
    )?;
    let acceptor = korder_server::tls::TlsAcceptor::new(settings, Arc::new(registrar.clone()))?;
    Ok(Some(acceptor))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
    }
}
