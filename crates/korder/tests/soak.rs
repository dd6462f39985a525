//! Soak: korder nodes SIGKILLed again and again while clients broadcast without pause
//! and record the id of every transaction the orderer acknowledged. At the end:
//!
//! - lost: acknowledged tx ids missing from a node's final chain;
//! - duplicated: tx ids that occur more than once in a node's chain;
//! - diverged: block heights at which two views of the chain hold different blocks
//!   (block hashes of every node's final chain, and of every newest block a node
//!   served just before one of the kills);
//!
//! all must be 0, and the ledgers must verify.
//!
//! The test suite runs a short soak: `KORDER_SOAK_KILLS` kills per backend (default
//! 8), kill moments drawn from `KORDER_SOAK_SEED` (default: from the clock; printed
//! in the report). `scripts/soak` runs the long one in release (100 kills or more)
//! and prints the same reports. The Kafka soak runs three korder nodes on one topic
//! of a three-broker Kafka (`KORDER_KAFKA3_BOOTSTRAP`, `KORDER_KAFKA3_STATE` and
//! `KORDER_KAFKA_SCRIPT`, as `scripts/test` exports them) and kills the partition
//! leader broker for a third of the run; without a broker it fails, never skips.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_kafka::{KafkaConfig, KafkaLog};
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{Block, HeaderType, Status};
use support::{
    Cluster, Net, envelope, header_hashes, korder, try_all_blocks, try_broadcast_all,
    try_newest_block, tx_counts, unique_name,
};

/// Kills per backend when `KORDER_SOAK_KILLS` is not set.
const DEFAULT_KILLS: usize = 8;
/// Envelopes per Broadcast stream; each stream is opened, filled and read to its end.
const BATCH: usize = 20;
/// Longest wait for the next acknowledgement before the soak counts as hung.
const PROGRESS_LIMIT: Duration = Duration::from_secs(120);
/// Longest wait, after the load stops, for every acknowledged id to be ordered
/// everywhere.
const CONVERGE_LIMIT: Duration = Duration::from_secs(180);
/// How long one Broadcast or Deliver call may take before it counts as failed.
const CALL_LIMIT: Duration = Duration::from_secs(30);
/// Poll interval of the bounded waits below.
const POLL: Duration = Duration::from_millis(50);

/// Kills per backend: `KORDER_SOAK_KILLS` or the default.
fn kills() -> usize {
    match std::env::var("KORDER_SOAK_KILLS") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("KORDER_SOAK_KILLS={v:?} is not a count")),
        Err(_) => DEFAULT_KILLS,
    }
}

/// The seed of the kill schedule: `KORDER_SOAK_SEED` or one from the clock.
fn seed() -> u64 {
    match std::env::var("KORDER_SOAK_SEED") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("KORDER_SOAK_SEED={v:?} is not a number")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64,
    }
}

