//! Every fuzz target over its seeds (made from the fixtures) and over every input
//! that once made it fail (`fuzz/regressions/<target>/`): a finding that comes
//! back, or a target body that no longer accepts real material, fails here.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn regressions(target: &str) -> Vec<PathBuf> {
    let dir = repo().join("fuzz/regressions").join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn body(target: &str) -> fn(&[u8]) {
    korder_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no target {target}"))
}

/// Every committed regression input passes its target (each was a crash once).
#[test]
fn regression_inputs_pass() {
    for (target, body) in korder_fuzz::TARGETS {
        for file in regressions(target) {
            let data = std::fs::read(&file).unwrap();
            body(&data);
        }
    }
    let dir = repo().join("fuzz/regressions");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name != "README.md" {
            assert!(
                korder_fuzz::TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/regressions/{name} names no target"
            );
        }
    }
}

/// Every target has seeds made from the fixtures, passes over all of them, and has
/// a cargo-fuzz entry point.
#[test]
fn every_target_passes_its_seeds() {
    let seeds = korder_fuzz::seeds::seeds(&repo().join("tests/fixtures"));
    for (target, _) in korder_fuzz::TARGETS {
        let entry = repo()
            .join("fuzz/fuzz_targets")
            .join(format!("{target}.rs"));
        assert!(entry.is_file(), "{} is missing", entry.display());
        assert!(
            seeds.iter().any(|s| s.target == *target),
            "{target} has no seeds"
        );
    }
    for seed in &seeds {
        body(seed.target)(&seed.bytes);
    }
}

/// The structured broadcast_filters mode reaches the accept path: the all-zero
/// input is a MESSAGE on the sample system channel signed by the sample MSP
/// identity, which the standard filters accept.
#[test]
fn broadcast_filters_reaches_acceptance() {
    let zero = vec![0u8; 64];
    assert_eq!(
        korder_fuzz::broadcast_filters::structured_accepted(&zero),
        Some(true)
    );
}

/// The structured pulled_blocks mode walks a real chain: a join by the last
/// config block, then the next block unchanged again and again, accepts the
/// system channel's 2 blocks, and mychannel's first 12 (the step limit).
#[test]
fn pulled_blocks_walks_the_real_chains() {
    let walk = korder_fuzz::pulled_blocks::walk;
    assert_eq!(korder_fuzz::pulled_blocks::run(&walk(0, 5)), 2);
    assert_eq!(korder_fuzz::pulled_blocks::run(&walk(1, 20)), 12);
}

/// The raw pulled_blocks mode accepts each real block exactly where it belongs:
/// after the block before it, and block 0 also at the start of both joins.
#[test]
fn pulled_blocks_raw_real_blocks_are_accepted_once() {
    for (name, block) in korder_fuzz::pulled_blocks::real_block_encodings() {
        let accepted = korder_fuzz::pulled_blocks::run(&[&[1u8][..], &block].concat());
        let want = if name.ends_with("-block0") { 2 } else { 1 };
        assert_eq!(accepted, want, "{name}");
    }
}

/// The structured participation_join mode builds forms the model accepts and
/// forms it refuses, from a fixed stream of pseudo-random inputs.
#[test]
fn participation_join_model_reaches_every_verdict() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..2000 {
        let input: Vec<u8> = (0..256)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 56) as u8
            })
            .collect();
        if let Some(v) = korder_fuzz::participation_join::structured_expectation(&input) {
            *seen.entry(v).or_insert(0) += 1;
        }
        korder_fuzz::participation_join::participation_join(&[&[0u8][..], &input].concat());
    }
    for v in ["accepted", "refused"] {
        assert!(seen.get(v).is_some_and(|&n| n > 0), "{v}: {seen:?}");
    }
}

/// An osnadmin join request holding each genesis block the participation_join
/// target builds forms from reads back as that block and is a valid join block.
#[test]
fn participation_join_genesis_blocks_are_valid_joins() {
    use korder_fuzz::participation_join::{GENESIS_BLOCKS, osnadmin_request};
    for bytes in GENESIS_BLOCKS {
        let request = osnadmin_request(bytes);
        let split = request.iter().position(|&b| b == b'\n').unwrap();
        let content_type = std::str::from_utf8(&request[..split]).unwrap();
        let block =
            korder_server::participation::join_block_of(content_type, &request[split + 1..])
                .unwrap();
        assert_eq!(korder_proto::Message::encode_to_vec(&block), *bytes);
        korder_server::registrar::validate_join_block(&block).unwrap();
    }
}
