//! End-to-end maintenance mode (consensus-type migration) on the embedded log:
//! `korder channel update --consensus-state / --consensus-type` against a node
//! started with `korder init` + `korder start` (orderer capability V1_4_2).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_channelconfig::Bundle;
use korder_ledger::block::{consenter_metadata, slot};
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Block, BlockMetadataIndex, HeaderType, Status};
use korder_proto::etcdraft::{ConfigMetadata, Consenter};
use korder_proto::orderer::{SeekSpecified, seek_position};
use support::{KORDER, Net, all_blocks, broadcast_all, deliver, envelope, seek, tx_id_of};

/// Bound on every wait for a block or a process.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `korder channel <args> --data-dir <net>` and returns its output.
fn channel_cmd(net: &Net, args: &[&str]) -> Output {
    Command::new(KORDER)
        .current_dir(net.data_dir())
        .arg("channel")
        .args(args)
        .arg("--data-dir")
        .arg(net.data_dir())
        .output()
        .expect("korder runs")
}

/// Like [`channel_cmd`], panicking with the output and node log unless it succeeds.
fn channel_ok(net: &Net, args: &[&str]) -> Output {
    let out = channel_cmd(net, args);
    assert!(
        out.status.success(),
        "korder channel {args:?} failed: {}\nnode log:\n{}",
        text(&out),
        net.log()
    );
    out
}

/// Like [`channel_cmd`], asserting that it fails with `expected` in its output.
fn channel_refused(net: &Net, args: &[&str], expected: &str) {
    let out = channel_cmd(net, args);
    let t = text(&out);
    assert!(
        !out.status.success(),
        "korder channel {args:?} succeeded: {t}"
    );
    assert!(t.contains(expected), "expected {expected:?} in: {t}");
}

fn orderer_admin(net: &Net) -> SigningIdentity {
    SigningIdentity::load_msp_dir(net.data_dir().join("orderer-admin/msp"), "OrdererMSP").unwrap()
}

fn specified(n: u64) -> seek_position::Type {
    seek_position::Type::Specified(SeekSpecified { number: n })
}

/// The Deliver status `signer` gets asking for block 0 of `channel`.
async fn deliver_status(net: &Net, signer: &SigningIdentity, channel: &str) -> Option<i32> {
    let request = seek(signer, channel, specified(0), specified(0), 0);
    deliver(&net.address(), request).await.1
}

/// Broadcasts one normal transaction by the client; returns (status, info).
async fn broadcast_tx(net: &Net, channel: &str, tx_id: &str) -> (i32, String) {
    let env = envelope(
        &net.client(),
        channel,
        HeaderType::EndorserTransaction,
        tx_id,
        Bytes::from_static(b"payload"),
    );
    let mut answers = broadcast_all(&net.address(), vec![env]).await;
    assert_eq!(answers.len(), 1, "one answer per envelope");
    answers.remove(0)
}

fn has_tx(blocks: &[Block], tx_id: &str) -> bool {
    blocks.iter().any(|b| {
        b.data
            .as_ref()
            .is_some_and(|d| d.data.iter().any(|e| tx_id_of(e).as_deref() == Some(tx_id)))
    })
}

/// Waits (bounded) until `tx_id` is in a block of `channel` as `signer` reads it.
async fn wait_for_tx(net: &Net, signer: &SigningIdentity, channel: &str, tx_id: &str) {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        if has_tx(&all_blocks(&net.address(), signer, channel).await, tx_id) {
            return;
        }
        assert!(Instant::now() < deadline, "{tx_id} was never ordered");
        tokio::task::yield_now().await;
    }
}

/// The config carried by a config block.
fn bundle_of(block: &Block) -> Bundle {
    Bundle::from_config_envelope(&block.data.as_ref().unwrap().data[0]).unwrap()
}

/// On an application channel, maintenance mode stops the client's Broadcast
/// (SERVICE_UNAVAILABLE, nothing ordered) and Deliver (FORBIDDEN) while the orderer
/// admin still reads; a state change with another change is refused with Fabric's
/// text; leaving maintenance restores both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_channel_maintenance_round_trip() {
    let mut net = Net::init(&["--max-message-count", "1"]);
    net.start();
    let client = net.client();
    let admin = orderer_admin(&net);
    let ch = "mychannel";

    let (status, info) = broadcast_tx(&net, ch, "tx-before").await;
    assert_eq!(status, Status::Success as i32, "{info}");
    wait_for_tx(&net, &client, ch, "tx-before").await;

    channel_ok(
        &net,
        &[
            "update",
            "--channel",
            ch,
            "--consensus-state",
            "maintenance",
        ],
    );
    let blocks = all_blocks(&net.address(), &admin, ch).await;
    let last = blocks.last().unwrap();
    assert!(
        bundle_of(last).orderer.maintenance,
        "the last block enters maintenance"
    );

    let (status, info) = broadcast_tx(&net, ch, "tx-maint").await;
    assert_eq!(status, Status::ServiceUnavailable as i32, "{info}");
    assert_eq!(info, "normal transactions are rejected: maintenance mode");
    assert_eq!(
        deliver_status(&net, &client, ch).await,
        Some(Status::Forbidden as i32),
        "an application member may not read in maintenance mode"
    );
    assert_eq!(
        deliver_status(&net, &admin, ch).await,
        Some(Status::Success as i32),
        "the orderer admin still reads"
    );

    // Leaving maintenance together with a BatchSize change is refused.
    channel_refused(
        &net,
        &[
            "update",
            "--channel",
            ch,
            "--consensus-state",
            "normal",
            "--batch-size-max-message-count",
            "2",
        ],
        "config update for existing channel did not pass maintenance checks: config transaction inspection failed: config update contain more then just the ConsensusType value in the Orderer group",
    );

    channel_ok(
        &net,
        &["update", "--channel", ch, "--consensus-state", "normal"],
    );
    let after = all_blocks(&net.address(), &admin, ch).await;
    assert!(
        !has_tx(&after, "tx-maint"),
        "nothing was ordered in maintenance"
    );
    assert!(!bundle_of(after.last().unwrap()).orderer.maintenance);
    assert_eq!(
        after.len(),
        blocks.len() + 1,
        "only the config block leaving maintenance was added"
    );

    let (status, info) = broadcast_tx(&net, ch, "tx-after").await;
    assert_eq!(status, Status::Success as i32, "{info}");
    assert_eq!(
        deliver_status(&net, &client, ch).await,
        Some(Status::Success as i32)
    );
    wait_for_tx(&net, &client, ch, "tx-after").await;
    net.stop();
}

