//! An in-process korder node for the server's tests: a dev network (orderer and
//! client orgs from the dev PKI, a system channel and `mychannel`), the ledger in a
//! temporary directory, every channel on an in-memory log, and the
//! `AtomicBroadcast` service reached over an in-process tonic channel (a duplex
//! stream per connection): no child process, no socket, no sleep.

#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test helpers: a failure should panic

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_channelconfig::Bundle;
use korder_channelconfig::bundle::APPLICATION_GROUP;
use korder_channelconfig::genesis::{ChannelProfile, EnvelopeStamp, OrgProfile, genesis_envelope};
use korder_ledger::block::next_block;
use korder_ledger::{Ledgers, StoreOptions};
use korder_log::MemLog;
use korder_msp::devpki::{DevPki, NodeRole};
use korder_msp::mspdir::MspDir;
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{
    Block, ChannelHeader, ConfigGroup, ConfigSignature, ConfigUpdate, ConfigUpdateEnvelope,
    ConfigValue, Envelope, Header, HeaderType, Payload, Status,
};
use korder_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use korder_proto::orderer::{
    BroadcastResponse, DeliverResponse, SeekInfo, SeekNewest, SeekOldest, SeekPosition,
    SeekSpecified, deliver_response, seek_info, seek_position,
};
use korder_proto::{Message, Timestamp};
use korder_server::chain::{BoxFuture, ChainHandle, ChainParams, LogTiming, StartError};
use korder_server::{
    AtomicBroadcastService, ChainStatus, DeliverConfig, LogFactory, Metrics, NodeOptions,
    Registrar, start_chain_checked,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Server, Uri};

pub const SYSTEM: &str = "system";
pub const APP: &str = "mychannel";
pub const CONSORTIUM: &str = "SampleConsortium";
pub const ORDERER_MSP: &str = "OrdererMSP";
pub const CLIENT_MSP: &str = "Org1MSP";

/// Channels' logs, kept in memory and shared across chain restarts; opening can be
/// made to fail a number of times (start-up retries).
pub struct MemLogs {
    logs: Mutex<HashMap<String, MemLog>>,
    failing_opens: AtomicUsize,
    timing: Mutex<LogTiming>,
}

impl MemLogs {
    /// The log of `channel` (created empty on first use).
    pub fn log(&self, channel: &str) -> MemLog {
        self.logs
            .lock()
            .unwrap()
            .entry(channel.to_string())
            .or_default()
            .clone()
    }

    /// The next `n` opens of any log fail.
    pub fn fail_opens(&self, n: usize) {
        self.failing_opens.store(n, Ordering::SeqCst);
    }

    /// The timing chains started from now on get.
    pub fn set_timing(&self, timing: LogTiming) {
        *self.timing.lock().unwrap() = timing;
    }
}

/// The [`LogFactory`] over [`MemLogs`].
struct Factory(Arc<MemLogs>);

impl LogFactory for Factory {
    fn start_chain(&self, bundle: &Bundle, params: ChainParams) -> Result<ChainHandle, StartError> {
        let log = self.0.log(&bundle.channel_id);
        let logs = self.0.clone();
        let opener = Box::new(move || -> BoxFuture<'static, Result<Arc<MemLog>, String>> {
            let log = log.clone();
            let logs = logs.clone();
            Box::pin(async move {
                let failing = logs.failing_opens.load(Ordering::SeqCst);
                if failing > 0 {
                    logs.failing_opens.store(failing - 1, Ordering::SeqCst);
                    return Err("the log is not reachable".into());
                }
                Ok(Arc::new(log))
            })
        });
        let timing = *self.0.timing.lock().unwrap();
        // Shared like Kafka topics: checked against the ledger before use.
        start_chain_checked(opener, params, timing)
    }

    fn remove_log(&self, bundle: &Bundle) -> Result<(), String> {
        self.0.logs.lock().unwrap().remove(&bundle.channel_id);
        Ok(())
    }

    /// In-memory logs stand for Kafka topics: nodes given the same [`MemLogs`]
    /// share them.
    fn shared_log(&self, _bundle: &Bundle) -> Result<bool, String> {
        Ok(true)
    }
}

/// A [`LogFactory`] over `logs` (nodes given the same `logs` share their channels'
/// logs, as Kafka nodes share topics).
pub fn log_factory(logs: Arc<MemLogs>) -> Arc<dyn LogFactory> {
    Arc::new(Factory(logs))
}

