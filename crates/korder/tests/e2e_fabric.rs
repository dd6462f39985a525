//! A Fabric operator's set-up: Fabric's own orderer.yaml of 2.5 and 3.1, unchanged,
//! with only the paths, the ports and the identity (an MSP and genesis block made
//! by `korder init`) set through Fabric's environment overrides;
//! Fabric's logging variables and the operations endpoint's `/logspec`.

#![allow(clippy::unwrap_used)] // test helpers; failures should panic

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use korder_proto::common::Status;
use korder_proto::orderer::{SeekSpecified, seek_position};
use support::{KORDER, deliver, free_port, seek};

const CHANNEL: &str = "system-channel";
const WAIT: Duration = Duration::from_secs(60);

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .canonicalize()
        .unwrap()
}

/// A korder node started from a Fabric sample orderer.yaml; killed on drop.
struct FabricNode {
    child: Child,
    dir: tempfile::TempDir,
    address: String,
    operations: String,
    lines: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for FabricNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FabricNode {
    /// Starts `korder start --config <release's sample orderer.yaml>` with the paths
    /// (MSP, genesis block, ledger) and the two listen ports set through Fabric's
    /// environment overrides, plus `extra` variables, and waits for it to listen.
    fn start(release: &str, extra: &[(&str, &str)]) -> FabricNode {
        let f = fixtures();
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("net");
        support::korder(&["init", "--data-dir", net.to_str().unwrap()]);
        let port = free_port();
        let ops_port = free_port();
        let mut cmd = Command::new(KORDER);
        cmd.args([
            "start",
            "--config",
            f.join(release)
                .join("sampleconfig/orderer.yaml")
                .to_str()
                .unwrap(),
        ])
        .env_remove("KORDER_LOG")
        .env_remove("FABRIC_LOGGING_SPEC")
        .env_remove("FABRIC_LOGGING_FORMAT")
        .env("ORDERER_GENERAL_LOCALMSPDIR", net.join("msp"))
        .env("ORDERER_GENERAL_LOCALMSPID", "OrdererMSP")
        .env("ORDERER_GENERAL_BOOTSTRAPFILE", net.join("genesis.block"))
        .env("ORDERER_FILELEDGER_LOCATION", dir.path().join("ledger"))
        .env("ORDERER_GENERAL_LISTENPORT", port.to_string())
        .env(
            "ORDERER_OPERATIONS_LISTENADDRESS",
            format!("127.0.0.1:{ops_port}"),
        )
        // The sample's Admin endpoint is on a fixed port: tests run side by side.
        .env("ORDERER_ADMIN_LISTENADDRESS", "127.0.0.1:0")
        .envs(extra.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let (lines, log) = read_lines(child.stderr.take().unwrap());
        let mut node = FabricNode {
            child,
            dir,
            address: format!("127.0.0.1:{port}"),
            operations: format!("127.0.0.1:{ops_port}"),
            lines,
            log,
        };
        // Listening, and the system channel's chain running (in either order).
        let mut seen = (false, false);
        while seen != (true, true) {
            let line = node.wait_for_line(|l| {
                l.contains("korder is listening") || l.contains("chain started")
            });
            if line.contains("korder is listening") {
                seen.0 = true;
            } else {
                seen.1 = true;
            }
        }
        node
    }

    /// Blocks until a stderr line satisfies `pred`, returning it; panics with the log
    /// when the process ends first or nothing comes within [`WAIT`].
    fn wait_for_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no such line; the node said:\n{}",
                    self.log.lock().unwrap().join("\n")
                ),
            }
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Every stderr line of the child, as a channel and as a growing list.
fn read_lines(stderr: ChildStderr) -> (mpsc::Receiver<String>, Arc<Mutex<Vec<String>>>) {
    let (tx, rx) = mpsc::channel();
    let log = Arc::new(Mutex::new(Vec::new()));
    let kept = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            kept.lock().unwrap().push(line.clone());
            if tx.send(line).is_err() {
                // Nobody listens any more; keep draining so the child never blocks.
            }
        }
    });
    (rx, log)
}

impl FabricNode {
    /// The node's own identity, a reader of the system channel.
    fn signer(&self) -> korder_msp::signer::SigningIdentity {
        korder_msp::signer::SigningIdentity::load_msp_dir(
            self.dir.path().join("net/msp"),
            "OrdererMSP",
        )
        .unwrap()
    }
}

/// Block 0 of the system channel through Deliver.
async fn genesis_through_deliver(node: &FabricNode) {
    let signer = node.signer();
    let address = &node.address;
    let log = || node.log_text();
    let zero = seek_position::Type::Specified(SeekSpecified { number: 0 });
    let (blocks, status) = deliver(address, seek(&signer, CHANNEL, zero, zero, 0)).await;
    assert_eq!(status, Some(Status::Success as i32), "{log}", log = log());
    assert_eq!(blocks.len(), 1);
    let genesis = std::fs::read(node.dir.path().join("net/genesis.block")).unwrap();
    assert_eq!(korder_proto::Message::encode_to_vec(&blocks[0]), genesis);
}

