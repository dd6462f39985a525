//! Bad input and access checks, in process (see `support`): malformed, empty,
//! oversized and misrouted envelopes, bad seek requests, identities the channel's
//! policies refuse, requests that do not decode on the wire. Each gets Fabric's
//! status and text, and nothing of it is ordered.

#![allow(clippy::unwrap_used)] // test helpers: a failure should panic

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use korder_ledger::{Ledgers, StoreOptions};
use korder_msp::EcdsaSignature;
use korder_msp::devpki::NodeRole;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Block, ChannelHeader, Envelope, Header, HeaderType, Payload, Status};
use korder_proto::orderer::BroadcastResponse;
use korder_proto::orderer::seek_info::SeekBehavior::{BlockUntilReady, FailIfNotReady};
use support::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// A node whose channels cut a block per envelope.
async fn node() -> Node {
    Node::start_with(
        Network::new(1, Duration::from_millis(100)),
        korder_server::LogTiming::LOCAL,
        0,
    )
    .await
}

/// Broadcasts one envelope on its own stream: its status and info.
async fn one(node: &Node, env: Envelope) -> (Status, String) {
    let r = node.broadcast(vec![env]).await;
    assert_eq!(r.len(), 1, "one response: {r:?}");
    (Status::try_from(r[0].status).unwrap(), r[0].info.clone())
}

/// A transaction of `signer` on `mychannel`.
fn app_tx(signer: &SigningIdentity, data: &str) -> Envelope {
    tx(signer, APP, data)
}

/// The encoded envelopes of blocks after the genesis block.
fn ordered(blocks: &[Block]) -> Vec<Bytes> {
    blocks.iter().skip(1).flat_map(envelopes_of).collect()
}

/// Malformed, empty, oversized, misrouted and client-made config envelopes, and bad
/// seek requests, each get Fabric's status and info; the ledger does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_broadcasts_and_seeks_change_nothing() {
    let node = node().await;
    let client = &node.net.client;

    let (st, info) = one(
        &node,
        Envelope {
            payload: Bytes::from_static(b"\xff\xff\xff"),
            signature: Bytes::new(),
        },
    )
    .await;
    assert_eq!(st, Status::BadRequest);
    assert!(info.starts_with("could not determine channel ID"), "{info}");

    let (st, info) = one(&node, Envelope::default()).await;
    assert_eq!(
        (st, info.as_str()),
        (
            Status::BadRequest,
            "could not determine channel ID: header not set"
        )
    );

    let big = envelope(
        client,
        APP,
        HeaderType::EndorserTransaction,
        Bytes::from(vec![0u8; 11 << 20]),
    );
    let (st, info) = one(&node, big).await;
    assert_eq!(st, Status::BadRequest, "{info}");
    assert!(
        info.ends_with("exceeds maximum allowed 10485760 bytes"),
        "{info}"
    );

    let (st, info) = one(&node, tx(client, "nosuchchannel", "u")).await;
    assert_eq!(
        (st, info.as_str()),
        (Status::NotFound, "channel does not exist")
    );

    let config = envelope(client, APP, HeaderType::Config, Bytes::new());
    let (st, info) = one(&node, config).await;
    assert_eq!(
        (st, info.as_str()),
        (
            Status::BadRequest,
            "message is of type that cannot be processed directly"
        )
    );

    // A refusal ends the stream: the envelope after it is never answered or ordered.
    let pair = vec![Envelope::default(), app_tx(client, "after")];
    assert_eq!(node.broadcast(pair).await.len(), 1);

    // Seek requests.
    let (_, st) = node
        .deliver(seek(client, APP, at(1), at(0), BlockUntilReady))
        .await;
    assert_eq!(st, Some(Status::BadRequest), "stop below start");
    let (_, st) = node
        .deliver(seek(client, APP, at(5), at(9), BlockUntilReady))
        .await;
    assert_eq!(st, Some(Status::NotFound), "start beyond the height");
    let (_, st) = node
        .deliver(seek(client, APP, at(1), at(1), FailIfNotReady))
        .await;
    assert_eq!(
        st,
        Some(Status::NotFound),
        "FAIL_IF_NOT_READY at the height"
    );
    let (_, st) = node
        .deliver(seek(client, "nosuchchannel", at(0), at(0), BlockUntilReady))
        .await;
    assert_eq!(st, Some(Status::NotFound), "unknown channel");
    let garbage = envelope(
        client,
        APP,
        HeaderType::DeliverSeekInfo,
        Bytes::from_static(b"\xff\xff"),
    );
    let (_, st) = node.deliver(garbage).await;
    assert_eq!(st, Some(Status::BadRequest), "undecodable SeekInfo");

    // Nothing was ordered: the channel still has only its genesis block.
    let (blocks, st) = node
        .deliver(seek(client, APP, newest(), newest(), BlockUntilReady))
        .await;
    assert_eq!(st, Some(Status::Success));
    assert_eq!(blocks[0].header.as_ref().unwrap().number, 0);
    // And a marker sent now is the next block on its own (a block per envelope):
    // nothing refused above was waiting in the chain either.
    let marker = app_tx(client, "marker");
    let marker_bytes = Bytes::from(marker.encode_to_vec());
    assert_eq!(one(&node, marker).await.0, Status::Success);
    let (blocks, st) = node
        .deliver(seek(client, APP, at(1), at(1), BlockUntilReady))
        .await;
    assert_eq!(st, Some(Status::Success));
    assert_eq!(envelopes_of(&blocks[0]), vec![marker_bytes]);
}

