//! End-to-end: damage to a channel's embedded log or block files, as a process. A bit
//! flipped in acknowledged data stops that channel loudly (never cut silently), the
//! other channels keep serving, `korder log` recovers it; and the embedded log stays
//! bounded under load.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // process tests poll a child process with short sleeps

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_proto::common::{HeaderType, Status};
use korder_proto::orderer::{SeekOldest, seek_position};
use support::{KORDER, Net, all_blocks, broadcast_all, envelope, http_get, tx_counts};

const CHANNEL: &str = "mychannel";
const SYSTEM: &str = "system-channel";

/// `korder ARGS`: exit success, stdout and stderr.
fn korder_run(args: &[&str]) -> (bool, String) {
    let out = Command::new(KORDER).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Files under `dir` (recursively) whose name starts with `prefix`, sorted.
fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The segment files of `channel`'s embedded log.
fn log_segments(net: &Net, channel: &str) -> Vec<PathBuf> {
    files_named(net.data_dir(), "log_")
        .into_iter()
        .filter(|p| p.parent().and_then(|d| d.file_name()) == Some(channel.as_ref()))
        .collect()
}

fn flip_bit(file: &Path, at: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= 0x08;
    std::fs::write(file, bytes).unwrap();
}

/// `/healthz` of the running node, once its log names the operations endpoint.
fn healthz(net: &Net) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(ops) = support::net_ops_address(net)
            && let Some(answer) = http_get(&ops, "/healthz")
        {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "no /healthz; log:\n{}",
            net.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn txs(
    net: &Net,
    channel: &str,
    prefix: &str,
    n: usize,
    size: usize,
) -> Vec<(String, korder_proto::common::Envelope)> {
    let signer = net.client();
    (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let env = envelope(
                &signer,
                channel,
                HeaderType::EndorserTransaction,
                &id,
                Bytes::from(vec![b'x'; size]),
            );
            (id, env)
        })
        .collect()
}

async fn broadcast_ok(
    net: &Net,
    channel: &str,
    prefix: &str,
    n: usize,
    size: usize,
) -> Vec<String> {
    let (ids, envs): (Vec<_>, Vec<_>) = txs(net, channel, prefix, n, size).into_iter().unzip();
    let statuses = broadcast_all(&net.address(), envs).await;
    assert_eq!(statuses.len(), n, "{statuses:?}");
    assert!(
        statuses.iter().all(|(s, _)| *s == Status::Success as i32),
        "{statuses:?}"
    );
    ids
}

/// 200 envelopes acknowledged, SIGKILL before their block is cut, one bit flipped
/// 20 KB into their records: the channel refuses to start, naming file and byte in
/// /healthz (503) and in `korder log check`; Broadcast to it is SERVICE_UNAVAILABLE;
/// the system channel keeps serving; `korder log truncate --accept-loss` recovers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_acknowledged_records_stops_the_channel_loudly() {
    let mut net = Net::init(&["--batch-timeout", "1h", "--max-message-count", "1000"]);
    net.start();
    broadcast_ok(&net, CHANNEL, "acked", 200, 1000).await;
    net.kill();
    let segments = log_segments(&net, CHANNEL);
    let segment = segments.last().unwrap().clone();
    let segment_len = std::fs::metadata(&segment).unwrap().len();
    assert!(segment_len > 200_000);
    flip_bit(&segment, 20_000);
    let dir = net.data_dir().to_str().unwrap().to_owned();

    let (ok, out) = korder_run(&["log", "check", "--data-dir", &dir]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{CHANNEL}: DAMAGED: {}", segment.display())),
        "{out}"
    );
    assert!(out.contains("at byte"), "{out}");
    assert!(out.contains(&format!("{SYSTEM}: ")), "{out}");

    net.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (code, body) = loop {
        let (code, body) = healthz(&net);
        if !body.contains(SYSTEM) {
            break (code, body);
        }
        assert!(Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(CHANNEL), "{body}");
    assert!(body.contains(segment.to_str().unwrap()), "{body}");
    assert!(body.contains("at byte"), "{body}");
    assert!(!body.contains(SYSTEM), "{body}");
    let (_, envs): (Vec<_>, Vec<_>) = txs(&net, CHANNEL, "refused", 1, 10).into_iter().unzip();
    let statuses = broadcast_all(&net.address(), envs).await;
    assert_eq!(
        statuses[0].0,
        Status::ServiceUnavailable as i32,
        "{statuses:?}"
    );
    // The system channel serves: Deliver answers (the client may not read it) rather
    // than SERVICE_UNAVAILABLE.
    let (_, status) = support::deliver(
        &net.address(),
        support::seek(
            &net.client(),
            SYSTEM,
            seek_position::Type::Oldest(SeekOldest {}),
            seek_position::Type::Oldest(SeekOldest {}),
            0,
        ),
    )
    .await;
    assert_eq!(status, Some(Status::Forbidden as i32));
    assert!(
        !net.log().contains("cutting an unacknowledged torn write"),
        "{}",
        net.log()
    );
    net.stop();
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        segment_len,
        "nothing was cut"
    );

    let (ok, out) = korder_run(&["log", "truncate", "--data-dir", &dir, "--channel", CHANNEL]);
    assert!(!ok, "truncate needs --accept-loss: {out}");
    let (ok, out) = korder_run(&[
        "log",
        "truncate",
        "--data-dir",
        &dir,
        "--channel",
        CHANNEL,
        "--accept-loss",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = korder_run(&["log", "check", "--data-dir", &dir]);
    assert!(ok, "{out}");

    net.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while healthz(&net).0 != 200 {
        assert!(Instant::now() < deadline, "{:?}", healthz(&net));
        std::thread::sleep(Duration::from_millis(100));
    }
    broadcast_ok(&net, CHANNEL, "after", 3, 10).await;
    net.stop();
}

/// `korder log reset --accept-loss` discards a damaged log and the channel resumes
/// after the last block's offset, keeping every block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_restarts_the_log_after_the_ledger() {
    let mut net = Net::init(&["--batch-timeout", "200ms", "--max-message-count", "10"]);
    net.start();
    let first = broadcast_ok(&net, CHANNEL, "inblock", 30, 100).await;
    let wait = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = tx_counts(&all_blocks(&net.address(), &net.client(), CHANNEL).await);
        if first.iter().all(|id| counts.contains_key(id)) {
            break;
        }
        assert!(Instant::now() < wait, "blocks not cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    net.stop();
    let segment = log_segments(&net, CHANNEL).pop().unwrap();
    flip_bit(&segment, 100);
    let dir = net.data_dir().to_str().unwrap().to_owned();
    let (ok, out) = korder_run(&["log", "reset", "--data-dir", &dir, "--channel", CHANNEL]);
    assert!(!ok, "reset needs --accept-loss: {out}");
    let (ok, out) = korder_run(&[
        "log",
        "reset",
        "--data-dir",
        &dir,
        "--channel",
        CHANNEL,
        "--accept-loss",
    ]);
    assert!(ok, "{out}");
    net.start();
    let second = broadcast_ok(&net, CHANNEL, "afterreset", 5, 100).await;
    let wait = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = tx_counts(&all_blocks(&net.address(), &net.client(), CHANNEL).await);
        if first
            .iter()
            .chain(&second)
            .all(|id| counts.get(id) == Some(&1))
        {
            break;
        }
        assert!(Instant::now() < wait, "not all delivered once: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    net.stop();
    let (ok, out) = korder_run(&["ledger", "verify", &dir]);
    assert!(ok, "{out}");
}

/// A bit flipped in the data of the last block of a block file: the node refuses to
/// start, naming the block file and the record's offset; nothing is truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_block_file_is_refused() {
    let mut net = Net::init(&["--batch-timeout", "100ms", "--max-message-count", "10"]);
    net.start();
    broadcast_ok(&net, CHANNEL, "blk", 5, 2000).await;
    let wait = Instant::now() + Duration::from_secs(30);
    while tx_counts(&all_blocks(&net.address(), &net.client(), CHANNEL).await).len() < 5 {
        assert!(Instant::now() < wait, "blocks not cut");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    net.stop();
    let file = files_named(net.data_dir(), "blockfile_")
        .into_iter()
        .find(|p| p.parent().and_then(|d| d.file_name()) == Some(CHANNEL.as_ref()))
        .unwrap();
    let before = std::fs::read(&file).unwrap();
    // The last block holds the 2000-byte envelopes: flip a bit inside their data.
    let at = before
        .windows(64)
        .rposition(|w| w.iter().all(|&b| b == b'x'))
        .unwrap();
    flip_bit(&file, at);
    let out = Command::new(KORDER)
        .args(["start", "--data-dir"])
        .arg(net.data_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(file.to_str().unwrap()) || text.contains("blockfile_000000"),
        "{text}"
    );
    assert!(text.contains("data hash"), "{text}");
    assert_eq!(
        std::fs::read(&file).unwrap().len(),
        before.len(),
        "nothing was cut"
    );
}

/// Under a long run with 1 MiB segments the embedded log keeps only the segments not
/// yet in a block (plus one): files and the korder_embedded_log_* metrics stay small,
/// and after a restart every acknowledged envelope is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_stays_bounded() {
    let mut net = Net::init(&["--batch-timeout", "100ms", "--max-message-count", "100"]);
    let yaml = net.data_dir().join("orderer.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    std::fs::write(
        &yaml,
        text.replace("SegmentBytes: 67108864", "SegmentBytes: 1048576"),
    )
    .unwrap();
    net.start();
    let mut ids = Vec::new();
    for round in 0..12 {
        ids.extend(broadcast_ok(&net, CHANNEL, &format!("bounded{round}"), 500, 1000).await);
    }
    let wait = Instant::now() + Duration::from_secs(60);
    let segments = loop {
        let segments = log_segments(&net, CHANNEL).len();
        if segments <= 3 {
            break segments;
        }
        assert!(Instant::now() < wait, "{segments} segments remain");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ops = support::net_ops_address(&net).unwrap();
    let metrics = loop {
        let (_, metrics) = http_get(&ops, "/metrics").unwrap();
        let line = metrics
            .lines()
            .find(|l| l.starts_with("korder_embedded_log_segments{channel=\"mychannel\"}"))
            .map(str::to_owned);
        if let Some(l) = line
            && l.ends_with(&format!(" {segments}"))
        {
            break metrics;
        }
        assert!(Instant::now() < wait, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        metrics.contains("korder_embedded_log_bytes{channel=\"mychannel\"}"),
        "{metrics}"
    );
    net.kill();
    net.start();
    let wait = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = tx_counts(&all_blocks(&net.address(), &net.client(), CHANNEL).await);
        if ids.iter().all(|id| counts.get(id) == Some(&1)) {
            assert_eq!(counts.len(), ids.len());
            break;
        }
        assert!(Instant::now() < wait, "not every envelope delivered once");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    net.stop();
}
