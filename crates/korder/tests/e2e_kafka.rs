//! End-to-end over a real Apache Kafka: several `korder start` processes on one
//! topic cut identical chains, restart and catch up, survive a broker failure, agree
//! on time-to-cut, and wait for brokers that are not up yet.
//!
//! Run through `scripts/test`, which starts the brokers, or by hand against running
//! clusters (`scripts/kafka start`, `KORDER_KAFKA_STATE=/tmp/k3 scripts/kafka start
//! --brokers 3`):
//! `KORDER_KAFKA_BOOTSTRAP=… KORDER_KAFKA3_BOOTSTRAP=… KORDER_KAFKA3_STATE=/tmp/k3
//! cargo test -p korder --test e2e_kafka`. Without those variables every test fails,
//! on purpose: a Kafka test that skips proves nothing.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_kafka::{KafkaConfig, KafkaLog};
use korder_log::{Log, LogReader, ReadFrom};
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Block, HeaderType, Status};
use korder_proto::orderer::{KafkaMessage, kafka_message};
use support::{
    Cluster, assert_same_chain, envelope, kafka_script, korder, try_all_blocks, try_broadcast_all,
    tx_counts, unique_name,
};

/// Blocks cut by size hold this many envelopes.
const MAX_MESSAGE_COUNT: &str = "50";
/// How long a condition (convergence, delivery, acknowledgements) may take.
const CONVERGE_LIMIT: Duration = Duration::from_secs(120);
/// How long one Broadcast or Deliver call may take before it counts as failed.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Poll interval of the bounded waits below.
const POLL: Duration = Duration::from_millis(50);

/// The one-broker cluster's bootstrap servers.
fn kafka1() -> String {
    std::env::var("KORDER_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KORDER_KAFKA_BOOTSTRAP is not set: these tests need a real Kafka broker; run \
             scripts/test, or start one with scripts/kafka start and export its bootstrap"
        )
    })
}

/// The three-broker cluster's bootstrap servers.
fn kafka3() -> String {
    std::env::var("KORDER_KAFKA3_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KORDER_KAFKA3_BOOTSTRAP is not set: the failover test needs a three-broker \
             Kafka; run scripts/test, or start one with KORDER_KAFKA_STATE=DIR \
             scripts/kafka start --brokers 3 and export its bootstrap and \
             KORDER_KAFKA3_STATE=DIR"
        )
    })
}