/// Unknown MSP, a certificate from another CA, a bad signature and a high-S
/// signature are FORBIDDEN; an expired certificate is BAD_REQUEST; none of them is
/// ordered, while the dev client's envelope is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_refuses_bad_identities() {
    let node = node().await;
    let client = &node.net.client;

    let mut bad_sig = app_tx(client, "bad-signature");
    let mut sig = bad_sig.signature.to_vec();
    let last = sig.len() - 1;
    sig[last] ^= 0x01;
    bad_sig.signature = sig.into();

    let mut high_s = app_tx(client, "high-s");
    let parsed = EcdsaSignature::from_der(&high_s.signature).unwrap();
    let flipped = if parsed.is_high_s() {
        parsed.to_low_s()
    } else {
        parsed.negate_s()
    };
    assert!(flipped.is_high_s());
    high_s.signature = Bytes::from(flipped.to_der());

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let old = node
        .net
        .client_ca
        .issue_with_validity(
            "old@org1.example.com",
            NodeRole::Client,
            now - 7200,
            now - 60,
        )
        .unwrap();
    let expired =
        SigningIdentity::from_pem(CLIENT_MSP, old.cert_pem.as_bytes(), old.key_pem.as_bytes())
            .unwrap();

    let refused = [
        (
            "unknown MSP",
            app_tx(&foreign_identity("someone", "NoSuchMSP"), "unknown-msp"),
            Status::Forbidden,
        ),
        (
            "certificate from another CA",
            app_tx(&foreign_identity("impostor", CLIENT_MSP), "other-ca"),
            Status::Forbidden,
        ),
        ("bad signature", bad_sig, Status::Forbidden),
        ("high-S signature", high_s, Status::Forbidden),
        (
            "expired certificate",
            app_tx(&expired, "expired"),
            Status::BadRequest,
        ),
    ];
    for (what, env, want) in refused {
        let (status, info) = one(&node, env).await;
        assert_eq!(status, want, "{what}: {info}");
        if want == Status::Forbidden {
            assert!(info.ends_with("permission denied"), "{what}: {info}");
        } else {
            assert_eq!(info, "identity expired", "{what}");
        }
    }

    let good = app_tx(client, "good");
    let good_bytes = Bytes::from(good.encode_to_vec());
    let (st, info) = one(&node, good).await;
    assert_eq!(st, Status::Success, "{info}");
    // Only the good envelope is ever ordered: it is block 1, and the newest block.
    let blocks = node.blocks_until(client, APP, |b| b.len() == 2).await;
    assert_eq!(ordered(&blocks), vec![good_bytes]);
    let (newest_block, st) = node
        .deliver(seek(client, APP, newest(), newest(), FailIfNotReady))
        .await;
    assert_eq!(st, Some(Status::Success));
    assert_eq!(newest_block[0].header.as_ref().unwrap().number, 1);
}

