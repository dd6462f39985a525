//! Joining a channel by a config block after its genesis block: the joining node
//! pulls the blocks before it from the channel's orderer over Deliver (TCP),
//! reports `onboarding` meanwhile, then serves the same chain and goes on cutting
//! the same blocks from the shared log; an onboarding that cannot reach any orderer
//! keeps trying until the channel is removed. A running node whose shared log lost
//! the records it needs catches up the same way.

#![allow(clippy::unwrap_used)] // tests: a failure should panic

mod support;

use std::sync::Arc;
use std::time::Duration;

use korder_ledger::block::header_hash;
use korder_ledger::{Ledgers, StoreOptions};
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{Block, Envelope, Status};
use korder_server::registrar::STATUS_ONBOARDING;
use korder_server::{
    AtomicBroadcastService, DeliverConfig, LogTiming, Metrics, NodeOptions, Registrar,
};
use support::{
    APP, MemLogs, Network, Node, ORDERER_MSP, batch_size_update, log_factory, statuses, tx,
};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Server;

/// Bound on every wait.
const WAIT: Duration = Duration::from_secs(60);

/// A stream of the connections accepted on `listener`.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = Result<TcpStream, std::io::Error>> {
    futures::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| s);
        Some((accepted, l))
    })
}

/// A registrar without channels over `logs`, signing as the network's orderer.
async fn empty_node(net: &Network, logs: Arc<MemLogs>) -> (Registrar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let registrar = node_at(net, logs, dir.path()).await;
    (registrar, dir)
}

/// A registrar over the ledgers in `dir` and `logs`, signing as the network's orderer.
async fn node_at(net: &Network, logs: Arc<MemLogs>, dir: &std::path::Path) -> Registrar {
    let ledgers = Ledgers::open_dir(dir, StoreOptions::default()).unwrap();
    let signer = Arc::new(
        SigningIdentity::load_msp_dir(net.dir.path().join("orderer0"), ORDERER_MSP).unwrap(),
    );
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        Registrar::start(
            ledgers,
            None,
            log_factory(logs),
            signer,
            handle,
            Arc::new(Metrics::new().unwrap()),
            NodeOptions::default(),
        )
    })
    .await
    .unwrap()
    .unwrap()
}

/// Broadcasts `n` transactions tagged `tag` to `node`; all must succeed.
async fn order(node: &Node, tag: &str, n: usize) {
    let envs: Vec<Envelope> = (0..n)
        .map(|i| tx(&node.net.client, APP, &format!("{tag}{i}")))
        .collect();
    let answers = node.broadcast(envs).await;
    assert!(statuses(&answers).iter().all(|s| *s == Status::Success));
}

/// Header hash and data of a block: what two nodes' copies must share.
fn same(block: &Block) -> (Vec<u8>, Option<korder_proto::common::BlockData>) {
    (
        header_hash(block.header.as_ref().unwrap()).to_vec(),
        block.data.clone(),
    )
}

/// The first `n` blocks of `channel` on `registrar`'s ledger.
fn ledger_blocks(registrar: &Registrar, n: u64) -> Vec<Block> {
    let channel = registrar.channel(APP).unwrap();
    (0..n)
        .map(|i| {
            channel
                .store
                .block(korder_ledger::BlockNumber::new(i))
                .unwrap()
        })
        .collect()
}

