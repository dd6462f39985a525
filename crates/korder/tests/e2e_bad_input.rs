//! Bad input to the binary gets a precise status or error and changes nothing: an
//! envelope over the channel's size limit, a bad configuration file, a missing
//! genesis block. And a node bootstraps from a configtxgen-made genesis block with
//! Fabric's sample MSP. (Bad envelopes and seek requests, status by status, are
//! tested in process in crates/server/tests/refusals.rs.)

#![allow(clippy::unwrap_used)]

mod support;

use korder_ledger::BlockNumber;
use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use korder_proto::Message;
use korder_proto::common::{Envelope, HeaderType, Status};
use korder_proto::orderer::{SeekNewest, seek_position};
use support::{KORDER, Net, broadcast_all, deliver, envelope, free_port, seek};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fabric-v1.4.12")
}

async fn one(address: &str, env: Envelope) -> (i32, String) {
    let r = broadcast_all(address, vec![env]).await;
    assert_eq!(r.len(), 1);
    r[0].clone()
}

/// The binary's gRPC receive limit (orderer.yaml's, 100 MiB) lets an 11 MiB
/// envelope through to the channel, whose AbsoluteMaxBytes refuses it with
/// BAD_REQUEST; the node keeps serving. (Each bad envelope and seek request, with
/// its status and text, is tested in process: crates/server/tests/refusals.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_envelope_reaches_the_channel_and_is_refused() {
    let mut net = Net::init(&[]);
    net.start();
    let a = net.address();
    let client = net.client();
    let big = envelope(
        &client,
        "mychannel",
        HeaderType::EndorserTransaction,
        "big",
        Bytes::from(vec![0u8; 11 << 20]),
    );
    let (st, info) = one(&a, big).await;
    assert_eq!(st, Status::BadRequest as i32, "{info}");
    assert!(
        info.ends_with("exceeds maximum allowed 10485760 bytes"),
        "{info}"
    );
    // Nothing was ordered: the channel still has only its genesis block.
    let newest = || seek_position::Type::Newest(SeekNewest {});
    let (blocks, st) = deliver(&a, seek(&client, "mychannel", newest(), newest(), 0)).await;
    assert_eq!(st, Some(Status::Success as i32));
    assert_eq!(blocks[0].header.as_ref().unwrap().number, 0);
}

fn start_output(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(KORDER)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// A configuration file with an unknown key, or a bad value, stops start-up with an
/// error naming the key; a missing genesis block on an empty ledger names the file.
#[test]
fn bad_configuration_is_refused_at_start() {
    let net = Net::init(&[]);
    let yaml = net.data_dir().join("orderer.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    let bad = net.data_dir().join("bad.yaml");
    std::fs::write(&bad, text.replacen("ListenPort:", "ListenPortt:", 1)).unwrap();
    let out = start_output(&["start", "--config", bad.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("General.ListenPortt: unknown key"), "{err}");

    let out = start_output(
        &["start", "--config", yaml.to_str().unwrap()],
        &[("ORDERER_GENERAL_LISTENPORT", "70000")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ORDERER_GENERAL_LISTENPORT"), "{err}");

    std::fs::remove_dir_all(net.data_dir().join("ledger")).unwrap();
    let out = start_output(
        &["start", "--config", yaml.to_str().unwrap()],
        &[("ORDERER_GENERAL_GENESISFILE", "/nonexistent/genesis.block")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/genesis.block"), "{err}");
    assert!(
        !net.data_dir().join("ledger/chains/system-channel").exists(),
        "nothing was bootstrapped"
    );
}

/// A node bootstraps from configtxgen's system channel genesis block with Fabric's
/// sample MSP as its identity, listens, and keeps the block byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_from_a_configtxgen_genesis_with_the_sample_msp() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let genesis = testdata().join("blocks/common-server-genesis.block");
    let msp = testdata().join("sampleconfig/msp");
    let yaml = format!(
        "General:\n  ListenAddress: 127.0.0.1\n  ListenPort: {port}\n  GenesisMethod: file\n  GenesisFile: {}\n  LocalMSPDir: {}\n  LocalMSPID: SampleOrg\nFileLedger:\n  Location: {}\nOperations:\n  ListenAddress: 127.0.0.1:0\n",
        genesis.display(),
        msp.display(),
        dir.path().join("ledger").display()
    );
    let config = dir.path().join("orderer.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let mut child = Command::new(KORDER)
        .args(["start", "--config", config.to_str().unwrap()])
        .stderr(log)
        .spawn()
        .unwrap();
    let address = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "node exited: {}",
            std::fs::read_to_string(dir.path().join("node.log")).unwrap()
        );
        assert!(std::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    // The genesis block is in the ledger exactly as configtxgen wrote it.
    let _ = child.kill();
    let _ = child.wait();
    let ledgers =
        korder_ledger::Ledgers::open_dir(dir.path().join("ledger"), Default::default()).unwrap();
    assert_eq!(ledgers.channels().unwrap(), vec!["testchainid".to_string()]);
    let block = ledgers
        .open("testchainid")
        .unwrap()
        .block(BlockNumber::GENESIS)
        .unwrap();
    assert_eq!(block.encode_to_vec(), std::fs::read(&genesis).unwrap());
}
