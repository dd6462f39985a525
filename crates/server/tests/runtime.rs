//! The server's runtime in process: Broadcast and Deliver statuses, chain
//! start-up, halts, channel creation, driven through the gRPC service over an
//! in-process channel (see `support`).

mod support;

use std::time::Duration;

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::{Envelope, HeaderType, Status};
use korder_proto::orderer::seek_info::SeekBehavior::{BlockUntilReady, FailIfNotReady};
use korder_server::LogTiming;
use korder_server::chain::RetryPolicy;
use support::*;

/// Envelopes a client broadcasts are answered SUCCESS and come out of Deliver in a
/// block, byte for byte as sent, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_success_is_ordered_and_delivered() {
    let node = Node::start(2).await;
    let envs = vec![
        tx(&node.net.client, APP, "a"),
        tx(&node.net.client, APP, "b"),
    ];
    let raw: Vec<Bytes> = envs.iter().map(|e| e.encode_to_vec().into()).collect();
    let responses = node.broadcast(envs).await;
    assert_eq!(statuses(&responses), vec![Status::Success, Status::Success]);
    let (blocks, status) = node
        .deliver(seek(&node.net.client, APP, at(1), at(1), BlockUntilReady))
        .await;
    assert_eq!(status, Some(Status::Success));
    assert_eq!(blocks.len(), 1);
    assert_eq!(envelopes_of(&blocks[0]), raw);
}

/// A payload that does not decode is BAD_REQUEST and ends the stream: nothing
/// after it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_malformed_is_bad_request() {
    let node = Node::start(10).await;
    let garbage = Envelope {
        payload: Bytes::from_static(b"\xff\xff"),
        signature: Bytes::new(),
    };
    let responses = node
        .broadcast(vec![garbage, tx(&node.net.client, APP, "after")])
        .await;
    assert_eq!(statuses(&responses), vec![Status::BadRequest]);
    assert!(
        responses[0]
            .info
            .starts_with("could not determine channel ID")
    );
}

/// A signature that does not verify is FORBIDDEN (the Writers policy refuses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_bad_signature_is_forbidden() {
    let node = Node::start(10).await;
    let mut env = tx(&node.net.client, APP, "x");
    let mut sig = env.signature.to_vec();
    let last = sig.len() - 2;
    sig[last] ^= 0xff;
    env.signature = sig.into();
    let responses = node.broadcast(vec![env]).await;
    assert_eq!(statuses(&responses), vec![Status::Forbidden]);
}

/// An identity of an organisation the channel does not know is FORBIDDEN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_by_stranger_is_forbidden() {
    let node = Node::start(10).await;
    let responses = node.broadcast(vec![tx(&node.net.stranger, APP, "x")]).await;
    assert_eq!(statuses(&responses), vec![Status::Forbidden]);
}

/// A transaction for a channel the node does not have is NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_unknown_channel_is_not_found() {
    let node = Node::start(10).await;
    let responses = node
        .broadcast(vec![tx(&node.net.client, "nochannel", "x")])
        .await;
    assert_eq!(statuses(&responses), vec![Status::NotFound]);
}

/// A CONFIG envelope sent by a client is BAD_REQUEST: only the orderer builds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_config_envelope_is_bad_request() {
    let node = Node::start(10).await;
    let env = envelope(&node.net.client, APP, HeaderType::Config, Bytes::new());
    let responses = node.broadcast(vec![env]).await;
    assert_eq!(statuses(&responses), vec![Status::BadRequest]);
    assert_eq!(
        responses[0].info,
        "message is of type that cannot be processed directly"
    );
}

/// After a halt the chain takes nothing: Broadcast is SERVICE_UNAVAILABLE and the
/// chain's status says halted, ingress closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_after_halt_is_service_unavailable() {
    let node = Node::start(10).await;
    node.halt().await;
    let status = node.wait_status(APP, |s| s.halted).await;
    assert!(!status.ingress_open);
    let responses = node.broadcast(vec![tx(&node.net.client, APP, "x")]).await;
    assert_eq!(statuses(&responses), vec![Status::ServiceUnavailable]);
    assert_eq!(
        responses[0].info,
        "consenter for this channel has been halted"
    );
}