/// The dev network's identities and genesis blocks.
pub struct Network {
    pub dir: tempfile::TempDir,
    pub orderer: SigningIdentity,
    pub orderer_admin: SigningIdentity,
    pub client: SigningIdentity,
    pub client_admin: SigningIdentity,
    /// An identity of an organisation no channel knows.
    pub stranger: SigningIdentity,
    /// The client organisation's CA (Org1MSP), to issue more identities.
    pub client_ca: DevPki,
    /// The orderer organisation's CA (OrdererMSP), to issue TLS certificates.
    pub orderer_ca: DevPki,
    pub system_genesis: Block,
    pub app_genesis: Block,
}

fn identity(
    pki: &DevPki,
    dir: &std::path::Path,
    name: &str,
    role: NodeRole,
) -> (MspDir, SigningIdentity) {
    let cert = pki.issue(name, role).unwrap();
    let admin = pki
        .issue(&format!("Admin-{name}"), NodeRole::Admin)
        .unwrap();
    let path = dir.join(name);
    pki.write_msp_dir(&path, &cert, &admin).unwrap();
    (
        MspDir::load(&path).unwrap(),
        SigningIdentity::load_msp_dir(&path, pki.msp_id()).unwrap(),
    )
}

impl Network {
    /// A network whose channels cut a block every `max_message_count` envelopes or
    /// after `batch_timeout`.
    pub fn new(max_message_count: u32, batch_timeout: Duration) -> Network {
        Network::with_endpoint(max_message_count, batch_timeout, "127.0.0.1:7050")
    }

    /// [`Network::new`] whose channel configs list `endpoint` as the orderer
    /// organisation's (and the global) orderer endpoint.
    pub fn with_endpoint(
        max_message_count: u32,
        batch_timeout: Duration,
        endpoint: &str,
    ) -> Network {
        let dir = tempfile::tempdir().unwrap();
        let orderer_pki = DevPki::generate(ORDERER_MSP, "orderer.example.com").unwrap();
        let client_pki = DevPki::generate(CLIENT_MSP, "org1.example.com").unwrap();
        let stranger_pki = DevPki::generate("StrangerMSP", "stranger.example.com").unwrap();
        let (orderer_msp, orderer) =
            identity(&orderer_pki, dir.path(), "orderer0", NodeRole::Orderer);
        let (_, orderer_admin) = identity(&orderer_pki, dir.path(), "oadmin", NodeRole::Admin);
        let (client_msp, client) = identity(&client_pki, dir.path(), "user1", NodeRole::Client);
        let (_, client_admin) = identity(&client_pki, dir.path(), "cadmin", NodeRole::Admin);
        let (_, stranger) = identity(&stranger_pki, dir.path(), "stranger", NodeRole::Client);
        let orderer_org = OrgProfile {
            name: ORDERER_MSP.into(),
            msp: orderer_msp.to_fabric_msp_config(ORDERER_MSP),
            endpoints: vec![endpoint.to_string()],
        };
        let client_org = OrgProfile {
            name: CLIENT_MSP.into(),
            msp: client_msp.to_fabric_msp_config(CLIENT_MSP),
            endpoints: Vec::new(),
        };
        let mut profile = ChannelProfile::sample("solo");
        profile.batch_timeout = batch_timeout;
        profile.batch_size.max_message_count = max_message_count;
        profile.orderer_addresses = orderer_org.endpoints.clone();
        profile.orderer_orgs = vec![orderer_org];
        let mut system = profile.clone();
        system
            .consortiums
            .insert(CONSORTIUM.into(), vec![client_org.clone()]);
        let system_genesis = next_block(
            None,
            vec![genesis_envelope(
                SYSTEM,
                system.channel_group(),
                &EnvelopeStamp::now(),
            )],
        );
        let mut app = profile;
        app.application_orgs = Some(vec![client_org]);
        app.consortium = Some(CONSORTIUM.into());
        let app_genesis = next_block(
            None,
            vec![genesis_envelope(
                APP,
                app.channel_group(),
                &EnvelopeStamp::now(),
            )],
        );
        Network {
            dir,
            orderer,
            orderer_admin,
            client,
            client_admin,
            stranger,
            client_ca: client_pki,
            orderer_ca: orderer_pki,
            system_genesis,
            app_genesis,
        }
    }
}

/// A running in-process node.
pub struct Node {
    pub net: Network,
    pub registrar: Registrar,
    pub logs: Arc<MemLogs>,
    pub ledger_dir: tempfile::TempDir,
    connections: mpsc::Sender<Result<tokio::io::DuplexStream, std::io::Error>>,
}