/// korder starts from Fabric v2.5.16's and v3.1.5's sample orderer.yaml with only
/// paths and ports overridden, serves the genesis block through Deliver, serves the
/// Admin endpoint as the file sets it (the API off in 2.5's, on in 3.1's), and logs one
/// "not used by korder yet" line for each Fabric section that does not apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_with_fabric_sample_files() {
    for (release, participation) in [("fabric-v2.5.16", false), ("fabric-v3.1.5", true)] {
        let node = FabricNode::start(release, &[]);
        genesis_through_deliver(&node).await;
        let log = node.log_text();
        for section in ["General.Cluster", "Consensus"] {
            let notes = log
                .lines()
                .filter(|l| {
                    l.contains(&format!("{section}:")) && l.contains("not used by korder yet")
                })
                .count();
            assert_eq!(notes, 1, "{release}: {section} noted {notes} times:\n{log}");
        }
        assert!(
            log.contains("max_recv_msg_size=104857600"),
            "{release}:\n{log}"
        );
        assert!(
            log.contains("admin endpoint")
                && log.contains(&format!("channel_participation={participation}")),
            "{release}: the Admin endpoint as the sample sets it:\n{log}"
        );
    }
}

/// One HTTP/1.1 request to the operations endpoint: the status and the body.
fn http(address: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

/// A Deliver request for a channel the node does not have; NOT_FOUND.
async fn deliver_unknown_channel(node: &FabricNode) {
    let signer = node.signer();
    let address = &node.address;
    let zero = seek_position::Type::Specified(SeekSpecified { number: 0 });
    let (_, status) = deliver(address, seek(&signer, "nochannel", zero, zero, 0)).await;
    assert_eq!(status, Some(Status::NotFound as i32));
}

/// FABRIC_LOGGING_SPEC sets the level at start; GET /logspec shows it in Fabric's
/// form; PUT /logspec with Fabric's JSON turns on debug for Fabric's `common.deliver`
/// logger, whose debug line then appears (and did not before), in a Fabric format
/// string naming the Fabric logger; a bad spec is a 400 with Fabric's error text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logspec_changes_levels_at_run_time() {
    let mut node = FabricNode::start(
        "fabric-v2.5.16",
        &[
            ("FABRIC_LOGGING_SPEC", "info:grpc=warn"),
            (
                "FABRIC_LOGGING_FORMAT",
                "%{level:.4s} [%{module}] %{message}",
            ),
        ],
    );
    let ops = node.operations.clone();
    let (code, body) = http(&ops, "GET", "/logspec", "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body), serde_json::json!({"spec": "grpc=warn:info"}));

    deliver_unknown_channel(&node).await;
    let (code, body) = http(
        &ops,
        "PUT",
        "/logspec",
        r#"{"spec":"info:common.deliver=debug"}"#,
    );
    assert_eq!(code, 204, "{body}");
    let (_, body) = http(&ops, "GET", "/logspec", "");
    assert_eq!(json(&body)["spec"], "common.deliver=debug:info");
    deliver_unknown_channel(&node).await;
    let line = node.wait_for_line(|l| l.contains("deliver for an unknown channel"));
    assert!(line.starts_with("DEBU [common.deliver] "), "{line}");
    let seen = node
        .log_text()
        .lines()
        .filter(|l| l.contains("deliver for an unknown channel"))
        .count();
    assert_eq!(seen, 1, "a debug line before the PUT:\n{}", node.log_text());

    let (code, body) = http(&ops, "PUT", "/logspec", r#"{"spec":"chatty"}"#);
    assert_eq!(code, 400);
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "invalid logging specification 'chatty': bad segment 'chatty'"})
    );
    let (code, body) = http(&ops, "POST", "/logspec", "");
    assert_eq!(code, 400);
    assert_eq!(json(&body)["error"], "invalid request method: POST");
}

/// FABRIC_LOGGING_FORMAT=json: every line is a JSON object with Fabric's keys
/// (level, ts, name, caller, msg), names are Fabric's logger names, and the
/// structured fields ride along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_have_fabric_fields() {
    let node = FabricNode::start(
        "fabric-v2.5.16",
        &[
            ("FABRIC_LOGGING_FORMAT", "json"),
            ("FABRIC_LOGGING_SPEC", "debug"),
        ],
    );
    let log = node.log_text();
    let mut listening = None;
    for line in log.lines() {
        let v = json(line);
        for key in ["level", "name", "caller", "msg"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
        assert!(v["ts"].as_f64().unwrap() > 1.6e9, "{line}");
        if v["msg"] == "korder is listening" {
            listening = Some(v);
        }
    }
    let v = listening.expect("the listening line");
    assert_eq!(v["level"], "info");
    assert_eq!(v["name"], "orderer.common.server");
    assert_eq!(v["address"], node.address);
    assert!(
        log.lines()
            .any(|l| json(l)["name"] == "orderer.commmon.multichannel"),
        "{log}"
    );
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `korder ledger verify` accepts the ledger a Fabric v2.5.16 orderer wrote (block
/// files next to Fabric's LevelDB index): both channels, every hash and signature.
#[test]
fn ledger_verify_reads_a_fabric_2_5_orderer_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let ledger = tmp.path().join("orderer-ledger");
    copy_tree(&fixtures().join("fabric-v2.5.16/orderer-ledger"), &ledger);
    let out = Command::new(KORDER)
        .args(["ledger", "verify", ledger.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("channel mychannel: 20 blocks") && text.contains("19 signatures verified"),
        "{text}"
    );
    assert!(text.contains("channel system-channel: 2 blocks"), "{text}");
}