/// A client whose certificate does not chain to a channel MSP is refused on
/// Deliver with FORBIDDEN; the dev client reads the same block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_refuses_non_readers() {
    let node = node().await;
    let stranger = foreign_identity("stranger", CLIENT_MSP);
    let (blocks, status) = node
        .deliver(seek(&stranger, APP, at(0), at(0), BlockUntilReady))
        .await;
    assert!(blocks.is_empty());
    assert_eq!(status, Some(Status::Forbidden));
    let (blocks, status) = node
        .deliver(seek(&node.net.client, APP, at(0), at(0), BlockUntilReady))
        .await;
    assert_eq!(blocks.len(), 1);
    assert_eq!(status, Some(Status::Success));
    // The block is what the ledger holds, byte for byte.
    assert_eq!(
        blocks[0].encode_to_vec(),
        node.net.app_genesis.encode_to_vec()
    );
}

/// A Deliver stream is cut with FORBIDDEN when a config update revokes the
/// reader's access: the policy is evaluated again once the config changed, before
/// the next block is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_stream_ends_when_read_access_is_revoked() {
    let node = node().await;
    // A stream from block 0 to forever, as the client.
    let mut client = node.client().await;
    let forever = seek(&node.net.client, APP, at(0), at(u64::MAX), BlockUntilReady);
    let mut stream = client
        .deliver(tokio_stream::iter(vec![forever]))
        .await
        .unwrap()
        .into_inner();
    // Org1MSP's Readers become its admins only; the update is signed by the Org1
    // admin and broadcast by the client (who may still write).
    let update = org1_policy_admins_only(&node.net, APP, "Readers");
    let (st, info) = one(&node, update).await;
    assert_eq!(st, Status::Success, "{info}");
    let mut numbers = Vec::new();
    let status = loop {
        use korder_proto::orderer::deliver_response::Type;
        match stream.message().await.unwrap().and_then(|r| r.r#type) {
            Some(Type::Block(b)) => numbers.push(b.header.unwrap().number),
            Some(Type::Status(s)) => break Status::try_from(s).ok(),
            None => break None,
        }
    };
    assert_eq!(status, Some(Status::Forbidden));
    assert_eq!(
        numbers,
        vec![0],
        "the config block is not sent to a revoked reader"
    );
    // The org admin still reads the channel, config block included.
    let (blocks, status) = node
        .deliver(seek(
            &node.net.client_admin,
            APP,
            at(1),
            at(1),
            BlockUntilReady,
        ))
        .await;
    assert_eq!(status, Some(Status::Success));
    let env = Envelope::decode(envelopes_of(&blocks[0])[0].as_ref()).unwrap();
    let parsed = korder_server::msgprocessor::parse(env).unwrap();
    assert_eq!(parsed.channel_header.r#type, HeaderType::Config as i32);
}

