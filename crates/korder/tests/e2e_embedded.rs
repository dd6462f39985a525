//! End-to-end: `korder start` on the embedded log, as a process, under load and
//! under SIGKILL.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use korder_proto::common::{HeaderType, Status};
use support::{Net, all_blocks, broadcast_all, envelope, korder, tx_id_of};

/// 10,000 envelopes over 8 streams: every acknowledged envelope is delivered exactly
/// once, in one order, and `korder ledger verify` passes on the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_envelopes_over_eight_streams() {
    let mut net = Net::init(&["--batch-timeout", "200ms"]);
    net.start();
    let signer = Arc::new(net.client());
    let address = net.address();
    let mut tasks = Vec::new();
    for s in 0..8 {
        let signer = signer.clone();
        let address = address.clone();
        tasks.push(tokio::spawn(async move {
            let envs: Vec<_> = (0..1250)
                .map(|i| {
                    envelope(
                        &signer,
                        "mychannel",
                        HeaderType::EndorserTransaction,
                        &format!("s{s}-{i}"),
                        Bytes::from(vec![7u8; 200]),
                    )
                })
                .collect();
            let ids: Vec<String> = (0..1250).map(|i| format!("s{s}-{i}")).collect();
            let statuses = broadcast_all(&address, envs).await;
            assert_eq!(statuses.len(), 1250, "one response per envelope");
            statuses
                .iter()
                .zip(ids)
                .filter(|((st, _), _)| *st == Status::Success as i32)
                .map(|(_, id)| id)
                .collect::<Vec<_>>()
        }));
    }
    let mut acked = HashSet::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert_eq!(acked.len(), 10_000);

    // Wait until every acknowledged envelope is in a block.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        seen.clear();
        for b in all_blocks(&address, &signer, "mychannel").await {
            for d in &b.data.unwrap().data {
                if let Some(id) = tx_id_of(d) {
                    *seen.entry(id).or_default() += 1;
                }
            }
        }
        if acked.iter().all(|id| seen.contains_key(id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every envelope was delivered"
        );
        tokio::task::yield_now().await;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered twice: {dups:?}");
    net.stop();
    let out = korder(&["ledger", "verify", net.data_dir().to_str().unwrap()]);
    assert!(out.status.success());
}

/// SIGKILL at 20 moments under load, restart each time: no acknowledged envelope is
/// lost or duplicated, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn survives_twenty_kills_under_load() {
    let mut net = Net::init(&["--batch-timeout", "100ms", "--max-message-count", "50"]);
    let signer = Arc::new(net.client());
    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    // A deterministic pseudo-random kill schedule: after 20..300 new acknowledgements.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for round in 0..20 {
        net.start();
        let target = acked.lock().unwrap().len() + 20 + next(280) as usize;
        let address = net.address();
        let mut load = Vec::new();
        for s in 0..4 {
            let signer = signer.clone();
            let acked = acked.clone();
            let address = address.clone();
            load.push(tokio::spawn(async move {
                for batch in 0.. {
                    let ids: Vec<String> = (0..50)
                        .map(|i| format!("r{round}-s{s}-b{batch}-{i}"))
                        .collect();
                    let envs = ids
                        .iter()
                        .map(|id| {
                            envelope(
                                &signer,
                                "mychannel",
                                HeaderType::EndorserTransaction,
                                id,
                                Bytes::from_static(b"x"),
                            )
                        })
                        .collect();
                    let statuses = broadcast_all(&address, envs).await;
                    if statuses.is_empty() {
                        return;
                    }
                    let mut a = acked.lock().unwrap();
                    for ((st, _), id) in statuses.iter().zip(&ids) {
                        if *st == Status::Success as i32 {
                            a.insert(id.clone());
                        }
                    }
                }
            }));
        }
        while acked.lock().unwrap().len() < target {
            tokio::task::yield_now().await;
        }
        net.kill();
        for l in load {
            let _ = l.await;
        }
    }
    net.start();
    let acked = acked.lock().unwrap().clone();
    let address = net.address();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        seen.clear();
        for b in all_blocks(&address, &signer, "mychannel").await {
            for d in &b.data.unwrap().data {
                if let Some(id) = tx_id_of(d) {
                    *seen.entry(id).or_default() += 1;
                }
            }
        }
        if acked.iter().all(|id| seen.contains_key(id)) {
            break;
        }
        let missing = acked.iter().filter(|id| !seen.contains_key(*id)).count();
        assert!(
            std::time::Instant::now() < deadline,
            "{missing} acknowledged envelopes lost; log:\n{}",
            net.log()
        );
        tokio::task::yield_now().await;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered twice: {dups:?}");
    net.stop();
    korder(&["ledger", "verify", net.data_dir().to_str().unwrap()]);
}
