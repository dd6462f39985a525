//! End-to-end tests of `korder fetch`, `korder broadcast` and `korder bench` against a
//! node started with `korder init` + `korder start`.

#![allow(clippy::unwrap_used)] // test helpers; failures should panic
#![allow(clippy::disallowed_methods)] // process tests poll a child process with short sleeps

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_msp::signer::SigningIdentity;
use korder_proto::common::{ChannelHeader, Envelope, Header, HeaderType, Payload, SignatureHeader};
use korder_proto::{Message, Timestamp};

const KORDER: &str = env!("CARGO_BIN_EXE_korder");
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// A running single-node dev network; the node is killed on drop.
struct Node {
    child: Child,
    dir: tempfile::TempDir,
    address: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    fn network(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.data_dir().join("network.json")).unwrap())
            .unwrap()
    }

    fn client_signer(&self) -> SigningIdentity {
        let net = self.network();
        SigningIdentity::load_msp_dir(
            self.data_dir()
                .join(net["client_msp_dir"].as_str().unwrap()),
            net["client_msp_id"].as_str().unwrap(),
        )
        .unwrap()
    }

    /// Runs a korder client command with `--data-dir` in `cwd`.
    fn korder(&self, cwd: &Path, args: &[&str]) -> Output {
        let out = Command::new(KORDER)
            .current_dir(cwd)
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "korder {args:?} failed\nstdout: {}\nstderr: {}\nnode log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log()
            );
        }
        out
    }
}

/// A port P such that P and P + 1393 (the operations port) are both free now.
fn free_port() -> u16 {
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port > 60_000 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 1393)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair found");
}