impl Node {
    /// A node of a network cutting blocks of `max_message_count` envelopes (and
    /// after 2 s), with the system channel and `mychannel`, its chains started.
    pub async fn start(max_message_count: u32) -> Node {
        Node::start_with(
            Network::new(max_message_count, Duration::from_secs(2)),
            LogTiming::LOCAL,
            0,
        )
        .await
    }

    /// A node of `net` whose chains use `timing` and whose first `failing_opens`
    /// log opens fail. Waits until every chain has left start-up (started or stopped).
    pub async fn start_with(net: Network, timing: LogTiming, failing_opens: usize) -> Node {
        Node::start_with_options(net, timing, failing_opens, NodeOptions::default()).await
    }

    /// [`Node::start_with`] with these node settings.
    pub async fn start_with_options(
        net: Network,
        timing: LogTiming,
        failing_opens: usize,
        options: NodeOptions,
    ) -> Node {
        let ledger_dir = tempfile::tempdir().unwrap();
        let ledgers = Ledgers::open_dir(ledger_dir.path(), StoreOptions::default()).unwrap();
        ledgers
            .open(SYSTEM)
            .unwrap()
            .append(&net.system_genesis)
            .unwrap();
        ledgers.open(APP).unwrap().append(&net.app_genesis).unwrap();
        Node::launch(net, ledger_dir, ledgers, timing, failing_opens, options).await
    }

    /// A node of a network cutting blocks of `max_message_count` envelopes, with no
    /// channel at all (as `BootstrapMethod: none` starts one).
    pub async fn start_empty(max_message_count: u32) -> Node {
        let net = Network::new(max_message_count, Duration::from_secs(2));
        let ledger_dir = tempfile::tempdir().unwrap();
        let ledgers = Ledgers::open_dir(ledger_dir.path(), StoreOptions::default()).unwrap();
        Node::launch(
            net,
            ledger_dir,
            ledgers,
            LogTiming::LOCAL,
            0,
            NodeOptions::default(),
        )
        .await
    }

    async fn launch(
        net: Network,
        ledger_dir: tempfile::TempDir,
        ledgers: Ledgers,
        timing: LogTiming,
        failing_opens: usize,
        options: NodeOptions,
    ) -> Node {
        let logs = Arc::new(MemLogs {
            logs: Mutex::new(HashMap::new()),
            failing_opens: AtomicUsize::new(failing_opens),
            timing: Mutex::new(timing),
        });
        let factory = Arc::new(Factory(logs.clone()));
        let signer = Arc::new(
            SigningIdentity::load_msp_dir(net.dir.path().join("orderer0"), ORDERER_MSP).unwrap(),
        );
        let handle = tokio::runtime::Handle::current();
        let registrar = tokio::task::spawn_blocking(move || {
            Registrar::start(
                ledgers,
                None,
                factory,
                signer,
                handle,
                Arc::new(Metrics::new().unwrap()),
                options,
            )
        })
        .await
        .unwrap()
        .unwrap();
        let service = AtomicBroadcastService::new(registrar.clone(), DeliverConfig::default());
        let (connections, incoming) = mpsc::channel(16);
        tokio::spawn(
            Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming(ReceiverStream::new(incoming)),
        );
        let node = Node {
            net,
            registrar,
            logs,
            ledger_dir,
            connections,
        };
        for id in node.registrar.channel_ids() {
            node.wait_status(&id, |s| s.started || s.error.is_some())
                .await;
        }
        node
    }

