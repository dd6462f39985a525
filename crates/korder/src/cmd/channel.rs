//! `korder channel`: create channels, change their configuration, fetch their
//! config and sign config updates, with no other tool needed.
//!
//! ```text
//! create:  system channel config ─▶ consortium + member orgs
//!          ─▶ ConfigUpdate (read set / write set, Application v0 → v1)
//!          ─▶ ConfigSignatures (org admins) ─▶ CONFIG_UPDATE envelope (client)
//!          ─▶ Broadcast ─▶ poll Deliver for block 0 (NOT_FOUND: retry every 200 ms)
//! update:  newest block ─▶ last config block ─▶ current Config
//!          ─▶ changed copy ─▶ update::group_update(current, changed) ─▶ sign ─▶ Broadcast
//!          ─▶ Deliver from the next block until a CONFIG block arrives
//! sign:    update file ─▶ + one ConfigSignature ─▶ same file, same form
//! ```
//!
//! The update itself (read set, write set, versions) is computed by
//! [`korder_channelconfig::update`], the way configtxlator computes it; this module
//! is the command line around it: reading the current config, applying the asked
//! changes, signing, sending and waiting for the config block.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::{Args, Subcommand};
use korder_channelconfig::bundle::CONSORTIUMS_GROUP;
use korder_channelconfig::config_from_envelope;
use korder_channelconfig::update::{
    ConsensusState, OrdererChanges, creation_update, group_update, in_maintenance,
};
use korder_config::parse_duration;
use korder_ledger::block::last_config_index;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{
    Block, ChannelHeader, Config, ConfigSignature, ConfigUpdate, ConfigUpdateEnvelope, Envelope,
    HeaderType, Payload, Status,
};
use korder_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use korder_proto::orderer::{BroadcastResponse, deliver_response};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::client::{
    self, Conn, ConnArgs, DeliverSession, connect_any, newest, runtime, seek_envelope,
    signed_envelope, specified, status_name,
};

/// How often `create` asks for block 0 of the new channel while it does not exist.
const GENESIS_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The dev network's org admin (may sign channel creations): MSP dir and id.
const DEV_ORG_ADMIN: (&str, &str) = ("admin/msp", "Org1MSP");
/// The dev network's orderer admin (may sign changes of `/Channel/Orderer`).
const DEV_ORDERER_ADMIN: (&str, &str) = ("orderer-admin/msp", "OrdererMSP");

/// `korder channel ...`.
#[derive(Subcommand, Debug)]
pub enum ChannelCommand {
    /// Create a channel through the system channel and write its genesis block.
    Create(CreateArgs),
    /// Change a channel's configuration (batch size, batch timeout) or send a
    /// prepared config update, and wait for the config block.
    Update(UpdateArgs),
    /// Fetch a block of a channel: `korder channel fetch config --channel C`.
    Fetch(client::FetchArgs),
    /// Add a signature to a config update file, in place.
    Sign(SignArgs),
}

/// Runs one `korder channel` command.
pub fn run(command: ChannelCommand) -> anyhow::Result<ExitCode> {
    match command {
        ChannelCommand::Create(a) => create(a),
        ChannelCommand::Update(a) => update(a),
        ChannelCommand::Fetch(a) => client::fetch(a),
        ChannelCommand::Sign(a) => sign(a),
    }
}

/// An identity that signs a config update: `DIR:MSPID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignMsp {
    pub dir: PathBuf,
    pub msp_id: String,
}

impl std::str::FromStr for SignMsp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.rsplit_once(':') {
            Some((dir, id)) if !dir.is_empty() && !id.is_empty() => Ok(SignMsp {
                dir: PathBuf::from(dir),
                msp_id: id.to_owned(),
            }),
            _ => Err(format!("{s:?} is not DIR:MSPID")),
        }
    }
}

impl SignMsp {
    fn load(&self) -> anyhow::Result<SigningIdentity> {
        SigningIdentity::load_msp_dir(&self.dir, &self.msp_id).with_context(|| {
            format!(
                "loading the signing identity of MSP {:?} from {}",
                self.msp_id,
                self.dir.display()
            )
        })
    }
}

/// The identities named by `--sign-msp`, else the data directory's `default`.
fn config_signers(
    given: &[SignMsp],
    data_dir: Option<&Path>,
    default: (&str, &str),
) -> anyhow::Result<Vec<SigningIdentity>> {
    if !given.is_empty() {
        return given.iter().map(SignMsp::load).collect();
    }
    match data_dir {
        Some(d) => Ok(vec![
            SignMsp {
                dir: d.join(default.0),
                msp_id: default.1.to_owned(),
            }
            .load()?,
        ]),
        None => Ok(Vec::new()),
    }
}

// ---------------------------------------------------------------------------
// Computing updates
// ---------------------------------------------------------------------------

/// `--consensus-state`: `ConsensusType.state` as the command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConsensusStateArg {
    /// STATE_NORMAL: the channel orders transactions.
    Normal,
    /// STATE_MAINTENANCE: only orderer admins may update the config and read blocks.
    Maintenance,
}

impl ConsensusStateArg {
    fn state(self) -> ConsensusState {
        match self {
            Self::Normal => ConsensusState::Normal,
            Self::Maintenance => ConsensusState::Maintenance,
        }
    }
}

// ---------------------------------------------------------------------------
// Signing and update files
// ---------------------------------------------------------------------------