/// A node without channels joined by block 4 of a channel (a config block) on a
/// log it shares with the channel's orderer: it answers `onboarding`, pulls and
/// verifies blocks 0–4 from that orderer, serves the channel once block 4 is in
/// place, and then cuts the same blocks as the orderer from the shared log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_config_block_onboards_from_the_channels_orderer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let net = Network::with_endpoint(2, Duration::from_millis(200), &endpoint);
    let a = Node::start_with_options(net, LogTiming::LOCAL, 0, NodeOptions::default()).await;
    let service = AtomicBroadcastService::new(a.registrar.clone(), DeliverConfig::default());
    tokio::spawn(
        Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(incoming(listener)),
    );
    // Blocks 1–3 of two transactions, block 4 a config block.
    order(&a, "a", 6).await;
    a.blocks_until(&a.net.client, APP, |b| b.len() == 4).await;
    let update = a.broadcast(vec![batch_size_update(&a.net, APP, 3)]).await;
    assert_eq!(statuses(&update), [Status::Success]);
    let blocks = a.blocks_until(&a.net.client, APP, |b| b.len() == 5).await;
    let join_block = blocks[4].clone();

    let (b, _dir) = empty_node(&a.net, a.logs.clone()).await;
    let info = b.join(join_block).await.unwrap();
    assert_eq!(info.status, STATUS_ONBOARDING);
    assert!(b.participation_ids().contains(&APP.to_string()));
    let served = tokio::time::timeout(WAIT, b.served_channel(APP))
        .await
        .expect("the onboarding ends with the channel served");
    assert_eq!(b.channel_info(APP).unwrap().status, "active");
    assert!(served.store.height() >= 5);
    let pulled: Vec<_> = ledger_blocks(&b, 5).iter().map(same).collect();
    let original: Vec<_> = blocks.iter().map(same).collect();
    assert_eq!(pulled, original, "blocks 0-4 are the orderer's");

    // After the join block, both cut the same blocks from the shared log.
    order(&a, "b", 6).await;
    let a_blocks = a.blocks_until(&a.net.client, APP, |b| b.len() == 7).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while served.store.height() < 7 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the joined node stopped cutting blocks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b_blocks: Vec<_> = ledger_blocks(&b, 7).iter().map(same).collect();
    let a_blocks: Vec<_> = a_blocks.iter().map(same).collect();
    assert_eq!(b_blocks, a_blocks, "the same chain after the join block");
    tokio::task::spawn_blocking(move || b.halt_all())
        .await
        .unwrap();
    a.halt().await;
}

/// An onboarding whose orderer cannot be reached stays `onboarding` (retrying) and
/// is not served; removing the channel stops it and deletes what it pulled, and the
/// name can be joined again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onboarding_without_orderers_keeps_trying_until_removed() {
    // An endpoint nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = dead.local_addr().unwrap().to_string();
    drop(dead);
    let net = Network::with_endpoint(2, Duration::from_millis(200), &endpoint);
    let a = Node::start_with_options(net, LogTiming::LOCAL, 0, NodeOptions::default()).await;
    let update = a.broadcast(vec![batch_size_update(&a.net, APP, 3)]).await;
    assert_eq!(statuses(&update), [Status::Success]);
    let blocks = a.blocks_until(&a.net.client, APP, |b| b.len() == 2).await;

    let (b, dir) = empty_node(&a.net, a.logs.clone()).await;
    let info = b.join(blocks[1].clone()).await.unwrap();
    assert_eq!(info.status, STATUS_ONBOARDING);
    // A second join of the same channel is refused while it onboards.
    assert!(b.join(blocks[1].clone()).await.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.channel(APP).is_none(), "not served while onboarding");
    assert_eq!(b.channel_info(APP).unwrap().status, STATUS_ONBOARDING);

    b.remove(APP).await.unwrap();
    assert!(b.channel_info(APP).is_none());
    assert!(b.participation_ids().is_empty());
    assert!(
        !dir.path().join("chains").join(APP).exists(),
        "the pulled blocks are deleted"
    );
    let again = b.join(blocks[1].clone()).await.unwrap();
    assert_eq!(again.status, STATUS_ONBOARDING);
    b.remove(APP).await.unwrap();
    tokio::task::spawn_blocking(move || b.halt_all())
        .await
        .unwrap();
    a.halt().await;
}