    /// A client connected over a fresh in-process stream.
    pub async fn client(&self) -> AtomicBroadcastClient<Channel> {
        AtomicBroadcastClient::new(self.channel().await)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// A gRPC channel over a fresh in-process stream (for raw requests).
    pub async fn channel(&self) -> Channel {
        let connections = self.connections.clone();
        Endpoint::from_static("http://in-process")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let connections = connections.clone();
                async move {
                    let (client, server) = tokio::io::duplex(1 << 20);
                    connections
                        .send(Ok(server))
                        .await
                        .map_err(|_| std::io::Error::other("the server has stopped"))?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
                }
            }))
            .await
            .unwrap()
    }

    /// Waits until `channel`'s chain status satisfies `f`; its status then.
    pub async fn wait_status(
        &self,
        channel: &str,
        f: impl Fn(&ChainStatus) -> bool,
    ) -> ChainStatus {
        let mut rx = self.registrar.channel(channel).unwrap().chain.status();
        rx.wait_for(|s| f(s)).await.unwrap().clone()
    }

    /// Broadcasts `envelopes` on one stream; the responses.
    pub async fn broadcast(&self, envelopes: Vec<Envelope>) -> Vec<BroadcastResponse> {
        let mut client = self.client().await;
        let mut stream = client
            .broadcast(tokio_stream::iter(envelopes))
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Ok(Some(r)) = stream.message().await {
            out.push(r);
        }
        out
    }

    /// Sends one Deliver request; the blocks and the closing status.
    pub async fn deliver(&self, request: Envelope) -> (Vec<Block>, Option<Status>) {
        let mut client = self.client().await;
        let mut stream = client
            .deliver(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let mut blocks = Vec::new();
        while let Ok(Some(DeliverResponse { r#type: Some(t) })) = stream.message().await {
            match t {
                deliver_response::Type::Block(b) => blocks.push(b),
                deliver_response::Type::Status(s) => {
                    return (blocks, Status::try_from(s).ok());
                }
            }
        }
        (blocks, None)
    }

    /// Reads `channel` as `signer` from block 0 on, as blocks are cut, until the
    /// blocks read so far satisfy `done`; those blocks.
    pub async fn blocks_until(
        &self,
        signer: &SigningIdentity,
        channel: &str,
        done: impl Fn(&[Block]) -> bool,
    ) -> Vec<Block> {
        let mut client = self.client().await;
        let request = seek(
            signer,
            channel,
            oldest(),
            at(u64::MAX),
            seek_info::SeekBehavior::BlockUntilReady,
        );
        let mut stream = client
            .deliver(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let mut blocks = Vec::new();
        while !done(&blocks) {
            match stream.message().await.unwrap() {
                Some(DeliverResponse {
                    r#type: Some(deliver_response::Type::Block(b)),
                }) => blocks.push(b),
                other => panic!("the Deliver stream ended early: {other:?}"),
            }
        }
        blocks
    }

    /// Halts every chain (blocking work, off the runtime).
    pub async fn halt(&self) {
        let r = self.registrar.clone();
        tokio::task::spawn_blocking(move || r.halt_all())
            .await
            .unwrap();
    }
}

fn now() -> Timestamp {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    }
}

/// A signed envelope of `kind` for `channel` carrying `data`.
pub fn envelope(
    signer: &SigningIdentity,
    channel: &str,
    kind: HeaderType,
    data: Bytes,
) -> Envelope {
    let ch = ChannelHeader {
        r#type: kind as i32,
        channel_id: channel.into(),
        tx_id: format!("tx-{}", rand_suffix()),
        timestamp: Some(now()),
        ..Default::default()
    };
    let payload = Payload {
        header: Some(Header {
            channel_header: ch.encode_to_vec().into(),
            signature_header: signer.new_signature_header().unwrap(),
        }),
        data,
    };
    signer
        .sign_envelope(payload.encode_to_vec().into())
        .unwrap()
}

fn rand_suffix() -> u64 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst) as u64
}

/// A transaction of `client` on `channel`.
pub fn tx(signer: &SigningIdentity, channel: &str, data: &str) -> Envelope {
    envelope(
        signer,
        channel,
        HeaderType::EndorserTransaction,
        Bytes::copy_from_slice(data.as_bytes()),
    )
}

/// A seek position.
pub fn oldest() -> SeekPosition {
    SeekPosition {
        r#type: Some(seek_position::Type::Oldest(SeekOldest {})),
    }
}

pub fn newest() -> SeekPosition {
    SeekPosition {
        r#type: Some(seek_position::Type::Newest(SeekNewest {})),
    }
}

pub fn at(number: u64) -> SeekPosition {
    SeekPosition {
        r#type: Some(seek_position::Type::Specified(SeekSpecified { number })),
    }
}

/// A Deliver request of `signer` for blocks `start..=stop` of `channel`.
pub fn seek(
    signer: &SigningIdentity,
    channel: &str,
    start: SeekPosition,
    stop: SeekPosition,
    behavior: seek_info::SeekBehavior,
) -> Envelope {
    let info = SeekInfo {
        start: Some(start),
        stop: Some(stop),
        behavior: behavior as i32,
        ..Default::default()
    };
    envelope(
        signer,
        channel,
        HeaderType::DeliverSeekInfo,
        info.encode_to_vec().into(),
    )
}