/// A `ConfigSignature` by `signer` over `signature_header ‖ config_update`.
pub fn config_signature(
    signer: &SigningIdentity,
    config_update: &[u8],
) -> anyhow::Result<ConfigSignature> {
    let signature_header = signer
        .new_signature_header()
        .context("drawing a signature header")?;
    let mut data = BytesMut::with_capacity(signature_header.len() + config_update.len());
    data.extend_from_slice(&signature_header);
    data.extend_from_slice(config_update);
    let signature = signer.sign(&data).context("signing the config update")?;
    Ok(ConfigSignature {
        signature_header,
        signature,
    })
}

/// A config update envelope with one signature added per signer.
pub fn sign_update(
    mut update: ConfigUpdateEnvelope,
    signers: &[SigningIdentity],
) -> anyhow::Result<ConfigUpdateEnvelope> {
    for s in signers {
        let sig = config_signature(s, &update.config_update)?;
        update.signatures.push(sig);
    }
    Ok(update)
}

/// A CONFIG_UPDATE envelope for `channel` carrying `update`, signed by `signer`.
pub fn update_envelope(
    signer: &SigningIdentity,
    channel: &str,
    update: &ConfigUpdateEnvelope,
) -> anyhow::Result<Envelope> {
    let (env, _) = signed_envelope(
        signer,
        HeaderType::ConfigUpdate,
        channel,
        update.encode_to_vec().into(),
        false,
    )?;
    Ok(env)
}

/// The form an update file has, kept when a signature is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateFileForm {
    /// A CONFIG_UPDATE `common.Envelope` (as `peer channel signconfigtx` reads).
    Envelope,
    /// A bare `common.ConfigUpdateEnvelope`.
    ConfigUpdateEnvelope,
    /// A bare `common.ConfigUpdate` (as `configtxlator compute_update` writes).
    ConfigUpdate,
}

/// Decodes an update file's bytes: the config update envelope, its channel and the
/// file's form.
pub fn read_update(bytes: &[u8]) -> Option<(ConfigUpdateEnvelope, String, UpdateFileForm)> {
    let update_of = |cue: &ConfigUpdateEnvelope| {
        ConfigUpdate::decode(cue.config_update.as_ref())
            .ok()
            .filter(|u| !u.channel_id.is_empty() && u.write_set.is_some())
    };
    if let Ok(env) = Envelope::decode(bytes)
        && let Ok(payload) = Payload::decode(env.payload.as_ref())
        && let Some(header) = payload.header.as_ref()
        && let Ok(ch) = ChannelHeader::decode(header.channel_header.as_ref())
        && ch.r#type == HeaderType::ConfigUpdate as i32
        && let Ok(cue) = ConfigUpdateEnvelope::decode(payload.data.as_ref())
        && update_of(&cue).is_some()
    {
        return Some((cue, ch.channel_id, UpdateFileForm::Envelope));
    }
    if let Ok(cue) = ConfigUpdateEnvelope::decode(bytes)
        && let Some(u) = update_of(&cue)
    {
        return Some((cue, u.channel_id, UpdateFileForm::ConfigUpdateEnvelope));
    }
    if let Ok(u) = ConfigUpdate::decode(bytes)
        && !u.channel_id.is_empty()
        && u.write_set.is_some()
    {
        let channel = u.channel_id.clone();
        let cue = ConfigUpdateEnvelope {
            config_update: u.encode_to_vec().into(),
            signatures: Vec::new(),
        };
        return Some((cue, channel, UpdateFileForm::ConfigUpdate));
    }
    None
}

fn load_update_file(path: &Path) -> anyhow::Result<(ConfigUpdateEnvelope, String, UpdateFileForm)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    read_update(&bytes).with_context(|| {
        format!(
            "{}: {} bytes that are neither a CONFIG_UPDATE envelope, a ConfigUpdateEnvelope nor a ConfigUpdate",
            path.display(),
            bytes.len()
        )
    })
}

/// Options of `korder channel sign`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// MSP directory of the signing identity.
    #[arg(long, value_name = "DIR")]
    pub msp: PathBuf,
    /// MSP id of the signing identity.
    #[arg(long)]
    pub msp_id: String,
    /// The update file (CONFIG_UPDATE envelope, ConfigUpdateEnvelope or ConfigUpdate).
    pub file: PathBuf,
}

