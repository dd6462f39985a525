//! `korder init`: a ready-to-run dev network.
//!
//! ```text
//! DIR/network.json            what client commands read with --data-dir
//! DIR/genesis.block           the system channel's genesis block
//! DIR/<channel>.block         the application channel's genesis block
//! DIR/client/msp, DIR/admin/msp   client and admin identities (Org1MSP)
//! DIR/client/tls              the client's TLS key pair and the org's TLS CA
//! DIR/ca/orderer, DIR/ca/org1 the organisations' CAs (keys included), to issue more
//! DIR/[nodeK/]tls             the node's TLS server key pair (TLS is off by default)
//! DIR/orderer.yaml, DIR/msp, DIR/ledger          one node, or
//! DIR/nodeK/orderer.yaml, DIR/nodeK/msp, ...     node K of N
//! ```
//!
//! Both channels are in every node's ledger from the start, so clients can use the
//! application channel at once.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use korder_channelconfig::genesis::{ChannelProfile, EnvelopeStamp, OrgProfile, genesis_envelope};
use korder_config::{Config, LogBackend, parse_duration};
use korder_ledger::block::next_block;
use korder_ledger::{Ledgers, StoreOptions};
use korder_msp::devpki::{DevPki, NodeRole};
use korder_msp::mspdir::MspDir;
use korder_proto::Message;
use korder_proto::common::Block;

use crate::network::{NETWORK_FILE, Network, NodeInfo};

/// MSP id of the orderer organisation of a dev network.
pub const ORDERER_MSP_ID: &str = "OrdererMSP";
/// MSP id of the client organisation of a dev network.
pub const CLIENT_MSP_ID: &str = "Org1MSP";
/// The consortium of a dev network.
pub const CONSORTIUM: &str = "SampleConsortium";

/// Options of `korder init`.
#[derive(Args, Debug, Clone)]
pub struct InitArgs {
    /// Where to write the network.
    #[arg(long, default_value = "korder-data")]
    pub data_dir: PathBuf,
    /// Use Apache Kafka at these bootstrap brokers (comma-separated host:port)
    /// instead of the embedded log.
    #[arg(long)]
    pub kafka: Option<String>,
    /// Number of orderer nodes (more than one needs --kafka).
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// The application channel to create.
    #[arg(long, default_value = "mychannel")]
    pub channel: String,
    /// The system channel's id.
    #[arg(long, default_value = "system-channel")]
    pub system_channel: String,
    /// Host the nodes listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broadcast/Deliver port of node 1; node K listens on PORT + 10*(K-1), and its
    /// operations endpoint on that port + 1393 (7050 → 8443).
    #[arg(long, default_value_t = 7050)]
    pub port: u16,
    /// Operations (/healthz, /metrics) port of node 1, next ones +10; 0 picks a free
    /// port at start. Default: the Broadcast port + 1393 (7050 → 8443).
    #[arg(long)]
    pub ops_port: Option<u16>,
    /// BatchTimeout of both channels (Go duration).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub batch_timeout: Duration,
    /// BatchSize.MaxMessageCount of both channels.
    #[arg(long, default_value_t = 500)]
    pub max_message_count: u32,
    /// Kafka topic replication factor for created topics.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u16,
    /// Overwrite an existing network in DIR.
    #[arg(long)]
    pub force: bool,
}

