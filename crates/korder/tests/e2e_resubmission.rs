//! End-to-end resubmission: envelopes validated under one config and ordered after
//! a config update that removed their writer's rights never reach a block; those
//! still valid do, exactly once.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{HeaderType, Status};
use support::{
    Net, all_blocks, broadcast_all, envelope, is_config, korder, org1_policy_admins_only, tx_id_of,
};

/// Load from a client and an admin runs while the channel's writers become admins
/// only: after the config block no client envelope is ordered, every acknowledged
/// admin envelope is ordered exactly once, and nothing is ordered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_envelopes_are_revalidated_on_the_embedded_log() {
    let mut net = Net::init(&["--batch-timeout", "300ms"]);
    net.start();
    let address = net.address();
    let client = Arc::new(net.client());
    let admin = Arc::new(
        SigningIdentity::load_msp_dir(net.data_dir().join("admin/msp"), "Org1MSP").unwrap(),
    );
    let update_file = net.data_dir().join("writers-update.pb");
    std::fs::write(
        &update_file,
        org1_policy_admins_only(
            &std::fs::read(net.data_dir().join("mychannel.block")).unwrap(),
            "mychannel",
            "Writers",
        )
        .encode_to_vec(),
    )
    .unwrap();

    let acked = Arc::new(Mutex::new(HashSet::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (who, signer) in [("client", client.clone()), ("admin", admin.clone())] {
        for s in 0..2 {
            let (signer, acked, stop, address) =
                (signer.clone(), acked.clone(), stop.clone(), address.clone());
            load.push(tokio::spawn(async move {
                let mut batch = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let ids: Vec<String> =
                        (0..100).map(|i| format!("{who}-{s}-{batch}-{i}")).collect();
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
                    let mut a = acked.lock().unwrap();
                    for ((st, _), id) in statuses.iter().zip(&ids) {
                        if *st == Status::Success as i32 {
                            a.insert(id.clone());
                        }
                    }
                    batch += 1;
                }
            }));
        }
    }
    // Let load build up, then change the writers while it runs.
    while acked.lock().unwrap().len() < 500 {
        tokio::task::yield_now().await;
    }
    let data_dir = net.data_dir().to_str().unwrap().to_string();
    let update = update_file.to_str().unwrap().to_string();
    let sign = format!("{data_dir}/admin/msp:Org1MSP");
    tokio::task::spawn_blocking(move || {
        korder(&[
            "channel",
            "update",
            "--data-dir",
            &data_dir,
            "--channel",
            "mychannel",
            "--file",
            &update,
            "--sign-msp",
            &sign,
        ]);
    })
    .await
    .unwrap();
    let after_update = acked.lock().unwrap().len();
    while acked.lock().unwrap().len() < after_update + 300 {
        tokio::task::yield_now().await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let admin_acked: Vec<&String> = acked.iter().filter(|id| id.starts_with("admin-")).collect();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let blocks = all_blocks(&address, &client, "mychannel").await;
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        let mut config_block = None;
        let mut client_after_config = Vec::new();
        for b in &blocks {
            let number = b.header.as_ref().unwrap().number;
            for d in &b.data.as_ref().unwrap().data {
                if number > 0 && is_config(d) {
                    config_block = Some(number);
                    continue;
                }
                if let Some(id) = tx_id_of(d) {
                    if config_block.is_some() && id.starts_with("client-") {
                        client_after_config.push(id.clone());
                    }
                    *seen.entry(id).or_default() += 1;
                }
            }
        }
        assert!(
            client_after_config.is_empty(),
            "client envelopes ordered after the config block: {:?}",
            &client_after_config[..client_after_config.len().min(5)]
        );
        let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(dups.is_empty(), "ordered twice: {dups:?}");
        if config_block.is_some() && admin_acked.iter().all(|id| seen.contains_key(*id)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acknowledged admin envelopes missing; log:\n{}",
            net.log()
        );
        tokio::task::yield_now().await;
    }
    let dropped = net.log().matches("record dropped").count();
    eprintln!("records dropped by re-validation: {dropped}");
    net.stop();
    korder(&["ledger", "verify", net.data_dir().to_str().unwrap()]);
}