/// Runs `scripts/kafka ARGS` on the cluster whose state is in `state`; its output.
fn kafka_cmd(state: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(kafka_script())
        .args(args)
        .env("KORDER_KAFKA_STATE", state)
        .output()
        .expect("scripts/kafka runs");
    assert!(
        out.status.success(),
        "scripts/kafka {args:?} (state {state}) failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn pause() {
    tokio::time::sleep(POLL).await;
}

/// Every node's chain of the application channel, or `None` while one is not
/// served.
async fn chains(c: &Cluster, signer: &SigningIdentity, nodes: &[usize]) -> Option<Vec<Vec<Block>>> {
    let mut out = Vec::new();
    for &k in nodes {
        let address = c.address(k);
        let fetch = try_all_blocks(&address, signer, &c.channel);
        out.push(tokio::time::timeout(CALL_LIMIT, fetch).await.ok()??);
    }
    Some(out)
}

/// Waits until `nodes` serve chains of one height whose tx ids satisfy `complete`,
/// then asserts the chains are identical (signatures aside) and that no tx id occurs
/// twice; returns the chain.
async fn wait_converged(
    c: &Cluster,
    signer: &SigningIdentity,
    nodes: &[usize],
    complete: impl Fn(&BTreeMap<String, u32>) -> bool,
) -> Vec<Block> {
    let deadline = Instant::now() + CONVERGE_LIMIT;
    let mut last = String::from("no node served its chain");
    loop {
        if let Some(all) = chains(c, signer, nodes).await {
            let heights: Vec<usize> = all.iter().map(Vec::len).collect();
            let counts = tx_counts(&all[0]);
            if heights.iter().all(|h| *h == heights[0]) && complete(&counts) {
                for (i, chain) in all.iter().enumerate().skip(1) {
                    assert_same_chain(
                        &all[0],
                        chain,
                        &format!("node{} vs node{}", nodes[0], nodes[i]),
                    );
                }
                let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
                assert!(dups.is_empty(), "ordered twice: {dups:?}");
                return all.into_iter().next().unwrap();
            }
            last = format!("heights {heights:?}, {} tx ids on the first", counts.len());
        }
        assert!(
            Instant::now() < deadline,
            "nodes {nodes:?} did not converge: {last}\n{}",
            c.logs_tail(30)
        );
        pause().await;
    }
}

/// Waits until every id of `acked` is ordered, the chains agree, and every id occurs
/// once; returns the chain.
async fn wait_converged_with(
    c: &Cluster,
    signer: &SigningIdentity,
    nodes: &[usize],
    acked: &HashSet<String>,
) -> Vec<Block> {
    let chain = wait_converged(c, signer, nodes, |counts| {
        acked.iter().all(|id| counts.contains_key(id))
    })
    .await;
    let counts = tx_counts(&chain);
    for id in acked {
        assert_eq!(counts.get(id), Some(&1), "{id} not ordered exactly once");
    }
    chain
}

/// Broadcast load: `streams` streams per address, each sending batches of 20
/// envelopes with unique tx ids and recording the acknowledged ones. Streams whose
/// node is down retry their next batch until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(
        addresses: &[String],
        streams: usize,
        signer: &Arc<SigningIdentity>,
        channel: &str,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let tag = unique_name("tx");
        let mut tasks = Vec::new();
        for (a, address) in addresses.iter().enumerate() {
            for s in 0..streams {
                let (stop, acked, signer) = (stop.clone(), acked.clone(), signer.clone());
                let (address, channel, tag) = (address.clone(), channel.to_string(), tag.clone());
                tasks.push(tokio::spawn(async move {
                    for batch in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let ids: Vec<String> = (0..20)
                            .map(|i| format!("{tag}-n{a}-s{s}-b{batch}-{i}"))
                            .collect();
                        let envs = ids
                            .iter()
                            .map(|id| {
                                envelope(
                                    &signer,
                                    &channel,
                                    HeaderType::EndorserTransaction,
                                    id,
                                    Bytes::from_static(b"korder e2e over kafka"),
                                )
                            })
                            .collect();
                        let statuses =
                            tokio::time::timeout(CALL_LIMIT, try_broadcast_all(&address, envs))
                                .await
                                .unwrap_or_default();
                        let mut ok = 0;
                        {
                            let mut acked = acked.lock().unwrap();
                            for ((st, _), id) in statuses.iter().zip(&ids) {
                                if *st == Status::Success as i32 {
                                    acked.insert(id.clone());
                                    ok += 1;
                                }
                            }
                        }
                        if ok == 0 {
                            // Node down or not ordering: try again shortly.
                            tokio::time::sleep(POLL).await;
                        }
                    }
                }));
            }
        }
        Load { stop, acked, tasks }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until at least `n` envelopes are acknowledged.
    async fn wait_acked(&self, n: usize, c: &Cluster, what: &str) {
        let deadline = Instant::now() + CONVERGE_LIMIT;
        while self.acked() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} envelopes acknowledged in time\n{}",
                self.acked(),
                c.logs_tail(30)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the load; the acknowledged tx ids.
    async fn finish(self) -> HashSet<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

/// Node 1's /healthz.
fn healthz(c: &Cluster) -> (u16, String) {
    c.healthz(1)
}

fn batch_args(timeout: &'static str) -> [&'static str; 4] {
    [
        "--batch-timeout",
        timeout,
        "--max-message-count",
        MAX_MESSAGE_COUNT,
    ]
}

