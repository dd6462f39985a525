//! End-to-end config paths on Kafka: channel creation through the system channel,
//! a node that joins with only the system genesis block and creates the channels it
//! finds in the system channel's topic, and resubmission across two nodes.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Block, HeaderType, Status};
use korder_proto::orderer::{SeekSpecified, seek_position};
use support::{
    Cluster, assert_same_chain, envelope, is_config, korder, org1_policy_admins_only,
    try_all_blocks, try_broadcast_all, tx_counts, tx_id_of, unique_name,
};

const LIMIT: Duration = Duration::from_secs(120);

fn kafka1() -> String {
    std::env::var("KORDER_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KORDER_KAFKA_BOOTSTRAP is not set: run the suite with scripts/test (it starts Kafka)"
        )
    })
}

/// Waits until every node in `nodes` serves `channel` with the same chain, holding
/// every id of `acked`; returns node 1's chain.
async fn converged(
    c: &Cluster,
    signer: &SigningIdentity,
    channel: &str,
    nodes: &[usize],
    acked: &HashSet<String>,
) -> Vec<Block> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut chains = Vec::new();
        for &k in nodes {
            if let Some(ch) = try_all_blocks(&c.address(k), signer, channel).await {
                chains.push(ch);
            }
        }
        if chains.len() == nodes.len() && chains.iter().all(|ch| ch.len() == chains[0].len()) {
            let counts = tx_counts(&chains[0]);
            if acked.iter().all(|id| counts.contains_key(id)) {
                for (i, ch) in chains.iter().enumerate().skip(1) {
                    assert_same_chain(
                        &chains[0],
                        ch,
                        &format!("{channel}: node{} vs node{}", nodes[0], nodes[i]),
                    );
                }
                let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
                assert!(dups.is_empty(), "ordered twice: {dups:?}");
                return chains.swap_remove(0);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{channel}: nodes {nodes:?} did not converge\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn send(
    address: &str,
    signer: &SigningIdentity,
    channel: &str,
    ids: &[String],
) -> Vec<String> {
    let envs = ids
        .iter()
        .map(|id| {
            envelope(
                signer,
                channel,
                HeaderType::EndorserTransaction,
                id,
                Bytes::from_static(b"x"),
            )
        })
        .collect();
    let statuses = try_broadcast_all(address, envs).await;
    statuses
        .iter()
        .zip(ids)
        .filter(|((st, _), _)| *st == Status::Success as i32)
        .map(|(_, id)| id.clone())
        .collect()
}

/// A channel created with `korder channel create` on a two-node Kafka network is
/// usable on both nodes at once; a third node that starts with only the system
/// channel's genesis block replays the system topic, creates the channel when it
/// reaches its ORDERER_TRANSACTION block, replays the channel's topic and ends with
/// the same chains, serving Broadcast and Deliver on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn created_channel_and_a_node_joining_late() {
    let brokers = kafka1();
    let mut c = Cluster::init(
        "create",
        3,
        &brokers,
        &["--batch-timeout", "200ms", "--max-message-count", "10"],
    );
    c.start_ready(1).await;
    c.start_ready(2).await;
    let client = c.client();
    let channel = unique_name("created");
    let dir = c.data_dir().to_str().unwrap().to_string();
    let ch = channel.clone();
    tokio::task::spawn_blocking(move || {
        let out = format!("{dir}/{ch}.block");
        korder(&[
            "channel",
            "create",
            "--data-dir",
            &dir,
            "--channel",
            &ch,
            "--out",
            &out,
        ])
    })
    .await
    .unwrap();
    // Each node creates the channel when it reaches the creation in the system
    // channel's topic: wait until both serve it.
    converged(&c, &client, &channel, &[1, 2], &HashSet::new()).await;
    let mut acked = HashSet::new();
    for k in [1, 2] {
        let ids: Vec<String> = (0..25).map(|i| format!("n{k}-{i}")).collect();
        acked.extend(send(&c.address(k), &client, &channel, &ids).await);
    }
    assert_eq!(acked.len(), 50, "both nodes accept the new channel at once");
    let chain = converged(&c, &client, &channel, &[1, 2], &acked).await;
    assert!(chain.len() >= 6, "blocks were cut on the new channel");

    // Node 3 loses its ledger: it has only the system channel's genesis block.
    std::fs::remove_dir_all(c.data_dir().join("node3/ledger")).unwrap();
    c.start_ready(3).await;
    converged(&c, &client, &channel, &[1, 2, 3], &acked).await;
    let admin = SigningIdentity::load_msp_dir(c.data_dir().join("orderer-admin/msp"), "OrdererMSP")
        .unwrap();
    converged(
        &c,
        &admin,
        &c.system_channel.clone(),
        &[1, 2, 3],
        &HashSet::new(),
    )
    .await;
    let late: Vec<String> = vec!["from-node3".into()];
    assert_eq!(send(&c.address(3), &client, &channel, &late).await, late);
    let all: HashSet<String> = acked.into_iter().chain(late).collect();
    converged(&c, &client, &channel, &[1, 2, 3], &all).await;
    c.stop_all();
}

/// Two nodes on Kafka, load from a client and an admin on both while the channel's
/// writers become admins only: both chains stay identical, no client envelope is
/// ordered after the config block, every acknowledged admin envelope exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resubmission_across_two_nodes() {
    let brokers = kafka1();
    let mut c = Cluster::init("resub", 2, &brokers, &["--batch-timeout", "300ms"]);
    c.start_ready(1).await;
    c.start_ready(2).await;
    let channel = c.channel.clone();
    let client = Arc::new(c.client());
    let admin =
        Arc::new(SigningIdentity::load_msp_dir(c.data_dir().join("admin/msp"), "Org1MSP").unwrap());
    let update = c.data_dir().join("writers.pb");
    let genesis = std::fs::read(c.data_dir().join(format!("{channel}.block"))).unwrap();
    std::fs::write(
        &update,
        org1_policy_admins_only(&genesis, &channel, "Writers").encode_to_vec(),
    )
    .unwrap();

    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for k in [1usize, 2] {
        for (who, signer) in [("client", client.clone()), ("admin", admin.clone())] {
            let (signer, acked, stop, address, channel) = (
                signer.clone(),
                acked.clone(),
                stop.clone(),
                c.address(k),
                channel.clone(),
            );
            load.push(tokio::spawn(async move {
                let mut batch = 0;
                while !stop.load(Ordering::SeqCst) {
                    let ids: Vec<String> =
                        (0..50).map(|i| format!("{who}-n{k}-{batch}-{i}")).collect();
                    let ok = send(&address, &signer, &channel, &ids).await;
                    acked.lock().unwrap().extend(ok);
                    batch += 1;
                }
            }));
        }
    }
    wait_acked(&acked, 300, &c, "before the update").await;
    let (dir, ch, file) = (
        c.data_dir().to_str().unwrap().to_string(),
        channel.clone(),
        update.to_str().unwrap().to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let sign = format!("{dir}/admin/msp:Org1MSP");
        korder(&[
            "channel",
            "update",
            "--data-dir",
            &dir,
            "--channel",
            &ch,
            "--file",
            &file,
            "--sign-msp",
            &sign,
        ]);
    })
    .await
    .unwrap();
    let after = acked.lock().unwrap().len();
    wait_acked(&acked, after + 200, &c, "after the update").await;
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let admin_acked: HashSet<String> = acked
        .iter()
        .filter(|id| id.starts_with("admin-"))
        .cloned()
        .collect();
    let chain = converged(&c, &client, &channel, &[1, 2], &admin_acked).await;
    let mut config_seen = false;
    for b in chain.iter().skip(1) {
        for d in &b.data.as_ref().unwrap().data {
            if is_config(d) {
                config_seen = true;
            } else if config_seen {
                let id = tx_id_of(d).unwrap();
                assert!(
                    !id.starts_with("client-"),
                    "client envelope {id} ordered after the config block"
                );
            }
        }
    }
    assert!(config_seen, "the config block is in the chain");
    for id in &admin_acked {
        assert_eq!(tx_counts(&chain).get(id), Some(&1), "{id}");
    }
    let dropped: usize = (1..=2)
        .map(|k| c.log(k).matches("record dropped").count())
        .sum();
    eprintln!("records dropped by re-validation on the two nodes: {dropped}");
    c.stop_all();
}