/// Deliver for a channel the node does not have is NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_unknown_channel_is_not_found() {
    let node = Node::start(10).await;
    let (blocks, status) = node
        .deliver(seek(
            &node.net.client,
            "nochannel",
            oldest(),
            oldest(),
            BlockUntilReady,
        ))
        .await;
    assert!(blocks.is_empty());
    assert_eq!(status, Some(Status::NotFound));
}

/// A Deliver request whose payload does not decode is BAD_REQUEST.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_malformed_is_bad_request() {
    let node = Node::start(10).await;
    let garbage = Envelope {
        payload: Bytes::from_static(b"\xff\xff"),
        signature: Bytes::new(),
    };
    assert_eq!(
        node.deliver(garbage).await,
        (Vec::new(), Some(Status::BadRequest))
    );
    let no_seek_info = envelope(
        &node.net.client,
        APP,
        HeaderType::DeliverSeekInfo,
        Bytes::from_static(b"\xff\xff"),
    );
    assert_eq!(
        node.deliver(no_seek_info).await,
        (Vec::new(), Some(Status::BadRequest))
    );
}

/// A reader the channel's Readers policy refuses is FORBIDDEN, before any block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_by_stranger_is_forbidden() {
    let node = Node::start(10).await;
    let (blocks, status) = node
        .deliver(seek(
            &node.net.stranger,
            APP,
            oldest(),
            newest(),
            BlockUntilReady,
        ))
        .await;
    assert!(blocks.is_empty());
    assert_eq!(status, Some(Status::Forbidden));
}

/// Oldest, newest and a specified number resolve to the right blocks; a number
/// past the height with FAIL_IF_NOT_READY is NOT_FOUND at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_seek_positions() {
    let node = Node::start(1).await;
    let responses = node
        .broadcast(vec![
            tx(&node.net.client, APP, "1"),
            tx(&node.net.client, APP, "2"),
        ])
        .await;
    assert_eq!(statuses(&responses), vec![Status::Success, Status::Success]);
    let c = &node.net.client;
    // Wait for blocks 1 and 2 (a start past the height would be NOT_FOUND), then
    // read the ledger as it stands.
    let (blocks, status) = node
        .deliver(seek(c, APP, at(1), at(2), BlockUntilReady))
        .await;
    assert_eq!((blocks.len(), status), (2, Some(Status::Success)));
    let numbers = |blocks: &[korder_proto::common::Block]| -> Vec<u64> {
        blocks
            .iter()
            .map(|b| b.header.as_ref().unwrap().number)
            .collect()
    };
    let (blocks, status) = node
        .deliver(seek(c, APP, oldest(), newest(), FailIfNotReady))
        .await;
    assert_eq!(status, Some(Status::Success));
    assert_eq!(numbers(&blocks), vec![0, 1, 2]);
    let (blocks, status) = node
        .deliver(seek(c, APP, newest(), newest(), FailIfNotReady))
        .await;
    assert_eq!((numbers(&blocks), status), (vec![2], Some(Status::Success)));
    let (blocks, status) = node
        .deliver(seek(c, APP, at(1), at(1), FailIfNotReady))
        .await;
    assert_eq!((numbers(&blocks), status), (vec![1], Some(Status::Success)));
    let (blocks, status) = node
        .deliver(seek(c, APP, at(3), at(3), FailIfNotReady))
        .await;
    assert_eq!((numbers(&blocks), status), (vec![], Some(Status::NotFound)));
    let (blocks, status) = node
        .deliver(seek(c, APP, at(2), at(1), FailIfNotReady))
        .await;
    assert_eq!(
        (numbers(&blocks), status),
        (vec![], Some(Status::BadRequest))
    );
}

