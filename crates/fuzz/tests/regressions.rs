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