/// The system channel in maintenance refuses channel creation with
/// SERVICE_UNAVAILABLE; after leaving maintenance the same creation succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_channel_maintenance_refuses_channel_creation() {
    let mut net = Net::init(&[]);
    net.start();
    let system = "system-channel";
    channel_ok(
        &net,
        &[
            "update",
            "--channel",
            system,
            "--consensus-state",
            "maintenance",
        ],
    );
    channel_refused(
        &net,
        &["create", "--channel", "newchan"],
        "channel creation is not permitted: maintenance mode",
    );
    let out = channel_cmd(&net, &["create", "--channel", "newchan"]);
    assert!(text(&out).contains("SERVICE_UNAVAILABLE"), "{}", text(&out));

    channel_ok(
        &net,
        &["update", "--channel", system, "--consensus-state", "normal"],
    );
    channel_ok(&net, &["create", "--channel", "newchan"]);
    let blocks = all_blocks(&net.address(), &net.client(), "newchan").await;
    assert_eq!(blocks.len(), 1, "the new channel has its genesis block");
    net.stop();
}

/// A type switch is refused outside maintenance; in maintenance the switch to
/// etcdraft is accepted and its config block has no consenter metadata; after a
/// restart the node refuses to start, naming the channel and its type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdraft_switch_then_restart_is_refused() {
    let mut net = Net::init(&[]);
    net.start();
    let admin = orderer_admin(&net);
    let ch = "mychannel";
    let metadata = ConfigMetadata {
        consenters: vec![Consenter {
            host: "127.0.0.1".into(),
            port: 7050,
            client_tls_cert: Bytes::from_static(b"client cert"),
            server_tls_cert: Bytes::from_static(b"server cert"),
        }],
        options: None,
    };
    let metadata_file = net.data_dir().join("raft-metadata.bin");
    std::fs::write(&metadata_file, metadata.encode_to_vec()).unwrap();
    let metadata_arg = metadata_file.to_str().unwrap();
    let switch = [
        "update",
        "--channel",
        ch,
        "--consensus-type",
        "etcdraft",
        "--consensus-metadata",
        metadata_arg,
    ];

    channel_refused(
        &net,
        &switch,
        "config transaction inspection failed: attempted to change consensus type from solo to etcdraft, but current config ConsensusType.State is not in maintenance mode",
    );
    channel_ok(
        &net,
        &[
            "update",
            "--channel",
            ch,
            "--consensus-state",
            "maintenance",
        ],
    );
    channel_refused(
        &net,
        &["update", "--channel", ch, "--consensus-type", "bft"],
        "attempted to change consensus type from solo to bft, transition not supported",
    );
    channel_ok(&net, &switch);

    let blocks = all_blocks(&net.address(), &admin, ch).await;
    let (enter, switched) = (&blocks[blocks.len() - 2], &blocks[blocks.len() - 1]);
    assert_eq!(bundle_of(enter).orderer.consensus_type, "solo");
    let next = bundle_of(switched);
    assert_eq!(next.orderer.consensus_type, "etcdraft");
    assert!(
        next.orderer.maintenance,
        "the switch keeps maintenance mode"
    );
    assert_eq!(next.orderer.consensus_metadata, metadata.encode_to_vec());
    assert!(
        slot(enter, BlockMetadataIndex::Orderer).is_empty(),
        "the Fabric 2.x layout keeps the ORDERER slot empty"
    );
    assert!(
        consenter_metadata(enter).unwrap().is_some(),
        "an ordinary config block records the log offsets"
    );
    assert!(
        slot(switched, BlockMetadataIndex::Orderer).is_empty(),
        "the type-switching block has an empty ORDERER slot"
    );
    assert_eq!(consenter_metadata(switched).unwrap(), None);
    net.stop();

    let out = start_until_exit(net.data_dir());
    assert!(
        !out.status.success(),
        "the node must not start: {}",
        text(&out)
    );
    assert!(
        text(&out).contains(
            "channel mychannel uses consensus type etcdraft, which korder does not run; korder orders channels of type kafka (Kafka) and solo (embedded log)"
        ),
        "{}",
        text(&out)
    );
}

/// Starts `korder start` on `dir` and waits (bounded) for it to exit.
fn start_until_exit(dir: &Path) -> Output {
    // The output goes to a file: a full pipe would block the node.
    let log_path = dir.join("restart.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(KORDER)
        .args(["start", "--data-dir"])
        .arg(dir)
        .env("KORDER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("korder start");
    let deadline = Instant::now() + WAIT_LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "korder start kept running; log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::yield_now();
    }
    let mut out = child.wait_with_output().unwrap();
    out.stderr = std::fs::read(&log_path).unwrap();
    out
}