/// `korder channel sign`: adds one ConfigSignature and rewrites the file. An
/// envelope is re-wrapped and re-signed by the same identity; a bare ConfigUpdate
/// becomes a ConfigUpdateEnvelope.
pub fn sign(args: SignArgs) -> anyhow::Result<ExitCode> {
    let signer = SignMsp {
        dir: args.msp.clone(),
        msp_id: args.msp_id.clone(),
    }
    .load()?;
    let (cue, channel, form) = load_update_file(&args.file)?;
    let cue = sign_update(cue, std::slice::from_ref(&signer))?;
    let bytes = match form {
        UpdateFileForm::Envelope => update_envelope(&signer, &channel, &cue)?.encode_to_vec(),
        UpdateFileForm::ConfigUpdateEnvelope | UpdateFileForm::ConfigUpdate => cue.encode_to_vec(),
    };
    std::fs::write(&args.file, bytes)
        .with_context(|| format!("writing {}", args.file.display()))?;
    println!(
        "{}: signed by {} ({} signature(s)), channel {channel}",
        args.file.display(),
        args.msp_id,
        cue.signatures.len()
    );
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------
// Talking to the orderer
// ---------------------------------------------------------------------------

/// A channel's current configuration as Deliver serves it.
struct CurrentConfig {
    /// Number of the newest block.
    newest: u64,
    /// Number of the last config block.
    config_block: u64,
    config: Config,
}

fn config_of_block(block: &Block, channel: &str) -> anyhow::Result<Config> {
    let number = block.header.as_ref().map_or(0, |h| h.number);
    let first = block
        .data
        .as_ref()
        .and_then(|d| d.data.first())
        .with_context(|| format!("config block {number} of {channel} is empty"))?;
    let (_, envelope) = config_from_envelope(first)
        .with_context(|| format!("block {number} of {channel} is not a config block"))?;
    envelope
        .config
        .with_context(|| format!("config block {number} of {channel} carries no config"))
}

/// Newest block → its last config index → that block's config.
async fn fetch_config(
    client: &mut AtomicBroadcastClient<Channel>,
    signer: &SigningIdentity,
    channel: &str,
    timeout: Duration,
) -> anyhow::Result<CurrentConfig> {
    let mut session = DeliverSession::open(client, timeout).await?;
    let tip = session
        .fetch_one(signer, channel, newest(), false)
        .await
        .with_context(|| format!("fetching the newest block of {channel}"))?;
    let newest_number = tip.header.as_ref().map_or(0, |h| h.number);
    let index = last_config_index(&tip)
        .with_context(|| format!("reading the last config index of block {newest_number}"))?
        .get();
    let block = if index == newest_number {
        tip
    } else {
        session
            .fetch_one(signer, channel, specified(index), false)
            .await
            .with_context(|| format!("fetching config block {index} of {channel}"))?
    };
    Ok(CurrentConfig {
        newest: newest_number,
        config_block: index,
        config: config_of_block(&block, channel)?,
    })
}

/// Sends one envelope on a Broadcast stream and returns the orderer's answer.
async fn broadcast_one(
    client: &mut AtomicBroadcastClient<Channel>,
    envelope: Envelope,
    timeout: Duration,
) -> anyhow::Result<BroadcastResponse> {
    let (tx, rx) = mpsc::channel(1);
    tx.send(envelope)
        .await
        .map_err(|_| anyhow::anyhow!("the Broadcast stream closed"))?;
    let mut responses = tokio::time::timeout(timeout, client.broadcast(ReceiverStream::new(rx)))
        .await
        .map_err(|_| anyhow::anyhow!("opening a Broadcast stream: no answer within {timeout:?}"))?
        .context("opening a Broadcast stream")?
        .into_inner();
    let response = tokio::time::timeout(timeout, responses.message())
        .await
        .map_err(|_| anyhow::anyhow!("Broadcast: no answer within {timeout:?}"))?
        .context("Broadcast stream failed")?
        .context("the Broadcast stream ended without an answer")?;
    drop(tx);
    Ok(response)
}

fn refused(what: &str, r: &BroadcastResponse) -> anyhow::Error {
    if r.info.is_empty() {
        anyhow::anyhow!("the orderer refused the {what}: {}", status_name(r.status))
    } else {
        anyhow::anyhow!(
            "the orderer refused the {what}: {} -- {}",
            status_name(r.status),
            r.info
        )
    }
}

/// Asks for block 0 of `channel` until it is served (NOT_FOUND, or SERVICE_UNAVAILABLE
/// while a new channel's chain starts, as on Kafka: retry after
/// [`GENESIS_POLL_INTERVAL`]) or `deadline` passes.
pub(crate) async fn wait_for_genesis(
    client: &mut AtomicBroadcastClient<Channel>,
    signer: &SigningIdentity,
    channel: &str,
    deadline: Instant,
    timeout: Duration,
) -> anyhow::Result<Block> {
    loop {
        let mut session = DeliverSession::open(client, timeout).await?;
        session
            .send(seek_envelope(
                signer,
                channel,
                specified(0),
                specified(0),
                false,
            )?)
            .await?;
        match session
            .next_until(deadline)
            .await
            .with_context(|| format!("timeout waiting for channel creation of {channel}"))?
        {
            Some(deliver_response::Type::Block(b)) => return Ok(b),
            Some(deliver_response::Type::Status(s))
                if s == Status::NotFound as i32 || s == Status::ServiceUnavailable as i32 => {}
            Some(deliver_response::Type::Status(s)) => bail!(
                "waiting for block 0 of {channel}, the orderer answered {}",
                status_name(s)
            ),
            None => {}
        }
        if Instant::now() + GENESIS_POLL_INTERVAL >= deadline {
            bail!("timeout waiting for channel creation of {channel}");
        }
        tokio::time::sleep(GENESIS_POLL_INTERVAL).await;
    }
}

/// Whether `channel` exists: its block 0 is served (a NOT_FOUND answer means it
/// does not exist; any other refusal is an error).
pub(crate) async fn channel_exists(
    client: &mut AtomicBroadcastClient<Channel>,
    signer: &SigningIdentity,
    channel: &str,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let mut session = DeliverSession::open(client, timeout).await?;
    session
        .send(seek_envelope(
            signer,
            channel,
            specified(0),
            specified(0),
            false,
        )?)
        .await?;
    match session
        .next()
        .await
        .with_context(|| format!("asking for block 0 of {channel}"))?
    {
        Some(deliver_response::Type::Block(_)) => Ok(true),
        Some(deliver_response::Type::Status(s)) if s == Status::NotFound as i32 => Ok(false),
        Some(deliver_response::Type::Status(s)) => bail!(
            "asking for block 0 of {channel}, the orderer answered {}",
            status_name(s)
        ),
        None => bail!("the Deliver stream ended before block 0 of {channel}"),
    }
}

/// Reads blocks of `channel` after `after` until a CONFIG block arrives; returns
/// its number and config sequence.
async fn wait_for_config_block(
    client: &mut AtomicBroadcastClient<Channel>,
    signer: &SigningIdentity,
    channel: &str,
    after: u64,
    deadline: Instant,
    timeout: Duration,
) -> anyhow::Result<(u64, u64)> {
    let mut session = DeliverSession::open(client, timeout).await?;
    session
        .send(seek_envelope(
            signer,
            channel,
            specified(after + 1),
            specified(u64::MAX),
            false,
        )?)
        .await?;
    loop {
        match session
            .next_until(deadline)
            .await
            .with_context(|| format!("waiting for the config block of {channel}"))?
        {
            Some(deliver_response::Type::Block(b)) => {
                let number = b.header.as_ref().map_or(0, |h| h.number);
                if last_config_index(&b).is_ok_and(|lc| lc.get() == number)
                    && let Ok(config) = config_of_block(&b, channel)
                {
                    return Ok((number, config.sequence));
                }
            }
            Some(deliver_response::Type::Status(s)) => bail!(
                "waiting for the config block of {channel}, the orderer answered {}",
                status_name(s)
            ),
            None => bail!("the Deliver stream ended before the config block of {channel}"),
        }
    }
}

// ---------------------------------------------------------------------------
// create
// ---------------------------------------------------------------------------

/// Options of `korder channel create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The consortium the channel belongs to (default: the system channel's only consortium).
    #[arg(long)]
    pub consortium: Option<String>,
    /// An application org of the new channel, by its group name in the consortium
    /// (may be repeated; default: every member of the consortium).
    #[arg(long = "org", value_name = "NAME")]
    pub orgs: Vec<String>,
    /// An identity that signs the creation request, DIR:MSPID (may be repeated;
    /// default: the data directory's org admin, admin/msp:Org1MSP, else the client).
    #[arg(long = "sign-msp", value_name = "DIR:MSPID")]
    pub sign_msps: Vec<SignMsp>,
    /// The system channel (default: from the data directory).
    #[arg(long)]
    pub system_channel: Option<String>,
    /// Where to write block 0 of the new channel (default `<channel>.block`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How long to wait for the orderer and for the new channel (Go duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `korder channel create`.
pub fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let conn = args.conn.resolve()?;
    let Some(channel) = args.conn.channel.clone() else {
        bail!("give the new channel's id with --channel");
    };
    korder_channelconfig::bundle::validate_channel_id(&channel)
        .map_err(|e| anyhow::anyhow!("bad channel id {channel:?}: {e}"))?;
    let addresses = conn.addresses()?;
    let choice = CreationChoice {
        consortium: args.consortium.clone(),
        orgs: args.orgs.clone(),
        sign_msps: args.sign_msps.clone(),
        system_channel: args.system_channel.clone(),
    };
    let timeout = args.timeout;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{channel}.block")));
    let block = runtime()?.block_on(async {
        let deadline = Instant::now() + timeout;
        let (address, mut client) = connect_any(&addresses, timeout).await?;
        let creator = Creator::prepare(&conn, &choice, &mut client, &address, timeout).await?;
        creator
            .send(&mut client, &channel, timeout)
            .await
            .with_context(|| format!("sending the creation of {channel} to {address}"))?;
        eprintln!(
            "channel {channel}: creation accepted by {address} (consortium {}, orgs {})",
            creator.consortium,
            creator.orgs.join(",")
        );
        wait_for_genesis(&mut client, creator.client(), &channel, deadline, timeout).await
    })?;
    std::fs::write(&out, block.encode_to_vec())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}: block 0 of channel {channel}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Who signs a channel creation and into which consortium it goes, as the command
