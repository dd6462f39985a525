//! The block puller against real korder Deliver over TCP: a channel with config
//! blocks among its blocks is pulled into an empty ledger, whole or up to a later
//! config block; forged and silent endpoints listed first are dropped and nothing
//! they forged is written; when every endpoint fails the error names each one and
//! the ledger ends at the last good block.

#![allow(clippy::unwrap_used)] // tests: a failure should panic

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use korder_ledger::block::{header_hash, set_signatures, slot};
use korder_ledger::{BlockNumber, BlockStore, Ledgers, StoreOptions};
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Block, BlockMetadataIndex, Envelope, Metadata, Payload, Status};
use korder_proto::orderer::atomic_broadcast_server::{AtomicBroadcast, AtomicBroadcastServer};
use korder_proto::orderer::{
    BroadcastResponse, DeliverResponse, SeekInfo, deliver_response, seek_position,
};
use korder_server::catchup::{
    BlockPuller, BlockVerifier, ClientTls, EndpointFailure, PullEnd, PullError, PullerConfig,
};
use korder_server::registrar::bundle_of_config_block;
use korder_server::{AtomicBroadcastService, DeliverConfig, Metrics};
use support::{APP, Node, ORDERER_MSP, batch_size_update, statuses, tx};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Server;

/// A stream of the connections accepted on `listener`.
fn incoming(
    listener: TcpListener,
) -> impl futures::Stream<Item = Result<TcpStream, std::io::Error>> {
    futures::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| s);
        Some((accepted, l))
    })
}

/// Serves the node's AtomicBroadcast on a fresh 127.0.0.1 port; its address.
async fn serve_node(node: &Node) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = AtomicBroadcastService::new(node.registrar.clone(), DeliverConfig::default());
    tokio::spawn(
        Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(incoming(listener)),
    );
    addr.to_string()
}

/// A node of `mychannel` with 7 blocks: genesis, 3 transactions, a config block
/// (BatchSize to 2), 2 blocks of 2 transactions; the blocks as Deliver serves them.
async fn node_with_blocks() -> (Node, Vec<Block>) {
    let node = Node::start(1).await;
    let net = &node.net;
    let first: Vec<Envelope> = (0..3)
        .map(|i| tx(&net.client, APP, &format!("a{i}")))
        .collect();
    assert!(
        statuses(&node.broadcast(first).await)
            .iter()
            .all(|s| *s == Status::Success)
    );
    node.blocks_until(&net.client, APP, |b| b.len() == 4).await;
    let update = node.broadcast(vec![batch_size_update(net, APP, 2)]).await;
    assert_eq!(statuses(&update), [Status::Success]);
    node.blocks_until(&net.client, APP, |b| b.len() == 5).await;
    let more: Vec<Envelope> = (0..4)
        .map(|i| tx(&net.client, APP, &format!("b{i}")))
        .collect();
    assert!(
        statuses(&node.broadcast(more).await)
            .iter()
            .all(|s| *s == Status::Success)
    );
    let blocks = node.blocks_until(&net.client, APP, |b| b.len() == 7).await;
    assert!(korder_server::catchup::config_envelope(&blocks[4]).is_some());
    (node, blocks)
}

/// The node's orderer signer (a member of the channel's orderer org).
fn orderer_signer(node: &Node) -> Arc<SigningIdentity> {
    Arc::new(
        SigningIdentity::load_msp_dir(node.net.dir.path().join("orderer0"), ORDERER_MSP).unwrap(),
    )
}

/// An empty ledger of `mychannel`.
fn empty_ledger() -> (tempfile::TempDir, BlockStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = Ledgers::open_dir(dir.path(), StoreOptions::default())
        .unwrap()
        .open(APP)
        .unwrap();
    (dir, store)
}

/// The sink appending to `store`.
fn append_to(
    store: &BlockStore,
) -> impl FnMut(&Block) -> Result<(), korder_ledger::LedgerError> + Send + use<> {
    let store = store.clone();
    move |b: &Block| store.append(b)
}

/// A short fingerprint of a whole block: its number and SHA-256 of its encoding.
fn fingerprint(block: &Block) -> (u64, String) {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &block.encode_to_vec());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    (block.header.as_ref().unwrap().number, hex)
}