/// A CONFIG_UPDATE creating `channel` in the consortium with the client org,
/// signed by the client org's admin and sent by the client.
pub fn channel_creation(net: &Network, channel: &str) -> Envelope {
    let mut profile = ChannelProfile::sample("solo");
    profile.application_orgs = Some(Vec::new());
    let full_app = profile
        .channel_group()
        .groups
        .remove(APPLICATION_GROUP)
        .unwrap();
    let org = || {
        let mut g = BTreeMap::new();
        g.insert(CLIENT_MSP.to_string(), ConfigGroup::default());
        g
    };
    let consortium_value = |value: Bytes| ConfigValue {
        version: 0,
        value,
        mod_policy: String::new(),
    };
    let mut read = ConfigGroup::default();
    read.values
        .insert("Consortium".into(), consortium_value(Bytes::new()));
    read.groups.insert(
        APPLICATION_GROUP.into(),
        ConfigGroup {
            groups: org(),
            ..Default::default()
        },
    );
    let mut write = ConfigGroup::default();
    write.values.insert(
        "Consortium".into(),
        consortium_value(
            korder_proto::common::Consortium {
                name: CONSORTIUM.into(),
            }
            .encode_to_vec()
            .into(),
        ),
    );
    write.groups.insert(
        APPLICATION_GROUP.into(),
        ConfigGroup {
            version: 1,
            groups: org(),
            values: full_app.values,
            policies: full_app.policies,
            mod_policy: full_app.mod_policy,
        },
    );
    let update = ConfigUpdate {
        channel_id: channel.into(),
        read_set: Some(read),
        write_set: Some(write),
        isolated_data: Default::default(),
    };
    let config_update: Bytes = update.encode_to_vec().into();
    let signature_header = net.client_admin.new_signature_header().unwrap();
    let mut signed = signature_header.to_vec();
    signed.extend_from_slice(&config_update);
    let signature = net.client_admin.sign(&signed).unwrap();
    let cue = ConfigUpdateEnvelope {
        config_update,
        signatures: vec![ConfigSignature {
            signature_header,
            signature,
        }],
    };
    envelope(
        &net.client,
        channel,
        HeaderType::ConfigUpdate,
        cue.encode_to_vec().into(),
    )
}

/// The statuses of `responses`.
pub fn statuses(responses: &[BroadcastResponse]) -> Vec<Status> {
    responses
        .iter()
        .map(|r| Status::try_from(r.status).unwrap())
        .collect()
}

/// The envelopes of `block`.
pub fn envelopes_of(block: &Block) -> Vec<Bytes> {
    block
        .data
        .as_ref()
        .map(|d| d.data.clone())
        .unwrap_or_default()
}

impl Drop for Node {
    /// Halts the chains before the test's runtime goes away (a chain thread reads
    /// its log through the runtime). A test on the current-thread runtime calls
    /// [`Node::halt`] itself.
    fn drop(&mut self) {
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi {
            tokio::task::block_in_place(|| self.registrar.halt_all());
        }
    }
}

/// A CONFIG_UPDATE of `channel` setting its BatchSize's max message count to
/// `max_message_count` (the value at version 0 becomes version 1), signed by the
/// orderer org's admin (the value's mod policy, /Channel/Orderer/Admins) and sent
/// by the client.
pub fn batch_size_update(net: &Network, channel: &str, max_message_count: u32) -> Envelope {
    let mut size = ChannelProfile::sample("solo").batch_size;
    size.max_message_count = max_message_count;
    let orderer_read = ConfigGroup::default();
    let mut orderer_write = ConfigGroup::default();
    orderer_write.values.insert(
        "BatchSize".into(),
        ConfigValue {
            version: 1,
            value: size.encode_to_vec().into(),
            mod_policy: "Admins".into(),
        },
    );
    let mut read = ConfigGroup::default();
    read.groups.insert("Orderer".into(), orderer_read);
    let mut write = ConfigGroup::default();
    write.groups.insert("Orderer".into(), orderer_write);
    let update = ConfigUpdate {
        channel_id: channel.into(),
        read_set: Some(read),
        write_set: Some(write),
        isolated_data: Default::default(),
    };
    signed_update(net, &net.orderer_admin, channel, update)
}