/// line gives them; what is not given comes from the data directory and the system
/// channel.
#[derive(Debug, Clone, Default)]
pub(crate) struct CreationChoice {
    pub consortium: Option<String>,
    pub orgs: Vec<String>,
    pub sign_msps: Vec<SignMsp>,
    pub system_channel: Option<String>,
}

/// Everything a channel creation through the system channel needs, read once and
/// reused for any number of channels (`korder bench --channels` creates many).
pub(crate) struct Creator {
    /// Signs the CONFIG_UPDATE envelopes (the client).
    client_signer: SigningIdentity,
    /// Sign the config updates (org admins).
    signers: Vec<SigningIdentity>,
    pub consortium: String,
    pub orgs: Vec<String>,
}

impl Creator {
    /// Loads the signers and settles the consortium and its orgs, reading the system
    /// channel's config through `client` (at `address`) when they are not given.
    pub(crate) async fn prepare(
        conn: &Conn,
        choice: &CreationChoice,
        client: &mut AtomicBroadcastClient<Channel>,
        address: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let client_signer = conn.signer()?;
        let data_dir = conn.network().map(|(d, _)| d.to_path_buf());
        let system_channel = match (&choice.system_channel, conn.network()) {
            (Some(s), _) => Some(s.clone()),
            (None, Some((_, net))) => Some(net.system_channel.clone()),
            (None, None) => None,
        };
        let mut signers = config_signers(&choice.sign_msps, data_dir.as_deref(), DEV_ORG_ADMIN)?;
        if signers.is_empty() {
            signers.push(conn.signer()?);
        }
        let (consortium, orgs) = match (&choice.consortium, choice.orgs.is_empty()) {
            (Some(c), false) => (c.clone(), choice.orgs.clone()),
            _ => {
                let Some(system) = &system_channel else {
                    bail!(
                        "give --consortium and --org, or --system-channel (or --data-dir) to read them from the system channel"
                    );
                };
                let config = fetch_system_config(
                    client,
                    &client_signer,
                    data_dir.as_deref(),
                    system,
                    timeout,
                )
                .await
                .with_context(|| {
                    format!(
                        "reading the consortiums of {system} from {address} (--consortium with --org skips this)"
                    )
                })?;
                let members = consortium_members(&config, choice.consortium.as_deref())?;
                let orgs = if choice.orgs.is_empty() {
                    members.1
                } else {
                    choice.orgs.clone()
                };
                (members.0, orgs)
            }
        };
        Ok(Creator {
            client_signer,
            signers,
            consortium,
            orgs,
        })
    }