/// The fingerprints of every block of `store`.
fn stored(store: &BlockStore) -> Vec<(u64, String)> {
    (0..store.height())
        .map(|n| fingerprint(&store.block(BlockNumber::new(n)).unwrap()))
        .collect()
}

/// The fingerprints of `blocks`.
fn encoded(blocks: &[Block]) -> Vec<(u64, String)> {
    blocks.iter().map(fingerprint).collect()
}

fn puller(node: &Node, endpoints: Vec<String>, metrics: Option<Arc<Metrics>>) -> BlockPuller {
    let mut config = PullerConfig::new(APP, endpoints, orderer_signer(node));
    config.stall_timeout = Duration::from_millis(500);
    config.progress_every_blocks = 2;
    config.metrics = metrics;
    BlockPuller::new(config)
}

/// Pulling from block 0 to the endpoint's height into an empty ledger yields the
/// node's chain, config blocks included, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_pulls_a_whole_chain_into_an_empty_ledger() {
    let (node, blocks) = node_with_blocks().await;
    let addr = serve_node(&node).await;
    let (_dir, store) = empty_ledger();
    let metrics = Arc::new(Metrics::new().unwrap());
    let mut verifier = BlockVerifier::join(&node.net.app_genesis).unwrap();
    let report = puller(&node, vec![addr], Some(metrics.clone()))
        .pull(&mut verifier, PullEnd::EndpointHeight, append_to(&store))
        .await
        .unwrap();
    assert_eq!(report.blocks, 7);
    assert_eq!(report.next, BlockNumber::new(7));
    assert!(report.dropped.is_empty());
    assert_eq!(stored(&store), encoded(&blocks));
    assert_eq!(
        verifier
            .bundle()
            .unwrap()
            .orderer
            .batch_size
            .max_message_count,
        2
    );
    let text = metrics.render();
    assert!(
        text.contains("korder_catchup_blocks_pulled{channel=\"mychannel\"} 7"),
        "{text}"
    );
}

/// Joining by a later config block pulls blocks 0 through it, which must end at
/// that very block; the same verifier then continues to the endpoint's height.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_joins_by_a_later_config_block() {
    let (node, blocks) = node_with_blocks().await;
    let addr = serve_node(&node).await;
    let (_dir, store) = empty_ledger();
    let puller = puller(&node, vec![addr], None);
    let mut verifier = BlockVerifier::join(&blocks[4]).unwrap();
    let report = puller
        .pull(
            &mut verifier,
            PullEnd::Through(BlockNumber::new(4)),
            append_to(&store),
        )
        .await
        .unwrap();
    assert_eq!(report.blocks, 5);
    assert!(verifier.pending_end().is_none());
    assert_eq!(stored(&store), encoded(&blocks[..5]));
    puller
        .pull(&mut verifier, PullEnd::EndpointHeight, append_to(&store))
        .await
        .unwrap();
    assert_eq!(stored(&store), encoded(&blocks));
}

/// A node that has the first blocks catches up from its last block under the
/// config in force there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_continues_after_the_last_block() {
    let (node, blocks) = node_with_blocks().await;
    let addr = serve_node(&node).await;
    let (_dir, store) = empty_ledger();
    for b in &blocks[..3] {
        store.append(b).unwrap();
    }
    let bundle = Arc::new(bundle_of_config_block(&blocks[0]).unwrap());
    let mut verifier = BlockVerifier::after(&blocks[2], bundle).unwrap();
    let report = puller(&node, vec![addr], None)
        .pull(
            &mut verifier,
            PullEnd::Through(BlockNumber::new(6)),
            append_to(&store),
        )
        .await
        .unwrap();
    assert_eq!(report.blocks, 4);
    assert_eq!(stored(&store), encoded(&blocks));
}