/// `korder init` then `korder start` in a fresh data directory; returns once the
/// Broadcast/Deliver port accepts connections.
fn start_node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let init = Command::new(KORDER)
        .args(["init", "--data-dir"])
        .arg(dir.path())
        .args(["--port", &port.to_string(), "--batch-timeout", "200ms"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "korder init failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
    let child = Command::new(KORDER)
        .args(["start", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let address = format!("127.0.0.1:{port}");
    let mut node = Node {
        child,
        dir,
        address,
    };
    let addr: SocketAddr = node.address.parse().unwrap();
    let deadline = Instant::now() + STARTUP_LIMIT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if let Some(status) = node.child.try_wait().unwrap() {
            panic!("korder start exited with {status}:\n{}", node.log());
        }
        assert!(
            Instant::now() < deadline,
            "the node did not listen on {} within {STARTUP_LIMIT:?}:\n{}",
            node.address,
            node.log()
        );
        // Poll interval while waiting for the port to open.
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

fn inspect(path: &Path) -> serde_json::Value {
    let out = Command::new(KORDER)
        .args(["block", "inspect", "--json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "inspect {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An ENDORSER_TRANSACTION envelope signed by `signer`, with a tx id made of its nonce
/// and creator, and its tx id.
fn transaction(signer: &SigningIdentity, channel: &str, data: &[u8]) -> (Envelope, String) {
    let nonce = signer.new_nonce().unwrap();
    let creator = signer.serialized();
    let tx_id = format!("test-{}", hex::encode(nonce));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let ch = ChannelHeader {
        r#type: HeaderType::EndorserTransaction as i32,
        timestamp: Some(Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        channel_id: channel.to_owned(),
        tx_id: tx_id.clone(),
        ..Default::default()
    };
    let sh = SignatureHeader {
        creator,
        nonce: Bytes::copy_from_slice(&nonce),
    };
    let payload = Payload {
        header: Some(Header {
            channel_header: ch.encode_to_vec().into(),
            signature_header: sh.encode_to_vec().into(),
        }),
        data: Bytes::copy_from_slice(data),
    };
    (
        signer
            .sign_envelope(payload.encode_to_vec().into())
            .unwrap(),
        tx_id,
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write_envelope(dir: &Path, name: &str, env: &Envelope) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, env.encode_to_vec()).unwrap();
    p
}

/// fetch oldest / newest / config / 0 write the channel's genesis block under the default names, and it inspects as a config block of the channel.
#[test]
fn fetch_genesis_targets() {
    let node = start_node();
    let channel = node.network()["channel"].as_str().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();
    for target in ["oldest", "newest", "config", "0"] {
        let out = node.korder(work.path(), &["fetch", target]);
        assert!(out.status.success(), "fetch {target}");
        let file = work.path().join(format!("{channel}_{target}.block"));
        assert!(
            stdout(&out).contains(&format!("{channel}_{target}.block")),
            "{}",
            stdout(&out)
        );
        let v = inspect(&file);
        assert_eq!(v["number"], 0, "{target}");
        assert_eq!(v["config"]["channel_id"], channel.as_str(), "{target}");
        assert_eq!(v["data_hash_valid"], true);
    }
}

/// fetch with explicit --orderer/--channel/--msp/--msp-id and --out works without a data directory.
#[test]
fn fetch_with_explicit_options() {
    let node = start_node();
    let net = node.network();
    let work = tempfile::tempdir().unwrap();
    let out_file = work.path().join("genesis.pb");
    let msp = node
        .data_dir()
        .join(net["client_msp_dir"].as_str().unwrap());
    let out = Command::new(KORDER)
        .current_dir(work.path())
        .args(["fetch", "oldest", "--orderer", &node.address])
        .args(["--channel", net["channel"].as_str().unwrap()])
        .arg("--msp")
        .arg(&msp)
        .args(["--msp-id", net["client_msp_id"].as_str().unwrap()])
        .arg("--out")
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(inspect(&out_file)["number"], 0);
}

/// fetch of an unknown channel fails with the orderer's status in the message.
#[test]
fn fetch_unknown_channel_fails() {
    let node = start_node();
    let work = tempfile::tempdir().unwrap();
    let out = node.korder(
        work.path(),
        &["fetch", "oldest", "--channel", "nosuchchannel"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");
}

/// Broadcast envelopes are acknowledged with SUCCESS and come back in block 1, fetched by number and as newest.
#[test]
fn broadcast_then_fetch() {
    let node = start_node();
    let channel = node.network()["channel"].as_str().unwrap().to_owned();
    let signer = node.client_signer();
    let work = tempfile::tempdir().unwrap();
    let (e1, id1) = transaction(&signer, &channel, b"first");
    let (e2, id2) = transaction(&signer, &channel, b"second");
    let f1 = write_envelope(work.path(), "tx1.env", &e1);
    let f2 = write_envelope(work.path(), "tx2.env", &e2);
    let out = node.korder(
        work.path(),
        &["broadcast", f1.to_str().unwrap(), f2.to_str().unwrap()],
    );
    assert!(out.status.success());
    let text = stdout(&out);
    assert_eq!(text.matches(": SUCCESS").count(), 2, "{text}");

    // Block 1 is cut by the batch timeout; Deliver waits until it exists.
    let out = node.korder(work.path(), &["fetch", "1"]);
    assert!(out.status.success());
    let v = inspect(&work.path().join(format!("{channel}_1.block")));
    assert_eq!(v["number"], 1);
    let ids: Vec<&str> = v["envelopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tx_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&id1.as_str()) && ids.contains(&id2.as_str()),
        "{ids:?}"
    );
    let sigs = v["signatures"].as_array().unwrap();
    assert!(!sigs.is_empty());
    assert!(sigs.iter().all(|s| s["valid"] == true), "{sigs:?}");

    let out = node.korder(work.path(), &["fetch", "newest", "--out", "latest.block"]);
    assert!(out.status.success());
    assert!(
        inspect(&work.path().join("latest.block"))["number"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // The ledger of the node passes verification, signatures included.
    let verify = Command::new(KORDER)
        .args(["ledger", "verify"])
        .arg(node.data_dir())
        .args(["--channel", &channel])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", stdout(&verify));
    assert!(stdout(&verify).contains("signatures verified"));
}

/// broadcast stops at the first refused envelope: its status is printed, the rest is not sent, and the exit status is non-zero.
#[test]
fn broadcast_stops_at_first_refusal() {
    let node = start_node();
    let channel = node.network()["channel"].as_str().unwrap().to_owned();
    let signer = node.client_signer();
    let work = tempfile::tempdir().unwrap();
    let bad = Envelope {
        payload: Bytes::from_static(b"garbage, not a payload"),
        signature: Bytes::from_static(b"nope"),
    };
    let (good, _) = transaction(&signer, &channel, b"never sent");
    let fb = write_envelope(work.path(), "bad.env", &bad);
    let fg = write_envelope(work.path(), "good.env", &good);
    let out = node.korder(
        work.path(),
        &["broadcast", fb.to_str().unwrap(), fg.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let text = stdout(&out);
    assert!(text.contains("bad.env: "), "{text}");
    assert!(!text.contains("bad.env: SUCCESS"), "{text}");
    assert!(!text.contains("good.env"), "{text}");
}

/// broadcast refuses a file that is not an envelope before sending anything.
#[test]
fn broadcast_refuses_garbage_file() {
    let node = start_node();
    let work = tempfile::tempdir().unwrap();
    let f = work.path().join("garbage.env");
    std::fs::write(&f, b"\xff\xff\xff").unwrap();
    let out = node.korder(work.path(), &["broadcast", f.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("garbage.env"), "{stderr}");
}

/// bench sends, sees acknowledged and delivered every envelope exactly once, and reports it as JSON.
#[test]
fn bench_delivers_everything_once() {
    let node = start_node();
    let work = tempfile::tempdir().unwrap();
    let out = node.korder(
        work.path(),
        &[
            "bench",
            "--tx",
            "300",
            "--clients",
            "3",
            "--size",
            "200",
            "--json",
            "--timeout-s",
            "90",
        ],
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["sent"], 300);
    assert_eq!(v["acked"], 300);
    assert_eq!(v["delivered"], 300);
    assert_eq!(v["duplicates"], 0);
    assert_eq!(v["clients"], 3);
    assert_eq!(v["size"], 200);
    for key in [
        "tx_per_s",
        "latency_ms_p50",
        "latency_ms_p90",
        "latency_ms_p99",
        "latency_ms_max",
        "ack_ms_p50",
        "ack_ms_p99",
        "elapsed_s",
    ] {
        assert!(v[key].as_f64().unwrap() >= 0.0, "{key}: {v}");
    }
    assert!(v["latency_ms_p50"].as_f64() <= v["latency_ms_max"].as_f64());
}

/// bench --channels creates the missing channels through the system channel, spreads
/// the envelopes evenly over them and sees every one delivered once; a second run
/// finds the channels there and creates none.
#[test]
fn bench_channels_creates_and_spreads_evenly() {
    let node = start_node();
    let work = tempfile::tempdir().unwrap();
    let run = |tx: &str| {
        let out = node.korder(
            work.path(),
            &[
                "bench",
                "--channels",
                "3",
                "--channel-prefix",
                "load-",
                "--tx",
                tx,
                "--clients",
                "2",
                "--size",
                "100",
                "--json",
                "--timeout-s",
                "90",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = run("90");
    assert_eq!(v["channels"], 3, "{v}");
    assert_eq!(v["channels_created"], 3, "{v}");
    assert_eq!(v["delivered"], 90, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["channel_delivered_min"], 30, "{v}");
    assert_eq!(v["channel_delivered_max"], 30, "{v}");
    let again = run("31");
    assert_eq!(again["channels_created"], 0, "{again}");
    assert_eq!(again["delivered"], 31, "{again}");
    assert_eq!(again["channel_delivered_min"], 10, "{again}");
    assert_eq!(again["channel_delivered_max"], 11, "{again}");
    let fetched = node.korder(
        work.path(),
        &["fetch", "--channel", "load-2", "oldest", "--out", "g.block"],
    );
    assert!(fetched.status.success());
}

/// bench --sweep runs open loop at each rate and reports one JSON object per rate,
/// with the lag of every extra Deliver stream, the node's CPU per envelope, and an
/// SVG plot of latency against offered load.
#[test]
fn bench_sweep_reports_each_rate_fanout_and_node_cpu() {
    let node = start_node();
    let work = tempfile::tempdir().unwrap();
    let plot = work.path().join("sweep.svg");
    let pid = node.child.id().to_string();
    let out = node.korder(
        work.path(),
        &[
            "bench",
            "--sweep",
            "40,80",
            "--seconds",
            "1",
            "--clients",
            "2",
            "--size",
            "200",
            "--deliver-clients",
            "3",
            "--node-pid",
            &pid,
            "--plot",
            plot.to_str().unwrap(),
            "--json",
            "--timeout-s",
            "90",
        ],
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = v.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    for (run, (rate, n)) in runs.iter().zip([(40.0, 40), (80.0, 80)]) {
        assert_eq!(run["offered_tx_per_s"].as_f64(), Some(rate), "{run}");
        assert_eq!(run["delivered"], n, "{run}");
        assert_eq!(run["duplicates"], 0, "{run}");
        assert_eq!(run["deliver_clients"], 3, "{run}");
        let lag = run["fanout_lag_ms_max"].as_f64().unwrap();
        assert!(lag >= run["fanout_lag_ms_p50"].as_f64().unwrap(), "{run}");
        assert!(run["node_cpu_us_per_tx"].as_f64().unwrap() >= 0.0, "{run}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
}

/// bench on a channel the orderer does not serve fails with the orderer's status and a non-zero exit.
#[test]
fn bench_unknown_channel_fails() {
    let node = start_node();
    let work = tempfile::tempdir().unwrap();
    let out = node.korder(
        work.path(),
        &[
            "bench",
            "--tx",
            "10",
            "--channel",
            "nosuchchannel",
            "--timeout-s",
            "30",
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NOT_FOUND"), "{stderr}");
    assert!(stderr.contains("nosuchchannel"), "{stderr}");
}