/// Two nodes on one topic, Broadcast spread over both: their chains are identical
/// block by block (signatures aside), every acknowledged envelope is ordered exactly
/// once, and both ledgers verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_cut_identical_chains() {
    let brokers = kafka1();
    let mut c = Cluster::init("two", 2, &brokers, &batch_args("200ms"));
    c.start_ready(1).await;
    c.start_ready(2).await;
    let signer = Arc::new(c.client());
    let load = Load::start(&c.addresses(), 2, &signer, &c.channel);
    load.wait_acked(600, &c, "two nodes").await;
    let acked = load.finish().await;
    let chain = wait_converged_with(&c, &signer, &[1, 2], &acked).await;
    assert!(
        chain.len() > 600 / 50,
        "600 envelopes fit in {} blocks",
        chain.len()
    );
    c.stop_all();
    korder(&["ledger", "verify", c.data_dir().to_str().unwrap()]);
}

/// Three nodes, `korder bench` spreading its streams over all of them: bench sees
/// every envelope delivered once, and the three chains are identical and hold each
/// envelope exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_under_bench() {
    let brokers = kafka1();
    let mut c = Cluster::init("three", 3, &brokers, &batch_args("200ms"));
    for k in 1..=3 {
        c.start_ready(k).await;
    }
    let out = korder(&[
        "bench",
        "--data-dir",
        c.data_dir().to_str().unwrap(),
        "--tx",
        "1500",
        "--clients",
        "6",
        "--size",
        "200",
        "--timeout-s",
        "90",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("bench, 3 nodes, 1 broker: {report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["acked"], 1500, "{report}");
    assert_eq!(report["delivered"], 1500, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    let signer = c.client();
    let chain = wait_converged(&c, &signer, &[1, 2, 3], |counts| {
        counts.values().sum::<u32>() >= 1500
    })
    .await;
    let counts = tx_counts(&chain);
    assert_eq!(counts.len(), 1500, "distinct envelopes ordered");
    assert!(counts.values().all(|n| *n == 1));
    c.stop_all();
    korder(&["ledger", "verify", c.data_dir().to_str().unwrap()]);
}

/// Under load, one node stopped cleanly and another killed with SIGKILL restart and
/// catch up: all three chains end identical, with every acknowledged envelope once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopped_and_killed_nodes_catch_up() {
    let brokers = kafka1();
    let mut c = Cluster::init("restart", 3, &brokers, &batch_args("200ms"));
    for k in 1..=3 {
        c.start_ready(k).await;
    }
    let signer = Arc::new(c.client());
    let load = Load::start(&c.addresses(), 1, &signer, &c.channel);
    load.wait_acked(200, &c, "before the stop").await;
    c.stop(2);
    load.wait_acked(load.acked() + 200, &c, "node2 stopped")
        .await;
    c.kill(3);
    load.wait_acked(load.acked() + 200, &c, "node3 killed")
        .await;
    c.start_ready(2).await;
    c.start_ready(3).await;
    load.wait_acked(load.acked() + 200, &c, "after the restarts")
        .await;
    let acked = load.finish().await;
    wait_converged_with(&c, &signer, &[1, 2, 3], &acked).await;
    c.stop_all();
    korder(&["ledger", "verify", c.data_dir().to_str().unwrap()]);
}

/// A node started only after the others ordered many blocks, its ledger holding
/// just the genesis blocks, replays the topic and converges to the same chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_node_replays_the_topic() {
    let brokers = kafka1();
    let mut c = Cluster::init("late", 3, &brokers, &batch_args("200ms"));
    c.start_ready(1).await;
    c.start_ready(2).await;
    let signer = Arc::new(c.client());
    let load = Load::start(&c.addresses()[..2], 2, &signer, &c.channel);
    load.wait_acked(800, &c, "before node3 starts").await;
    let mut acked = load.finish().await;
    let early = wait_converged_with(&c, &signer, &[1, 2], &acked)
        .await
        .len();
    assert!(early > 800 / 50, "only {early} blocks before node3 starts");
    c.start_ready(3).await;
    // More load while node3 catches up, spread over all three.
    let load = Load::start(&c.addresses(), 1, &signer, &c.channel);
    load.wait_acked(300, &c, "while node3 catches up").await;
    acked.extend(load.finish().await);
    let chain = wait_converged_with(&c, &signer, &[1, 2, 3], &acked).await;
    assert!(chain.len() > early);
    c.stop_all();
    korder(&["ledger", "verify", c.data_dir().to_str().unwrap()]);
}

/// Restarts a killed broker of the three-broker cluster when dropped, so that a
/// failing test leaves the cluster whole for the others.
struct BrokerBack {
    state: String,
    id: Option<String>,
}

impl BrokerBack {
    fn kill(state: &str, id: i32) -> BrokerBack {
        let id = id.to_string();
        kafka_cmd(state, &["kill-broker", &id]);
        BrokerBack {
            state: state.into(),
            id: Some(id),
        }
    }

    fn restart(&mut self) {
        if let Some(id) = self.id.take() {
            kafka_cmd(&self.state, &["start-broker", &id]);
        }
    }
}

impl Drop for BrokerBack {
    fn drop(&mut self) {
        self.restart();
    }
}

/// Replication factor 3: killing the partition leader of the channel's topic under
/// load does not stop ordering, and no acknowledged envelope is lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordering_survives_the_leader_broker_failure() {
    let brokers = kafka3();
    let state = std::env::var("KORDER_KAFKA3_STATE").unwrap_or_else(|_| {
        panic!("KORDER_KAFKA3_STATE names the three-broker cluster's state directory")
    });
    let status = Command::new(kafka_script())
        .arg("status")
        .env("KORDER_KAFKA_STATE", &state)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "the three-broker cluster is not whole: {}",
        String::from_utf8_lossy(&status.stdout)
    );
    let mut args = batch_args("200ms").to_vec();
    args.extend(["--replication-factor", "3"]);
    let mut c = Cluster::init("failover", 2, &brokers, &args);
    c.start_ready(1).await;
    c.start_ready(2).await;
    let signer = Arc::new(c.client());
    let load = Load::start(&c.addresses(), 2, &signer, &c.channel);
    load.wait_acked(300, &c, "before the broker failure").await;

    let mut config = KafkaConfig::new(brokers.split(','));
    config.topic_replication_factor = 3;
    let topic = KafkaLog::open(config, &c.channel).await.unwrap();
    assert_eq!(topic.replica_ids().await.unwrap().len(), 3, "replicas");
    let leader = topic.leader_id().await.unwrap().expect("a leader");
    drop(topic);
    let mut broker = BrokerBack::kill(&state, leader);
    let at_kill = load.acked();
    load.wait_acked(at_kill + 500, &c, "leader broker down")
        .await;
    broker.restart();
    load.wait_acked(load.acked() + 100, &c, "broker back").await;
    let acked = load.finish().await;
    wait_converged_with(&c, &signer, &[1, 2], &acked).await;
    c.stop_all();
    korder(&["ledger", "verify", c.data_dir().to_str().unwrap()]);
}