    /// The client identity, which signs the envelopes (and may read the new channel).
    pub(crate) fn client(&self) -> &SigningIdentity {
        &self.client_signer
    }

    /// The signed CONFIG_UPDATE envelope that creates `channel`.
    pub(crate) fn envelope(&self, channel: &str) -> anyhow::Result<Envelope> {
        let update = creation_update(channel, &self.consortium, &self.orgs);
        let cue = sign_update(
            ConfigUpdateEnvelope {
                config_update: update.encode_to_vec().into(),
                signatures: Vec::new(),
            },
            &self.signers,
        )?;
        update_envelope(&self.client_signer, channel, &cue)
    }

    /// Broadcasts the creation of `channel`; an error unless the orderer accepts it.
    /// The channel exists once [`wait_for_genesis`] returns its block 0.
    pub(crate) async fn send(
        &self,
        client: &mut AtomicBroadcastClient<Channel>,
        channel: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let response = broadcast_one(client, self.envelope(channel)?, timeout).await?;
        if response.status != Status::Success as i32 {
            return Err(refused(
                &format!("creation of channel {channel}"),
                &response,
            ));
        }
        Ok(())
    }
}

/// Reads the system channel's config as the client, else (refused, with a data
/// directory) as the dev network's orderer admin, whom the system channel's
/// Readers policy admits.
async fn fetch_system_config(
    client: &mut AtomicBroadcastClient<Channel>,
    signer: &SigningIdentity,
    data_dir: Option<&Path>,
    system: &str,
    timeout: Duration,
) -> anyhow::Result<Config> {
    match fetch_config(client, signer, system, timeout).await {
        Ok(c) => Ok(c.config),
        Err(first) => {
            let Some(dir) = data_dir else {
                return Err(first);
            };
            let admin = SignMsp {
                dir: dir.join(DEV_ORDERER_ADMIN.0),
                msp_id: DEV_ORDERER_ADMIN.1.to_owned(),
            }
            .load()
            .with_context(|| format!("{first:#}"))?;
            Ok(fetch_config(client, &admin, system, timeout).await?.config)
        }
    }
}

/// The consortium to use and its member org names, from a system channel config.
fn consortium_members(
    config: &Config,
    wanted: Option<&str>,
) -> anyhow::Result<(String, Vec<String>)> {
    let consortiums = config
        .channel_group
        .as_ref()
        .and_then(|g| g.groups.get(CONSORTIUMS_GROUP))
        .context("the system channel's config has no Consortiums group")?;
    let names: Vec<&String> = consortiums.groups.keys().collect();
    let name = match wanted {
        Some(w) => w.to_owned(),
        None => match names.as_slice() {
            [only] => (*only).clone(),
            _ => bail!(
                "the system channel has {} consortiums ({}); choose one with --consortium",
                names.len(),
                names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    let Some(group) = consortiums.groups.get(&name) else {
        bail!(
            "the system channel has no consortium {name:?} (it has: {})",
            names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    Ok((name, group.groups.keys().cloned().collect()))
}

// ---------------------------------------------------------------------------
// update
// ---------------------------------------------------------------------------

/// Options of `korder channel update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// New BatchSize.MaxMessageCount.
    #[arg(long, value_name = "N")]
    pub batch_size_max_message_count: Option<u32>,
    /// New BatchSize.AbsoluteMaxBytes.
    #[arg(long, value_name = "BYTES")]
    pub batch_absolute_max_bytes: Option<u32>,
    /// New BatchSize.PreferredMaxBytes.
    #[arg(long, value_name = "BYTES")]
    pub batch_preferred_max_bytes: Option<u32>,
    /// New BatchTimeout (Go duration, e.g. 500ms, 2s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub batch_timeout: Option<Duration>,
    /// New ConsensusType.State: `maintenance` stops normal transactions and lets only
    /// orderer organisations read blocks; `normal` ends it. Must be the only change.
    #[arg(long, value_enum, value_name = "STATE")]
    pub consensus_state: Option<ConsensusStateArg>,
    /// New ConsensusType.Type (etcdraft, solo or kafka); accepted only while the
    /// channel is in maintenance mode.
    #[arg(long, value_name = "TYPE")]
    pub consensus_type: Option<String>,
    /// New ConsensusType.Metadata, read from this file (for etcdraft: a serialized
    /// etcdraft ConfigMetadata).
    #[arg(long, value_name = "FILE")]
    pub consensus_metadata: Option<PathBuf>,
    /// Send this prepared update instead (a CONFIG_UPDATE envelope, a
    /// ConfigUpdateEnvelope or a ConfigUpdate), after adding the --sign-msp signatures.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["batch_size_max_message_count", "batch_absolute_max_bytes",
            "batch_preferred_max_bytes", "batch_timeout", "consensus_state", "consensus_type",
            "consensus_metadata"]
    )]
    pub file: Option<PathBuf>,
    /// An identity that signs the update, DIR:MSPID (may be repeated; default for
    /// computed updates: the data directory's orderer admin,
    /// orderer-admin/msp:OrdererMSP; default with --file: none).
    #[arg(long = "sign-msp", value_name = "DIR:MSPID")]
    pub sign_msps: Vec<SignMsp>,
    /// Write the signed CONFIG_UPDATE envelope to this file instead of sending it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// How long to wait for the orderer and for the config block (Go duration).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl UpdateArgs {
    fn changes(&self) -> anyhow::Result<OrdererChanges> {
        let consensus_metadata = match &self.consensus_metadata {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .into(),
            ),
            None => None,
        };
        Ok(OrdererChanges {
            max_message_count: self.batch_size_max_message_count,
            absolute_max_bytes: self.batch_absolute_max_bytes,
            preferred_max_bytes: self.batch_preferred_max_bytes,
            batch_timeout: self.batch_timeout.map(korder_config::format_duration),
            consensus_state: self.consensus_state.map(ConsensusStateArg::state),
            consensus_type: self.consensus_type.clone(),
            consensus_metadata,
        })
    }
}

