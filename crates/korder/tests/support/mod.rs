//! Shared harness for end-to-end tests: a korder node as a child process, and a
//! small gRPC client that signs envelopes with the dev network's client identity.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{Block, ChannelHeader, Envelope, Header, HeaderType, Payload, Status};
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
    let mut client = connect(address).await;
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

/// Runs one Deliver request; returns the blocks and the final status.
pub async fn deliver(address: &str, request: Envelope) -> (Vec<Block>, Option<i32>) {
    let mut client = connect(address).await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(request).await.expect("queued");
    let mut blocks = Vec::new();
    let mut status = None;
    let resp = client
        .deliver(ReceiverStream::new(rx))
        .await
        .expect("deliver");
    let mut stream = resp.into_inner();
    while let Ok(Some(DeliverResponse { r#type })) = stream.message().await {
        match r#type {
            Some(deliver_response::Type::Block(b)) => blocks.push(b),
            Some(deliver_response::Type::Status(s)) => {
                status = Some(s);
                break;
            }
            None => {}
        }
    }
    drop(tx);
    (blocks, status)
}

/// Every block of `channel` from 0 to the current newest.
pub async fn all_blocks(address: &str, signer: &SigningIdentity, channel: &str) -> Vec<Block> {
    let (newest, status) = deliver(
        address,
        seek(
            signer,
            channel,
            seek_position::Type::Newest(SeekNewest {}),
            seek_position::Type::Newest(SeekNewest {}),
            0,
        ),
    )
    .await;
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
