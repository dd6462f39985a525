//! End-to-end tests of `korder channel` (create, update, fetch config, sign) against
//! a node started with `korder init` + `korder start`.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use bytes::Bytes;
use korder_channelconfig::Bundle;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Block, HeaderType, Status};
use korder_proto::orderer::{SeekSpecified, seek_position};
use support::{KORDER, Net, all_blocks, broadcast_all, deliver, envelope, seek, tx_id_of};

/// Bound on every wait for a block.
const BLOCK_WAIT_LIMIT: Duration = Duration::from_secs(60);

/// Runs `korder` with `args` in `cwd` and returns its output, whatever its status.
fn korder_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(KORDER)
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("korder runs")
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `korder` and panics with its output and the node's log unless it succeeds.
fn korder_ok(net: &Net, cwd: &Path, args: &[&str]) -> Output {
    let out = korder_in(cwd, args);
    assert!(
        out.status.success(),
        "korder {args:?} failed: {}\nnode log:\n{}",
        text(&out),
        net.log()
    );
    out
}

fn specified(n: u64) -> seek_position::Type {
    seek_position::Type::Specified(SeekSpecified { number: n })
}

/// Blocks `from..=to` of `channel`, waiting until they exist (bounded).
async fn blocks(
    address: &str,
    signer: &SigningIdentity,
    channel: &str,
    from: u64,
    to: u64,
) -> Vec<Block> {
    let request = seek(signer, channel, specified(from), specified(to), 0);
    let (blocks, status) = tokio::time::timeout(BLOCK_WAIT_LIMIT, deliver(address, request))
        .await
        .unwrap_or_else(|_| panic!("blocks {from}..={to} of {channel} did not arrive in time"));
    assert_eq!(status, Some(Status::Success as i32));
    assert_eq!(blocks.len() as u64, to - from + 1);
    blocks
}

/// The Deliver status for block 0 of `channel` (NOT_FOUND while it does not exist).
async fn genesis_status(address: &str, signer: &SigningIdentity, channel: &str) -> Option<i32> {
    deliver(
        address,
        seek(signer, channel, specified(0), specified(0), 1),
    )
    .await
    .1
}

fn number(block: &Block) -> u64 {
    block.header.as_ref().unwrap().number
}

fn tx_ids(block: &Block) -> Vec<String> {
    block
        .data
        .as_ref()
        .unwrap()
        .data
        .iter()
        .map(|e| tx_id_of(e).unwrap())
        .collect()
}

fn config_of(block: &Block) -> Bundle {
    Bundle::from_config_envelope(&block.data.as_ref().unwrap().data[0]).unwrap()
}

fn envelopes(
    signer: &SigningIdentity,
    channel: &str,
    ids: &[String],
) -> Vec<korder_proto::common::Envelope> {
    ids.iter()
        .map(|id| {
            envelope(
                signer,
                channel,
                HeaderType::EndorserTransaction,
                id,
                Bytes::from(vec![1u8; 100]),
            )
        })
        .collect()
}