/// On one pipelined stream, envelopes before a refused one are ordered and answered
/// SUCCESS, the refused one gets FORBIDDEN, the stream ends there, and none of the
/// envelopes sent after it is ever ordered (even those validated alongside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_ends_the_stream_and_nothing_after_it_is_ordered() {
    let node = Node::start_with(
        Network::new(10, Duration::from_millis(100)),
        korder_server::LogTiming::LOCAL,
        0,
    )
    .await;
    let client = &node.net.client;
    let before: Vec<Envelope> = (0..200)
        .map(|i| app_tx(client, &format!("before-{i}")))
        .collect();
    let mut bad = app_tx(client, "refused");
    let mut sig = bad.signature.to_vec();
    let last = sig.len() - 1;
    sig[last] ^= 0x01;
    bad.signature = sig.into();
    let after: Vec<Envelope> = (0..200)
        .map(|i| app_tx(client, &format!("after-{i}")))
        .collect();
    let encoded = |envs: &[Envelope]| -> BTreeSet<Bytes> {
        envs.iter()
            .map(|e| Bytes::from(e.encode_to_vec()))
            .collect()
    };
    let (before_set, after_set) = (encoded(&before), encoded(&after));
    let bad_bytes = Bytes::from(bad.encode_to_vec());
    let mut envelopes = before;
    envelopes.push(bad);
    envelopes.extend(after);

    let responses = node.broadcast(envelopes).await;
    assert_eq!(
        responses.len(),
        201,
        "200 answers, the refusal, then the end"
    );
    assert!(
        responses[..200]
            .iter()
            .all(|r| r.status == Status::Success as i32),
        "{:?}",
        &responses[..3]
    );
    assert_eq!(
        responses[200].status,
        Status::Forbidden as i32,
        "{}",
        responses[200].info
    );

    // A later envelope on a new stream is ordered after every earlier one, so once
    // it is delivered the chain holds all that will ever be ordered from the first.
    let marker = app_tx(client, "marker");
    let marker_bytes = Bytes::from(marker.encode_to_vec());
    let (st, info) = one(&node, marker).await;
    assert_eq!(st, Status::Success, "{info}");
    let blocks = node
        .blocks_until(client, APP, |b| ordered(b).contains(&marker_bytes))
        .await;
    let all = ordered(&blocks);
    let distinct: BTreeSet<Bytes> = all.iter().cloned().collect();
    assert_eq!(distinct.len(), all.len(), "ordered twice");
    let ordered_before = distinct.intersection(&before_set).count();
    assert_eq!(
        ordered_before, 200,
        "every envelope before the refusal, once"
    );
    assert!(
        distinct.is_disjoint(&after_set) && !distinct.contains(&bad_bytes),
        "an envelope from after the refusal was ordered"
    );
    assert_eq!(all.len(), 201, "the 200 and the marker, nothing else");
}

/// Deliver follows Fabric's order of checks: an undecodable signature header is
/// BAD_REQUEST, an unknown channel NOT_FOUND, an undecodable SeekInfo BAD_REQUEST
/// (before the access check, as in Fabric v2.5), and a seek by an identity the
/// channel's Readers policy refuses is FORBIDDEN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_statuses_follow_fabric_order_of_checks() {
    let node = node().await;
    let client = &node.net.client;
    let stranger = foreign_identity("stranger", CLIENT_MSP);

    let (blocks, status) = node
        .deliver(seek(client, APP, at(0), at(0), BlockUntilReady))
        .await;
    assert_eq!((blocks.len(), status), (1, Some(Status::Success)));

    let (blocks, status) = node
        .deliver(seek(&stranger, APP, at(0), at(0), BlockUntilReady))
        .await;
    assert_eq!((blocks.len(), status), (0, Some(Status::Forbidden)));

    let (blocks, status) = node
        .deliver(seek(
            &stranger,
            "nosuchchannel",
            at(0),
            at(0),
            BlockUntilReady,
        ))
        .await;
    assert_eq!((blocks.len(), status), (0, Some(Status::NotFound)));

    // SeekInfo that does not decode, signed by the stranger.
    let bad_seek = envelope(
        &stranger,
        APP,
        HeaderType::DeliverSeekInfo,
        Bytes::from_static(&[0x0a, 0x05]),
    );
    let (blocks, status) = node.deliver(bad_seek).await;
    assert_eq!((blocks.len(), status), (0, Some(Status::BadRequest)));

    // A signature header that does not decode.
    let good = seek(client, APP, at(0), at(0), BlockUntilReady);
    let good_payload = Payload::decode(good.payload.clone()).unwrap();
    let channel_header = good_payload.header.unwrap().channel_header;
    assert_eq!(
        ChannelHeader::decode(channel_header.clone())
            .unwrap()
            .r#type,
        HeaderType::DeliverSeekInfo as i32
    );
    let payload = Payload {
        header: Some(Header {
            channel_header,
            signature_header: Bytes::from_static(&[0xff, 0xff]),
        }),
        data: good_payload.data,
    };
    let bad_header = client
        .sign_envelope(payload.encode_to_vec().into())
        .unwrap();
    let (blocks, status) = node.deliver(bad_header).await;
    assert_eq!((blocks.len(), status), (0, Some(Status::BadRequest)));
}

