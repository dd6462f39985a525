//! End-to-end tests of `korder ledger verify` on ledgers written with korder-ledger and
//! signed like an orderer signs its blocks.

#![allow(clippy::unwrap_used)] // test helpers; failures should panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;
use korder_ledger::block::{BlockBuilder, set_signatures, signature_input, write_orderer_metadata};
use korder_ledger::{BlockNumber, Ledgers, StoreOptions};
use korder_msp::devpki::{DevPki, NodeRole};
use korder_msp::signer::SigningIdentity;
use korder_proto::common::MetadataSignature;

const CHANNEL: &str = "testchan";
const BLOCKS: u64 = 5;

/// What a test ledger holds, to find things in its files.
struct Built {
    /// Per block, a marker that occurs once in the files, inside that block's data.
    markers: Vec<Vec<u8>>,
    /// Per signed block, its signature bytes.
    signatures: Vec<Vec<u8>>,
}

fn marker(n: u64) -> Vec<u8> {
    format!("envelope-of-block-{n:04}-xyzzy").into_bytes()
}

/// Writes a channel of `BLOCKS` blocks under `root`: block 0 unsigned, the others
/// signed by an orderer identity over value ‖ signature header ‖ header DER.
fn build_ledger(root: &Path, opts: StoreOptions) -> Built {
    let pki = DevPki::generate("OrdererMSP", "example.com").unwrap();
    let cert = pki.issue("orderer0", NodeRole::Orderer).unwrap();
    let signer = SigningIdentity::from_pem(
        "OrdererMSP",
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
    )
    .unwrap();
    let ledgers = Ledgers::open_dir(root, opts).unwrap();
    let store = ledgers.open(CHANNEL).unwrap();
    let mut builder = BlockBuilder::new();
    let mut built = Built {
        markers: Vec::new(),
        signatures: Vec::new(),
    };
    for n in 0..BLOCKS {
        let m = marker(n);
        let mut block = builder.build(vec![Bytes::from(m.clone())]);
        built.markers.push(m);
        if n > 0 {
            let header = block.header.clone().unwrap();
            let value = write_orderer_metadata(&mut block, BlockNumber::GENESIS, None);
            let sig_header = signer.new_signature_header().unwrap();
            let signature = signer
                .sign(&signature_input(&value, &sig_header, &header))
                .unwrap();
            built.signatures.push(signature.to_vec());
            set_signatures(
                &mut block,
                value,
                vec![MetadataSignature {
                    signature_header: sig_header,
                    signature,
                }],
            );
        }
        store.append(&block).unwrap();
    }
    drop(store);
    built
}

fn verify(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_korder"))
        .args(["ledger", "verify"])
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn block_file(root: &Path, suffix: u32) -> PathBuf {
    root.join("chains")
        .join(CHANNEL)
        .join(format!("blockfile_{suffix:06}"))
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("pattern present in the block file")
}

/// A sound, signed ledger passes; the summary counts blocks and verified signatures.
#[test]
fn sound_ledger_passes() {
    let dir = tempfile::tempdir().unwrap();
    build_ledger(dir.path(), StoreOptions::default());
    let out = verify(dir.path(), &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("channel {CHANNEL}: {BLOCKS} blocks")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("{} signatures verified", BLOCKS - 1)),
        "{stdout}"
    );
    assert!(stdout.contains("block 0 unsigned"), "{stdout}");
    assert!(stdout.contains(": OK"), "{stdout}");
    // stderr is not a terminal here: no progress bar.
    assert!(!stderr.contains('['), "{stderr}");
}

/// A data directory holding `ledger/` is recognised, and --channel selects a channel.
#[test]
fn data_dir_and_channel_selection() {
    let dir = tempfile::tempdir().unwrap();
    build_ledger(&dir.path().join("ledger"), StoreOptions::default());
    let out = verify(dir.path(), &["--channel", CHANNEL]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("channel {CHANNEL}:")), "{stdout}");

    let out = verify(dir.path(), &["--channel", "nosuchchannel"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("nosuchchannel"), "{stderr}");
}

/// A directory without any ledger is refused with a clear message.
#[test]
fn no_ledger_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = verify(dir.path(), &[]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("no ledger found"), "{stderr}");
}

/// A flipped byte in block 2's data fails verification, naming block 2, its file and offset.
#[test]
fn flipped_data_byte_names_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let built = build_ledger(dir.path(), StoreOptions::default());
    let file = block_file(dir.path(), 0);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = find(&bytes, &built.markers[2]);
    bytes[at] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();

    let out = verify(dir.path(), &[]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("BAD block 2 in "), "{stdout}{stderr}");
    assert!(stdout.contains("blockfile_000000 at offset "), "{stdout}");
    assert!(stdout.contains("data_hash"), "{stdout}");
    assert!(stdout.contains("channel testchan: 2 blocks"), "{stdout}");
}

/// A flipped byte in block 3's signature fails verification on the signature check.
#[test]
fn flipped_signature_byte_names_the_block() {
    let dir = tempfile::tempdir().unwrap();
    let built = build_ledger(dir.path(), StoreOptions::default());
    let file = block_file(dir.path(), 0);
    let mut bytes = std::fs::read(&file).unwrap();
    // signatures[0] belongs to block 1, so block 3's is at index 2.
    let at = find(&bytes, &built.signatures[2]);
    let last = at + built.signatures[2].len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();

    let out = verify(dir.path(), &[]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("BAD block 3 in "), "{stdout}{stderr}");
    assert!(stdout.contains("does not verify"), "{stdout}");
    assert!(stdout.contains("OrdererMSP"), "{stdout}");
}

/// A truncated last file is reported as a torn tail with its file and offset, and as a
/// failure: the index still holds the lost (durable) block.
#[test]
fn truncated_tail_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let built = build_ledger(dir.path(), StoreOptions::default());
    let file = block_file(dir.path(), 0);
    let bytes = std::fs::read(&file).unwrap();
    let cut = find(&bytes, &built.markers[4]) + 3;
    std::fs::write(&file, &bytes[..cut]).unwrap();

    let out = verify(dir.path(), &[]);
    let (stdout, stderr) = text(&out);
    assert!(
        stdout.contains("channel testchan: 4 blocks"),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains("torn tail of "), "{stdout}");
    assert!(stdout.contains("blockfile_000000 at offset "), "{stdout}");
    assert!(stdout.contains("INDEX MISMATCH at block 4"), "{stdout}");
    assert!(!out.status.success(), "{stdout}");
}

/// A truncated file that is not the last one is damage: verification fails naming the block.
#[test]
fn truncated_middle_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    // Small files: about one block per file.
    let opts = StoreOptions {
        max_file_size_bytes: 200,
        ..StoreOptions::default()
    };
    let built = build_ledger(dir.path(), opts);
    let files: Vec<_> = (0..)
        .map(|s| block_file(dir.path(), s))
        .take_while(|p| p.exists())
        .collect();
    assert!(files.len() >= 3, "several block files: {files:?}");
    // Cut the file holding block 2 in the middle of its data.
    let (file, at) = files
        .iter()
        .find_map(|f| {
            let b = std::fs::read(f).unwrap();
            b.windows(built.markers[2].len())
                .position(|w| w == built.markers[2].as_slice())
                .map(|at| (f.clone(), at))
        })
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..at + 3]).unwrap();

    let out = verify(dir.path(), &[]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("BAD block 2 in "), "{stdout}{stderr}");
    assert!(
        stdout.contains(&file.file_name().unwrap().to_string_lossy().into_owned()),
        "{stdout}"
    );
}