/// `korder channel create --data-dir DIR --channel newchan` creates the channel through
/// the system channel and writes its block 0; the channel takes envelopes at once and
/// serves them in blocks, and `channel fetch config` returns its config block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_a_channel_and_use_it_at_once() {
    let mut net = Net::init(&["--batch-timeout", "200ms"]);
    net.start();
    let dir = net.data_dir().to_str().unwrap().to_owned();
    let cwd = tempfile::tempdir().unwrap();
    let address = net.address();
    let client = net.client();
    assert_eq!(
        genesis_status(&address, &client, "newchan").await,
        Some(Status::NotFound as i32)
    );

    korder_ok(
        &net,
        cwd.path(),
        &[
            "channel",
            "create",
            "--data-dir",
            &dir,
            "--channel",
            "newchan",
        ],
    );
    let written = Block::decode(
        std::fs::read(cwd.path().join("newchan.block"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    assert_eq!(number(&written), 0);
    let genesis = config_of(&written);
    assert_eq!(genesis.channel_id, "newchan");
    assert_eq!(genesis.consortium.as_deref(), Some("SampleConsortium"));
    let orgs: Vec<&str> = genesis
        .application_orgs
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    assert_eq!(orgs, ["Org1MSP"]);

    let ids: Vec<String> = (0..5).map(|i| format!("newchan-tx-{i}")).collect();
    let statuses = broadcast_all(&address, envelopes(&client, "newchan", &ids)).await;
    assert_eq!(statuses.len(), ids.len(), "{statuses:?}");
    assert!(
        statuses.iter().all(|(s, _)| *s == Status::Success as i32),
        "{statuses:?}"
    );

    let wanted: BTreeSet<String> = ids.iter().cloned().collect();
    let mut seen = BTreeSet::new();
    let mut next = 1;
    while seen != wanted {
        assert!(
            next <= ids.len() as u64,
            "more blocks than envelopes: {seen:?}"
        );
        let b = blocks(&address, &client, "newchan", next, next).await;
        seen.extend(tx_ids(&b[0]));
        next += 1;
    }
    let all = all_blocks(&address, &client, "newchan").await;
    assert_eq!(
        all[0], written,
        "the written block 0 is the channel's block 0"
    );
    let in_order: Vec<String> = all[1..].iter().flat_map(tx_ids).collect();
    assert_eq!(in_order, ids);

    let fetched = cwd.path().join("config.block");
    korder_ok(
        &net,
        cwd.path(),
        &[
            "channel",
            "fetch",
            "config",
            "--data-dir",
            &dir,
            "--channel",
            "newchan",
            "--out",
            fetched.to_str().unwrap(),
        ],
    );
    let config_block = Block::decode(std::fs::read(&fetched).unwrap().as_slice()).unwrap();
    assert_eq!(config_block, written);
}

/// `korder channel update` sets BatchSize.MaxMessageCount to 3 (signed by the orderer
/// admin): the config block follows at once and then 9 envelopes make exactly 3 blocks
/// of 3; the same update signed only by the client is refused with BAD_REQUEST and
/// writes no block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_batch_size_then_blocks_are_cut_by_count() {
    let mut net = Net::init(&["--batch-timeout", "1h"]);
    net.start();
    let dir = net.data_dir().to_str().unwrap().to_owned();
    let cwd = tempfile::tempdir().unwrap();
    let address = net.address();
    let client = net.client();
    korder_ok(
        &net,
        cwd.path(),
        &[
            "channel",
            "create",
            "--data-dir",
            &dir,
            "--channel",
            "newchan",
        ],
    );

    let client_msp = format!("{dir}/client/msp:Org1MSP");
    let refused = korder_in(
        cwd.path(),
        &[
            "channel",
            "update",
            "--data-dir",
            &dir,
            "--channel",
            "newchan",
            "--batch-size-max-message-count",
            "3",
            "--sign-msp",
            &client_msp,
        ],
    );
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(text(&refused).contains("BAD_REQUEST"), "{}", text(&refused));
    let all = all_blocks(&address, &client, "newchan").await;
    assert_eq!(all.len(), 1, "a refused update writes no block");

    let out = korder_ok(
        &net,
        cwd.path(),
        &[
            "channel",
            "update",
            "--data-dir",
            &dir,
            "--channel",
            "newchan",
            "--batch-size-max-message-count",
            "3",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("config block 1"),
        "{}",
        text(&out)
    );
    let b1 = blocks(&address, &client, "newchan", 1, 1).await;
    let config = config_of(&b1[0]);
    assert_eq!(config.orderer.batch_size.max_message_count, 3);
    assert_eq!(config.sequence, config_of(&all[0]).sequence.next());

    let ids: Vec<String> = (0..9).map(|i| format!("count-{i}")).collect();
    let statuses = broadcast_all(&address, envelopes(&client, "newchan", &ids)).await;
    assert_eq!(statuses.len(), 9, "{statuses:?}");
    assert!(
        statuses.iter().all(|(s, _)| *s == Status::Success as i32),
        "{statuses:?}"
    );
    let cut = blocks(&address, &client, "newchan", 2, 4).await;
    for (k, b) in cut.iter().enumerate() {
        assert_eq!(number(b), 2 + k as u64);
        assert_eq!(tx_ids(b), ids[3 * k..3 * k + 3], "block {}", number(b));
    }
}

/// An update written to a file unsigned by the needed admin, then signed with
/// `korder channel sign` and sent with `korder channel update --file`, is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_update_signed_later_is_applied() {
    let mut net = Net::init(&[]);
    net.start();
    let dir = net.data_dir().to_str().unwrap().to_owned();
    let cwd = tempfile::tempdir().unwrap();
    let address = net.address();
    let client = net.client();
    let file = cwd.path().join("update.pb");
    let file_s = file.to_str().unwrap().to_owned();
    let client_msp = format!("{dir}/client/msp:Org1MSP");
    korder_ok(
        &net,
        cwd.path(),
        &[
            "channel",
            "update",
            "--data-dir",
            &dir,
            "--batch-timeout",
            "750ms",
            "--sign-msp",
            &client_msp,
            "--out",
            &file_s,
        ],
    );
    let before = all_blocks(&address, &client, "mychannel").await.len();
    assert_eq!(before, 1, "--out sends nothing");

    let not_yet = korder_in(
        cwd.path(),
        &["channel", "update", "--data-dir", &dir, "--file", &file_s],
    );
    assert!(!not_yet.status.success(), "{}", text(&not_yet));
    assert!(text(&not_yet).contains("BAD_REQUEST"), "{}", text(&not_yet));

    let orderer_admin = format!("{dir}/orderer-admin/msp");
    korder_ok(
        &net,
        cwd.path(),
        &[
            "channel",
            "sign",
            "--msp",
            &orderer_admin,
            "--msp-id",
            "OrdererMSP",
            &file_s,
        ],
    );
    korder_ok(
        &net,
        cwd.path(),
        &["channel", "update", "--data-dir", &dir, "--file", &file_s],
    );
    let b1 = blocks(&address, &client, "mychannel", 1, 1).await;
    assert_eq!(
        config_of(&b1[0]).orderer.batch_timeout,
        Duration::from_millis(750)
    );
}

/// A creation request naming a consortium the system channel does not have is refused
/// with BAD_REQUEST, and the channel does not come to exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_for_unknown_consortium_is_refused() {
    let mut net = Net::init(&[]);
    net.start();
    let dir = net.data_dir().to_str().unwrap().to_owned();
    let cwd = tempfile::tempdir().unwrap();
    let out = korder_in(
        cwd.path(),
        &[
            "channel",
            "create",
            "--data-dir",
            &dir,
            "--channel",
            "otherchan",
            "--consortium",
            "NoSuchConsortium",
            "--org",
            "Org1MSP",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("BAD_REQUEST"), "{t}");
    assert!(t.contains("Unknown consortium name"), "{t}");
    assert!(!cwd.path().join("otherchan.block").exists());
    assert_eq!(
        genesis_status(&net.address(), &net.client(), "otherchan").await,
        Some(Status::NotFound as i32)
    );
}
