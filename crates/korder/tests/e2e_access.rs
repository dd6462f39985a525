//! End-to-end access control: Broadcast and Deliver refuse identities the channel's
//! policies do not accept, with Fabric's statuses, and nothing is ordered.

#![allow(clippy::unwrap_used)]

mod support;

use bytes::Bytes;
use korder_msp::signer::SigningIdentity;
use korder_proto::Message;
use korder_proto::common::{Envelope, HeaderType, Status};
use korder_proto::orderer::{SeekSpecified, seek_position};
use support::{Net, all_blocks, broadcast_all, deliver, envelope, seek};

fn tx(signer: &SigningIdentity, id: &str) -> Envelope {
    envelope(
        signer,
        "mychannel",
        HeaderType::EndorserTransaction,
        id,
        Bytes::from_static(b"data"),
    )
}

async fn one(address: &str, env: Envelope) -> (i32, String) {
    let r = broadcast_all(address, vec![env]).await;
    assert_eq!(r.len(), 1, "one response");
    r[0].clone()
}

/// Unknown MSP, a certificate from another CA, a bad signature and a high-S
/// signature are FORBIDDEN; an expired certificate is BAD_REQUEST; none of them is
/// ordered, while the dev client's envelope is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_refuses_bad_identities() {
    let mut net = Net::init(&["--batch-timeout", "100ms"]);
    net.start();
    let address = net.address();
    let client = net.client();
    support::assert_refused(
        &address,
        support::refused_envelopes(net.data_dir(), &client, "mychannel"),
    )
    .await;

    let (st, info) = one(&address, tx(&client, "good")).await;
    assert_eq!(st, Status::Success as i32, "{info}");
    // Only the good envelope is ever ordered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let ids = loop {
        let blocks = all_blocks(&address, &client, "mychannel").await;
        let ids: Vec<String> = blocks
            .iter()
            .skip(1)
            .flat_map(|b| b.data.clone().unwrap().data)
            .filter_map(|d| support::tx_id_of(&d))
            .collect();
        if !ids.is_empty() || std::time::Instant::now() > deadline {
            break ids;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(ids, vec!["good".to_string()]);
}

/// A client whose certificate does not chain to a channel MSP is refused on
/// Deliver with FORBIDDEN; the dev client reads the same block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_refuses_non_readers() {
    let mut net = Net::init(&[]);
    net.start();
    let address = net.address();
    let stranger = support::foreign_identity("stranger", "Org1MSP");
    let zero = || seek_position::Type::Specified(SeekSpecified { number: 0 });
    let (blocks, status) = deliver(&address, seek(&stranger, "mychannel", zero(), zero(), 0)).await;
    assert!(blocks.is_empty());
    assert_eq!(status, Some(Status::Forbidden as i32));
    let client = net.client();
    let (blocks, status) = deliver(&address, seek(&client, "mychannel", zero(), zero(), 0)).await;
    assert_eq!(blocks.len(), 1);
    assert_eq!(status, Some(Status::Success as i32));
    // The block is what the ledger holds, byte for byte.
    let on_disk = std::fs::read(net.data_dir().join("mychannel.block")).unwrap();
    assert_eq!(blocks[0].encode_to_vec(), on_disk);
}

