//! Many channels on one node: 200 channels created through the system channel,
//! each ordering on its own, across a restart, on the embedded log and on two
//! Kafka nodes; a channel whose topic disappears stops alone; the nodes' threads do
//! not grow with the channel count.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{Block, HeaderType, Status};
use support::{
    Cluster, Net, assert_same_chain, envelope, kafka_script, korder, try_all_blocks,
    try_broadcast_all, tx_counts, unique_name,
};

const CHANNELS: usize = 200;
/// Channel creations (CLI processes) in flight at once.
const CREATING: usize = 8;
/// Channels ordered to at once.
const ORDERING: usize = 20;
/// Bound on every wait.
const LIMIT: Duration = Duration::from_secs(300);
/// Most threads a node may run, whatever its channel count.
const MAX_THREADS: usize = 64;

/// Threads of process `pid`.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Creates `names` through the system channel with `korder channel create`, a few
/// at a time.
fn create_channels(data_dir: &Path, names: &[String]) {
    let dir = data_dir.to_str().unwrap().to_string();
    std::thread::scope(|scope| {
        for chunk in names.chunks(names.len().div_ceil(CREATING)) {
            let dir = dir.clone();
            scope.spawn(move || {
                for name in chunk {
                    let out = format!("{dir}/{name}.block");
                    korder(&[
                        "channel",
                        "create",
                        "--data-dir",
                        &dir,
                        "--channel",
                        name,
                        "--out",
                        &out,
                    ]);
                }
            });
        }
    });
}

/// Broadcasts `n` transactions tagged `tag` to each channel of `names` through
/// `address`, `ORDERING` channels at once; the ids acknowledged with SUCCESS.
async fn order_each(
    address: &str,
    signer: &Arc<SigningIdentity>,
    names: &[String],
    tag: &str,
    n: usize,
) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    for chunk in names.chunks(ORDERING) {
        let mut tasks = Vec::new();
        for name in chunk {
            let (address, signer, name, tag) = (
                address.to_string(),
                signer.clone(),
                name.clone(),
                tag.to_string(),
            );
            tasks.push(tokio::spawn(async move {
                let ids: Vec<String> = (0..n).map(|i| format!("{name}-{tag}-{i}")).collect();
                let envs = ids
                    .iter()
                    .map(|id| {
                        envelope(
                            &signer,
                            &name,
                            HeaderType::EndorserTransaction,
                            id,
                            Bytes::from_static(b"many channels"),
                        )
                    })
                    .collect();
                let statuses = try_broadcast_all(&address, envs).await;
                ids.into_iter()
                    .zip(statuses)
                    .filter(|(_, s)| s.0 == Status::Success as i32)
                    .map(|(id, _)| (name.clone(), id))
                    .collect::<Vec<_>>()
            }));
        }
        for t in tasks {
            acked.extend(t.await.unwrap());
        }
    }
    acked
}

/// Waits until every address serves `channel` with the same chain holding every id
/// of `acked` exactly once; returns the chain.
async fn converged(
    addresses: &[String],
    signer: &SigningIdentity,
    channel: &str,
    acked: &HashSet<&str>,
) -> Vec<Block> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut chains = Vec::new();
        for a in addresses {
            if let Some(chain) = try_all_blocks(a, signer, channel).await {
                chains.push(chain);
            }
        }
        if chains.len() == addresses.len() && chains.iter().all(|c| c.len() == chains[0].len()) {
            let counts = tx_counts(&chains[0]);
            if acked.iter().all(|id| counts.contains_key(*id)) {
                for id in acked {
                    assert_eq!(counts.get(*id), Some(&1), "{channel}: {id}");
                }
                for c in &chains[1..] {
                    assert_same_chain(&chains[0], c, channel);
                }
                return chains.swap_remove(0);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{channel} does not converge on {addresses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The acknowledged ids of `channel`.
fn ids_of<'a>(acked: &'a [(String, String)], channel: &str) -> HashSet<&'a str> {
    acked
        .iter()
        .filter(|(c, _)| c == channel)
        .map(|(_, id)| id.as_str())
        .collect()
}

/// 200 channels on one node on the embedded log: created through the system
/// channel, each ordering before and after a restart; every acknowledged
/// transaction is in its channel's chain exactly once, the ledger verifies, and the
/// node runs at most 64 threads, idle and under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_channels_on_the_embedded_log() {
    let mut net = Net::init(&["--batch-timeout", "200ms", "--max-message-count", "10"]);
    net.start();
    let names: Vec<String> = (0..CHANNELS).map(|i| format!("many{i:03}")).collect();
    let dir = net.data_dir().to_path_buf();
    let created = names.clone();
    tokio::task::spawn_blocking(move || create_channels(&dir, &created))
        .await
        .unwrap();
    let signer = Arc::new(net.client());
    let mut acked = order_each(&net.address(), &signer, &names, "a", 5).await;
    assert_eq!(acked.len(), CHANNELS * 5, "every envelope acknowledged");
    let pid = net.child.as_ref().unwrap().id();
    let loaded = threads(pid);
    assert!(loaded <= MAX_THREADS, "{loaded} threads under load");

    net.stop();
    net.start();
    acked.extend(order_each(&net.address(), &signer, &names, "b", 5).await);
    assert_eq!(acked.len(), CHANNELS * 10, "every envelope acknowledged");
    for name in &names {
        converged(&[net.address()], &signer, name, &ids_of(&acked, name)).await;
    }
    let pid = net.child.as_ref().unwrap().id();
    let restarted = threads(pid);
    assert!(
        restarted <= MAX_THREADS,
        "{restarted} threads after a restart"
    );
    net.stop();
    korder(&["ledger", "verify", net.data_dir().to_str().unwrap()]);
}