/// A node stopped while it onboards a channel (its orderer unreachable) resumes the
/// onboarding when it starts again: the channel is listed as `onboarding`, not
/// loaded from its partial ledger; once the orderer answers, the node pulls the
/// blocks, serves the channel and forgets the join block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_onboarding_resumes_after_a_restart() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    drop(listener);
    let net = Network::with_endpoint(2, Duration::from_millis(200), &endpoint);
    let a = Node::start_with_options(net, LogTiming::LOCAL, 0, NodeOptions::default()).await;
    let update = a.broadcast(vec![batch_size_update(&a.net, APP, 3)]).await;
    assert_eq!(statuses(&update), [Status::Success]);
    let blocks = a.blocks_until(&a.net.client, APP, |b| b.len() == 2).await;

    let dir = tempfile::tempdir().unwrap();
    let b = node_at(&a.net, a.logs.clone(), dir.path()).await;
    let info = b.join(blocks[1].clone()).await.unwrap();
    assert_eq!(info.status, STATUS_ONBOARDING);
    tokio::task::spawn_blocking(move || b.halt_all())
        .await
        .unwrap();
    assert!(dir.path().join("joinblock").join(APP).exists());

    let b = node_at(&a.net, a.logs.clone(), dir.path()).await;
    assert!(b.channel(APP).is_none(), "a partial ledger is never loaded");
    assert_eq!(b.channel_info(APP).unwrap().status, STATUS_ONBOARDING);
    // The orderer now answers at the address the config lists.
    let listener = TcpListener::bind(endpoint.as_str()).await.unwrap();
    let service = AtomicBroadcastService::new(a.registrar.clone(), DeliverConfig::default());
    tokio::spawn(
        Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(incoming(listener)),
    );
    let served = tokio::time::timeout(WAIT, b.served_channel(APP))
        .await
        .expect("the resumed onboarding ends with the channel served");
    assert!(served.store.height() >= 2);
    let pulled: Vec<_> = ledger_blocks(&b, 2).iter().map(same).collect();
    let original: Vec<_> = blocks.iter().map(same).collect();
    assert_eq!(pulled, original);
    assert!(!dir.path().join("joinblock").join(APP).exists());
    tokio::task::spawn_blocking(move || b.halt_all())
        .await
        .unwrap();
    a.halt().await;
}

/// A node whose ledger holds only the genesis block of a channel whose shared log
/// lost its first records (retention): its chain stops before writing anything,
/// the node pulls and verifies the blocks it lacks from the channel's orderer, and
/// its new chain resumes from the offsets in its new last block, cutting the same
/// blocks as the orderer from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_its_log_catches_up_from_the_channels_orderer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap().to_string();
    let net = Network::with_endpoint(2, Duration::from_millis(200), &endpoint);
    let a = Node::start_with_options(net, LogTiming::LOCAL, 0, NodeOptions::default()).await;
    let service = AtomicBroadcastService::new(a.registrar.clone(), DeliverConfig::default());
    tokio::spawn(
        Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(incoming(listener)),
    );
    order(&a, "a", 6).await;
    a.blocks_until(&a.net.client, APP, |b| b.len() == 4).await;
    // Retention removes every record so far; the orderer goes on.
    let log = a.logs.log(APP);
    log.remove_records_below(log.next_offset());
    order(&a, "b", 4).await;
    a.blocks_until(&a.net.client, APP, |b| b.len() == 6).await;

    // The late node has the channel's genesis block only: it needs offset 0.
    let dir = tempfile::tempdir().unwrap();
    Ledgers::open_dir(dir.path(), StoreOptions::default())
        .unwrap()
        .open(APP)
        .unwrap()
        .append(&a.net.app_genesis)
        .unwrap();
    let b = node_at(&a.net, a.logs.clone(), dir.path()).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let channel = loop {
        let c = b.served_channel(APP).await;
        if c.store.height() >= 6 && !c.chain.status().borrow().errored {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no catch-up: height {}, status {:?}",
            c.store.height(),
            *c.chain.status().borrow()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    order(&a, "c", 4).await;
    let a_blocks = a.blocks_until(&a.net.client, APP, |b| b.len() == 8).await;
    while channel.store.height() < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the caught-up node stopped cutting blocks"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b_blocks: Vec<_> = ledger_blocks(&b, 8).iter().map(same).collect();
    let a_blocks: Vec<_> = a_blocks.iter().map(same).collect();
    assert_eq!(b_blocks, a_blocks, "the same chain, pulled then cut");
    tokio::task::spawn_blocking(move || b.halt_all())
        .await
        .unwrap();
    a.halt().await;
}