/// A Deliver stream is cut with FORBIDDEN when a config update revokes the
/// reader's access: the policy is evaluated again once the config changed, before
/// the next block is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_stream_ends_when_read_access_is_revoked() {
    let mut net = Net::init(&["--batch-timeout", "100ms"]);
    net.start();
    let address = net.address();
    let client = net.client();
    // A stream from block 0 to forever, as the client.
    let forever = seek(
        &client,
        "mychannel",
        seek_position::Type::Specified(SeekSpecified { number: 0 }),
        seek_position::Type::Specified(SeekSpecified { number: u64::MAX }),
        0,
    );
    let stream = tokio::spawn({
        let address = address.clone();
        async move { deliver(&address, forever).await }
    });
    // Org1MSP's Readers become its admins only; the update is prepared, signed by
    // the Org1 admin, and broadcast by the client (who may still write).
    let dir = net.data_dir().to_str().unwrap().to_string();
    let update = net.data_dir().join("readers.pb");
    let genesis = std::fs::read(net.data_dir().join("mychannel.block")).unwrap();
    std::fs::write(
        &update,
        support::org1_policy_admins_only(&genesis, "mychannel", "Readers").encode_to_vec(),
    )
    .unwrap();
    let signed = net.data_dir().join("readers-signed.pb");
    let (d, u, s) = (
        dir.clone(),
        update.to_str().unwrap().to_string(),
        signed.to_str().unwrap().to_string(),
    );
    tokio::task::spawn_blocking(move || {
        let sign = format!("{d}/admin/msp:Org1MSP");
        support::korder(&[
            "channel",
            "update",
            "--data-dir",
            &d,
            "--channel",
            "mychannel",
            "--file",
            &u,
            "--sign-msp",
            &sign,
            "--out",
            &s,
        ]);
    })
    .await
    .unwrap();
    let env = Envelope::decode(std::fs::read(&signed).unwrap().as_slice()).unwrap();
    let (st, info) = one(&address, env).await;
    assert_eq!(st, Status::Success as i32, "{info}");
    let (blocks, status) = tokio::time::timeout(std::time::Duration::from_secs(60), stream)
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(status, Some(Status::Forbidden as i32));
    let numbers: Vec<u64> = blocks
        .iter()
        .map(|b| b.header.as_ref().unwrap().number)
        .collect();
    assert_eq!(
        numbers,
        vec![0],
        "the config block is not sent to a revoked reader"
    );
    // The org admin still reads the channel, config block included.
    let admin = SigningIdentity::load_msp_dir(net.data_dir().join("admin/msp"), "Org1MSP").unwrap();
    let (blocks, status) = deliver(
        &address,
        seek(
            &admin,
            "mychannel",
            seek_position::Type::Specified(SeekSpecified { number: 1 }),
            seek_position::Type::Specified(SeekSpecified { number: 1 }),
            0,
        ),
    )
    .await;
    assert_eq!(status, Some(Status::Success as i32));
    assert!(support::is_config(
        &blocks[0].data.as_ref().unwrap().data[0]
    ));
}

/// On one pipelined stream, envelopes before a refused one are ordered and answered
/// SUCCESS, the refused one gets FORBIDDEN, the stream ends there, and none of the
/// envelopes sent after it is ever ordered (even those validated alongside it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_ends_the_stream_and_nothing_after_it_is_ordered() {
    let mut net = Net::init(&["--batch-timeout", "100ms"]);
    net.start();
    let address = net.address();
    let client = net.client();
    let mut envelopes: Vec<Envelope> = (0..200)
        .map(|i| tx(&client, &format!("before-{i}")))
        .collect();
    let mut bad = tx(&client, "refused");
    let mut sig = bad.signature.to_vec();
    let last = sig.len() - 1;
    sig[last] ^= 0x01;
    bad.signature = sig.into();
    envelopes.push(bad);
    envelopes.extend((0..200).map(|i| tx(&client, &format!("after-{i}"))));

    let responses = broadcast_all(&address, envelopes).await;
    assert_eq!(
        responses.len(),
        201,
        "200 answers, the refusal, then the end"
    );
    assert!(
        responses[..200]
            .iter()
            .all(|r| r.0 == Status::Success as i32),
        "{:?}",
        &responses[..3]
    );
    assert_eq!(
        responses[200].0,
        Status::Forbidden as i32,
        "{}",
        responses[200].1
    );

    // A later envelope on a new stream is ordered after every earlier one, so once
    // it is delivered the chain holds all that will ever be ordered from the first.
    let (st, info) = one(&address, tx(&client, "marker")).await;
    assert_eq!(st, Status::Success as i32, "{info}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let counts = loop {
        let counts = support::tx_counts(&all_blocks(&address, &client, "mychannel").await);
        if counts.contains_key("marker") {
            break counts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "marker never delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let before = counts.keys().filter(|id| id.starts_with("before-")).count();
    assert_eq!(before, 200, "every envelope before the refusal, once");
    assert!(counts.values().all(|&n| n == 1), "ordered twice");
    assert!(
        counts
            .keys()
            .all(|id| !id.starts_with("after-") && id != "refused"),
        "an envelope from after the refusal was ordered"
    );
}
