//! End-to-end tests of `korder block inspect` on real Fabric blocks.

#![allow(clippy::unwrap_used)] // test helpers; failures should panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use korder_proto::Message;
use korder_proto::common::{Block, Metadata};

fn testdata_blocks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fabric-v1.4.12/blocks")
}

fn inspect(path: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_korder"));
    cmd.args(["block", "inspect"]).arg(path);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

fn inspect_json(path: &Path) -> (bool, serde_json::Value) {
    let out = inspect(path, true);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: stdout is not JSON ({e}); stderr: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn all_blocks() -> Vec<(String, PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(testdata_blocks())
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    v.sort();
    v
}

/// Exactly one testdata block (the edited system block) is flagged for a data hash mismatch, and only it exits non-zero.
#[test]
fn flags_exactly_the_mismatched_testdata_block() {
    let blocks = all_blocks();
    assert_eq!(blocks.len(), 5);
    let mut flagged = Vec::new();
    let mut failed = Vec::new();
    for (name, path) in &blocks {
        let (ok, v) = inspect_json(path);
        let valid = v["data_hash_valid"].as_bool().unwrap();
        assert_eq!(
            valid,
            v["data_hash"] == v["computed_data_hash"],
            "{name}: data_hash_valid agrees with the hashes shown"
        );
        if !valid {
            flagged.push(name.clone());
        }
        if !ok {
            failed.push(name.clone());
        }
        assert_eq!(v["metadata_slots"], 4, "{name}");
        assert_eq!(v["header_hash"].as_str().unwrap().len(), 64, "{name}");
        assert!(v["tx_count"].as_u64().unwrap() >= 1, "{name}");
    }
    assert_eq!(flagged, vec!["common-server-system.block".to_owned()]);
    assert_eq!(failed, flagged);
}

/// The mismatch also shows in the text output and on stderr with the file name.
#[test]
fn mismatch_is_explained_on_stderr() {
    let path = testdata_blocks().join("common-server-system.block");
    let out = inspect(&path, false);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("data_hash_valid:    false"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("common-server-system.block"), "{stderr}");
    assert!(stderr.contains("data_hash"), "{stderr}");
}

/// Block 3 of a real channel: both old-layout signatures verify and name their MSP and subject.
#[test]
fn block3_signatures_verify() {
    let (ok, v) = inspect_json(&testdata_blocks().join("common-cluster-block3.pb"));
    assert!(ok);
    assert_eq!(v["number"], 3);
    assert_eq!(v["data_hash_valid"], true);
    let sigs = v["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 2);
    assert_eq!(sigs[0]["slot"], "SIGNATURES");
    assert_eq!(sigs[1]["slot"], "LAST_CONFIG");
    for s in sigs {
        assert_eq!(s["valid"], true, "{s}");
        assert!(!s["msp_id"].as_str().unwrap().is_empty());
        assert!(!s["subject"].as_str().unwrap().is_empty());
        assert!(s.get("error").is_none());
    }
    assert!(v["last_config"].is_u64());
}

/// Genesis blocks are config blocks: channel id and sequence are shown, no signatures, last config 0.
#[test]
fn genesis_blocks_show_their_config() {
    for name in [
        "common-server-genesis.block",
        "common-cluster-mychannel.block",
        "consensus-etcdraft-etcdraftgenesis.block",
    ] {
        let (ok, v) = inspect_json(&testdata_blocks().join(name));
        assert!(ok, "{name}");
        assert_eq!(v["number"], 0, "{name}");
        assert_eq!(v["last_config"], 0, "{name}");
        assert!(v["signatures"].as_array().unwrap().is_empty(), "{name}");
        assert!(v["kafka_metadata"].is_null(), "{name}");
        let channel = v["config"]["channel_id"].as_str().unwrap();
        assert!(!channel.is_empty(), "{name}");
        assert!(v["config"]["sequence"].is_u64(), "{name}");
        assert_eq!(v["envelopes"][0]["type"], "CONFIG", "{name}");
    }
    let (_, v) = inspect_json(&testdata_blocks().join("common-cluster-mychannel.block"));
    assert_eq!(v["config"]["channel_id"], "mychannel");
}

/// A corrupted signature is reported invalid with an error, and the exit status is non-zero.
#[test]
fn tampered_signature_is_invalid() {
    let bytes = std::fs::read(testdata_blocks().join("common-cluster-block3.pb")).unwrap();
    let mut block = Block::decode(bytes.as_slice()).unwrap();
    let slots = &mut block.metadata.as_mut().unwrap().metadata;
    let mut md = Metadata::decode(slots[0].as_ref()).unwrap();
    let mut sig = md.signatures[0].signature.to_vec();
    let last = sig.len() - 1;
    sig[last] ^= 0x01;
    md.signatures[0].signature = sig.into();
    slots[0] = md.encode_to_vec().into();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tampered.block");
    std::fs::write(&path, block.encode_to_vec()).unwrap();

    let (ok, v) = inspect_json(&path);
    assert!(!ok);
    assert_eq!(v["data_hash_valid"], true);
    assert_eq!(v["signatures"][0]["valid"], false);
    assert!(v["signatures"][0]["error"].is_string());
    assert_eq!(v["signatures"][1]["valid"], true);
}

/// A file that is not a block fails with a message naming the file, and prints no JSON.
#[test]
fn garbage_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.block");
    std::fs::write(&path, b"\xff\xff\xff\xff this is not a protobuf block").unwrap();
    let out = inspect(&path, true);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("garbage.block"), "{stderr}");
    assert!(
        stderr.contains("do not decode as a common.Block"),
        "{stderr}"
    );
}

/// A missing file fails with a message naming it.
#[test]
fn missing_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.block");
    let out = inspect(&path, false);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("absent.block"), "{stderr}");
}
