//! `korder fetch` and `korder broadcast`: the client side of AtomicBroadcast, and the
//! connection and envelope helpers `korder bench` shares.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use korder_ledger::block::{data_hash_of, last_config_index};
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{
    Block, ChannelHeader, Envelope, Header, HeaderType, Payload, SignatureHeader, Status,
};
use korder_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use korder_proto::orderer::{
    DeliverResponse, SeekInfo, SeekNewest, SeekOldest, SeekPosition, SeekSpecified,
    deliver_response, seek_info, seek_position,
};
use korder_proto::{Message, Timestamp};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::network::Network;

/// Largest gRPC message sent or accepted (Fabric's default, 100 MiB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 100 * 1024 * 1024;

/// Where to connect and who to be: from a data directory's `network.json`, each
/// value overridable by its own option.
#[derive(Args, Debug, Clone)]
pub struct ConnArgs {
    /// Data directory written by `korder init` (network.json gives the defaults of
    /// --orderer, --channel, --msp and --msp-id). Used by default when --orderer is
    /// not given.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Orderer address, host:port (may be repeated).
    #[arg(long = "orderer", value_name = "ADDR")]
    pub orderers: Vec<String>,
    /// Channel id.
    #[arg(long)]
    pub channel: Option<String>,
    /// MSP directory of the client's signing identity.
    #[arg(long, value_name = "DIR")]
    pub msp: Option<PathBuf>,
    /// MSP id of the client's signing identity.
    #[arg(long)]
    pub msp_id: Option<String>,
}

/// Resolved connection settings.
pub(crate) struct Conn {
    network: Option<(PathBuf, Network)>,
    args: ConnArgs,
}

impl ConnArgs {
    /// Loads network.json when a data directory is given (or when no orderer is given
    /// and the default data directory holds one).
    pub(crate) fn resolve(&self) -> anyhow::Result<Conn> {
        let dir = match &self.data_dir {
            Some(d) => Some(d.clone()),
            None if self.orderers.is_empty() => Some(crate::default_data_dir()),
            None => None,
        };
        let network = match dir {
            Some(d) => {
                let net = Network::load(&d).with_context(
                    || "no --orderer given, so the orderer comes from a data directory",
                )?;
                Some((d, net))
            }
            None => None,
        };
        Ok(Conn {
            network,
            args: self.clone(),
        })
    }
}

impl Conn {
    /// The data directory and its network description, when one was loaded.
    pub(crate) fn network(&self) -> Option<(&Path, &Network)> {
        self.network.as_ref().map(|(d, n)| (d.as_path(), n))
    }

    /// Orderer addresses: --orderer, else every node of the network.
    pub(crate) fn addresses(&self) -> anyhow::Result<Vec<String>> {
        if !self.args.orderers.is_empty() {
            return Ok(self.args.orderers.clone());
        }
        match &self.network {
            Some((_, net)) if !net.nodes.is_empty() => Ok(net.addresses()),
            _ => anyhow::bail!("no orderer address: give --orderer or --data-dir"),
        }
    }

    /// Channel id: --channel, else the network's application channel.
    pub(crate) fn channel(&self) -> anyhow::Result<String> {
        if let Some(c) = &self.args.channel {
            return Ok(c.clone());
        }
        match &self.network {
            Some((_, net)) => Ok(net.channel.clone()),
            None => anyhow::bail!("no channel: give --channel or --data-dir"),
        }
    }

    /// The client's signing identity: --msp/--msp-id, else the network's client MSP.
    pub(crate) fn signer(&self) -> anyhow::Result<SigningIdentity> {
        let dir = match (&self.args.msp, &self.network) {
            (Some(d), _) => d.clone(),
            (None, Some((data_dir, net))) => data_dir.join(&net.client_msp_dir),
            (None, None) => anyhow::bail!("no client MSP: give --msp and --msp-id, or --data-dir"),
        };
        let msp_id = match (&self.args.msp_id, &self.network) {
            (Some(id), _) => id.clone(),
            (None, Some((_, net))) => net.client_msp_id.clone(),
            (None, None) => anyhow::bail!("no MSP id: give --msp-id or --data-dir"),
        };
        SigningIdentity::load_msp_dir(&dir, &msp_id).with_context(|| {
            format!(
                "loading the signing identity of MSP {msp_id:?} from {}",
                dir.display()
            )
        })
    }
}