/// Over TLS with client certificates required, the puller presents the node's TLS
/// certificate (its hash in the seek request passes the binding check) and trusts
/// the orderer org's TLS CA from the channel config; a puller trusting another CA
/// is refused at the handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_pulls_over_mutual_tls() {
    use korder_server::connections::{ConnectionLimits, Connections};
    use korder_server::tls::{TlsAcceptor, TlsSettings, orderer_tls_roots};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let (node, blocks) = node_with_blocks().await;
    let ca = &node.net.orderer_ca;
    let server = ca
        .issue_tls(
            "orderer0",
            &["127.0.0.1".to_string(), "localhost".to_string()],
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert, &server.cert_pem).unwrap();
    std::fs::write(&key, &server.key_pem).unwrap();
    let settings = TlsSettings::load(&cert, &key, true, &[]).unwrap();
    let acceptor = TlsAcceptor::new(settings, Arc::new(node.registrar.clone())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let service = AtomicBroadcastService::new(node.registrar.clone(), DeliverConfig::default());
    let incoming = korder_server::tls::incoming(
        listener,
        acceptor,
        Connections::new(ConnectionLimits::default()),
    );
    tokio::spawn(
        Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(incoming),
    );

    // The client side: the node's TLS certificate as client certificate.
    let client = ca
        .issue_tls("orderer1", &["localhost".to_string()])
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).unwrap()];
    let client_key = || PrivateKeyDer::from_pem_slice(client.key_pem.as_bytes()).unwrap();
    let bundle = bundle_of_config_block(&node.net.app_genesis).unwrap();
    let roots = orderer_tls_roots(&bundle);
    assert!(!roots.is_empty());
    let tls = ClientTls::new(roots, chain.clone(), client_key()).unwrap();
    let mut config = PullerConfig::new(APP, vec![addr.clone()], orderer_signer(&node));
    config.tls = Some(Arc::new(tls));
    let (_dir, store) = empty_ledger();
    let mut verifier = BlockVerifier::join(&node.net.app_genesis).unwrap();
    BlockPuller::new(config.clone())
        .pull(&mut verifier, PullEnd::EndpointHeight, append_to(&store))
        .await
        .unwrap();
    assert_eq!(stored(&store), encoded(&blocks));

    // Trusting only another CA's TLS root: the server's certificate is refused.
    let other = korder_msp::devpki::DevPki::generate("OtherMSP", "other.example.com").unwrap();
    let other_root = CertificateDer::from_pem_slice(other.tls_ca_cert_pem().as_bytes()).unwrap();
    config.tls = Some(Arc::new(
        ClientTls::new(vec![other_root], chain, client_key()).unwrap(),
    ));
    let (_dir, store) = empty_ledger();
    let mut verifier = BlockVerifier::join(&node.net.app_genesis).unwrap();
    let err = BlockPuller::new(config)
        .pull(&mut verifier, PullEnd::EndpointHeight, append_to(&store))
        .await
        .unwrap_err();
    let PullError::AllEndpointsFailed { failures, .. } = &err else {
        panic!("unexpected error: {err}");
    };
    assert!(
        matches!(failures[0].1, EndpointFailure::Connect(_)),
        "{err}"
    );
    assert_eq!(store.height(), 0);
}

/// Every block of `channel` in the Fabric v2.5.16 orderer ledger of the fixtures.
fn fabric_blocks(channel: &str) -> Vec<Block> {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fabric-v2.5.16/orderer-ledger");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ledger");
    copy_tree(&fixture, &root);
    let store = Ledgers::open_dir(&root, StoreOptions::default())
        .unwrap()
        .open(channel)
        .unwrap();
    (0..store.height())
        .map(|n| store.block(BlockNumber::new(n)).unwrap())
        .collect()
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The chains a Fabric v2.5.16 orderer wrote (its signatures, its config blocks)
/// pass the verifier from block 0, and a joined chain ends at its last config block.
#[test]
fn catchup_verifier_accepts_fabric_chains() {
    for channel in ["system-channel", "mychannel"] {
        let blocks = fabric_blocks(channel);
        assert!(blocks.len() > 1, "{channel}");
        let last_config = blocks
            .iter()
            .rev()
            .find(|b| korder_server::catchup::config_envelope(b).is_some())
            .unwrap();
        let mut verifier = BlockVerifier::join(last_config).unwrap();
        for b in &blocks {
            verifier
                .verify(b)
                .unwrap_or_else(|e| panic!("{channel}: {e}"));
        }
        assert!(verifier.pending_end().is_none(), "{channel}");
    }
}

/// How a forged endpoint lies.
#[derive(Clone, Copy, Debug)]
enum Forgery {
    /// Block `n`'s signature is changed.
    BadSignature(u64),
    /// Block `n`'s previous_hash is changed.
    WrongPreviousHash(u64),
    /// Block `n`'s first data entry is changed.
    TamperedData(u64),
    /// It accepts the request and never answers.
    Silent,
}

