//! Many channels on one node: the node's threads do not grow with its channel
//! count, and every channel still orders on its own. Alone in its file so that
//! no other test's threads are counted.

mod support;

use std::time::Duration;

use korder_proto::common::Status;
use korder_proto::orderer::seek_info::SeekBehavior::BlockUntilReady;
use support::*;

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

const CHANNELS: usize = 60;

/// 60 channels created through the system channel and each ordering a block add
/// at most a fixed number of threads (the ledger's shared append pool, the runtime's
/// bounded blocking pool), not one or more per channel as a thread per chain and per
/// ledger writer did.
#[test]
fn sixty_channels_share_a_fixed_set_of_threads() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let node = Node::start(1).await;
        let before = threads();
        let names: Vec<String> = (0..CHANNELS).map(|i| format!("many{i:03}")).collect();
        for chunk in names.chunks(10) {
            let creations = chunk
                .iter()
                .map(|name| channel_creation(&node.net, name))
                .collect();
            let responses = node.broadcast(creations).await;
            assert!(
                statuses(&responses).iter().all(|s| *s == Status::Success),
                "{responses:?}"
            );
        }
        for name in &names {
            let channel =
                tokio::time::timeout(Duration::from_secs(60), node.registrar.served_channel(name))
                    .await
                    .unwrap_or_else(|_| panic!("{name} is not served"));
            assert_eq!(channel.store.height(), 1, "{name}");
            let responses = node.broadcast(vec![tx(&node.net.client, name, name)]).await;
            assert_eq!(statuses(&responses), vec![Status::Success], "{name}");
        }
        for name in &names {
            let (blocks, status) = node
                .deliver(seek(&node.net.client, name, at(1), at(1), BlockUntilReady))
                .await;
            assert_eq!(status, Some(Status::Success), "{name}");
            assert_eq!(envelopes_of(&blocks[0]).len(), 1, "{name}");
        }
        let after = threads();
        eprintln!(
            "threads: {before} with 2 channels, {after} with {}",
            CHANNELS + 2
        );
        // Two threads per channel (chain and ledger writer) would be 120 more.
        let bound = korder_ledger::writer::MAX_APPEND_THREADS + 4 + 4;
        assert!(
            after <= before + bound,
            "{before} threads with 2 channels, {after} with {} (bound: {bound} more)",
            CHANNELS + 2
        );
        node.halt().await;
    });
}