/// `update` in a CONFIG_UPDATE envelope, with `config_signer`'s signature, sent by
/// the client.
fn signed_update(
    net: &Network,
    config_signer: &SigningIdentity,
    channel: &str,
    update: ConfigUpdate,
) -> Envelope {
    let config_update: Bytes = update.encode_to_vec().into();
    let signature_header = config_signer.new_signature_header().unwrap();
    let mut signed = signature_header.to_vec();
    signed.extend_from_slice(&config_update);
    let signature = config_signer.sign(&signed).unwrap();
    let cue = ConfigUpdateEnvelope {
        config_update,
        signatures: vec![ConfigSignature {
            signature_header,
            signature,
        }],
    };
    envelope(
        &net.client,
        channel,
        HeaderType::ConfigUpdate,
        cue.encode_to_vec().into(),
    )
}

/// A CONFIG_UPDATE of `channel` replacing `/Channel/Application/Readers` by "a
/// member of the orderer org", which no client of Org1 satisfies; signed by the
/// Org1 admin (the policy's mod policy, /Channel/Application/Admins).
pub fn readers_update(net: &Network, channel: &str) -> Envelope {
    use korder_proto::common::{ConfigPolicy, msp_role};
    let mut app_write = ConfigGroup::default();
    app_write.policies.insert(
        "Readers".into(),
        ConfigPolicy {
            version: 1,
            policy: Some(korder_channelconfig::genesis::signed_by_role(
                ORDERER_MSP,
                msp_role::MspRoleType::Member,
            )),
            mod_policy: "Admins".into(),
        },
    );
    let mut read = ConfigGroup::default();
    read.groups
        .insert(APPLICATION_GROUP.into(), ConfigGroup::default());
    let mut write = ConfigGroup::default();
    write.groups.insert(APPLICATION_GROUP.into(), app_write);
    let update = ConfigUpdate {
        channel_id: channel.into(),
        read_set: Some(read),
        write_set: Some(write),
        isolated_data: Default::default(),
    };
    signed_update(net, &net.client_admin, channel, update)
}

/// A CONFIG_UPDATE of `channel` (built from the network's genesis block of it)
/// restricting Org1MSP's `policy` (Readers, Writers, …) to its admins, signed by
/// the Org1 admin (the policy's mod policy, the org's Admins) and sent by the client.
pub fn org1_policy_admins_only(net: &Network, channel: &str, policy: &str) -> Envelope {
    use korder_proto::common::{ConfigEnvelope, ConfigPolicy, msp_role};
    let genesis = if channel == SYSTEM {
        &net.system_genesis
    } else {
        &net.app_genesis
    };
    let env = Envelope::decode(envelopes_of(genesis)[0].as_ref()).unwrap();
    let payload = Payload::decode(env.payload.as_ref()).unwrap();
    let root = ConfigEnvelope::decode(payload.data.as_ref())
        .unwrap()
        .config
        .unwrap()
        .channel_group
        .unwrap();
    let app = &root.groups[APPLICATION_GROUP];
    let org = &app.groups[CLIENT_MSP];
    let old = &org.policies[policy];
    let shell = |g: &ConfigGroup| ConfigGroup {
        version: g.version,
        ..Default::default()
    };
    let nest = |org_group: ConfigGroup| {
        let mut a = shell(app);
        a.groups.insert(CLIENT_MSP.into(), org_group);
        let mut r = shell(&root);
        r.groups.insert(APPLICATION_GROUP.into(), a);
        r
    };
    let mut written = shell(org);
    written.policies.insert(
        policy.into(),
        ConfigPolicy {
            version: old.version + 1,
            policy: Some(korder_channelconfig::genesis::signed_by_role(
                CLIENT_MSP,
                msp_role::MspRoleType::Admin,
            )),
            mod_policy: old.mod_policy.clone(),
        },
    );
    let update = ConfigUpdate {
        channel_id: channel.into(),
        read_set: Some(nest(shell(org))),
        write_set: Some(nest(written)),
        isolated_data: Default::default(),
    };
    signed_update(net, &net.client_admin, channel, update)
}

/// An identity issued by `ca` for `cn` claiming `msp_id`.
pub fn issued(ca: &DevPki, cn: &str, msp_id: &str) -> SigningIdentity {
    let cert = ca.issue(cn, NodeRole::Client).unwrap();
    SigningIdentity::from_pem(msp_id, cert.cert_pem.as_bytes(), cert.key_pem.as_bytes()).unwrap()
}

/// A client of a CA no channel MSP knows, claiming `msp_id`.
pub fn foreign_identity(cn: &str, msp_id: &str) -> SigningIdentity {
    let foreign = DevPki::generate(CLIENT_MSP, "org1.example.com").unwrap();
    issued(&foreign, cn, msp_id)
}