/// Waits, bounded by LIMIT, until the load has `n` acknowledged envelopes.
async fn wait_acked(acked: &Mutex<HashSet<String>>, n: usize, c: &Cluster, what: &str) {
    let deadline = Instant::now() + LIMIT;
    while acked.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {n} envelopes acknowledged in time\n{}",
            acked.lock().unwrap().len(),
            c.logs_tail(30)
        );
        // Poll interval of a bounded wait.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// On two Kafka nodes, a BatchSize update takes effect at its config block on both
/// (blocks of exactly the new size, identical chains); an unknown MSP, a foreign
/// CA, a bad and a high-S signature (FORBIDDEN) and an expired certificate
/// (BAD_REQUEST) are refused with nothing ordered, and Deliver by a non-reader is
/// FORBIDDEN.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_size_update_and_refusals_on_kafka() {
    let brokers = kafka1();
    let mut c = Cluster::init("batch", 2, &brokers, &["--batch-timeout", "1h"]);
    c.start_ready(1).await;
    c.start_ready(2).await;
    let channel = c.channel.clone();
    let client = c.client();
    let (dir, ch) = (c.data_dir().to_str().unwrap().to_string(), channel.clone());
    tokio::task::spawn_blocking(move || {
        korder(&[
            "channel",
            "update",
            "--data-dir",
            &dir,
            "--channel",
            &ch,
            "--batch-size-max-message-count",
            "3",
        ])
    })
    .await
    .unwrap();

    // Refused on either node, nothing ordered: checked on the chain below.
    support::assert_refused(
        &c.address(2),
        support::refused_envelopes(c.data_dir(), &client, &channel),
    )
    .await;
    let stranger = support::foreign_identity("stranger", "Org1MSP");
    let zero = || seek_position::Type::Specified(SeekSpecified { number: 0 });
    let (blocks, status) = support::try_deliver(
        &c.address(1),
        support::seek(&stranger, &channel, zero(), zero(), 0),
    )
    .await
    .expect("Deliver answers");
    assert!(blocks.is_empty());
    assert_eq!(
        status,
        Some(Status::Forbidden as i32),
        "Deliver by a non-reader"
    );

    let mut acked = HashSet::new();
    for k in [1usize, 2] {
        let ids: Vec<String> = (0..3).map(|i| format!("n{k}-{i}")).collect();
        let ok = send(&c.address(k), &client, &channel, &ids).await;
        assert_eq!(ok.len(), 3);
        acked.extend(ok);
    }
    let chain = converged(&c, &client, &channel, &[1, 2], &acked).await;
    // Block 1 is the config block; after it, blocks of exactly 3 envelopes.
    assert!(is_config(&chain[1].data.as_ref().unwrap().data[0]));
    for b in &chain[2..] {
        assert_eq!(b.data.as_ref().unwrap().data.len(), 3);
    }
    let counts = tx_counts(&chain);
    assert!(
        counts.keys().all(|id| !id.starts_with("refused-")),
        "a refused envelope was ordered: {counts:?}"
    );
    c.stop_all();
}
