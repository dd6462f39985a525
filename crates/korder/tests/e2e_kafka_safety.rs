//! End-to-end over a real Apache Kafka: a node refuses to run a channel on a topic
//! that is not the one its ledger was built from (deleted and recreated, records
//! removed by retention), says why on `/healthz`, answers Broadcast with
//! SERVICE_UNAVAILABLE, still serves its blocks, and writes nothing to the topic.
//!
//! Needs a running broker: `scripts/kafka start`, then
//! `KORDER_KAFKA_BOOTSTRAP=… cargo test -p korder --test e2e_kafka_safety`. Without
//! it every test fails, on purpose: a Kafka test that skips proves nothing.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_consensus::{BlockNumber, ConfigSeq, order_record, time_to_cut_record};
use korder_kafka::{KafkaConfig, KafkaLog};
use korder_log::Log;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Block, HeaderType, Status};
use korder_proto::orderer::{SeekInfo, SeekPosition, SeekSpecified, seek_info, seek_position};
use support::{
    Cluster, all_blocks, assert_same_chain, deliver, envelope, kafka_script, try_broadcast_all,
    tx_counts, unique_name,
};

/// How long a node may take to start, order, or report its refusal.
const LIMIT: Duration = Duration::from_secs(120);
/// How long Broadcast may take to refuse on a stopped channel.
const PROMPT: Duration = Duration::from_secs(5);
/// How long the topic is watched for records the refusing node must not write
/// (longer than the start-up retry interval).
const QUIET: Duration = Duration::from_secs(8);

/// The one-broker cluster's bootstrap servers.
fn kafka1() -> String {
    std::env::var("KORDER_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KORDER_KAFKA_BOOTSTRAP is not set: these tests need a real Kafka broker; run \
             scripts/test, or start one with scripts/kafka start and export its bootstrap"
        )
    })
}

/// Runs one of Kafka's own command-line tools (`scripts/kafka tool CLASS ARGS`).
fn kafka_tool(class: &str, args: &[&str]) {
    let out = Command::new(kafka_script())
        .arg("tool")
        .arg(class)
        .args(args)
        .output()
        .expect("scripts/kafka runs");
    assert!(
        out.status.success(),
        "{class} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn delete_topic(brokers: &str, topic: &str) {
    kafka_tool(
        "org.apache.kafka.tools.TopicCommand",
        &["--bootstrap-server", brokers, "--delete", "--topic", topic],
    );
}

/// Deletes the records of partition 0 below `before`, as retention would.
fn delete_records(brokers: &str, topic: &str, before: i64) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("offsets.json");
    let json = serde_json::json!({
        "version": 1,
        "partitions": [{ "topic": topic, "partition": 0, "offset": before }],
    });
    std::fs::write(&file, json.to_string()).unwrap();
    kafka_tool(
        "org.apache.kafka.tools.DeleteRecordsCommand",
        &[
            "--bootstrap-server",
            brokers,
            "--offset-json-file",
            file.to_str().unwrap(),
        ],
    );
}

/// The client configuration of the one-broker cluster.
fn kafka_config(brokers: &str) -> KafkaConfig {
    let mut config = KafkaConfig::new(brokers.split(','));
    config.topic_replication_factor = 1;
    config
}

async fn open_topic(brokers: &str, topic: &str) -> KafkaLog {
    KafkaLog::open(kafka_config(brokers), topic).await.unwrap()
}