/// BLOCK_UNTIL_READY waits for a block not yet cut and returns it once a
/// transaction makes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_blocks_until_ready() {
    let node = Node::start(1).await;
    let mut client = node.client().await;
    let request = seek(&node.net.client, APP, at(1), at(1), BlockUntilReady);
    let mut stream = client
        .deliver(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let responses = node
        .broadcast(vec![tx(&node.net.client, APP, "late")])
        .await;
    assert_eq!(statuses(&responses), vec![Status::Success]);
    let first = stream.message().await.unwrap().unwrap();
    match first.r#type {
        Some(korder_proto::orderer::deliver_response::Type::Block(b)) => {
            assert_eq!(b.header.unwrap().number, 1)
        }
        other => panic!("expected block 1, got {other:?}"),
    }
}

/// A block is cut by the batch timeout when it is not full: on tokio's paused
/// clock the timer fires as soon as nothing else is runnable.
#[tokio::test(start_paused = true)]
async fn batch_timeout_cuts_a_block() {
    let node = Node::start(100).await;
    let responses = node
        .broadcast(vec![tx(&node.net.client, APP, "lonely")])
        .await;
    assert_eq!(statuses(&responses), vec![Status::Success]);
    let (blocks, status) = node
        .deliver(seek(&node.net.client, APP, at(1), at(1), BlockUntilReady))
        .await;
    assert_eq!(status, Some(Status::Success));
    assert_eq!(envelopes_of(&blocks[0]).len(), 1);
    node.halt().await;
}

/// With the early-cut policy a lone envelope is cut at the first check, not by the
/// channel's BatchTimeout, here an hour: the block arrives (within a minute; without
/// the policy it would take the hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_cut_cuts_a_lone_envelope_at_once() {
    let options = korder_server::NodeOptions {
        early_cut: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let net = Network::new(100, Duration::from_secs(3600));
    let node = Node::start_with_options(net, LogTiming::LOCAL, 0, options).await;
    let responses = node
        .broadcast(vec![tx(&node.net.client, APP, "lonely")])
        .await;
    assert_eq!(statuses(&responses), vec![Status::Success]);
    let request = seek(&node.net.client, APP, at(1), at(1), BlockUntilReady);
    let (blocks, status) = tokio::time::timeout(Duration::from_secs(60), node.deliver(request))
        .await
        .expect("block 1 was not cut early");
    assert_eq!(status, Some(Status::Success));
    assert_eq!(envelopes_of(&blocks[0]).len(), 1);
    node.halt().await;
}

/// A log that cannot be opened at first is retried per the policy; the chain
/// starts once it opens, and then orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_start_up_retries_until_the_log_opens() {
    let timing = LogTiming {
        retry: RetryPolicy {
            short_interval: Duration::from_millis(5),
            short_total: Duration::from_secs(60),
            long_interval: Duration::from_millis(5),
            long_total: Duration::ZERO,
        },
        ..LogTiming::LOCAL
    };
    let node = Node::start_with(Network::new(1, Duration::from_secs(2)), timing, 3).await;
    for id in [SYSTEM, APP] {
        let s = node.wait_status(id, |s| s.started).await;
        assert!(s.error.is_none() && !s.errored, "{id}: {s:?}");
    }
    let responses = node.broadcast(vec![tx(&node.net.client, APP, "x")]).await;
    assert_eq!(statuses(&responses), vec![Status::Success]);
}

/// With one attempt (a local log), a log that cannot be opened stops the chain
/// with the reason; Broadcast is SERVICE_UNAVAILABLE naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_start_up_failure_stops_the_chain() {
    let node = Node::start_with(
        Network::new(1, Duration::from_secs(2)),
        LogTiming::LOCAL,
        usize::MAX,
    )
    .await;
    let s = node.wait_status(APP, |s| s.error.is_some()).await;
    assert!(s.errored && !s.started);
    assert!(s.error.unwrap().contains("the log is not reachable"));
    let responses = node.broadcast(vec![tx(&node.net.client, APP, "x")]).await;
    assert_eq!(statuses(&responses), vec![Status::ServiceUnavailable]);
    let (_, status) = node
        .deliver(seek(
            &node.net.client,
            APP,
            oldest(),
            oldest(),
            BlockUntilReady,
        ))
        .await;
    // A Deliver request is STRICT unless it asks otherwise: a stopped chain is
    // SERVICE_UNAVAILABLE.
    assert_eq!(status, Some(Status::ServiceUnavailable));
}