/// Trickle traffic with a short BatchTimeout on two nodes: both post TIMETOCUT
/// records, each block number is cut once (stale requests ignored), and the nodes'
/// chains are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn time_to_cut_through_kafka() {
    let brokers = kafka1();
    let mut c = Cluster::init("ttc", 2, &brokers, &batch_args("100ms"));
    c.start_ready(1).await;
    c.start_ready(2).await;
    let signer = c.client();
    let rounds = 20u64;
    let mut acked = HashSet::new();
    for i in 0..rounds {
        let id = unique_name("trickle");
        let k = (i % 2) as usize + 1;
        let env = envelope(
            &signer,
            &c.channel,
            HeaderType::EndorserTransaction,
            &id,
            Bytes::from_static(b"one"),
        );
        let statuses = try_broadcast_all(&c.address(k), vec![env]).await;
        assert_eq!(
            statuses.first().map(|s| s.0),
            Some(Status::Success as i32),
            "round {i}: {statuses:?}"
        );
        acked.insert(id.clone());
        // Delivered on both nodes before the next one is sent.
        wait_converged(&c, &signer, &[1, 2], |counts| counts.contains_key(&id)).await;
    }
    let chain = wait_converged_with(&c, &signer, &[1, 2], &acked).await;
    assert_eq!(
        chain.len() as u64,
        rounds + 1,
        "one block per trickled envelope, after the genesis block"
    );
    for b in &chain[1..] {
        assert_eq!(
            b.data.as_ref().unwrap().data.len(),
            1,
            "a timeout-cut block"
        );
    }

    // The topic: every record up to the high watermark.
    let log = KafkaLog::open(KafkaConfig::new(brokers.split(',')), &c.channel)
        .await
        .unwrap();
    let (_, next) = log.watermarks().await.unwrap();
    let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
    let mut ttc: BTreeMap<u64, u32> = BTreeMap::new();
    let mut regular = 0;
    loop {
        let record = tokio::time::timeout(CONVERGE_LIMIT, reader.next())
            .await
            .expect("the topic's records are readable")
            .unwrap();
        match KafkaMessage::decode(record.value.as_ref()).unwrap().r#type {
            Some(kafka_message::Type::TimeToCut(t)) => *ttc.entry(t.block_number).or_default() += 1,
            Some(kafka_message::Type::Regular(_)) => regular += 1,
            _ => {}
        }
        if record.offset.get() + 1 >= next {
            break;
        }
    }
    assert_eq!(regular, rounds, "regular records in the topic");
    for n in 1..=rounds {
        assert!(
            ttc.get(&n).is_some_and(|k| *k >= 1),
            "no TIMETOCUT for block {n}: {ttc:?}"
        );
    }
    assert!(
        ttc.keys().all(|n| (1..=rounds).contains(n)),
        "TIMETOCUT for a block never cut: {ttc:?}"
    );
    let total: u32 = ttc.values().sum();
    eprintln!("TIMETOCUT records per block: {ttc:?} ({total} for {rounds} blocks)");
    assert!(
        ttc.values().any(|k| *k >= 2),
        "both nodes' timers should post a TIMETOCUT for some block: {ttc:?}"
    );
    c.stop_all();
    korder(&["ledger", "verify", c.data_dir().to_str().unwrap()]);
}

