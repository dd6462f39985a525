//! Shared harness for end-to-end tests: a korder node as a child process, and a
//! small gRPC client that signs envelopes with the dev network's client identity.

#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // process tests poll a child process with short sleeps

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_channelconfig::genesis::signed_by_role;
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{
    Block, BlockMetadataIndex, ChannelHeader, ConfigEnvelope, ConfigGroup, ConfigPolicy,
    ConfigUpdate, Envelope, Header, HeaderType, Metadata, Payload, Status, msp_role,
};
use korder_proto::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use korder_proto::orderer::{
    DeliverResponse, SeekInfo, SeekNewest, SeekPosition, SeekSpecified, deliver_response,
    seek_position,
};
use korder_proto::{Message, Timestamp};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub const KORDER: &str = env!("CARGO_BIN_EXE_korder");
pub const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// A free TCP port on loopback (best effort: another process may take it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The project's Kafka script (`scripts/kafka`), or `KORDER_KAFKA_SCRIPT`.
pub fn kafka_script() -> PathBuf {
    std::env::var_os("KORDER_KAFKA_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka"))
}

/// Runs `korder` with `args`, panicking with its output if it fails.
pub fn korder(args: &[&str]) -> std::process::Output {
    let out = Command::new(KORDER)
        .args(args)
        .output()
        .expect("korder runs");
    assert!(
        out.status.success(),
        "korder {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A dev network in a temporary directory, and its node process when running.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
}

impl Net {
    /// `korder init` with a free port and extra init options.
    pub fn init(extra: &[&str]) -> Net {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let port_s = port.to_string();
        let mut args = vec![
            "init",
            "--data-dir",
            dir.path().to_str().expect("utf-8 path"),
            "--port",
            &port_s,
            "--ops-port",
            "0",
        ];
        args.extend_from_slice(extra);
        korder(&args);
        Net {
            dir,
            port,
            child: None,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the node and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("node.log"))
            .expect("node log");
        let child = Command::new(KORDER)
            .args(["start", "--data-dir"])
            .arg(self.dir.path())
            .env("KORDER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("korder start");
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_LIMIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("korder start exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "node did not listen in time; log:\n{}",
                self.log()
            );
            std::thread::yield_now();
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let status = c.wait().expect("wait");
            assert!(
                status.success(),
                "korder exited with {status}; log:\n{}",
                self.log()
            );
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// The dev network's client identity.
    pub fn client(&self) -> SigningIdentity {
        SigningIdentity::load_msp_dir(self.dir.path().join("client/msp"), "Org1MSP")
            .expect("client MSP loads")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.kill();
    }
}

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    }
}

/// A signed envelope of `kind` for `channel` with `tx_id` and `data`.
pub fn envelope(
    signer: &SigningIdentity,
    channel: &str,
    kind: HeaderType,
    tx_id: &str,
    data: Bytes,
) -> Envelope {
    let ch = ChannelHeader {
        r#type: kind as i32,
        channel_id: channel.into(),
        tx_id: tx_id.into(),
        timestamp: Some(now()),
        ..Default::default()
    };
    let payload = Payload {
        header: Some(Header {
            channel_header: ch.encode_to_vec().into(),
            signature_header: signer.new_signature_header().expect("signature header"),
        }),
        data,
    };
    signer
        .sign_envelope(payload.encode_to_vec().into())
        .expect("signs")
}

/// The tx id in an envelope's channel header.
pub fn tx_id_of(envelope_bytes: &[u8]) -> Option<String> {
    let env = Envelope::decode(envelope_bytes).ok()?;
    let payload = Payload::decode(env.payload.as_ref()).ok()?;
    let ch = ChannelHeader::decode(payload.header?.channel_header.as_ref()).ok()?;
    Some(ch.tx_id)
}

pub async fn connect(address: &str) -> AtomicBroadcastClient<Channel> {
    AtomicBroadcastClient::connect(format!("http://{address}"))
        .await
        .expect("connects")
        .max_decoding_message_size(100 << 20)
        .max_encoding_message_size(100 << 20)
}

/// Sends `envelopes` on one Broadcast stream and returns the statuses received.
pub async fn broadcast_all(address: &str, envelopes: Vec<Envelope>) -> Vec<(i32, String)> {
    broadcast_on(connect(address).await, envelopes).await
}

/// Sends `envelopes` on one Broadcast stream of `client`; the statuses received
/// until the stream ends.
async fn broadcast_on(
    mut client: AtomicBroadcastClient<Channel>,
    envelopes: Vec<Envelope>,
) -> Vec<(i32, String)> {
    let (tx, rx) = mpsc::channel(64);
    let sender = tokio::spawn(async move {
        for e in envelopes {
            if tx.send(e).await.is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    if let Ok(resp) = client.broadcast(ReceiverStream::new(rx)).await {
        let mut stream = resp.into_inner();
        while let Ok(Some(r)) = stream.message().await {
            out.push((r.status, r.info));
        }
    }
    sender.abort();
    out
}

/// A signed seek request for `channel` from `start` to `stop`.
pub fn seek(
    signer: &SigningIdentity,
    channel: &str,
    start: seek_position::Type,
    stop: seek_position::Type,
    behavior: i32,
) -> Envelope {
    let info = SeekInfo {
        start: Some(SeekPosition {
            r#type: Some(start),
        }),
        stop: Some(SeekPosition { r#type: Some(stop) }),
        behavior,
        error_response: 0,
    };
    envelope(
        signer,
        channel,
        HeaderType::DeliverSeekInfo,
        "",
        info.encode_to_vec().into(),
    )
}

/// Runs one Deliver request; returns the blocks and the final status (`None` if
/// the stream ended without one).
pub async fn deliver(address: &str, request: Envelope) -> (Vec<Block>, Option<i32>) {
    deliver_on(connect(address).await, request)
        .await
        .expect("the Deliver stream works")
}

/// One Deliver request on `client`; `None` when the stream breaks.
async fn deliver_on(
    mut client: AtomicBroadcastClient<Channel>,
    request: Envelope,
) -> Option<(Vec<Block>, Option<i32>)> {
    let (tx, rx) = mpsc::channel(1);
    tx.send(request).await.ok()?;
    let mut stream = client
        .deliver(ReceiverStream::new(rx))
        .await
        .ok()?
        .into_inner();
    let mut blocks = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(DeliverResponse { r#type })) => match r#type {
                Some(deliver_response::Type::Block(b)) => blocks.push(b),
                Some(deliver_response::Type::Status(s)) => return Some((blocks, Some(s))),
                None => {}
            },
            Ok(None) => return Some((blocks, None)),
            Err(_) => return None,
        }
    }
}

/// Every block of `channel` from 0 to the current newest. A node that has just
/// started answers SERVICE_UNAVAILABLE until the channel's chain has opened its
/// log, as Fabric's does: asked again for up to 10 s.
pub async fn all_blocks(address: &str, signer: &SigningIdentity, channel: &str) -> Vec<Block> {
    let newest_request = || {
        seek(
            signer,
            channel,
            seek_position::Type::Newest(SeekNewest {}),
            seek_position::Type::Newest(SeekNewest {}),
            0,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut newest, mut status) = deliver(address, newest_request()).await;
    while status == Some(Status::ServiceUnavailable as i32) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        (newest, status) = deliver(address, newest_request()).await;
    }
    assert_eq!(status, Some(Status::Success as i32));
    let top = newest[0].header.as_ref().map_or(0, |h| h.number);
    let (blocks, status) = deliver(
        address,
        seek(
            signer,
            channel,
            seek_position::Type::Specified(SeekSpecified { number: 0 }),
            seek_position::Type::Specified(SeekSpecified { number: top }),
            0,
        ),
    )
    .await;
    assert_eq!(status, Some(Status::Success as i32));
    blocks
}

pub fn target_dir() -> PathBuf {
    PathBuf::from(KORDER)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Connects to `address`, or `None` when nothing answers there.
pub async fn try_connect(address: &str) -> Option<AtomicBroadcastClient<Channel>> {
    AtomicBroadcastClient::connect(format!("http://{address}"))
        .await
        .ok()
        .map(|c| {
            c.max_decoding_message_size(100 << 20)
                .max_encoding_message_size(100 << 20)
        })
}

/// Like [`broadcast_all`], but a node that is down gives an empty answer instead of
/// a panic (for load that runs while nodes are killed).
pub async fn try_broadcast_all(address: &str, envelopes: Vec<Envelope>) -> Vec<(i32, String)> {
    match try_connect(address).await {
        Some(client) => broadcast_on(client, envelopes).await,
        None => Vec::new(),
    }
}

/// Like [`deliver`], but `None` when the node is down or the stream breaks.
pub async fn try_deliver(address: &str, request: Envelope) -> Option<(Vec<Block>, Option<i32>)> {
    deliver_on(try_connect(address).await?, request).await
}

/// Every block of `channel` from 0 to the current newest, or `None` while the node
/// is down or its chain does not serve Deliver yet.
pub async fn try_all_blocks(
    address: &str,
    signer: &SigningIdentity,
    channel: &str,
) -> Option<Vec<Block>> {
    let (newest, status) = try_deliver(
        address,
        seek(
            signer,
            channel,
            seek_position::Type::Newest(SeekNewest {}),
            seek_position::Type::Newest(SeekNewest {}),
            0,
        ),
    )
    .await?;
    if status != Some(Status::Success as i32) {
        return None;
    }
    let top = newest.first()?.header.as_ref().map_or(0, |h| h.number);
    let (blocks, status) = try_deliver(
        address,
        seek(
            signer,
            channel,
            seek_position::Type::Specified(SeekSpecified { number: 0 }),
            seek_position::Type::Specified(SeekSpecified { number: top }),
            0,
        ),
    )
    .await?;
    (status == Some(Status::Success as i32) && blocks.len() as u64 == top + 1).then_some(blocks)
}

/// A name no other test run uses (Kafka topics are named after channels, and test
/// runs share brokers): `prefix-<pid>-<nanos>-<counter>`, a valid channel id.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `GET path` on `address` over plain HTTP/1.1: the status code and the body.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(address).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// What a node logs once its gRPC listener and operations endpoint are up.
const LISTENING: &str = "korder is listening";

/// A dev network of several nodes (`korder init --nodes N`), each node a process
/// started with `--config DIR/nodeK/orderer.yaml`. Nodes are numbered from 1.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// Broadcast port of node 1; node K listens on `port + 10*(K-1)`.
    pub port: u16,
    pub channel: String,
    pub system_channel: String,
    children: Vec<Option<Child>>,
}

/// A Broadcast port P such that P + 10*k is free for every node k (best effort).
fn free_port_series(nodes: usize) -> u16 {
    for _ in 0..1000 {
        let p = free_port();
        let ok = (0..nodes).all(|k| {
            u16::try_from(usize::from(p) + 10 * k)
                .ok()
                .is_some_and(|q| TcpListener::bind(("127.0.0.1", q)).is_ok())
        });
        if ok {
            return p;
        }
    }
    panic!("found no series of {nodes} free ports");
}

impl Cluster {
    /// `korder init --nodes N --kafka BROKERS` with unique channel names (derived
    /// from `name`), free ports and extra init options.
    pub fn init(name: &str, nodes: usize, brokers: &str, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port_series(nodes);
        let channel = unique_name(&format!("{name}-app"));
        let system_channel = unique_name(&format!("{name}-sys"));
        let port_s = port.to_string();
        let nodes_s = nodes.to_string();
        let mut args = vec![
            "init",
            "--data-dir",
            dir.path().to_str().expect("utf-8 path"),
            "--kafka",
            brokers,
            "--nodes",
            &nodes_s,
            "--port",
            &port_s,
            "--ops-port",
            "0",
            "--channel",
            &channel,
            "--system-channel",
            &system_channel,
        ];
        args.extend_from_slice(extra);
        korder(&args);
        Cluster {
            dir,
            port,
            channel,
            system_channel,
            children: (0..nodes).map(|_| None).collect(),
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.children.len()
    }

    /// Node `k`'s orderer.yaml (a one-node network keeps it at the top).
    pub fn config(&self, k: usize) -> PathBuf {
        if self.len() == 1 {
            self.dir.path().join("orderer.yaml")
        } else {
            self.dir.path().join(format!("node{k}/orderer.yaml"))
        }
    }

    /// Node `k`'s Broadcast/Deliver address.
    pub fn address(&self, k: usize) -> String {
        format!("127.0.0.1:{}", usize::from(self.port) + 10 * (k - 1))
    }

    /// Every node's address, node 1 first.
    pub fn addresses(&self) -> Vec<String> {
        (1..=self.len()).map(|k| self.address(k)).collect()
    }

    fn log_path(&self, k: usize) -> PathBuf {
        self.dir.path().join(format!("node{k}.log"))
    }

    /// Node `k`'s log (every run of it, appended).
    pub fn log(&self, k: usize) -> String {
        std::fs::read_to_string(self.log_path(k)).unwrap_or_default()
    }

    /// The last `lines` lines of every node's log, for failure messages.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for k in 1..=self.len() {
            let log = self.log(k);
            let all: Vec<&str> = log.lines().collect();
            let from = all.len().saturating_sub(lines);
            out.push_str(&format!("---- node{k} ----\n{}\n", all[from..].join("\n")));
        }
        out
    }

    /// Starts node `k` and waits until it accepts connections.
    pub fn start(&mut self, k: usize) {
        self.start_with_env(k, &[]);
    }

    /// Starts node `k` with extra environment variables (e.g. `ORDERER_*`
    /// overrides) and waits until it accepts connections and has announced its
    /// operations endpoint (both come before its "korder is listening" line).
    pub fn start_with_env(&mut self, k: usize, env: &[(&str, &str)]) {
        assert!(self.children[k - 1].is_none(), "node{k} already running");
        let announced = |log: &str| log.matches(LISTENING).count();
        let before = announced(&self.log(k));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(k))
            .expect("node log");
        let child = Command::new(KORDER)
            .arg("start")
            .arg("--config")
            .arg(self.config(k))
            .env("KORDER_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("korder start");
        self.children[k - 1] = Some(child);
        let deadline = Instant::now() + STARTUP_LIMIT;
        while announced(&self.log(k)) <= before {
            if let Some(status) = self.try_wait(k) {
                panic!("node{k} exited with {status}; log:\n{}", self.log(k));
            }
            assert!(
                Instant::now() < deadline,
                "node{k} did not listen in time; log:\n{}",
                self.log(k)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Node `k`'s `/healthz`: status code and body.
    pub fn healthz(&self, k: usize) -> (u16, String) {
        let ops = self
            .ops_address(k)
            .expect("the operations endpoint is in the log");
        http_get(&ops, "/healthz").expect("/healthz answers")
    }

    /// Starts node `k` and waits until every chain of it runs (`/healthz` is 200).
    pub async fn start_ready(&mut self, k: usize) {
        self.start_ready_with_env(k, &[]).await;
    }

    /// [`Cluster::start_ready`] with extra environment variables.
    pub async fn start_ready_with_env(&mut self, k: usize, env: &[(&str, &str)]) {
        self.start_with_env(k, env);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (code, body) = self.healthz(k);
            if code == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node{k}'s chains did not start: {body}\n{}",
                self.logs_tail(30)
            );
            // Poll interval of a bounded wait for a condition.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The exit status of node `k` if its process has ended.
    pub fn try_wait(&mut self, k: usize) -> Option<std::process::ExitStatus> {
        self.children[k - 1]
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// True while node `k`'s process runs.
    /// Node `k`'s process id while it runs.
    pub fn pid(&self, k: usize) -> Option<u32> {
        self.children[k - 1].as_ref().map(Child::id)
    }

    pub fn is_running(&mut self, k: usize) -> bool {
        self.children[k - 1].is_some() && self.try_wait(k).is_none()
    }

    /// SIGKILL node `k`.
    pub fn kill(&mut self, k: usize) {
        if let Some(mut c) = self.children[k - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM node `k`, then waits for a clean exit.
    pub fn stop(&mut self, k: usize) {
        if let Some(mut c) = self.children[k - 1].take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let status = c.wait().expect("wait");
            assert!(
                status.success(),
                "node{k} exited with {status}; log:\n{}",
                self.log(k)
            );
        }
    }

    /// Stops every running node cleanly.
    pub fn stop_all(&mut self) {
        for k in 1..=self.len() {
            self.stop(k);
        }
    }

    /// Node `k`'s operations endpoint, as its log announced it last.
    pub fn ops_address(&self, k: usize) -> Option<String> {
        let log = self.log(k);
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("operations endpoint"))?;
        let rest = line.split("address=").nth(1)?;
        Some(rest.split_whitespace().next()?.to_string())
    }

    /// The dev network's client identity.
    pub fn client(&self) -> SigningIdentity {
        SigningIdentity::load_msp_dir(self.dir.path().join("client/msp"), "Org1MSP")
            .expect("client MSP loads")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for k in 1..=self.len() {
            self.kill(k);
        }
    }
}

/// Each tx id's number of occurrences in `blocks`, the genesis block left out.
pub fn tx_counts(blocks: &[Block]) -> BTreeMap<String, u32> {
    let mut seen = BTreeMap::new();
    for b in blocks
        .iter()
        .filter(|b| b.header.as_ref().unwrap().number > 0)
    {
        for d in &b.data.as_ref().unwrap().data {
            if let Some(id) = tx_id_of(d)
                && !id.is_empty()
            {
                *seen.entry(id).or_default() += 1;
            }
        }
    }
    seen
}

/// Asserts that two nodes' chains are the same block by block: header, data and
/// every metadata slot, except the signatures in the SIGNATURES slot (each node
/// signs with its own key; the signed value must still be the same).
pub fn assert_same_chain(a: &[Block], b: &[Block], who: &str) {
    assert_eq!(a.len(), b.len(), "{who}: heights differ");
    let sig = BlockMetadataIndex::Signatures as usize;
    for (x, y) in a.iter().zip(b) {
        let n = x.header.as_ref().unwrap().number;
        assert_eq!(x.header, y.header, "{who}: header of block {n} differs");
        assert_eq!(x.data, y.data, "{who}: data of block {n} differs");
        let xm = &x.metadata.as_ref().unwrap().metadata;
        let ym = &y.metadata.as_ref().unwrap().metadata;
        assert_eq!(xm.len(), ym.len(), "{who}: block {n} metadata slot count");
        for (i, (xs, ys)) in xm.iter().zip(ym).enumerate() {
            if i == sig {
                let xv = Metadata::decode(xs.as_ref()).unwrap();
                let yv = Metadata::decode(ys.as_ref()).unwrap();
                assert_eq!(
                    xv.value, yv.value,
                    "{who}: block {n} SIGNATURES value differs"
                );
                assert!(
                    n == 0 || (!xv.signatures.is_empty() && !yv.signatures.is_empty()),
                    "{who}: block {n} is not signed"
                );
            } else {
                assert_eq!(xs, ys, "{who}: block {n} metadata slot {i} differs");
            }
        }
    }
}

/// A ConfigUpdate for `channel`, built from its genesis block, that restricts
/// Org1MSP's `policy` (Writers, Readers, …) to `OR('Org1MSP.admin')`.
pub fn org1_policy_admins_only(genesis: &[u8], channel: &str, policy: &str) -> ConfigUpdate {
    let block = Block::decode(genesis).unwrap();
    let env = Envelope::decode(block.data.unwrap().data[0].as_ref()).unwrap();
    let payload = Payload::decode(env.payload.as_ref()).unwrap();
    let config = ConfigEnvelope::decode(payload.data.as_ref())
        .unwrap()
        .config
        .unwrap();
    let root = config.channel_group.unwrap();
    let app = &root.groups["Application"];
    let org = &app.groups["Org1MSP"];
    let old = &org.policies[policy];
    let shell = |g: &ConfigGroup| ConfigGroup {
        version: g.version,
        ..Default::default()
    };
    let nest = |org_group: ConfigGroup| {
        let mut a = shell(app);
        a.groups.insert("Org1MSP".into(), org_group);
        let mut r = shell(&root);
        r.groups.insert("Application".into(), a);
        r
    };
    let mut written = shell(org);
    written.policies.insert(
        policy.into(),
        ConfigPolicy {
            version: old.version + 1,
            policy: Some(signed_by_role("Org1MSP", msp_role::MspRoleType::Admin)),
            mod_policy: old.mod_policy.clone(),
        },
    );
    ConfigUpdate {
        channel_id: channel.into(),
        read_set: Some(nest(shell(org))),
        write_set: Some(nest(written)),
        isolated_data: Default::default(),
    }
}

/// Whether an envelope is a CONFIG transaction.
pub fn is_config(envelope_bytes: &[u8]) -> bool {
    let env = Envelope::decode(envelope_bytes).unwrap();
    let payload = Payload::decode(env.payload.as_ref()).unwrap();
    let ch = korder_proto::common::ChannelHeader::decode(
        payload.header.unwrap().channel_header.as_ref(),
    )
    .unwrap();
    ch.r#type == HeaderType::Config as i32
}

/// One Broadcast the channel's policies must refuse, with the status Fabric answers
/// and, where Fabric's text is fixed, the info it gives.
pub struct Refused {
    pub what: &'static str,
    pub envelope: Envelope,
    pub status: Status,
    pub info: Option<&'static str>,
}

fn issued_identity(issued: &korder_msp::devpki::IssuedCert, msp_id: &str) -> SigningIdentity {
    SigningIdentity::from_pem(
        msp_id,
        issued.cert_pem.as_bytes(),
        issued.key_pem.as_bytes(),
    )
    .expect("issued identity loads")
}

/// A client of a CA no channel MSP knows, claiming `msp_id`.
pub fn foreign_identity(cn: &str, msp_id: &str) -> SigningIdentity {
    let foreign =
        korder_msp::devpki::DevPki::generate("Org1MSP", "org1.example.com").expect("a second CA");
    issued_identity(
        &foreign
            .issue(cn, korder_msp::devpki::NodeRole::Client)
            .expect("issue"),
        msp_id,
    )
}

/// The envelopes of a dev network in `data_dir` that `channel` must refuse: an
/// unknown MSP, a certificate from another CA, a bad signature and a high-S
/// signature (FORBIDDEN), and an expired certificate (BAD_REQUEST "identity
/// expired"). Their transaction ids start with `refused-`.
pub fn refused_envelopes(data_dir: &Path, client: &SigningIdentity, channel: &str) -> Vec<Refused> {
    let tx = |signer: &SigningIdentity, id: &str| {
        envelope(
            signer,
            channel,
            HeaderType::EndorserTransaction,
            &format!("refused-{id}"),
            Bytes::from_static(b"data"),
        )
    };
    let forbidden = |what, envelope| Refused {
        what,
        envelope,
        status: Status::Forbidden,
        info: None,
    };
    let mut bad_sig = tx(client, "bad-signature");
    let mut sig = bad_sig.signature.to_vec();
    let last = sig.len() - 1;
    sig[last] ^= 0x01;
    bad_sig.signature = sig.into();

    let mut high_s = tx(client, "high-s");
    let parsed = korder_msp::EcdsaSignature::from_der(&high_s.signature).expect("DER signature");
    let flipped = if parsed.is_high_s() {
        parsed.to_low_s()
    } else {
        parsed.negate_s()
    };
    assert!(flipped.is_high_s());
    high_s.signature = Bytes::from(flipped.to_der());

    let org1 =
        korder_msp::devpki::DevPki::load(data_dir.join("ca/org1"), "Org1MSP", "org1.example.com")
            .expect("the dev network's Org1 CA");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let expired = issued_identity(
        &org1
            .issue_with_validity(
                "old@org1.example.com",
                korder_msp::devpki::NodeRole::Client,
                now - 7200,
                now - 60,
            )
            .expect("issue an expired certificate"),
        "Org1MSP",
    );
    vec![
        forbidden(
            "unknown MSP",
            tx(&foreign_identity("someone", "NoSuchMSP"), "unknown-msp"),
        ),
        forbidden(
            "certificate from another CA",
            tx(&foreign_identity("impostor", "Org1MSP"), "other-ca"),
        ),
        forbidden("bad signature", bad_sig),
        forbidden("high-S signature", high_s),
        Refused {
            what: "expired certificate",
            envelope: tx(&expired, "expired"),
            status: Status::BadRequest,
            info: Some("identity expired"),
        },
    ]
}

/// Broadcasts each refused envelope on its own stream to `address` and checks its
/// status (and info where fixed).
pub async fn assert_refused(address: &str, refused: Vec<Refused>) {
    for r in refused {
        let got = try_broadcast_all(address, vec![r.envelope]).await;
        let (status, info) = got.first().cloned().expect("one response");
        assert_eq!(status, r.status as i32, "{}: {info}", r.what);
        if r.status == Status::Forbidden {
            assert!(info.ends_with("permission denied"), "{}: {info}", r.what);
        }
        if let Some(want) = r.info {
            assert_eq!(info, want, "{}", r.what);
        }
    }
}

/// Each block's header hash (the value the next block carries as `previous_hash`),
/// indexed by block number.
pub fn header_hashes(blocks: &[Block]) -> Vec<[u8; 32]> {
    blocks
        .iter()
        .map(|b| korder_ledger::block::header_hash(b.header.as_ref().expect("block header")))
        .collect()
}

/// The newest block of `channel` on `address`, or `None` while the node is down or
/// its chain does not serve Deliver.
pub async fn try_newest_block(
    address: &str,
    signer: &SigningIdentity,
    channel: &str,
) -> Option<Block> {
    let (blocks, status) = try_deliver(
        address,
        seek(
            signer,
            channel,
            seek_position::Type::Newest(SeekNewest {}),
            seek_position::Type::Newest(SeekNewest {}),
            0,
        ),
    )
    .await?;
    (status == Some(Status::Success as i32))
        .then(|| blocks.into_iter().next())
        .flatten()
}

/// The operations endpoint of a single-node network, as its log announced it last.
pub fn net_ops_address(net: &Net) -> Option<String> {
    let log = net.log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("operations endpoint"))?;
    let rest = line.split("address=").nth(1)?;
    Some(rest.split_whitespace().next()?.to_string())
}