/// A CONFIG_UPDATE for an unknown channel creates it through the system channel:
/// the system channel's block holds the ORDERER_TRANSACTION, the new channel
/// appears with its genesis block and orders transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_creation_through_the_system_channel() {
    let node = Node::start(1).await;
    let creation = channel_creation(&node.net, "newchan");
    let responses = node.broadcast(vec![creation]).await;
    assert_eq!(statuses(&responses), vec![Status::Success], "{responses:?}");
    let (blocks, status) = node
        .deliver(seek(
            &node.net.orderer,
            SYSTEM,
            at(1),
            at(1),
            BlockUntilReady,
        ))
        .await;
    assert_eq!(status, Some(Status::Success));
    let envs = envelopes_of(&blocks[0]);
    assert_eq!(envs.len(), 1);
    let parsed =
        korder_server::msgprocessor::parse(Envelope::decode(envs[0].as_ref()).unwrap()).unwrap();
    assert_eq!(
        parsed.channel_header.r#type,
        HeaderType::OrdererTransaction as i32
    );
    // The new channel is served once its chain started: NOT_FOUND until then.
    let channel = node.registrar.served_channel("newchan").await;
    assert_eq!(channel.store.height(), 1);
    let responses = node
        .broadcast(vec![tx(&node.net.client, "newchan", "x")])
        .await;
    assert_eq!(statuses(&responses), vec![Status::Success]);
    let (blocks, status) = node
        .deliver(seek(
            &node.net.client,
            "newchan",
            at(1),
            at(1),
            BlockUntilReady,
        ))
        .await;
    assert_eq!((blocks.len(), status), (1, Some(Status::Success)));
    // Creating it again is refused: the channel exists.
    let again = node
        .broadcast(vec![channel_creation(&node.net, "newchan")])
        .await;
    assert_eq!(statuses(&again), vec![Status::BadRequest]);
}

/// A config update signed by the orderer admin is ordered as a config block on
/// its own; once written, the channel's bundle carries the new batch size (the
/// next transaction is cut alone) and its sequence is 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_update_is_applied() {
    let node = Node::start(10).await;
    let channel = node.registrar.channel(APP).unwrap();
    let mut sequence = channel.state.watch_sequence();
    let responses = node
        .broadcast(vec![batch_size_update(&node.net, APP, 1)])
        .await;
    assert_eq!(statuses(&responses), vec![Status::Success], "{responses:?}");
    sequence.wait_for(|s| s.get() == 1).await.unwrap();
    assert_eq!(
        channel.state.bundle().orderer.batch_size.max_message_count,
        1
    );
    let responses = node.broadcast(vec![tx(&node.net.client, APP, "x")]).await;
    assert_eq!(statuses(&responses), vec![Status::Success]);
    let (blocks, status) = node
        .deliver(seek(&node.net.client, APP, at(1), at(2), BlockUntilReady))
        .await;
    assert_eq!(status, Some(Status::Success));
    let config = Envelope::decode(envelopes_of(&blocks[0])[0].as_ref()).unwrap();
    let parsed = korder_server::msgprocessor::parse(config).unwrap();
    assert_eq!(parsed.channel_header.r#type, HeaderType::Config as i32);
    assert_eq!(envelopes_of(&blocks[1]).len(), 1);
    // The same update again is refused: its read set is stale now.
    let again = node
        .broadcast(vec![batch_size_update(&node.net, APP, 1)])
        .await;
    assert_eq!(statuses(&again), vec![Status::BadRequest]);
}