/// A node with the early-cut policy and one without share a topic whose
/// BatchTimeout is an hour: envelopes trickled through the node without it are
/// still cut at once (the other node posts the TIMETOCUT), a load over both fills
/// blocks, and the two chains are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn early_cut_node_and_plain_node_cut_identical_chains() {
    let brokers = kafka1();
    let mut c = Cluster::init("early", 2, &brokers, &batch_args("1h"));
    c.start_ready_with_env(1, &[("ORDERER_KORDER_EARLYCUT", "100ms")])
        .await;
    c.start_ready(2).await;
    let signer = c.client();
    let mut acked = HashSet::new();
    for i in 0..5 {
        let id = unique_name("trickle");
        let env = envelope(
            &signer,
            &c.channel,
            HeaderType::EndorserTransaction,
            &id,
            Bytes::from_static(b"one"),
        );
        let statuses = try_broadcast_all(&c.address(2), vec![env]).await;
        assert_eq!(
            statuses.first().map(|s| s.0),
            Some(Status::Success as i32),
            "round {i}: {statuses:?}"
        );
        acked.insert(id.clone());
        wait_converged(&c, &signer, &[1, 2], |counts| counts.contains_key(&id)).await;
    }
    let signer = Arc::new(signer);
    let load = Load::start(&c.addresses(), 2, &signer, &c.channel);
    load.wait_acked(400, &c, "early cut").await;
    acked.extend(load.finish().await);
    let chain = wait_converged_with(&c, &signer, &[1, 2], &acked).await;
    assert!(
        chain[1..6]
            .iter()
            .all(|b| b.data.as_ref().unwrap().data.len() == 1),
        "each trickled envelope is cut alone"
    );
    c.stop_all();
    korder(&["ledger", "verify", c.data_dir().to_str().unwrap()]);
}