/// Opens the topic once its deletion has completed: a new, empty topic.
async fn recreate_topic(brokers: &str, topic: &str) -> KafkaLog {
    let deadline = Instant::now() + LIMIT;
    loop {
        let state = match KafkaLog::open(kafka_config(brokers), topic).await {
            Ok(log) => match log.watermarks().await {
                Ok((0, 0)) => return log,
                other => format!("watermarks {other:?}"),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "{topic} was not recreated: {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn regular(envelope: &[u8]) -> Bytes {
    order_record(Bytes::copy_from_slice(envelope), ConfigSeq::new(0))
}

fn time_to_cut(block: u64) -> Bytes {
    time_to_cut_record(BlockNumber::new(block))
}

/// Broadcasts `n` envelopes to node `k` and waits until node `k` has them in blocks;
/// the node's chain.
async fn order(c: &Cluster, k: usize, n: usize) -> Vec<Block> {
    let signer = c.client();
    let tag = unique_name("tx");
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    for chunk in ids.chunks(100) {
        let envs = chunk
            .iter()
            .map(|id| {
                envelope(
                    &signer,
                    &c.channel,
                    HeaderType::EndorserTransaction,
                    id,
                    Bytes::from_static(b"korder kafka safety"),
                )
            })
            .collect();
        let statuses = try_broadcast_all(&c.address(k), envs).await;
        assert_eq!(statuses.len(), chunk.len(), "{statuses:?}");
        assert!(
            statuses.iter().all(|s| s.0 == Status::Success as i32),
            "{statuses:?}"
        );
    }
    let deadline = Instant::now() + LIMIT;
    loop {
        let chain = all_blocks(&c.address(k), &signer, &c.channel).await;
        let counts = tx_counts(&chain);
        if ids.iter().all(|id| counts.contains_key(id)) {
            return chain;
        }
        assert!(Instant::now() < deadline, "not ordered in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Blocks `0..=top` of the channel, asked with `error_response` (STRICT or
/// BEST_EFFORT, as Fabric peers ask); the blocks and the final status.
async fn blocks_up_to(
    c: &Cluster,
    k: usize,
    signer: &SigningIdentity,
    top: u64,
    error_response: seek_info::SeekErrorResponse,
) -> (Vec<Block>, Option<i32>) {
    let at = |number| {
        Some(SeekPosition {
            r#type: Some(seek_position::Type::Specified(SeekSpecified { number })),
        })
    };
    let info = SeekInfo {
        start: at(0),
        stop: at(top),
        behavior: seek_info::SeekBehavior::BlockUntilReady as i32,
        error_response: error_response as i32,
    };
    let request = envelope(
        signer,
        &c.channel,
        HeaderType::DeliverSeekInfo,
        "",
        info.encode_to_vec().into(),
    );
    tokio::time::timeout(LIMIT, deliver(&c.address(k), request))
        .await
        .expect("Deliver answers")
}

/// The block number and `last_offset_persisted` of a chain's last block.
fn last_offset(chain: &[Block]) -> (u64, i64) {
    let last = chain.last().unwrap();
    let m = korder_ledger::block::consenter_metadata(last)
        .unwrap()
        .expect("the last block has consenter metadata");
    (
        last.header.as_ref().unwrap().number,
        m.last_offset_persisted,
    )
}

/// Waits until node `k`'s /healthz is 503 naming `channel` with a reason that
/// contains every one of `words`; the body.
async fn wait_refused(c: &Cluster, k: usize, channel: &str, words: &[&str]) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let (code, body) = c.healthz(k);
        if code == 503 && body.contains(channel) && words.iter().all(|w| body.contains(w)) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "node{k} did not report the refusal: {code} {body}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What every refusal must look like from outside: Broadcast SERVICE_UNAVAILABLE
/// within [`PROMPT`], the existing blocks still delivered, the other channel
/// healthy, and no record written to the topic while the node keeps running.
/// `log_from` is the length of the node's log before this run started.
async fn assert_stopped_quietly(
    c: &Cluster,
    k: usize,
    log_from: usize,
    topic: &KafkaLog,
    chain: &[Block],
) {
    let (_, next_before) = topic.watermarks().await.unwrap();
    let signer = c.client();
    let env = envelope(
        &signer,
        &c.channel,
        HeaderType::EndorserTransaction,
        &unique_name("refused"),
        Bytes::from_static(b"must not be ordered"),
    );
    let started = Instant::now();
    let statuses = tokio::time::timeout(PROMPT, try_broadcast_all(&c.address(k), vec![env]))
        .await
        .expect("Broadcast answers promptly on a stopped channel");
    assert_eq!(
        statuses.first().map(|s| s.0),
        Some(Status::ServiceUnavailable as i32),
        "{statuses:?} after {:?}",
        started.elapsed()
    );
    let top = chain.len() as u64 - 1;
    let (served, status) =
        blocks_up_to(c, k, &signer, top, seek_info::SeekErrorResponse::BestEffort).await;
    assert_eq!(status, Some(Status::Success as i32));
    assert_eq!(
        served, chain,
        "the stopped channel's blocks are still delivered"
    );
    let (_, status) = blocks_up_to(c, k, &signer, top, seek_info::SeekErrorResponse::Strict).await;
    assert_eq!(
        status,
        Some(Status::ServiceUnavailable as i32),
        "a STRICT request is told the chain is down"
    );
    // The other channel starts (its chain may still be starting).
    let deadline = Instant::now() + LIMIT;
    loop {
        let (_, body) = c.healthz(k);
        if !body.contains(&c.system_channel) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only the refused channel fails: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        topic.watermarks().await.unwrap().1,
        next_before,
        "the refusing node wrote to the topic"
    );
    let run = c.log(k)[log_from..].to_string();
    assert_eq!(
        run.matches("chain started").count(),
        1,
        "only the system channel's chain started:\n{run}"
    );
}

/// Topic deleted, recreated and filled past the node's offset by someone else, with
/// a TIMETOCUT of the node's last block number exactly at its offset: the restarted
/// node refuses the channel instead of resuming at its old offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recreated_and_refilled_topic_stops_the_channel() {
    let brokers = kafka1();
    let mut c = Cluster::init(
        "recreated",
        1,
        &brokers,
        &["--batch-timeout", "200ms", "--max-message-count", "10"],
    );
    c.start_ready(1).await;
    let chain = order(&c, 1, 95).await;
    c.stop(1);
    let (block, offset) = last_offset(&chain);
    assert!(offset > 5, "offset {offset}");

    delete_topic(&brokers, &c.channel);
    let topic = recreate_topic(&brokers, &c.channel).await;
    let signer = c.client();
    for i in 0..offset {
        let other = envelope(
            &signer,
            &c.channel,
            HeaderType::EndorserTransaction,
            &format!("other-{i}"),
            Bytes::from_static(b"another node's transaction"),
        );
        topic.append(regular(&other.encode_to_vec())).await.unwrap();
    }
    assert_eq!(
        topic.append(time_to_cut(block)).await.unwrap().get(),
        offset
    );
    for _ in 0..20 {
        topic.append(regular(b"later")).await.unwrap();
    }

    let log_from = c.log(1).len();
    c.start(1);
    let body = wait_refused(&c, 1, &c.channel, &["not the one"]).await;
    assert!(body.contains(&format!("offset {offset}")), "{body}");
    assert_stopped_quietly(&c, 1, log_from, &topic, &chain).await;
}

/// Topic deleted and recreated with fewer records than the node had read: the node
/// refuses at once (no retry loop), and writes no CONNECT record while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recreated_shorter_topic_stops_the_channel_without_writing() {
    let brokers = kafka1();
    let mut c = Cluster::init(
        "shorter",
        1,
        &brokers,
        &["--batch-timeout", "200ms", "--max-message-count", "10"],
    );
    c.start_ready(1).await;
    let chain = order(&c, 1, 40).await;
    c.stop(1);
    let (_, offset) = last_offset(&chain);

    delete_topic(&brokers, &c.channel);
    let topic = recreate_topic(&brokers, &c.channel).await;
    for _ in 0..3 {
        topic.append(regular(b"short")).await.unwrap();
    }
    assert!(offset >= 3, "offset {offset}");

    let log_from = c.log(1).len();
    c.start(1);
    let body = wait_refused(&c, 1, &c.channel, &["ends before", "0..3"]).await;
    assert!(body.contains(&format!("offset {offset}")), "{body}");
    assert_stopped_quietly(&c, 1, log_from, &topic, &chain).await;
    assert_eq!(topic.watermarks().await.unwrap(), (0, 3));
}

/// Records 0..500 removed (DeleteRecords, as retention would) and a second node
/// whose ledger holds only the genesis block (as a node restored from a copy taken
/// then): it never reads the topic from offset 500, which would cut a chain that
/// differs; it reports the removed records, pulls the blocks it lacks from the
/// first node (verified), and from then on cuts the same chain as the first node
/// from the topic, Broadcasts through it included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_behind_removed_records_catches_up_from_the_other_node() {
    let brokers = kafka1();
    let mut c = Cluster::init(
        "retention",
        2,
        &brokers,
        &["--batch-timeout", "200ms", "--max-message-count", "50"],
    );
    c.start_ready(1).await;
    order(&c, 1, 600).await;
    let topic = open_topic(&brokers, &c.channel).await;
    let (_, next) = topic.watermarks().await.unwrap();
    assert!(next > 500, "{next} records");
    delete_records(&brokers, &c.channel, 500);
    assert_eq!(topic.watermarks().await.unwrap(), (500, next));

    c.start(2);
    let deadline = Instant::now() + LIMIT;
    while !(c.log(2).contains("offset 500") && c.log(2).contains("catch-up: blocks pulled")) {
        assert!(
            Instant::now() < deadline,
            "node2 did not catch up:\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while c.healthz(2).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "node2 does not serve: {:?}",
            c.healthz(2)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let through_two = order(&c, 2, 120).await;
    let signer = c.client();
    loop {
        let one = all_blocks(&c.address(1), &signer, &c.channel).await;
        if one.len() >= through_two.len() {
            let two = all_blocks(&c.address(2), &signer, &c.channel).await;
            if two.len() == one.len() {
                assert_same_chain(&one, &two, "node1 and node2");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the chains do not converge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.healthz(1).0, 200, "node1 keeps serving");
}

/// A node restored from an older copy of its ledger after retention removed the
/// records from that copy's offsets on (here `DeleteRecords` of everything ordered
/// so far): it pulls the blocks after the copy's last one from the other node,
/// verified, and then cuts the same chain as the other node from the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_restored_from_an_older_copy_catches_up_from_the_other_node() {
    let brokers = kafka1();
    let mut c = Cluster::init(
        "restored",
        2,
        &brokers,
        &["--batch-timeout", "200ms", "--max-message-count", "20"],
    );
    c.start_ready(1).await;
    c.start_ready(2).await;
    let first = order(&c, 1, 100).await;
    let signer = c.client();
    let deadline = Instant::now() + LIMIT;
    while all_blocks(&c.address(2), &signer, &c.channel).await.len() < first.len() {
        assert!(Instant::now() < deadline, "node2 does not follow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The copy: node 2's ledger while it is stopped.
    c.stop(2);
    let ledger = c.config(2).parent().unwrap().join("ledger");
    let copy = c.config(2).parent().unwrap().join("ledger-copy");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&ledger)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(copied.success());
    c.start_ready(2).await;
    order(&c, 1, 200).await;
    let topic = open_topic(&brokers, &c.channel).await;
    let (_, next) = topic.watermarks().await.unwrap();
    delete_records(&brokers, &c.channel, next);

    c.stop(2);
    std::fs::remove_dir_all(&ledger).unwrap();
    std::fs::rename(&copy, &ledger).unwrap();
    let log_from = c.log(2).len();
    c.start(2);
    while !c.log(2)[log_from..].contains("catch-up: blocks pulled") {
        assert!(
            Instant::now() < deadline,
            "node2 did not catch up:\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while c.healthz(2).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "node2 does not serve: {:?}",
            c.healthz(2)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let through_two = order(&c, 2, 60).await;
    loop {
        let one = all_blocks(&c.address(1), &signer, &c.channel).await;
        if one.len() >= through_two.len() {
            let two = all_blocks(&c.address(2), &signer, &c.channel).await;
            if two.len() == one.len() {
                assert_same_chain(&one, &two, "node1 and node2");
                break;
            }
        }
        assert!(Instant::now() < deadline, "the chains do not converge");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Topic deleted and not recreated: the restarted node does not create a new, empty
/// topic for a ledger that holds blocks; the channel is not served (Broadcast
/// SERVICE_UNAVAILABLE, /healthz 503) and the topic stays absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_topic_is_not_created_again() {
    let brokers = kafka1();
    let mut c = Cluster::init(
        "deleted",
        1,
        &brokers,
        &["--batch-timeout", "200ms", "--max-message-count", "10"],
    );
    c.start_ready(1).await;
    order(&c, 1, 20).await;
    c.stop(1);
    delete_topic(&brokers, &c.channel);

    let log_from = c.log(1).len();
    c.start(1);
    let deadline = Instant::now() + LIMIT;
    while !c.log(1)[log_from..].contains("does not create a new, empty one") {
        assert!(Instant::now() < deadline, "no report:\n{}", c.logs_tail(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = c.healthz(1);
    assert!(code == 503 && body.contains(&c.channel), "{code} {body}");
    let env = envelope(
        &c.client(),
        &c.channel,
        HeaderType::EndorserTransaction,
        &unique_name("refused"),
        Bytes::from_static(b"must not be ordered"),
    );
    let statuses = tokio::time::timeout(PROMPT, try_broadcast_all(&c.address(1), vec![env]))
        .await
        .expect("Broadcast answers promptly");
    assert_eq!(
        statuses.first().map(|s| s.0),
        Some(Status::ServiceUnavailable as i32)
    );
    tokio::time::sleep(QUIET).await;
    let out = Command::new(kafka_script())
        .args(["tool", "org.apache.kafka.tools.TopicCommand"])
        .args(["--bootstrap-server", &brokers, "--list"])
        .output()
        .expect("scripts/kafka runs");
    let topics = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{topics}");
    assert!(
        topics.contains(&c.system_channel) && !topics.contains(&c.channel),
        "the deleted topic was created again: {topics}"
    );
}