/// xorshift64*: a small deterministic generator for the kill schedule.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // The state must never be 0.
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Continuous Broadcast load: `streams` clients per address, each sending batches of
/// [`BATCH`] envelopes with unique tx ids, one stream per batch, and recording every
/// id answered SUCCESS. A client whose node is down retries until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<HashSet<String>>>,
    refused: Arc<AtomicU64>,
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
        let refused = Arc::new(AtomicU64::new(0));
        let tag = unique_name("soak");
        let mut tasks = Vec::new();
        for (a, address) in addresses.iter().enumerate() {
            for s in 0..streams {
                let (stop, acked, refused) = (stop.clone(), acked.clone(), refused.clone());
                let signer = signer.clone();
                let (address, channel, tag) = (address.clone(), channel.to_string(), tag.clone());
                tasks.push(tokio::spawn(async move {
                    for batch in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let ids: Vec<String> = (0..BATCH)
                            .map(|i| format!("{tag}-n{a}-c{s}-b{batch}-{i}"))
                            .collect();
                        let envs = ids
                            .iter()
                            .map(|id| {
                                envelope(
                                    &signer,
                                    &channel,
                                    HeaderType::EndorserTransaction,
                                    id,
                                    Bytes::from(format!("soak payload {id}")),
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
                        refused.fetch_add((statuses.len() - ok) as u64, Ordering::Relaxed);
                        if ok == 0 {
                            // Node down or not ordering: try again shortly.
                            tokio::time::sleep(POLL).await;
                        }
                    }
                }));
            }
        }
        Load {
            stop,
            acked,
            refused,
            tasks,
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until at least `n` envelopes are acknowledged; panics with `context()`
    /// when no new acknowledgement comes for [`PROGRESS_LIMIT`].
    async fn wait_acked(&self, n: usize, what: &str, context: impl Fn() -> String) {
        let mut last = self.acked();
        let mut since = Instant::now();
        while self.acked() < n {
            let now = self.acked();
            if now > last {
                (last, since) = (now, Instant::now());
            }
            assert!(
                since.elapsed() < PROGRESS_LIMIT,
                "{what}: no acknowledgement for {PROGRESS_LIMIT:?} ({now} of {n})\n{}",
                context()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the load; the acknowledged tx ids and the count of other answers.
    async fn finish(self) -> (HashSet<String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.refused.load(Ordering::Relaxed))
    }
}

/// Block hashes a node served, by block number, with the node's name.
#[derive(Default)]
struct Seen(Vec<(String, u64, [u8; 32])>);

impl Seen {
    /// Records the newest block `address` serves now, if it serves one.
    async fn newest(&mut self, who: &str, address: &str, signer: &SigningIdentity, ch: &str) {
        let fetch = try_newest_block(address, signer, ch);
        if let Ok(Some(b)) = tokio::time::timeout(CALL_LIMIT, fetch).await {
            let number = b.header.as_ref().unwrap().number;
            let hash = header_hashes(std::slice::from_ref(&b))[0];
            self.0.push((who.to_string(), number, hash));
        }
    }
}

/// The figures of one soak run.
struct Report {
    backend: &'static str,
    nodes: usize,
    kills: usize,
    broker_kills: usize,
    acked: usize,
    refused: u64,
    blocks: usize,
    heights: Vec<usize>,
    lost: usize,
    duplicated: usize,
    diverged: usize,
    seed: u64,
    duration: Duration,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "soak report: backend={} nodes={} kills={} broker_kills={} acknowledged={} \
             not_acknowledged={} blocks={} lost={} duplicated={} diverged={} duration_s={:.1} \
             seed={}",
            self.backend,
            self.nodes,
            self.kills,
            self.broker_kills,
            self.acked,
            self.refused,
            self.blocks,
            self.lost,
            self.duplicated,
            self.diverged,
            self.duration.as_secs_f64(),
            self.seed
        )
    }
}

impl Report {
    /// Prints the report and asserts that nothing was lost, duplicated or diverged.
    fn check(&self, context: impl Fn() -> String) {
        println!("{self}");
        assert!(
            self.heights.iter().all(|h| *h == self.heights[0]),
            "heights differ {:?}; {self}\n{}",
            self.heights,
            context()
        );
        assert!(
            self.lost == 0 && self.duplicated == 0 && self.diverged == 0,
            "{self}\n{}",
            context()
        );
        assert!(self.acked > 0, "nothing was acknowledged; {self}");
    }
}

/// Lost, duplicated and diverged counts over the final `chains` and the blocks
/// `seen` during the run (see the module documentation).
fn account(
    chains: &[(String, Vec<Block>)],
    acked: &HashSet<String>,
    seen: &Seen,
) -> (usize, usize, usize) {
    let mut lost = BTreeSet::new();
    let mut duplicated = BTreeSet::new();
    let mut views: BTreeMap<u64, BTreeSet<[u8; 32]>> = BTreeMap::new();
    for (_, chain) in chains {
        let counts = tx_counts(chain);
        lost.extend(acked.iter().filter(|id| !counts.contains_key(*id)).cloned());
        duplicated.extend(counts.into_iter().filter(|(_, n)| *n > 1).map(|(id, _)| id));
        for (number, hash) in header_hashes(chain).into_iter().enumerate() {
            views.entry(number as u64).or_default().insert(hash);
        }
    }
    for (_, number, hash) in &seen.0 {
        views.entry(*number).or_default().insert(*hash);
    }
    let diverged = views.values().filter(|hashes| hashes.len() > 1).count();
    for id in lost.iter().take(10) {
        eprintln!("lost: {id}");
    }
    for id in duplicated.iter().take(10) {
        eprintln!("duplicated: {id}");
    }
    for (number, hashes) in views.iter().filter(|(_, h)| h.len() > 1).take(10) {
        eprintln!(
            "diverged: block {number} has {} different hashes",
            hashes.len()
        );
    }
    (lost.len(), duplicated.len(), diverged)
}

/// Fetches every node's chain until all have one height and hold every acknowledged
/// id, or [`CONVERGE_LIMIT`] passes; the last chains fetched.
async fn final_chains(
    nodes: &[(String, String)],
    signer: &SigningIdentity,
    channel: &str,
    acked: &HashSet<String>,
    context: impl Fn() -> String,
) -> Vec<(String, Vec<Block>)> {
    let deadline = Instant::now() + CONVERGE_LIMIT;
    let mut last: Option<Vec<(String, Vec<Block>)>> = None;
    loop {
        let mut all = Vec::new();
        for (who, address) in nodes {
            let fetch = try_all_blocks(address, signer, channel);
            if let Ok(Some(chain)) = tokio::time::timeout(CALL_LIMIT, fetch).await {
                all.push((who.clone(), chain));
            }
        }
        if all.len() == nodes.len() {
            let height = all[0].1.len();
            let done = all.iter().all(|(_, chain)| {
                let counts = tx_counts(chain);
                chain.len() == height && acked.iter().all(|id| counts.contains_key(id))
            });
            if done {
                return all;
            }
            last = Some(all);
        }
        if Instant::now() >= deadline {
            return last.unwrap_or_else(|| {
                panic!("not every node served its chain in time\n{}", context())
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Embedded log, one node: SIGKILL at `KORDER_SOAK_KILLS` moments under continuous
/// load (some right after the restart, most after a random number of new
/// acknowledgements): no acknowledged tx is lost or ordered twice, no block the node
/// served changes, and the ledger verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_soak_under_sigkill() {
    let (kills, seed) = (kills(), seed());
    eprintln!("embedded soak: {kills} kills, seed {seed}");
    let mut rng = Rng::new(seed);
    let began = Instant::now();
    let mut net = Net::init(&["--batch-timeout", "100ms", "--max-message-count", "50"]);
    let signer = Arc::new(net.client());
    let channel = "mychannel";
    let address = net.address();
    net.start();
    let load = Load::start(std::slice::from_ref(&address), 4, &signer, channel);
    let mut seen = Seen::default();
    for kill in 0..kills {
        if rng.below(4) == 0 {
            // Right after the restart: the node may still be recovering its chain.
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        } else {
            let target = load.acked() + 1 + rng.below(400) as usize;
            load.wait_acked(target, &format!("before kill {kill}"), || net.log())
                .await;
        }
        seen.newest("node", &address, &signer, channel).await;
        net.kill();
        net.start();
    }
    // Ordering goes on after the last restart.
    let target = load.acked() + 200;
    load.wait_acked(target, "after the last kill", || net.log())
        .await;
    let (acked, refused) = load.finish().await;
    let nodes = [("node".to_string(), address.clone())];
    let chains = final_chains(&nodes, &signer, channel, &acked, || net.log()).await;
    let (lost, duplicated, diverged) = account(&chains, &acked, &seen);
    let report = Report {
        backend: "embedded",
        nodes: 1,
        kills,
        broker_kills: 0,
        acked: acked.len(),
        refused,
        blocks: chains[0].1.len(),
        heights: chains.iter().map(|(_, c)| c.len()).collect(),
        lost,
        duplicated,
        diverged,
        seed,
        duration: began.elapsed(),
    };
    report.check(|| net.log());
    net.stop();
    korder(&["ledger", "verify", net.data_dir().to_str().unwrap()]);
}

/// The three-broker cluster's bootstrap servers.
fn kafka3() -> String {
    std::env::var("KORDER_KAFKA3_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KORDER_KAFKA3_BOOTSTRAP is not set: the Kafka soak needs a three-broker Kafka; \
             run scripts/soak or scripts/test, or start one with KORDER_KAFKA_STATE=DIR \
             scripts/kafka start --brokers 3 and export its bootstrap and \
             KORDER_KAFKA3_STATE=DIR"
        )
    })
}

/// The three-broker cluster's state directory (for killing and restarting brokers).
fn kafka3_state() -> String {
    std::env::var("KORDER_KAFKA3_STATE").unwrap_or_else(|_| {
        panic!("KORDER_KAFKA3_STATE names the three-broker cluster's state directory")
    })
}

/// `scripts/kafka` (from `KORDER_KAFKA_SCRIPT`, else the repository's own).
fn kafka_script() -> PathBuf {
    std::env::var_os("KORDER_KAFKA_SCRIPT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/kafka"))
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

/// A killed broker, restarted when dropped so that a failing soak leaves the
/// cluster whole for other tests.
struct BrokerDown {
    state: String,
    id: Option<String>,
}

impl BrokerDown {
    fn kill(state: &str, id: i32) -> BrokerDown {
        let id = id.to_string();
        kafka_cmd(state, &["kill-broker", &id]);
        BrokerDown {
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

impl Drop for BrokerDown {
    fn drop(&mut self) {
        self.restart();
    }
}

/// The partition leader of `channel`'s topic.
async fn leader_of(brokers: &str, channel: &str) -> i32 {
    let mut config = KafkaConfig::new(brokers.split(','));
    config.topic_replication_factor = 3;
    let topic = KafkaLog::open(config, channel).await.unwrap();
    assert_eq!(topic.replica_ids().await.unwrap().len(), 3, "replicas");
    topic
        .leader_id()
        .await
        .unwrap()
        .expect("a partition leader")
}

/// Three korder nodes on one topic of a three-broker Kafka (replication factor 3),
/// load spread over all of them: SIGKILL of a random node at `KORDER_SOAK_KILLS`
/// moments, each restarted, with the partition leader broker killed for the middle
/// third of the run: no acknowledged tx is lost or ordered twice, the three chains
/// have the same block hash at every height (as does every block served before a
/// kill), and the ledgers verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_soak_under_sigkill_and_broker_failure() {
    let brokers = kafka3();
    let state = kafka3_state();
    let status = Command::new(kafka_script())
        .arg("status")
        .env("KORDER_KAFKA_STATE", &state)
        .output()
        .expect("scripts/kafka runs");
    assert!(
        status.status.success(),
        "the three-broker cluster is not whole: {}",
        String::from_utf8_lossy(&status.stdout)
    );
    let (kills, seed) = (kills(), seed());
    eprintln!("Kafka soak: {kills} kills, seed {seed}");
    let mut rng = Rng::new(seed);
    let began = Instant::now();
    let mut c = Cluster::init(
        "soak",
        3,
        &brokers,
        &[
            "--batch-timeout",
            "100ms",
            "--max-message-count",
            "50",
            "--replication-factor",
            "3",
        ],
    );
    for k in 1..=3 {
        c.start_ready(k).await;
    }
    let signer = Arc::new(c.client());
    let channel = c.channel.clone();
    let load = Load::start(&c.addresses(), 2, &signer, &channel);
    let mut seen = Seen::default();
    let broker_down_at = kills / 3;
    let broker_up_at = (2 * kills / 3).max(broker_down_at + 1);
    let mut broker: Option<BrokerDown> = None;
    let mut broker_kills = 0;
    for kill in 0..kills {
        if kill == broker_down_at {
            let leader = leader_of(&brokers, &channel).await;
            eprintln!("Kafka soak: killing the partition leader, broker {leader}");
            broker = Some(BrokerDown::kill(&state, leader));
            broker_kills += 1;
        }
        if kill == broker_up_at
            && let Some(mut b) = broker.take()
        {
            b.restart();
        }
        let target = load.acked() + 1 + rng.below(400) as usize;
        load.wait_acked(target, &format!("before kill {kill}"), || c.logs_tail(30))
            .await;
        let k = 1 + rng.below(3) as usize;
        let who = format!("node{k}");
        seen.newest(&who, &c.address(k), &signer, &channel).await;
        c.kill(k);
        tokio::time::sleep(Duration::from_millis(rng.below(1000))).await;
        c.start_ready(k).await;
    }
    if let Some(mut b) = broker.take() {
        b.restart();
    }
    let target = load.acked() + 200;
    load.wait_acked(target, "after the last kill", || c.logs_tail(30))
        .await;
    let (acked, refused) = load.finish().await;
    let nodes: Vec<(String, String)> = (1..=3)
        .map(|k| (format!("node{k}"), c.address(k)))
        .collect();
    let chains = final_chains(&nodes, &signer, &channel, &acked, || c.logs_tail(30)).await;
    let (lost, duplicated, diverged) = account(&chains, &acked, &seen);
    let report = Report {
        backend: "kafka",
        nodes: 3,
        kills,
        broker_kills,
        acked: acked.len(),
        refused,
        blocks: chains[0].1.len(),
        heights: chains.iter().map(|(_, c)| c.len()).collect(),
        lost,
        duplicated,
        diverged,
        seed,
        duration: began.elapsed(),
    };
    report.check(|| c.logs_tail(30));
    c.stop_all();
    korder(&["ledger", "verify", c.data_dir().to_str().unwrap()]);
}