/// 200 channels on two Kafka nodes: created through the system channel, ordered
/// through both nodes, node 2 restarted in the middle; every channel's chain is the
/// same on both nodes. Then one channel's topic is deleted: that channel stops on
/// both nodes (Broadcast SERVICE_UNAVAILABLE) while every other channel keeps
/// ordering. Each node runs at most 64 threads throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_channels_on_two_kafka_nodes() {
    let brokers = std::env::var("KORDER_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KORDER_KAFKA_BOOTSTRAP is not set: run the suite with scripts/test (it starts Kafka)"
        )
    });
    let mut c = Cluster::init(
        "many",
        2,
        &brokers,
        &["--batch-timeout", "200ms", "--max-message-count", "10"],
    );
    c.start_ready(1).await;
    c.start_ready(2).await;
    let prefix = unique_name("many");
    let names: Vec<String> = (0..CHANNELS).map(|i| format!("{prefix}-{i:03}")).collect();
    let dir = c.data_dir().to_path_buf();
    let created = names.clone();
    tokio::task::spawn_blocking(move || create_channels(&dir, &created))
        .await
        .unwrap();
    let signer = Arc::new(c.client());
    let addresses = c.addresses();
    // Both nodes serve every channel once each has read its creation.
    for name in &names {
        converged(&addresses, &signer, name, &HashSet::new()).await;
    }
    let mut acked = order_each(&c.address(1), &signer, &names, "a", 5).await;
    acked.extend(order_each(&c.address(2), &signer, &names, "b", 5).await);
    assert_eq!(acked.len(), CHANNELS * 10, "every envelope acknowledged");
    for k in 1..=2 {
        let n = threads(c.pid(k).unwrap());
        assert!(n <= MAX_THREADS, "node{k}: {n} threads under load");
    }

    c.stop(2);
    acked.extend(order_each(&c.address(1), &signer, &names, "c", 3).await);
    c.start_ready(2).await;
    acked.extend(order_each(&c.address(2), &signer, &names, "d", 3).await);
    for name in &names {
        converged(&addresses, &signer, name, &ids_of(&acked, name)).await;
    }

    // One channel's topic is gone: it alone stops; the others keep ordering.
    let lost = &names[0];
    let out = Command::new(kafka_script())
        .args(["tool", "org.apache.kafka.tools.TopicCommand"])
        .args(["--bootstrap-server", &brokers, "--delete", "--topic", lost])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + LIMIT;
    loop {
        let refused = order_each(&c.address(1), &signer, std::slice::from_ref(lost), "x", 1).await;
        if refused.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{lost} still orders without its topic"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let others = &names[1..];
    let more = order_each(&c.address(2), &signer, others, "e", 2).await;
    assert_eq!(
        more.len(),
        others.len() * 2,
        "the other channels keep ordering"
    );
    acked.extend(more);
    for name in others.iter().step_by(20) {
        converged(&addresses, &signer, name, &ids_of(&acked, name)).await;
    }
    for k in 1..=2 {
        let n = threads(c.pid(k).unwrap());
        assert!(n <= MAX_THREADS, "node{k}: {n} threads");
    }
    c.stop_all();
}