/// A Deliver service serving the genuine blocks, except the forged one (after which
/// it goes on as if all were well).
struct ForgedDeliver {
    blocks: Vec<Block>,
    forgery: Forgery,
}

impl ForgedDeliver {
    fn forged(&self, mut block: Block) -> Block {
        let number = block.header.as_ref().unwrap().number;
        match self.forgery {
            Forgery::BadSignature(n) if n == number => {
                let mut md =
                    Metadata::decode(slot(&block, BlockMetadataIndex::Signatures)).unwrap();
                let mut sig = md.signatures[0].signature.to_vec();
                let last = sig.len() - 3;
                sig[last] ^= 0x55;
                md.signatures[0].signature = Bytes::from(sig);
                set_signatures(&mut block, md.value, md.signatures);
            }
            Forgery::WrongPreviousHash(n) if n == number => {
                block.header.as_mut().unwrap().previous_hash = Bytes::from_static(&[1; 32]);
            }
            Forgery::TamperedData(n) if n == number => {
                block.data.as_mut().unwrap().data[0] = Bytes::from_static(b"forged");
            }
            _ => {}
        }
        block
    }
}

type Responses =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<DeliverResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AtomicBroadcast for ForgedDeliver {
    type BroadcastStream = futures::stream::Empty<Result<BroadcastResponse, tonic::Status>>;
    type DeliverStream = Responses;

    async fn broadcast(
        &self,
        _: tonic::Request<tonic::Streaming<Envelope>>,
    ) -> Result<tonic::Response<Self::BroadcastStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("no broadcast here"))
    }

    async fn deliver(
        &self,
        request: tonic::Request<tonic::Streaming<Envelope>>,
    ) -> Result<tonic::Response<Self::DeliverStream>, tonic::Status> {
        if matches!(self.forgery, Forgery::Silent) {
            return Ok(tonic::Response::new(Box::pin(futures::stream::pending())));
        }
        let envelope = request.into_inner().message().await?.unwrap();
        let payload = Payload::decode(envelope.payload.as_ref()).unwrap();
        let seek = SeekInfo::decode(payload.data.as_ref()).unwrap();
        let number = |p: Option<korder_proto::orderer::SeekPosition>| match p.and_then(|p| p.r#type)
        {
            Some(seek_position::Type::Specified(s)) => s.number,
            _ => u64::MAX,
        };
        let start = number(seek.start) as usize;
        let stop = number(seek.stop).min(self.blocks.len() as u64 - 1) as usize;
        let mut out: Vec<Result<DeliverResponse, tonic::Status>> = self.blocks[start..=stop]
            .iter()
            .map(|b| {
                Ok(DeliverResponse {
                    r#type: Some(deliver_response::Type::Block(self.forged(b.clone()))),
                })
            })
            .collect();
        out.push(Ok(DeliverResponse {
            r#type: Some(deliver_response::Type::Status(Status::Success as i32)),
        }));
        Ok(tonic::Response::new(Box::pin(futures::stream::iter(out))))
    }
}

/// Serves a forged Deliver of `blocks` on a fresh port; its address.
async fn serve_forged(blocks: &[Block], forgery: Forgery) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = ForgedDeliver {
        blocks: blocks.to_vec(),
        forgery,
    };
    tokio::spawn(
        Server::builder()
            .add_service(AtomicBroadcastServer::new(service))
            .serve_with_incoming(incoming(listener)),
    );
    addr.to_string()
}

/// An address nothing listens on.
async fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