/// A tokio runtime for a client command.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Connects to one orderer (plain-text gRPC) within `timeout`.
pub(crate) async fn connect(
    address: &str,
    timeout: Duration,
) -> anyhow::Result<AtomicBroadcastClient<Channel>> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .with_context(|| format!("bad orderer address {address:?}"))?
        .connect_timeout(timeout)
        .tcp_nodelay(true);
    let channel = tokio::time::timeout(timeout, endpoint.connect())
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {address}: no answer within {timeout:?}"))?
        .with_context(|| format!("connecting to {address}"))?;
    Ok(AtomicBroadcastClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Connects to the first of `addresses` that answers.
pub(crate) async fn connect_any(
    addresses: &[String],
    timeout: Duration,
) -> anyhow::Result<(String, AtomicBroadcastClient<Channel>)> {
    let mut last = None;
    for a in addresses {
        match connect(a, timeout).await {
            Ok(c) => return Ok((a.clone(), c)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no orderer address")))
}

/// The current time as a protobuf timestamp.
pub(crate) fn now_timestamp() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Fabric's transaction id: hex SHA-256 of nonce ‖ creator.
pub(crate) fn compute_tx_id(nonce: &[u8], creator: &[u8]) -> String {
    hex::encode(data_hash_of(&[
        Bytes::copy_from_slice(nonce),
        Bytes::copy_from_slice(creator),
    ]))
}

/// A signed envelope of `header_type` on `channel` carrying `data`. With `with_tx_id`
/// the channel header gets Fabric's tx id for the fresh nonce. Returns the envelope
/// and its tx id (empty without `with_tx_id`).
pub(crate) fn signed_envelope(
    signer: &SigningIdentity,
    header_type: HeaderType,
    channel: &str,
    data: Bytes,
    with_tx_id: bool,
) -> anyhow::Result<(Envelope, String)> {
    let nonce = signer.new_nonce().context("drawing a nonce")?;
    let creator = signer.serialized();
    let tx_id = if with_tx_id {
        compute_tx_id(&nonce, &creator)
    } else {
        String::new()
    };
    let channel_header = ChannelHeader {
        r#type: header_type as i32,
        timestamp: Some(now_timestamp()),
        channel_id: channel.to_owned(),
        tx_id: tx_id.clone(),
        ..Default::default()
    };
    let signature_header = SignatureHeader {
        creator,
        nonce: Bytes::copy_from_slice(&nonce),
    };
    let payload = Payload {
        header: Some(Header {
            channel_header: channel_header.encode_to_vec().into(),
            signature_header: signature_header.encode_to_vec().into(),
        }),
        data,
    };
    let env = signer
        .sign_envelope(payload.encode_to_vec().into())
        .context("signing an envelope")?;
    Ok((env, tx_id))
}

/// Seek positions.
pub(crate) fn newest() -> SeekPosition {
    SeekPosition {
        r#type: Some(seek_position::Type::Newest(SeekNewest {})),
    }
}

pub(crate) fn oldest() -> SeekPosition {
    SeekPosition {
        r#type: Some(seek_position::Type::Oldest(SeekOldest {})),
    }
}

pub(crate) fn specified(number: u64) -> SeekPosition {
    SeekPosition {
        r#type: Some(seek_position::Type::Specified(SeekSpecified { number })),
    }
}

/// A signed DELIVER_SEEK_INFO envelope asking for `start..=stop`, blocking until ready.
pub(crate) fn seek_envelope(
    signer: &SigningIdentity,
    channel: &str,
    start: SeekPosition,
    stop: SeekPosition,
    best_effort: bool,
) -> anyhow::Result<Envelope> {
    let info = SeekInfo {
        start: Some(start),
        stop: Some(stop),
        behavior: seek_info::SeekBehavior::BlockUntilReady as i32,
        error_response: if best_effort {
            seek_info::SeekErrorResponse::BestEffort as i32
        } else {
            seek_info::SeekErrorResponse::Strict as i32
        },
    };
    let (env, _) = signed_envelope(
        signer,
        HeaderType::DeliverSeekInfo,
        channel,
        info.encode_to_vec().into(),
        false,
    )?;
    Ok(env)
}

/// Name of a status code as Fabric spells it.
pub(crate) fn status_name(code: i32) -> String {
    Status::try_from(code).map_or_else(|_| format!("STATUS_{code}"), |s| s.as_str_name().into())
}

/// The responses of a bidirectional stream whose call was started in the
/// background. The client sends its first request before it has the response
/// headers: Go's gRPC server (Fabric's orderer) sends its headers only with its
/// first response, so waiting for them first would wait forever.
pub(crate) struct Responses<T> {
    state: ResponsesState<T>,
    what: &'static str,
}

enum ResponsesState<T> {
    Opening(tokio::task::JoinHandle<Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>),
    Open(Box<tonic::Streaming<T>>),
}

impl<T: Send + 'static> Responses<T> {
    /// Starts `call` (which opens the stream) in the background; `what` names the
    /// stream in errors.
    pub(crate) fn start<F>(what: &'static str, call: F) -> Self
    where
        F: std::future::Future<
                Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
            > + Send
            + 'static,
    {
        Responses {
            state: ResponsesState::Opening(tokio::spawn(call)),
            what,
        }
    }

    /// The next response, waiting until `deadline`; `None` when the stream ends.
    pub(crate) async fn message_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<Option<T>> {
        let what = self.what;
        if let ResponsesState::Opening(call) = &mut self.state {
            let opened = tokio::time::timeout_at(deadline, call)
                .await
                .map_err(|_| {
                    anyhow::anyhow!("opening a {what} stream: no answer before the deadline")
                })?
                .map_err(|e| anyhow::anyhow!("opening a {what} stream: {e}"))?
                .with_context(|| format!("opening a {what} stream"))?;
            self.state = ResponsesState::Open(Box::new(opened.into_inner()));
        }
        let ResponsesState::Open(stream) = &mut self.state else {
            unreachable!("the stream was opened above")
        };
        tokio::time::timeout_at(deadline, stream.message())
            .await
            .map_err(|_| anyhow::anyhow!("{what}: no response before the deadline"))?
            .with_context(|| format!("{what} stream failed"))
    }
}

impl<T> Drop for Responses<T> {
    fn drop(&mut self) {
        if let ResponsesState::Opening(call) = &self.state {
            call.abort();
        }
    }
}

/// Opens a Broadcast stream: requests go in through the returned sender (buffer
/// `buffer`), responses come back; nothing waits for the server before the first
/// request is sent.
pub(crate) fn open_broadcast(
    client: &AtomicBroadcastClient<Channel>,
    buffer: usize,
) -> (
    mpsc::Sender<Envelope>,
    Responses<korder_proto::orderer::BroadcastResponse>,
) {
    let (tx, rx) = mpsc::channel(buffer);
    let mut client = client.clone();
    let responses = Responses::start("Broadcast", async move {
        client.broadcast(ReceiverStream::new(rx)).await
    });
    (tx, responses)
}

/// One Deliver stream: requests go in through a channel, responses come back.
pub(crate) struct DeliverSession {
    requests: mpsc::Sender<Envelope>,
    responses: Responses<DeliverResponse>,
    timeout: Duration,
}

impl DeliverSession {
    /// Opens the stream without waiting for the server: its answer (headers
    /// included) is awaited with the first response.
    pub(crate) async fn open(
        client: &mut AtomicBroadcastClient<Channel>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(4);
        let mut client = client.clone();
        let responses = Responses::start("Deliver", async move {
            client.deliver(ReceiverStream::new(rx)).await
        });
        Ok(Self {
            requests: tx,
            responses,
            timeout,
        })
    }

    pub(crate) async fn send(&self, env: Envelope) -> anyhow::Result<()> {
        self.requests
            .send(env)
            .await
            .map_err(|_| anyhow::anyhow!("the Deliver stream closed"))
    }

    /// The next response; `None` when the stream ends.
    pub(crate) async fn next(&mut self) -> anyhow::Result<Option<deliver_response::Type>> {
        self.next_until(tokio::time::Instant::now() + self.timeout)
            .await
    }

    /// The next response, waiting until `deadline`.
    pub(crate) async fn next_until(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<Option<deliver_response::Type>> {
        let msg = self.responses.message_until(deadline).await?;
        Ok(msg.and_then(|m| m.r#type))
    }

    /// Asks for exactly one block and reads it and the closing status.
    pub(crate) async fn fetch_one(
        &mut self,
        signer: &SigningIdentity,
        channel: &str,
        position: SeekPosition,
        best_effort: bool,
    ) -> anyhow::Result<Block> {
        self.send(seek_envelope(
            signer,
            channel,
            position,
            position,
            best_effort,
        )?)
        .await?;
        let block = match self.next().await? {
            Some(deliver_response::Type::Block(b)) => b,
            Some(deliver_response::Type::Status(s)) => anyhow::bail!(
                "the orderer answered {} instead of a block of channel {channel}",
                status_name(s)
            ),
            None => anyhow::bail!("the Deliver stream ended before a block arrived"),
        };
        match self.next().await? {
            Some(deliver_response::Type::Status(s)) if s == Status::Success as i32 => Ok(block),
            Some(deliver_response::Type::Status(s)) => anyhow::bail!(
                "the orderer closed the request with {} after block {}",
                status_name(s),
                block.header.as_ref().map_or(0, |h| h.number)
            ),
            Some(deliver_response::Type::Block(_)) => {
                anyhow::bail!("the orderer sent more than the one block asked for")
            }
            None => anyhow::bail!("the Deliver stream ended before its status"),
        }
    }
}

/// What `korder fetch` fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchTarget {
    Oldest,
    Newest,
    Config,
    Number(u64),
}

impl FromStr for FetchTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "oldest" => Ok(Self::Oldest),
            "newest" => Ok(Self::Newest),
            "config" => Ok(Self::Config),
            n => n
                .parse()
                .map(Self::Number)
                .map_err(|_| format!("{s:?} is not oldest, newest, config or a block number")),
        }
    }
}

impl std::fmt::Display for FetchTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Oldest => f.write_str("oldest"),
            Self::Newest => f.write_str("newest"),
            Self::Config => f.write_str("config"),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

/// Options of `korder fetch`.
#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// `oldest`, `newest`, `config` (the last config block) or a block number.
    pub target: FetchTarget,
    /// Output file (default `<channel>_<target>.block` in the current directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Ask the orderer to serve blocks even when its channel is in error.
    #[arg(long)]
    pub best_effort: bool,
    /// Give up after this many seconds without an answer.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
}

/// `korder fetch`.
pub fn fetch(args: FetchArgs) -> anyhow::Result<ExitCode> {
    let conn = args.conn.resolve()?;
    let addresses = conn.addresses()?;
    let channel = conn.channel()?;
    let signer = conn.signer()?;
    let timeout = Duration::from_secs(args.timeout_s);
    let block = runtime()?.block_on(async {
        let (address, mut client) = connect_any(&addresses, timeout).await?;
        let mut session = DeliverSession::open(&mut client, timeout)
            .await
            .with_context(|| format!("orderer {address}"))?;
        let position = match args.target {
            FetchTarget::Oldest => oldest(),
            FetchTarget::Newest | FetchTarget::Config => newest(),
            FetchTarget::Number(n) => specified(n),
        };
        let block = session
            .fetch_one(&signer, &channel, position, args.best_effort)
            .await
            .with_context(|| format!("fetching {} of {channel} from {address}", args.target))?;
        if args.target != FetchTarget::Config {
            return anyhow::Ok(block);
        }
        let number = block.header.as_ref().map_or(0, |h| h.number);
        let last_config = last_config_index(&block)
            .with_context(|| format!("reading the last config index of block {number}"))?
            .get();
        if last_config == number {
            return Ok(block);
        }
        session
            .fetch_one(&signer, &channel, specified(last_config), args.best_effort)
            .await
            .with_context(|| format!("fetching config block {last_config} of {channel}"))
    })?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{channel}_{}.block", args.target)));
    write_block(&out, &block)?;
    println!(
        "{}: block {} of channel {channel}",
        out.display(),
        block.header.as_ref().map_or(0, |h| h.number)
    );
    Ok(ExitCode::SUCCESS)
}

fn write_block(path: &Path, block: &Block) -> anyhow::Result<()> {
    std::fs::write(path, block.encode_to_vec())
        .with_context(|| format!("writing {}", path.display()))
}

/// Options of `korder broadcast`.
#[derive(Args, Debug)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Files, each holding one serialized common.Envelope, sent in order.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Give up after this many seconds without an answer.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
}

/// `korder broadcast`: sends each file's envelope and prints its status; stops at the
/// first status other than SUCCESS (exit status 1).
pub fn broadcast(args: BroadcastArgs) -> anyhow::Result<ExitCode> {
    let conn = args.conn.resolve()?;
    let addresses = conn.addresses()?;
    let mut envelopes = Vec::with_capacity(args.files.len());
    for f in &args.files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let env = Envelope::decode(bytes.as_slice()).with_context(|| {
            format!(
                "{}: {} bytes that do not decode as a common.Envelope",
                f.display(),
                bytes.len()
            )
        })?;
        if env.payload.is_empty() {
            anyhow::bail!("{}: the envelope has an empty payload", f.display());
        }
        envelopes.push(env);
    }
    let timeout = Duration::from_secs(args.timeout_s);
    runtime()?.block_on(async {
        let (address, client) = connect_any(&addresses, timeout).await?;
        let (tx, mut responses) = open_broadcast(&client, 1);
        for (file, env) in args.files.iter().zip(envelopes) {
            tx.send(env)
                .await
                .map_err(|_| anyhow::anyhow!("the Broadcast stream to {address} closed"))?;
            let resp = responses
                .message_until(tokio::time::Instant::now() + timeout)
                .await
                .with_context(|| format!("{}: orderer {address}", file.display()))?
                .ok_or_else(|| anyhow::anyhow!("{}: the Broadcast stream ended", file.display()))?;
            let name = status_name(resp.status);
            if resp.info.is_empty() {
                println!("{}: {name}", file.display());
            } else {
                println!("{}: {name} ({})", file.display(), resp.info);
            }
            if resp.status != Status::Success as i32 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use korder_msp::Identity;
    use korder_msp::devpki::{DevPki, NodeRole};

    use super::*;

    fn signer() -> SigningIdentity {
        let pki = DevPki::generate("ClientMSP", "client.example.com").unwrap();
        let c = pki.issue("user1", NodeRole::Client).unwrap();
        SigningIdentity::from_pem("ClientMSP", c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap()
    }

    /// Fetch targets parse from their names and numbers, print back the same, and refuse anything else.
    #[test]
    fn fetch_target_parses() {
        for (s, t) in [
            ("oldest", FetchTarget::Oldest),
            ("newest", FetchTarget::Newest),
            ("config", FetchTarget::Config),
            ("42", FetchTarget::Number(42)),
        ] {
            assert_eq!(s.parse::<FetchTarget>().unwrap(), t);
            assert_eq!(t.to_string(), s);
        }
        assert!("latest".parse::<FetchTarget>().is_err());
        assert!("-1".parse::<FetchTarget>().is_err());
    }

    /// A signed envelope carries the channel header asked for, a tx id bound to its nonce and creator, and a signature that verifies.
    #[test]
    fn signed_envelope_is_well_formed() {
        let s = signer();
        let (env, tx_id) = signed_envelope(
            &s,
            HeaderType::EndorserTransaction,
            "mychannel",
            Bytes::from_static(b"data"),
            true,
        )
        .unwrap();
        let payload = Payload::decode(env.payload.clone()).unwrap();
        let header = payload.header.unwrap();
        let ch = ChannelHeader::decode(header.channel_header).unwrap();
        let sh = SignatureHeader::decode(header.signature_header).unwrap();
        assert_eq!(ch.r#type, HeaderType::EndorserTransaction as i32);
        assert_eq!(ch.channel_id, "mychannel");
        assert!(ch.timestamp.is_some());
        assert_eq!(ch.tx_id, tx_id);
        assert_eq!(tx_id, compute_tx_id(&sh.nonce, &sh.creator));
        assert_eq!(tx_id.len(), 64);
        assert_eq!(sh.creator, s.serialized());
        assert_eq!(payload.data, Bytes::from_static(b"data"));
        let id = Identity::from_serialized(&sh.creator).unwrap();
        id.verify(&env.payload, &env.signature).unwrap();

        let (_, other) = signed_envelope(
            &s,
            HeaderType::EndorserTransaction,
            "mychannel",
            Bytes::new(),
            true,
        )
        .unwrap();
        assert_ne!(other, tx_id, "fresh nonce, fresh tx id");
    }

    /// A seek envelope is a DELIVER_SEEK_INFO on the channel with the positions, behaviour and error response asked for.
    #[test]
    fn seek_envelope_is_well_formed() {
        let s = signer();
        let env = seek_envelope(&s, "ch", specified(7), specified(9), true).unwrap();
        let payload = Payload::decode(env.payload).unwrap();
        let ch = ChannelHeader::decode(payload.header.unwrap().channel_header).unwrap();
        assert_eq!(ch.r#type, HeaderType::DeliverSeekInfo as i32);
        assert_eq!(ch.channel_id, "ch");
        let info = SeekInfo::decode(payload.data).unwrap();
        assert_eq!(info.start, Some(specified(7)));
        assert_eq!(info.stop, Some(specified(9)));
        assert_eq!(
            info.behavior,
            seek_info::SeekBehavior::BlockUntilReady as i32
        );
        assert_eq!(
            info.error_response,
            seek_info::SeekErrorResponse::BestEffort as i32
        );
    }
}