/// Short Kafka retry settings as ORDERER_* overrides; `total` is ShortTotal.
fn retry_env(short_total: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("ORDERER_KAFKA_RETRY_SHORTINTERVAL", "200ms"),
        ("ORDERER_KAFKA_RETRY_SHORTTOTAL", short_total),
        ("ORDERER_KAFKA_RETRY_LONGINTERVAL", "500ms"),
        ("ORDERER_KAFKA_RETRY_LONGTOTAL", "3s"),
        ("ORDERER_KAFKA_RETRY_NETWORKTIMEOUTS_DIALTIMEOUT", "1s"),
        ("ORDERER_KAFKA_RETRY_NETWORKTIMEOUTS_READTIMEOUT", "2s"),
        ("ORDERER_KAFKA_RETRY_NETWORKTIMEOUTS_WRITETIMEOUT", "2s"),
    ]
}

/// One Broadcast of a fresh envelope to node 1: its status.
async fn broadcast_one(c: &Cluster, signer: &SigningIdentity, id: &str) -> Option<i32> {
    let env = envelope(
        signer,
        &c.channel,
        HeaderType::EndorserTransaction,
        id,
        Bytes::from_static(b"x"),
    );
    try_broadcast_all(&c.address(1), vec![env])
        .await
        .first()
        .map(|s| s.0)
}

/// Brokers that never come up: Broadcast answers SERVICE_UNAVAILABLE and /healthz
/// 503 while the chain retries; after the retry totals the chain reports why it
/// stopped, and the process keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brokers_never_reachable() {
    kafka1(); // like every test of this file, refuses to run without the suite's brokers
    // Nothing listens there: the port was free a moment ago and nobody binds it.
    let dead = format!("127.0.0.1:{}", support::free_port());
    let mut c = Cluster::init("unreachable", 1, &dead, &batch_args("200ms"));
    c.start_with_env(1, &retry_env("2s"));
    let signer = c.client();
    assert_eq!(
        broadcast_one(&c, &signer, "early").await,
        Some(Status::ServiceUnavailable as i32),
        "Broadcast while the brokers are unreachable"
    );
    let (code, body) = healthz(&c);
    assert_eq!(code, 503, "/healthz while starting: {body}");

    // Retries end after ShortTotal + LongTotal (5s) plus the attempts' timeouts.
    let deadline = Instant::now() + CONVERGE_LIMIT;
    loop {
        let (code, body) = healthz(&c);
        assert_eq!(code, 503, "{body}");
        if body.contains("cannot start reading the log") {
            assert!(
                body.contains(&c.channel),
                "the failed channel is named: {body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the chain never gave up: {body}\n{}",
            c.logs_tail(30)
        );
        pause().await;
    }
    assert!(c.log(1).contains("chain stopped"), "{}", c.logs_tail(30));
    assert!(
        c.is_running(1),
        "the node must keep running after a chain failed"
    );
    assert_eq!(
        broadcast_one(&c, &signer, "late").await,
        Some(Status::ServiceUnavailable as i32),
        "Broadcast on the failed chain"
    );
    c.stop(1);
}