const BROADCAST: &str = "/orderer.AtomicBroadcast/Broadcast";
const DELIVER: &str = "/orderer.AtomicBroadcast/Deliver";

/// Sends message bytes as they are and returns response bytes as they are.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Sends `messages` on one stream of `path`: the responses received and the status
/// the stream ended with (`Ok` as code 0).
async fn exchange(
    node: &Node,
    path: &'static str,
    messages: Vec<Bytes>,
) -> (Vec<Bytes>, tonic::Status) {
    let mut grpc = tonic::client::Grpc::new(node.channel().await);
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(messages.len().max(1));
    for m in messages {
        tx.send(m).await.unwrap();
    }
    drop(tx);
    let response = grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await;
    let mut stream = match response {
        Ok(r) => r.into_inner(),
        Err(status) => return (Vec::new(), status),
    };
    let mut responses = Vec::new();
    loop {
        match stream.message().await {
            Ok(Some(m)) => responses.push(m),
            Ok(None) => return (responses, tonic::Status::ok("")),
            Err(status) => return (responses, status),
        }
    }
}

fn broadcast_statuses(responses: &[Bytes]) -> Vec<i32> {
    responses
        .iter()
        .map(|r| BroadcastResponse::decode(r.clone()).unwrap().status)
        .collect()
}

/// Bytes that do not decode as an Envelope end a Broadcast or a Deliver stream
/// with INTERNAL, after the answers due for earlier messages; the node keeps
/// serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_end_the_stream_with_internal() {
    let node = node().await;
    let client = &node.net.client;
    for garbage in [&[0xff, 0xff, 0xff][..], &[0x0a, 0x05][..]] {
        for path in [BROADCAST, DELIVER] {
            let (responses, status) =
                exchange(&node, path, vec![Bytes::copy_from_slice(garbage)]).await;
            assert!(responses.is_empty(), "{path} {garbage:02x?}: {responses:?}");
            assert_eq!(
                status.code(),
                tonic::Code::Internal,
                "{path} {garbage:02x?}: {status:?}"
            );
            assert!(
                status.message().contains("failed to unmarshal"),
                "{status:?}"
            );
        }
    }
    // A valid envelope, then garbage: the first is answered, then the stream ends.
    let good = Bytes::from(app_tx(client, "wire-before-garbage").encode_to_vec());
    let (responses, status) = exchange(
        &node,
        BROADCAST,
        vec![good, Bytes::from_static(&[0x0a, 0x05])],
    )
    .await;
    assert_eq!(broadcast_statuses(&responses), [Status::Success as i32]);
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");

    let (st, info) = one(&node, app_tx(client, "wire-after-garbage")).await;
    assert_eq!(st, Status::Success, "{info}");
}

/// An envelope carrying an unknown field (15) is stored in its block byte for byte
/// as it was sent, and the ledger verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_stored_as_sent() {
    let node = node().await;
    let client = &node.net.client;
    let mut sent = app_tx(client, "wire-unknown-field").encode_to_vec();
    // Field 15, length-delimited: tag (15 << 3) | 2 = 0x7a, then 2 bytes.
    sent.put_slice(&[0x7a, 0x02, 0xbe, 0xef]);
    let sent = Bytes::from(sent);
    let (responses, status) = exchange(&node, BROADCAST, vec![sent.clone()]).await;
    assert_eq!(
        broadcast_statuses(&responses),
        [Status::Success as i32],
        "{status:?}"
    );

    let (blocks, status) = node
        .deliver(seek(client, APP, at(1), at(1), BlockUntilReady))
        .await;
    assert_eq!(status, Some(Status::Success));
    let stored = envelopes_of(&blocks[0]);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].len(),
        sent.len(),
        "stored size differs from sent size"
    );
    assert_eq!(stored[0], sent, "stored bytes differ from the bytes sent");
    node.halt().await;
    let ledgers = Ledgers::open_dir(node.ledger_dir.path(), StoreOptions::default()).unwrap();
    let report = korder_ledger::verify(&ledgers, APP, &mut |_| {}, None).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.blocks_ok, 2);
}