/// A Deliver session re-checks the Readers policy when the channel's config
/// changes: a client reading ahead of the ledger is refused FORBIDDEN at the
/// config block that takes its read access away, before receiving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_rechecks_access_when_the_config_changes() {
    let node = Node::start(10).await;
    let mut client = node.client().await;
    let request = seek(&node.net.client, APP, oldest(), at(5), BlockUntilReady);
    let mut stream = client
        .deliver(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    // The genesis block comes first: the client may read at sequence 0.
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.r#type,
        Some(korder_proto::orderer::deliver_response::Type::Block(_))
    ));
    let responses = node.broadcast(vec![readers_update(&node.net, APP)]).await;
    assert_eq!(statuses(&responses), vec![Status::Success], "{responses:?}");
    let next = stream.message().await.unwrap().unwrap();
    assert_eq!(
        next.r#type,
        Some(korder_proto::orderer::deliver_response::Type::Status(
            Status::Forbidden as i32
        ))
    );
    // A new request by the same client is refused at once; the orderer org still reads.
    let (blocks, status) = node
        .deliver(seek(
            &node.net.client,
            APP,
            oldest(),
            oldest(),
            FailIfNotReady,
        ))
        .await;
    assert_eq!((blocks.len(), status), (0, Some(Status::Forbidden)));
    let (blocks, status) = node
        .deliver(seek(&node.net.orderer, APP, at(1), at(1), BlockUntilReady))
        .await;
    assert_eq!((blocks.len(), status), (1, Some(Status::Success)));
}

/// Records validated under a config that has since changed are re-validated by
/// the chain: a stale config update is re-proposed against the new config (its
/// block holds a rebuilt envelope, and both updates take effect), a stale
/// transaction is checked again and ordered, and ingress is open afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_records_are_revalidated() {
    use korder_consensus::{ConfigSeq, configure_record, order_record};
    use korder_log::Log;
    let node = Node::start(1).await;
    let channel = node.registrar.channel(APP).unwrap();
    let validate = |env: Envelope| {
        let raw: Bytes = env.encode_to_vec().into();
        let parsed = korder_server::msgprocessor::parse(env).unwrap();
        channel.processor.process(&parsed, &raw).unwrap()
    };
    // Both updates and the transaction are validated at sequence 0...
    let a = validate(batch_size_update(&node.net, APP, 1));
    let b = validate(readers_update(&node.net, APP));
    let t = validate(tx(&node.net.client, APP, "stale"));
    assert_eq!(
        (a.config_seq, b.config_seq, t.config_seq),
        (ConfigSeq::new(0), ConfigSeq::new(0), ConfigSeq::new(0))
    );
    // ...and reach the log in one go, so that b and t are read at sequence 1.
    let log = node.logs.log(APP);
    log.append(configure_record(a.envelope.clone(), a.config_seq))
        .await
        .unwrap();
    log.append(configure_record(b.envelope.clone(), b.config_seq))
        .await
        .unwrap();
    log.append(order_record(t.envelope.clone(), t.config_seq))
        .await
        .unwrap();
    let (blocks, status) = node
        .deliver(seek(&node.net.orderer, APP, at(1), at(3), BlockUntilReady))
        .await;
    assert_eq!(status, Some(Status::Success));
    let contents: Vec<Vec<Bytes>> = blocks.iter().map(envelopes_of).collect();
    assert_eq!(contents[0], vec![a.envelope]);
    assert_eq!(contents[1].len(), 1);
    assert_ne!(
        contents[1][0], b.envelope,
        "the stale update was re-proposed"
    );
    assert_eq!(contents[2], vec![t.envelope]);
    let bundle = channel.state.bundle();
    assert_eq!(bundle.sequence.get(), 2);
    assert_eq!(bundle.orderer.batch_size.max_message_count, 1);
    let s = node.wait_status(APP, |s| s.ingress_open).await;
    assert!(s.started && !s.errored);
}

/// The block signer check passes for an orderer org member and fails, naming the
/// policy evaluation, for a member of an application org and for an identity of an
/// organisation the channel does not know: only the first signs blocks peers accept.
#[test]
fn block_signer_check_needs_an_orderer_org_identity() {
    use korder_server::registrar::check_block_signer;
    let net = Network::new(10, Duration::from_secs(1));
    for genesis in [&net.system_genesis, &net.app_genesis] {
        let config = genesis.data.as_ref().unwrap().data[0].clone();
        let bundle = korder_channelconfig::Bundle::from_config_envelope(&config).unwrap();
        check_block_signer(&bundle, &net.orderer).unwrap();
        for outsider in [&net.client, &net.stranger] {
            let e = check_block_signer(&bundle, outsider).unwrap_err();
            assert!(e.contains("policy"), "{e}");
        }
    }
}