/// `korder channel update`.
pub fn update(args: UpdateArgs) -> anyhow::Result<ExitCode> {
    let changes = args.changes()?;
    if args.file.is_none() && changes.is_empty() {
        bail!(
            "nothing to update: give --batch-size-max-message-count, --batch-absolute-max-bytes, --batch-preferred-max-bytes, --batch-timeout, --consensus-state, --consensus-type, --consensus-metadata or --file"
        );
    }
    let conn = args.conn.resolve()?;
    let addresses = conn.addresses()?;
    let client_signer = conn.signer()?;
    let data_dir = conn.network().map(|(d, _)| d.to_path_buf());
    let prepared = match &args.file {
        Some(f) => Some(load_update_file(f)?),
        None => None,
    };
    let channel = match (&prepared, &args.conn.channel) {
        (Some((_, file_channel, _)), Some(c)) if file_channel != c => {
            bail!("the update file is for channel {file_channel}, not {c}")
        }
        (Some((_, file_channel, _)), _) => file_channel.clone(),
        (None, _) => conn.channel()?,
    };
    let signers = if prepared.is_some() {
        config_signers(&args.sign_msps, None, DEV_ORDERER_ADMIN)?
    } else {
        config_signers(&args.sign_msps, data_dir.as_deref(), DEV_ORDERER_ADMIN)?
    };
    let timeout = args.timeout;
    let outcome = runtime()?.block_on(async {
        let deadline = Instant::now() + timeout;
        let (address, mut client) = connect_any(&addresses, timeout).await?;
        // In maintenance mode only orderer organisations may read blocks and send
        // config updates: the first config signer (the orderer admin by default)
        // then reads and sends in place of the client.
        let admin = signers.first();
        let current = match fetch_config(&mut client, &client_signer, &channel, timeout).await {
            Ok(c) => c,
            Err(first) => {
                let first =
                    first.context(format!("reading the config of {channel} from {address}"));
                match admin {
                    Some(a) => fetch_config(&mut client, a, &channel, timeout)
                        .await
                        .with_context(|| format!("{first:#}"))?,
                    None => return Err(first),
                }
            }
        };
        let orderer_only = changes.touches_consensus()
            || current
                .config
                .channel_group
                .as_ref()
                .is_some_and(in_maintenance);
        let sender = match admin {
            Some(a) if orderer_only => a,
            _ => &client_signer,
        };
        let cue = match prepared {
            Some((cue, _, _)) => cue,
            None => {
                let root = current
                    .config
                    .channel_group
                    .as_ref()
                    .with_context(|| format!("the config of {channel} has no channel group"))?;
                let next = changes.apply(root)?;
                let update = group_update(&channel, root, &next)?;
                ConfigUpdateEnvelope {
                    config_update: update.encode_to_vec().into(),
                    signatures: Vec::new(),
                }
            }
        };
        let cue = sign_update(cue, &signers)?;
        let envelope = update_envelope(sender, &channel, &cue)?;
        if let Some(out) = &args.out {
            std::fs::write(out, envelope.encode_to_vec())
                .with_context(|| format!("writing {}", out.display()))?;
            return anyhow::Ok(Outcome::Saved(out.clone(), cue.signatures.len()));
        }
        let response = broadcast_one(&mut client, envelope, timeout)
            .await
            .with_context(|| format!("sending the config update of {channel} to {address}"))?;
        if response.status != Status::Success as i32 {
            return Err(refused(&format!("config update of {channel}"), &response));
        }
        let (number, sequence) = wait_for_config_block(
            &mut client,
            sender,
            &channel,
            current.newest,
            deadline,
            timeout,
        )
        .await?;
        Ok(Outcome::Committed {
            previous: current.config_block,
            number,
            sequence,
        })
    })?;
    match outcome {
        Outcome::Saved(path, n) => println!(
            "{}: config update of channel {channel} with {n} signature(s), not sent",
            path.display()
        ),
        Outcome::Committed {
            previous,
            number,
            sequence,
        } => println!(
            "channel {channel}: config block {number} (config sequence {sequence}; previous config block {previous})"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

enum Outcome {
    Saved(PathBuf, usize),
    Committed {
        previous: u64,
        number: u64,
        sequence: u64,
    },
}

#[cfg(test)]
mod tests {
    use korder_channelconfig::bundle::ORDERER_GROUP;
    use korder_channelconfig::{Bundle, new_channel_config, propose_config_update};
    use korder_msp::Identity;
    use korder_proto::common::ConfigGroup;
    use korder_proto::orderer::{BatchSize, BatchTimeout, ConsensusType, consensus_type};

    use super::*;
    use crate::cmd::init::{InitArgs, init};

    /// A dev network on disk: its directory, system and application channel configs.
    struct Dev {
        dir: tempfile::TempDir,
        system: Bundle,
        app: Bundle,
    }

    fn genesis_bundle(path: &Path) -> Bundle {
        let block = Block::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
        let env = &block.data.unwrap().data[0];
        Bundle::from_config_envelope(env).unwrap()
    }

    fn dev() -> Dev {
        let dir = tempfile::tempdir().unwrap();
        init(&InitArgs::defaults_for(dir.path())).unwrap();
        let system = genesis_bundle(&dir.path().join("genesis.block"));
        let app = genesis_bundle(&dir.path().join("mychannel.block"));
        Dev { dir, system, app }
    }

    fn identity(dev: &Dev, dir: &str, id: &str) -> SigningIdentity {
        SigningIdentity::load_msp_dir(dev.dir.path().join(dir), id).unwrap()
    }

    fn envelope_for(
        signer: &SigningIdentity,
        channel: &str,
        update: &ConfigUpdate,
        config_signers: &[SigningIdentity],
    ) -> Envelope {
        let cue = sign_update(
            ConfigUpdateEnvelope {
                config_update: update.encode_to_vec().into(),
                signatures: Vec::new(),
            },
            config_signers,
        )
        .unwrap();
        update_envelope(signer, channel, &cue).unwrap()
    }

    fn batch_size_of(group: &ConfigGroup) -> BatchSize {
        BatchSize::decode(
            group.groups[ORDERER_GROUP].values["BatchSize"]
                .value
                .as_ref(),
        )
        .unwrap()
    }

    /// --consensus-state/--consensus-type/--consensus-metadata write only the ConsensusType value, with the asked fields.
    #[test]
    fn consensus_changes_write_only_consensus_type() {
        let d = dev();
        let root = d.app.channel_group();
        assert!(!in_maintenance(root));
        let enter = OrdererChanges {
            consensus_state: Some(ConsensusState::Maintenance),
            ..Default::default()
        };
        assert!(enter.touches_consensus());
        let next = enter.apply(root).unwrap();
        assert!(in_maintenance(&next));
        let update = group_update("mychannel", root, &next).unwrap();
        let write = update.write_set.unwrap();
        assert!(write.values.is_empty());
        assert_eq!(write.groups.keys().collect::<Vec<_>>(), [ORDERER_GROUP]);
        let wo = &write.groups[ORDERER_GROUP];
        assert!(wo.groups.is_empty());
        assert_eq!(wo.values.keys().collect::<Vec<_>>(), ["ConsensusType"]);
        let before = ConsensusType::decode(
            root.groups[ORDERER_GROUP].values["ConsensusType"]
                .value
                .as_ref(),
        )
        .unwrap();
        let after = ConsensusType::decode(wo.values["ConsensusType"].value.as_ref()).unwrap();
        assert_eq!(after.r#type, before.r#type);
        assert_eq!(after.metadata, before.metadata);
        assert_eq!(after.state, consensus_type::State::Maintenance as i32);

        let switch = OrdererChanges {
            consensus_type: Some("etcdraft".into()),
            consensus_metadata: Some(bytes::Bytes::from_static(b"\x0a\x00")),
            ..Default::default()
        };
        let raft = switch.apply(&next).unwrap();
        let c = ConsensusType::decode(
            raft.groups[ORDERER_GROUP].values["ConsensusType"]
                .value
                .as_ref(),
        )
        .unwrap();
        assert_eq!(c.r#type, "etcdraft");
        assert_eq!(c.metadata.as_ref(), b"\x0a\x00");
        assert_eq!(c.state, consensus_type::State::Maintenance as i32);
    }

    /// The validator accepts a computed BatchSize update signed by the orderer admin and produces the new value; a client-org admin's signature is refused.
    #[test]
    fn batch_size_update_passes_the_validator_only_with_orderer_admin() {
        let d = dev();
        let client = identity(&d, "client/msp", "Org1MSP");
        let orderer_admin = identity(&d, "orderer-admin/msp", "OrdererMSP");
        let org_admin = identity(&d, "admin/msp", "Org1MSP");
        let root = d.app.channel_group();
        let next = OrdererChanges {
            max_message_count: Some(3),
            batch_timeout: Some("1h0m0s".into()),
            ..Default::default()
        }
        .apply(root)
        .unwrap();
        let update = group_update("mychannel", root, &next).unwrap();

        let good = envelope_for(&client, "mychannel", &update, &[orderer_admin]);
        let ce = propose_config_update(&d.app, &good).unwrap();
        let config = ce.config.unwrap();
        assert_eq!(config.sequence, d.app.sequence.next().get());
        let group = config.channel_group.unwrap();
        assert_eq!(batch_size_of(&group).max_message_count, 3);
        let timeout = BatchTimeout::decode(
            group.groups[ORDERER_GROUP].values["BatchTimeout"]
                .value
                .as_ref(),
        )
        .unwrap();
        assert_eq!(timeout.timeout, "1h0m0s");

        let client_again = identity(&d, "client/msp", "Org1MSP");
        for wrong in [vec![org_admin], vec![client_again], vec![]] {
            let bad = envelope_for(&client, "mychannel", &update, &wrong);
            let err = propose_config_update(&d.app, &bad).unwrap_err().to_string();
            assert!(err.contains("not satisfied"), "{err}");
        }
    }

    /// Setting a value to what it already is gives no update at all.
    #[test]
    fn unchanged_config_is_refused() {
        let d = dev();
        let root = d.app.channel_group();
        let same = OrdererChanges {
            max_message_count: Some(batch_size_of(root).max_message_count),
            ..Default::default()
        }
        .apply(root)
        .unwrap();
        assert!(korder_channelconfig::diff_groups(root, &same).is_none());
        assert!(group_update("mychannel", root, &same).is_err());
    }

    /// The validator turns a creation request signed by an org admin into the new channel's config; an unknown consortium or a missing admin signature is refused.
    #[test]
    fn creation_update_passes_the_validator() {
        let d = dev();
        let client = identity(&d, "client/msp", "Org1MSP");
        let org_admin = identity(&d, "admin/msp", "Org1MSP");
        let u = creation_update("newchan", "SampleConsortium", &["Org1MSP".into()]);
        let env = envelope_for(&client, "newchan", &u, std::slice::from_ref(&org_admin));
        let ce = new_channel_config(&d.system, &env).unwrap();
        let config = ce.config.unwrap();
        assert_eq!(config.sequence, 1);
        let bundle = Bundle::new("newchan", config).unwrap();
        assert_eq!(bundle.consortium.as_deref(), Some("SampleConsortium"));
        assert_eq!(bundle.application_orgs.len(), 1);
        assert_eq!(bundle.application_orgs[0].name, "Org1MSP");
        assert_eq!(bundle.orderer, d.system.orderer);

        let unknown = creation_update("newchan", "NoSuchConsortium", &["Org1MSP".into()]);
        let env = envelope_for(&client, "newchan", &unknown, &[org_admin]);
        let err = new_channel_config(&d.system, &env).unwrap_err().to_string();
        assert!(err.contains("Unknown consortium name"), "{err}");

        let client_again = identity(&d, "client/msp", "Org1MSP");
        let env = envelope_for(&client, "newchan", &u, &[client_again]);
        let err = new_channel_config(&d.system, &env).unwrap_err().to_string();
        assert!(err.contains("not satisfied"), "{err}");
    }

    /// The consortium and its members are read from a system channel config; an unknown name is an error naming the known ones.
    #[test]
    fn consortium_members_from_system_config() {
        let d = dev();
        let (name, orgs) = consortium_members(&d.system.config, None).unwrap();
        assert_eq!(name, "SampleConsortium");
        assert_eq!(orgs, ["Org1MSP"]);
        let err = consortium_members(&d.system.config, Some("Other"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SampleConsortium"), "{err}");
        assert!(consortium_members(&d.app.config, None).is_err());
    }

    /// `--sign-msp` splits at the last colon and refuses a missing part.
    #[test]
    fn sign_msp_parses() {
        let s: SignMsp = "/a/b:c/msp:Org1MSP".parse().unwrap();
        assert_eq!(s.dir, PathBuf::from("/a/b:c/msp"));
        assert_eq!(s.msp_id, "Org1MSP");
        for bad in ["msp", ":Org1MSP", "msp:"] {
            assert!(bad.parse::<SignMsp>().is_err(), "{bad}");
        }
    }

    /// Each update file form is recognised, `sign` adds a verifiable signature and keeps the form (a bare update becomes a ConfigUpdateEnvelope), and garbage is refused.
    #[test]
    fn sign_keeps_the_file_form() {
        let d = dev();
        let client = identity(&d, "client/msp", "Org1MSP");
        let root = d.app.channel_group();
        let next = OrdererChanges {
            max_message_count: Some(9),
            ..Default::default()
        }
        .apply(root)
        .unwrap();
        let update = group_update("mychannel", root, &next).unwrap();
        let cue = ConfigUpdateEnvelope {
            config_update: update.encode_to_vec().into(),
            signatures: Vec::new(),
        };
        let forms = [
            (
                update_envelope(&client, "mychannel", &cue)
                    .unwrap()
                    .encode_to_vec(),
                UpdateFileForm::Envelope,
                UpdateFileForm::Envelope,
            ),
            (
                cue.encode_to_vec(),
                UpdateFileForm::ConfigUpdateEnvelope,
                UpdateFileForm::ConfigUpdateEnvelope,
            ),
            (
                update.encode_to_vec(),
                UpdateFileForm::ConfigUpdate,
                UpdateFileForm::ConfigUpdateEnvelope,
            ),
        ];
        for (bytes, form, after) in forms {
            let (got, channel, f) = read_update(&bytes).unwrap();
            assert_eq!((channel.as_str(), f), ("mychannel", form));
            assert_eq!(got.config_update, cue.config_update);
            let path = d.dir.path().join("update.pb");
            std::fs::write(&path, &bytes).unwrap();
            sign(SignArgs {
                msp: d.dir.path().join("orderer-admin/msp"),
                msp_id: "OrdererMSP".into(),
                file: path.clone(),
            })
            .unwrap();
            let (signed, _, f) = read_update(&std::fs::read(&path).unwrap()).unwrap();
            assert_eq!(f, after);
            assert_eq!(signed.signatures.len(), 1);
            assert_eq!(signed.config_update, cue.config_update);
            let sig = &signed.signatures[0];
            let header =
                korder_proto::common::SignatureHeader::decode(sig.signature_header.as_ref())
                    .unwrap();
            let id = Identity::from_serialized(&header.creator).unwrap();
            let mut data = sig.signature_header.to_vec();
            data.extend_from_slice(&signed.config_update);
            id.verify(&data, &sig.signature).unwrap();
        }
        assert!(read_update(b"not an update").is_none());
        assert!(read_update(&d.app.config.encode_to_vec()).is_none());
    }
}