impl InitArgs {
    /// Defaults for `dir`.
    pub fn defaults_for(dir: &Path) -> InitArgs {
        InitArgs {
            data_dir: dir.to_path_buf(),
            kafka: None,
            nodes: 1,
            channel: "mychannel".into(),
            system_channel: "system-channel".into(),
            host: "127.0.0.1".into(),
            port: 7050,
            ops_port: None,
            batch_timeout: Duration::from_secs(2),
            max_message_count: 500,
            replication_factor: 1,
            force: false,
        }
    }
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let network = init(&args)?;
    println!("wrote a dev network to {}", args.data_dir.display());
    for n in &network.nodes {
        println!(
            "  {}: korder start --config {}",
            n.name,
            args.data_dir.join(&n.config).display()
        );
    }
    println!(
        "  channels: {} (system), {}; client MSP {} in {}",
        network.system_channel,
        network.channel,
        network.client_msp_id,
        args.data_dir.join(&network.client_msp_dir).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes the dev network described by `args`.
pub fn init(args: &InitArgs) -> anyhow::Result<Network> {
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    if args.nodes > 1 && args.kafka.is_none() {
        bail!(
            "--nodes {} needs --kafka: nodes share their channels' order through Kafka; the embedded log serves one node",
            args.nodes
        );
    }
    for id in [&args.channel, &args.system_channel] {
        let ok = id.len() < 250
            && id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
        if !ok {
            bail!("channel ID '{id}' contains illegal characters (use [a-z][a-z0-9.-]*)");
        }
    }
    if args.channel == args.system_channel {
        bail!("the application channel and the system channel need different names");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let dir = args
        .data_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    if dir.join(NETWORK_FILE).exists() && !args.force {
        bail!(
            "{} already holds a network (use --force to overwrite it)",
            dir.display()
        );
    }
    if args.force {
        for stale in ["ledger", "genesis.block", "orderer.yaml"] {
            let _ = std::fs::remove_dir_all(dir.join(stale));
            let _ = std::fs::remove_file(dir.join(stale));
        }
        for k in 1..=64 {
            let _ = std::fs::remove_dir_all(dir.join(format!("node{k}")));
        }
    }

    let orderer_pki = DevPki::generate(ORDERER_MSP_ID, "orderer.example.com")?;
    let client_pki = DevPki::generate(CLIENT_MSP_ID, "org1.example.com")?;
    let orderer_admin = orderer_pki.issue("Admin@orderer.example.com", NodeRole::Admin)?;
    let client_admin = client_pki.issue("Admin@org1.example.com", NodeRole::Admin)?;
    let client = client_pki.issue("User1@org1.example.com", NodeRole::Client)?;
    // The CAs are kept so that more identities can be issued later.
    orderer_pki.save(dir.join("ca/orderer"))?;
    client_pki.save(dir.join("ca/org1"))?;
    client_pki.write_msp_dir(dir.join("client/msp"), &client, &client_admin)?;
    let mut tls_hosts = vec![
        args.host.clone(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    tls_hosts.dedup();
    tls_hosts.sort();
    tls_hosts.dedup();
    client_pki.write_tls_dir(
        dir.join("client/tls"),
        &client_pki.issue_tls("client.org1.example.com", &tls_hosts)?,
    )?;
    client_pki.write_msp_dir(dir.join("admin/msp"), &client_admin, &client_admin)?;
    orderer_pki.write_msp_dir(
        dir.join("orderer-admin/msp"),
        &orderer_admin,
        &orderer_admin,
    )?;

    let single = args.nodes == 1;
    let mut nodes = Vec::new();
    for k in 1..=args.nodes {
        let node_dir = if single {
            dir.clone()
        } else {
            dir.join(format!("node{k}"))
        };
        let name = format!("node{k}");
        let cert = orderer_pki.issue(
            &format!("orderer{k}.orderer.example.com"),
            NodeRole::Orderer,
        )?;
        orderer_pki.write_msp_dir(node_dir.join("msp"), &cert, &orderer_admin)?;
        let tls = orderer_pki.issue_tls(&format!("orderer{k}.orderer.example.com"), &tls_hosts)?;
        orderer_pki.write_tls_dir(node_dir.join("tls"), &tls)?;
        let port = args
            .port
            .checked_add(10 * (k as u16 - 1))
            .context("--port too high for this many nodes")?;
        nodes.push((name, node_dir, port));
    }

    let orderer_msp = MspDir::load(dir.join(if single {
        "msp".into()
    } else {
        "node1/msp".to_string()
    }))?;
    let client_msp = MspDir::load(dir.join("client/msp"))?;
    let orderer_org = OrgProfile {
        name: ORDERER_MSP_ID.into(),
        msp: orderer_msp.to_fabric_msp_config(ORDERER_MSP_ID),
        endpoints: nodes
            .iter()
            .map(|(_, _, port)| format!("{}:{port}", args.host))
            .collect(),
    };
    let client_org = OrgProfile {
        name: CLIENT_MSP_ID.into(),
        msp: client_msp.to_fabric_msp_config(CLIENT_MSP_ID),
        endpoints: Vec::new(),
    };
    let consensus = if args.kafka.is_some() {
        "kafka"
    } else {
        "solo"
    };
    let mut profile = ChannelProfile::sample(consensus);
    profile.batch_timeout = args.batch_timeout;
    profile.batch_size.max_message_count = args.max_message_count;
    profile.kafka_brokers = args
        .kafka
        .as_deref()
        .map(|b| {
            b.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    profile.orderer_addresses = orderer_org.endpoints.clone();
    profile.orderer_orgs = vec![orderer_org];

    let mut system = profile.clone();
    system
        .consortiums
        .insert(CONSORTIUM.into(), vec![client_org.clone()]);
    let system_block = next_block(
        None,
        vec![genesis_envelope(
            &args.system_channel,
            system.channel_group(),
            &EnvelopeStamp::now(),
        )],
    );
    write(&dir.join("genesis.block"), &system_block.encode_to_vec())?;

    let mut app = profile;
    app.application_orgs = Some(vec![client_org]);
    app.consortium = Some(CONSORTIUM.into());
    let app_block = next_block(
        None,
        vec![genesis_envelope(
            &args.channel,
            app.channel_group(),
            &EnvelopeStamp::now(),
        )],
    );
    write(
        &dir.join(format!("{}.block", args.channel)),
        &app_block.encode_to_vec(),
    )?;

    let mut infos = Vec::new();
    for (name, node_dir, port) in &nodes {
        let mut config = Config::default_for_dev(node_dir);
        config.general.listen_address = args.host.clone();
        config.general.listen_port = *port;
        config.general.genesis_file = dir.join("genesis.block");
        config.general.local_msp_id = ORDERER_MSP_ID.into();
        config.general.system_channel = args.system_channel.clone();
        let ops_port = match args.ops_port {
            Some(0) => 0,
            Some(p) => p.saturating_add(port - args.port),
            None => port.saturating_add(1393),
        };
        config.operations.listen_address = format!("{}:{ops_port}", args.host);
        config.korder.log_backend = LogBackend::Auto;
        config.kafka.topic_replication_factor = args.replication_factor;
        let yaml = config.to_yaml()?;
        write(&node_dir.join("orderer.yaml"), yaml.as_bytes())?;
        seed_ledger(&config.file_ledger.location, &system_block, &app_block)?;
        let rel = node_dir
            .strip_prefix(&dir)
            .unwrap_or(Path::new(""))
            .join("orderer.yaml");
        infos.push(NodeInfo {
            name: name.clone(),
            config: rel,
            address: format!("{}:{port}", args.host),
        });
    }
    let network = Network {
        system_channel: args.system_channel.clone(),
        channel: args.channel.clone(),
        consensus: consensus.into(),
        nodes: infos,
        client_msp_dir: PathBuf::from("client/msp"),
        client_msp_id: CLIENT_MSP_ID.into(),
    };
    network.save(&dir)?;
    Ok(network)
}

/// Puts both genesis blocks into a node's ledger.
fn seed_ledger(location: &Path, system: &Block, app: &Block) -> anyhow::Result<()> {
    let ledgers = Ledgers::open_dir(location, StoreOptions::default())
        .with_context(|| format!("opening the ledger at {}", location.display()))?;
    for block in [system, app] {
        let bundle = korder_server::registrar::bundle_of_config_block(block)
            .map_err(|e| anyhow::anyhow!("generated genesis block is invalid: {e}"))?;
        let store = ledgers.open(&bundle.channel_id)?;
        if store.height() == 0 {
            store.append(block)?;
        }
        store.close();
    }
    Ok(())
}
