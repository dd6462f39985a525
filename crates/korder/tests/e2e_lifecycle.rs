//! End-to-end lifecycle off the happy path, with `korder start` as a process: a
//! full disk, a second process on the same data, SIGTERM with streams attached,
//! and start-up failures.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // process tests poll a child process with short sleeps

mod support;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_proto::common::{HeaderType, Status};
use korder_proto::orderer::{SeekSpecified, seek_position};
use support::{KORDER, Net, STARTUP_LIMIT, all_blocks, broadcast_all, envelope, seek, tx_id_of};

/// Spawns `korder start` on `net` with extra environment, and waits until it listens.
fn start_with_env(net: &mut Net, env: &[(&str, &str)]) {
    assert!(net.child.is_none(), "already running");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(net.data_dir().join("node.log"))
        .unwrap();
    let child = Command::new(KORDER)
        .args(["start", "--data-dir"])
        .arg(net.data_dir())
        .env("KORDER_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    net.child = Some(child);
    let deadline = Instant::now() + STARTUP_LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", net.port)).is_err() {
        if let Some(status) = net.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("korder start exited with {status}; log:\n{}", net.log());
        }
        assert!(
            Instant::now() < deadline,
            "not listening; log:\n{}",
            net.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM to the node; waits at most `limit` for it to exit and returns how long
/// it took and whether it exited cleanly.
fn terminate(net: &mut Net, limit: Duration) -> (Duration, bool) {
    let mut child = net.child.take().unwrap();
    let began = Instant::now();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (began.elapsed(), status.success());
        }
        if began.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "korder did not exit within {limit:?} of SIGTERM; log:\n{}",
                net.log()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One envelope with its own tx id and `size` bytes of data.
fn one(
    signer: &korder_msp::signer::SigningIdentity,
    id: &str,
    size: usize,
) -> korder_proto::common::Envelope {
    envelope(
        signer,
        "mychannel",
        HeaderType::EndorserTransaction,
        id,
        Bytes::from(vec![b'x'; size]),
    )
}

/// A second `korder start` on a data directory in use exits non-zero within 2 s,
/// naming the directory and the running node's pid; the running node keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_second_process_on_a_data_dir_in_use_is_refused() {
    let mut net = Net::init(&[]);
    net.start();
    let pid = net.child.as_ref().unwrap().id();
    let other_port = support::free_port().to_string();
    let began = Instant::now();
    let out = Command::new(KORDER)
        .args(["start", "--data-dir"])
        .arg(net.data_dir())
        .env("ORDERER_GENERAL_LISTENPORT", &other_port)
        .output()
        .unwrap();
    let took = began.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second process must fail: {stderr}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let ledger = net.data_dir().join("ledger");
    assert!(
        stderr.contains(&ledger.display().to_string()),
        "names the directory: {stderr}"
    );
    assert!(
        stderr.contains(&format!("pid {pid}")),
        "names the holder's pid {pid}: {stderr}"
    );
    let signer = net.client();
    let r = broadcast_all(&net.address(), vec![one(&signer, "after", 10)]).await;
    assert_eq!(r[0].0, Status::Success as i32, "{r:?}");
    net.stop();
    // Once the holder is gone the directory can be used again.
    net.start();
    net.stop();
}

/// SIGTERM with 10 Deliver streams attached (and an idle Broadcast stream): every
/// Deliver client sees its stream end, the process exits within
/// `Korder.ShutdownGracePeriod`, and every acknowledged envelope is in the ledger
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_sigterm_ends_deliver_streams_within_the_grace_period() {
    let mut net = Net::init(&["--batch-timeout", "500ms"]);
    start_with_env(&mut net, &[("ORDERER_KORDER_SHUTDOWNGRACEPERIOD", "2s")]);
    let address = net.address();
    let signer = net.client();
    let mut streams = Vec::new();
    for _ in 0..10 {
        let request = seek(
            &signer,
            "mychannel",
            seek_position::Type::Specified(SeekSpecified { number: 0 }),
            seek_position::Type::Specified(SeekSpecified { number: u64::MAX }),
            0,
        );
        let address = address.clone();
        streams.push(tokio::spawn(async move {
            let (blocks, status) = support::try_deliver(&address, request)
                .await
                .unwrap_or_default();
            (blocks.len(), status, Instant::now())
        }));
    }
    // An idle Broadcast stream: opened, never used, never closed by its client.
    let mut idle = support::connect(&address).await;
    let (_idle_tx, idle_rx) = tokio::sync::mpsc::channel::<korder_proto::common::Envelope>(1);
    let _idle_stream = idle
        .broadcast(tokio_stream::wrappers::ReceiverStream::new(idle_rx))
        .await
        .unwrap();
    // Envelopes acknowledged just before the signal: their block is still pending.
    let envs: Vec<_> = (0..200)
        .map(|i| one(&signer, &format!("t{i}"), 100))
        .collect();
    let acked = broadcast_all(&address, envs).await;
    assert!(acked.iter().all(|(s, _)| *s == Status::Success as i32));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    let (took, clean) =
        tokio::task::block_in_place(|| terminate(&mut net, Duration::from_secs(10)));
    eprintln!("SIGTERM to exit with 10 Deliver streams and an idle Broadcast stream: {took:?}");
    assert!(clean, "clean exit; log:\n{}", net.log());
    assert!(
        took < Duration::from_millis(3000),
        "exit took {took:?} with a 2s grace period; log:\n{}",
        net.log()
    );
    for s in streams {
        let (blocks, _status, ended) = tokio::time::timeout(Duration::from_secs(5), s)
            .await
            .expect("the Deliver stream ended")
            .unwrap();
        assert!(blocks >= 1, "the stream delivered blocks before the end");
        assert!(ended.duration_since(signalled) < Duration::from_secs(3));
    }
    net.start();
    // The envelopes pending at the signal are cut after the restart's batch timeout.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let blocks = all_blocks(&net.address(), &signer, "mychannel").await;
        let ids: HashSet<String> = blocks
            .iter()
            .flat_map(|b| b.data.iter().flat_map(|d| d.data.iter()))
            .filter_map(|e| tx_id_of(e))
            .collect();
        let missing: Vec<_> = (0..200)
            .map(|i| format!("t{i}"))
            .filter(|id| !ids.contains(id))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged but not in the ledger: {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    net.stop();
    support::korder(&["ledger", "verify", net.data_dir().to_str().unwrap()]);
}

/// A tmpfs of `size_mb` MiB mounted at `dir`, unmounted when dropped.
struct Tmpfs {
    dir: std::path::PathBuf,
}

impl Tmpfs {
    fn mount(dir: &std::path::Path, size_mb: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Fills the file system with `name` until a write fails for lack of space.
    fn fill(&self, name: &str) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.dir.join(name)).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Sends one envelope on its own stream; the status and how long the answer took
/// (`None` when no answer came within `limit`).
async fn timed_broadcast(
    address: &str,
    env: korder_proto::common::Envelope,
    limit: Duration,
) -> (Option<i32>, Duration) {
    let began = Instant::now();
    let r = tokio::time::timeout(limit, broadcast_all(address, vec![env])).await;
    (
        r.ok().and_then(|v| v.first().map(|(s, _)| *s)),
        began.elapsed(),
    )
}

/// With the ledger and the embedded log on a full 40 MiB tmpfs, every Broadcast is
/// answered within 5 s (SERVICE_UNAVAILABLE while writes fail); once space is freed
/// ordering resumes without a restart, and every acknowledged envelope is in a block.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_full_disk_answers_broadcast_and_recovers_without_restart() {
    let mut net = Net::init(&["--batch-timeout", "300ms"]);
    let mnt = net.data_dir().join("disk");
    let disk = Tmpfs::mount(&mnt, 40);
    let location = mnt.join("ledger");
    // The ledger `korder init` wrote (system channel and mychannel), moved onto the tmpfs.
    let copied = Command::new("cp")
        .arg("-a")
        .arg(net.data_dir().join("ledger"))
        .arg(&location)
        .status()
        .unwrap();
    assert!(copied.success());
    start_with_env(
        &mut net,
        &[("ORDERER_FILELEDGER_LOCATION", location.to_str().unwrap())],
    );
    let address = net.address();
    let signer = net.client();
    let limit = Duration::from_secs(5);
    let mut acked: Vec<String> = Vec::new();
    let mut answers = 0usize;
    let mut unavailable = 0usize;
    let mut slowest = Duration::ZERO;
    let mut n = 0usize;
    let send = |id: String| {
        let env = one(&signer, &id, 8 << 10);
        let address = address.clone();
        async move {
            (
                id,
                timed_broadcast(&address, env, Duration::from_secs(30)).await,
            )
        }
    };
    // Some ordered before the disk fills.
    for _ in 0..20 {
        let (id, (status, took)) = send(format!("e{n}")).await;
        n += 1;
        assert_eq!(
            status,
            Some(Status::Success as i32),
            "{id} before the disk fills"
        );
        acked.push(id);
        slowest = slowest.max(took);
    }
    // Fill the disk, leaving the node room for a few records only.
    disk.fill("filler");
    // Broadcasts while the disk is full: the log may still take a record or two,
    // then the block write or the log write fails; every one is answered in time.
    let full_phase = Instant::now();
    while full_phase.elapsed() < Duration::from_secs(12) {
        let (id, (status, took)) = send(format!("e{n}")).await;
        n += 1;
        answers += 1;
        slowest = slowest.max(took);
        assert!(
            status.is_some() && took < limit,
            "{id}: no answer within {limit:?} (took {took:?}, status {status:?}); log:\n{}",
            net.log()
        );
        match status {
            Some(s) if s == Status::Success as i32 => acked.push(id),
            Some(s) if s == Status::ServiceUnavailable as i32 => unavailable += 1,
            other => panic!("{id}: unexpected status {other:?}"),
        }
    }
    assert!(
        unavailable > 0,
        "the full disk was noticed; log:\n{}",
        net.log()
    );
    // Free the space: the node resumes on its own.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    let freed = Instant::now();
    let resumed = loop {
        let (id, (status, took)) = send(format!("e{n}")).await;
        n += 1;
        slowest = slowest.max(took);
        assert!(took < limit, "{id} took {took:?}");
        if status == Some(Status::Success as i32) {
            acked.push(id);
            break freed.elapsed();
        }
        assert!(
            freed.elapsed() < Duration::from_secs(30),
            "ordering did not resume within 30 s of freeing space; log:\n{}",
            net.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for _ in 0..5 {
        let (id, (status, _)) = send(format!("e{n}")).await;
        n += 1;
        assert_eq!(status, Some(Status::Success as i32), "{id} after recovery");
        acked.push(id);
    }
    // Every acknowledged envelope reaches a block, exactly once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let Some(blocks) = support::try_all_blocks(&address, &signer, "mychannel").await else {
            assert!(
                Instant::now() < deadline,
                "no blocks served; log:\n{}",
                net.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut seen = std::collections::BTreeMap::<String, u32>::new();
        for id in blocks
            .iter()
            .flat_map(|b| b.data.iter().flat_map(|d| d.data.iter()))
            .filter_map(|e| tx_id_of(e))
        {
            *seen.entry(id).or_default() += 1;
        }
        let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
        assert!(dups.is_empty(), "delivered twice: {dups:?}");
        let missing: Vec<_> = acked
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .cloned()
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "full disk: {answers} broadcasts while full, {unavailable} SERVICE_UNAVAILABLE, slowest answer {slowest:?}, ordering resumed {resumed:?} after space was freed, {} acknowledged",
        acked.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but not in a block: {missing:?}; log:\n{}",
        net.log()
    );
    net.stop();
    support::korder(&["ledger", "verify", location.to_str().unwrap()]);
    drop(disk);
    drop(net);
}

/// Runs `korder start` on `net`'s data with extra environment and waits for it to
/// exit (it is expected to refuse); its output.
fn start_refused(net: &Net, env: &[(&str, &str)]) -> std::process::Output {
    let out = Command::new(KORDER)
        .args(["start", "--data-dir"])
        .arg(net.data_dir())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "korder start must refuse");
    out
}

/// A configuration that cannot start (an empty ledger and a genesis block file
/// that does not exist) is refused before anything is created: no ledger
/// directory, no lock file.
#[test]
fn lifecycle_invalid_config_creates_nothing() {
    let net = Net::init(&[]);
    let location = net.data_dir().join("fresh-ledger");
    let missing = net.data_dir().join("no-such.block");
    let out = start_refused(
        &net,
        &[
            ("ORDERER_FILELEDGER_LOCATION", location.to_str().unwrap()),
            ("ORDERER_GENERAL_BOOTSTRAPFILE", missing.to_str().unwrap()),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("genesis block file") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert!(!location.exists(), "{} was created", location.display());
}

/// An error whose text already carries its cause prints that cause once.
#[test]
fn lifecycle_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let out = Command::new(KORDER)
        .args(["start", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with("korder: error:"))
        .unwrap();
    assert!(line.contains("missing.yaml"), "{line}");
    assert_eq!(
        line.matches("(os error 2)").count(),
        1,
        "cause said once: {line}"
    );
}

/// A listen port already in use stops start-up before any chain starts: a clean
/// error naming the address, no panic.
#[test]
fn lifecycle_failed_bind_refuses_without_a_panic() {
    let net = Net::init(&[]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = start_refused(&net, &[("ORDERER_GENERAL_LISTENPORT", &port)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("chain started"),
        "no chain started: {stderr}"
    );
}

/// A node started with a low soft limit on open files (1,024 is common for
/// services) raises it to the hard limit, as Go programs such as Fabric's orderer
/// do: it keeps a few files open per channel.
#[test]
fn lifecycle_raises_the_open_files_limit() {
    let net = Net::init(&[]);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" start --data-dir \"$1\"")
        .arg(KORDER)
        .arg(net.data_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let limits = format!("/proc/{}/limits", child.id());
    let deadline = Instant::now() + STARTUP_LIMIT;
    let soft_and_hard = loop {
        let read = std::fs::read_to_string(&limits).unwrap_or_default();
        let line = read.lines().find(|l| l.starts_with("Max open files"));
        let fields: Vec<String> = line
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        // "Max open files <soft> <hard> files"
        if fields.len() >= 5 && fields[3] != "256" {
            break (fields[3].clone(), fields[4].clone());
        }
        assert!(Instant::now() < deadline, "the limit stayed at 256: {read}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        soft_and_hard.0, soft_and_hard.1,
        "soft limit raised to the hard one"
    );
}