/// Start-up retries are bounded by wall-clock time, ShortTotal then LongTotal, as
/// the spec's retry policy says, even when each attempt outlasts the intervals.
///
/// With attempts of ReadTimeout (4s) against brokers that refuse connections and
/// totals of 1s each, each phase runs its immediate attempt and at most one more: at
/// most 4 attempts before the chain reports its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn start_up_retries_end_after_the_configured_totals() {
    kafka1(); // like every test of this file, refuses to run without the suite's brokers
    let dead = format!("127.0.0.1:{}", support::free_port());
    let mut c = Cluster::init("retrytotal", 1, &dead, &batch_args("200ms"));
    c.start_with_env(
        1,
        &[
            ("ORDERER_KAFKA_RETRY_SHORTINTERVAL", "200ms"),
            ("ORDERER_KAFKA_RETRY_SHORTTOTAL", "1s"),
            ("ORDERER_KAFKA_RETRY_LONGINTERVAL", "250ms"),
            ("ORDERER_KAFKA_RETRY_LONGTOTAL", "1s"),
            ("ORDERER_KAFKA_RETRY_NETWORKTIMEOUTS_DIALTIMEOUT", "4s"),
            ("ORDERER_KAFKA_RETRY_NETWORKTIMEOUTS_READTIMEOUT", "4s"),
            ("ORDERER_KAFKA_RETRY_NETWORKTIMEOUTS_WRITETIMEOUT", "4s"),
        ],
    );
    let marker = format!("channel={} attempt=", c.channel);
    let deadline = Instant::now() + CONVERGE_LIMIT;
    loop {
        let attempts = c
            .log(1)
            .lines()
            .filter(|l| l.contains("chain start-up attempt failed") && l.contains(&marker))
            .count();
        assert!(
            attempts <= 4,
            "{attempts} start-up attempts of {}s each for ShortTotal 1s + LongTotal 1s: the \
             retry policy runs its whole schedule instead of stopping when the totals \
             have elapsed\n{}",
            4,
            c.logs_tail(30)
        );
        let (code, body) = healthz(&c);
        assert_eq!(code, 503, "{body}");
        if body.contains("cannot start reading the log") && body.contains(&c.channel) {
            break;
        }
        assert!(Instant::now() < deadline, "the chain never gave up: {body}");
        pause().await;
    }
    assert!(c.is_running(1));
    c.stop(1);
}

/// Stops a private Kafka cluster when dropped.
struct OwnKafka {
    state: String,
}

impl Drop for OwnKafka {
    /// SIGKILLs the broker first: its data is thrown away, so a clean shutdown
    /// (up to the script's stop timeout) would only cost time.
    fn drop(&mut self) {
        for args in [&["kill-broker", "1"][..], &["stop"][..]] {
            let _ = Command::new(kafka_script())
                .args(args)
                .env("KORDER_KAFKA_STATE", &self.state)
                .output();
        }
        let _ = std::fs::remove_file(format!("{}.lock", self.state));
    }
}

/// The broker is down when the node starts and comes up within the retry window:
/// the chain starts on its own and orders, with no restart of the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chain_starts_when_brokers_come_up() {
    kafka1(); // like every test of this file, refuses to run without the suite's brokers
    // A private one-broker cluster: started to learn its port, then its broker is
    // killed (state and port kept) before the node starts.
    let own = OwnKafka {
        state: std::env::temp_dir()
            .join(unique_name("korder-e2e-kafka"))
            .to_str()
            .unwrap()
            .to_string(),
    };
    let out = kafka_cmd(&own.state, &["start", "--brokers", "1"]);
    let brokers = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    kafka_cmd(&own.state, &["kill-broker", "1"]);

    let mut c = Cluster::init("comeup", 1, &brokers, &batch_args("200ms"));
    c.start_with_env(1, &retry_env("5m"));
    let signer = c.client();
    assert_eq!(
        broadcast_one(&c, &signer, "early").await,
        Some(Status::ServiceUnavailable as i32),
        "Broadcast before the broker is up"
    );
    let (code, body) = healthz(&c);
    assert_eq!(code, 503, "/healthz before the broker is up: {body}");

    kafka_cmd(&own.state, &["start-broker", "1"]);
    let deadline = Instant::now() + CONVERGE_LIMIT;
    let mut n = 0;
    let id = loop {
        n += 1;
        let id = format!("after-{n}");
        if broadcast_one(&c, &signer, &id).await == Some(Status::Success as i32) {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "the chain did not start after the broker came up\n{}",
            c.logs_tail(30)
        );
        pause().await;
    };
    let acked: HashSet<String> = [id].into();
    wait_converged_with(&c, &signer, &[1], &acked).await;
    // Both channels' chains run: /healthz turns 200.
    let deadline = Instant::now() + CONVERGE_LIMIT;
    loop {
        let (code, body) = healthz(&c);
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/healthz stays {code}: {body}");
        pause().await;
    }
    assert!(c.is_running(1));
    c.stop(1);
    korder(&["ledger", "verify", c.data_dir().to_str().unwrap()]);
}