/// Forged and silent endpoints listed before the good one: each forged block is
/// refused, its endpoint dropped, and the pull goes on from the same block with the
/// next endpoint; the ledger ends identical to the genuine chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_refuses_forged_blocks_and_moves_on() {
    let (node, blocks) = node_with_blocks().await;
    let good = serve_node(&node).await;
    let bad_signature = serve_forged(&blocks, Forgery::BadSignature(2)).await;
    let wrong_previous = serve_forged(&blocks, Forgery::WrongPreviousHash(3)).await;
    let tampered = serve_forged(&blocks, Forgery::TamperedData(5)).await;
    let silent = serve_forged(&blocks, Forgery::Silent).await;
    let endpoints = vec![
        bad_signature.clone(),
        wrong_previous.clone(),
        tampered.clone(),
        silent.clone(),
        good,
    ];
    let (_dir, store) = empty_ledger();
    let metrics = Arc::new(Metrics::new().unwrap());
    let mut verifier = BlockVerifier::join(&node.net.app_genesis).unwrap();
    let report = puller(&node, endpoints, Some(metrics.clone()))
        .pull(
            &mut verifier,
            PullEnd::Through(BlockNumber::new(6)),
            append_to(&store),
        )
        .await
        .unwrap();
    assert_eq!(stored(&store), encoded(&blocks));
    let reasons: Vec<(&str, &str)> = report
        .dropped
        .iter()
        .map(|(e, r)| (e.as_str(), r.as_str()))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert_eq!(reasons[0].0, bad_signature);
    assert!(
        reasons[0]
            .1
            .contains("block 2: its signatures do not satisfy"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, wrong_previous);
    assert!(
        reasons[1].1.contains("block 3: previous_hash"),
        "{reasons:?}"
    );
    assert_eq!(reasons[2].0, tampered);
    assert!(reasons[2].1.contains("block 5: data_hash"), "{reasons:?}");
    assert_eq!(reasons[3].0, silent);
    assert!(reasons[3].1.contains("no message for"), "{reasons:?}");
    let text = metrics.render();
    assert!(
        text.contains("korder_catchup_blocks_refused{channel=\"mychannel\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("korder_catchup_blocks_pulled{channel=\"mychannel\"} 7"),
        "{text}"
    );
}

/// When every endpoint fails, the error names each endpoint and its reason, and the
/// ledger ends at the last good block: nothing forged is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_fails_precisely_when_every_endpoint_fails() {
    let (node, blocks) = node_with_blocks().await;
    let bad_signature = serve_forged(&blocks, Forgery::BadSignature(2)).await;
    let wrong_previous = serve_forged(&blocks, Forgery::WrongPreviousHash(3)).await;
    let dead = dead_address().await;
    let endpoints = vec![bad_signature.clone(), wrong_previous.clone(), dead.clone()];
    let (_dir, store) = empty_ledger();
    let mut verifier = BlockVerifier::join(&node.net.app_genesis).unwrap();
    let err = puller(&node, endpoints, None)
        .pull(
            &mut verifier,
            PullEnd::Through(BlockNumber::new(6)),
            append_to(&store),
        )
        .await
        .unwrap_err();
    let PullError::AllEndpointsFailed { next, failures, .. } = &err else {
        panic!("unexpected error: {err}");
    };
    assert_eq!(*next, BlockNumber::new(3));
    let named: Vec<&str> = failures.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        named,
        [
            bad_signature.as_str(),
            wrong_previous.as_str(),
            dead.as_str()
        ]
    );
    assert!(matches!(failures[0].1, EndpointFailure::Refused(_)));
    assert!(matches!(failures[1].1, EndpointFailure::Refused(_)));
    assert!(matches!(failures[2].1, EndpointFailure::Connect(_)));
    let text = err.to_string();
    for endpoint in [&bad_signature, &wrong_previous, &dead] {
        assert!(text.contains(endpoint.as_str()), "{text}");
    }
    assert_eq!(store.height(), 3);
    assert_eq!(stored(&store), encoded(&blocks[..3]));
    assert_eq!(verifier.next_number(), BlockNumber::new(3));
    assert_eq!(
        header_hash(store.last_header().as_ref().unwrap()),
        header_hash(blocks[2].header.as_ref().unwrap())
    );
}

/// No endpoint left once the node's own is skipped is an error of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catchup_skips_the_nodes_own_endpoint() {
    let (node, _) = node_with_blocks().await;
    let own = serve_node(&node).await;
    let mut config = PullerConfig::new(APP, vec![own.clone()], orderer_signer(&node));
    config.own_endpoint = Some(own);
    let puller = BlockPuller::new(config);
    assert!(puller.endpoints().is_empty());
    let (_dir, store) = empty_ledger();
    let mut verifier = BlockVerifier::join(&node.net.app_genesis).unwrap();
    let err = puller
        .pull(&mut verifier, PullEnd::EndpointHeight, append_to(&store))
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NoEndpoints { .. }), "{err}");
    assert_eq!(store.height(), 0);
}
