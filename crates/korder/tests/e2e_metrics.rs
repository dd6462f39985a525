//! End-to-end: a running node's metrics under Fabric's names, over StatsD (a UDP
//! listener in the test receives the lines) and over Prometheus (`/metrics`), each
//! group moving when its work is done; and the Kafka client's `consensus_kafka_*`
//! figures from a node on a real broker.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // process tests poll a child process with short sleeps

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_proto::common::{HeaderType, Status};
use support::{Cluster, Net, all_blocks, broadcast_all, envelope, http_get, net_ops_address};

const CHANNEL: &str = "mychannel";
const WAIT: Duration = Duration::from_secs(60);

/// Broadcasts `n` small envelopes to `channel` on one stream; all must succeed.
async fn broadcast_ok(
    address: &str,
    client: &korder_msp::signer::SigningIdentity,
    channel: &str,
    n: usize,
) {
    let envs = (0..n)
        .map(|i| {
            envelope(
                client,
                channel,
                HeaderType::EndorserTransaction,
                &format!("metrics-{i}"),
                Bytes::from(vec![7u8; 64]),
            )
        })
        .collect();
    let statuses = broadcast_all(address, envs).await;
    assert_eq!(statuses.len(), n, "{statuses:?}");
    assert!(
        statuses.iter().all(|(s, _)| *s == Status::Success as i32),
        "{statuses:?}"
    );
}

/// The value of the Prometheus sample line that starts with `series` (name and
/// labels exactly as exposed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `/metrics` until every series has a value of at least one.
async fn wait_for_series(ops: &str, series: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, text) = http_get(ops, "/metrics").unwrap();
        assert_eq!(code, 200, "{text}");
        let missing: Vec<&&str> = series
            .iter()
            .filter(|s| sample(&text, s).is_none_or(|v| v < 1.0))
            .collect();
        if missing.is_empty() {
            return text;
        }
        assert!(Instant::now() < deadline, "missing {missing:?} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `Metrics.Provider: statsd` sends Fabric's StatsD names, with the prefix, to a UDP
/// server every WriteInterval: the gRPC server, connection, broadcast, ledger,
/// logging and version metrics of a node that took a Broadcast; `/metrics` is then
/// not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statsd_lines_carry_fabric_names() {
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let mut net = Net::init(&["--batch-timeout", "100ms"]);
    let yaml = net.data_dir().join("orderer.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap();
    let text = text
        .replace("  Provider: prometheus", "  Provider: statsd")
        .replace(
            "Address: 127.0.0.1:8125",
            &format!("Address: {server_addr}"),
        )
        .replace("WriteInterval: 30s", "WriteInterval: 200ms")
        .replace("Prefix: \"\"", "Prefix: ord1");
    assert!(
        text.contains("Provider: statsd") && text.contains("Prefix: ord1"),
        "{text}"
    );
    std::fs::write(&yaml, text).unwrap();
    net.start();
    broadcast_ok(&net.address(), &net.client(), CHANNEL, 3).await;
    let version = env!("CARGO_PKG_VERSION").replace('.', "_");
    let expected = [
        "ord1.grpc.server.stream_requests_received.orderer_AtomicBroadcast.Broadcast:".to_string(),
        "ord1.grpc.server.stream_messages_received.orderer_AtomicBroadcast.Broadcast:".to_string(),
        "ord1.grpc.server.stream_messages_sent.orderer_AtomicBroadcast.Broadcast:".to_string(),
        "ord1.grpc.server.stream_requests_completed.orderer_AtomicBroadcast.Broadcast.OK:1.000000|c".to_string(),
        "ord1.grpc.server.stream_request_duration.orderer_AtomicBroadcast.Broadcast.OK:".to_string(),
        "ord1.grpc.comm.conn_opened:".to_string(),
        format!("ord1.broadcast.processed_count.{CHANNEL}.ENDORSER_TRANSACTION.SUCCESS:3.000000|c"),
        format!("ord1.broadcast.validate_duration.{CHANNEL}.ENDORSER_TRANSACTION.SUCCESS:"),
        format!("ord1.ledger.blockchain_height.{CHANNEL}:"),
        format!("ord1.ledger.blockstorage_commit_time.{CHANNEL}:"),
        format!("ord1.participation.status.{CHANNEL}:1.000000|g"),
        "ord1.logging.entries_written.info:".to_string(),
        format!("ord1.fabric_version.{version}:1.000000|g"),
    ];
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 65536];
    loop {
        let missing: Vec<&String> = expected
            .iter()
            .filter(|e| !seen.iter().any(|l| l.starts_with(e.as_str())))
            .collect();
        if missing.is_empty() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "missing {missing:?}; received:\n{}",
            seen.join("\n")
        );
        if let Ok(Ok(n)) = tokio::time::timeout(left, server.recv(&mut buf)).await {
            let datagram = String::from_utf8(buf[..n].to_vec()).unwrap();
            for line in datagram.lines() {
                assert!(
                    line.ends_with("|c") || line.ends_with("|g") || line.ends_with("|ms"),
                    "{line}"
                );
                seen.push(line.to_string());
            }
        }
    }
    let ops = net_ops_address(&net).unwrap();
    let (code, _) = http_get(&ops, "/metrics").unwrap();
    assert_eq!(
        code, 404,
        "/metrics is served only with the Prometheus provider"
    );
    net.stop();
}

/// A Broadcast and a Deliver move Fabric's gRPC server metrics with the service,
/// method and code labels, and the connection, ledger commit, logging and
/// participation metrics appear, on `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_grpc_and_ledger_metrics_move() {
    let mut net = Net::init(&["--batch-timeout", "100ms"]);
    net.start();
    let client = net.client();
    broadcast_ok(&net.address(), &client, CHANNEL, 2).await;
    let deadline = Instant::now() + WAIT;
    let blocks = loop {
        let blocks = all_blocks(&net.address(), &client, CHANNEL).await;
        if blocks.len() >= 2 {
            break blocks;
        }
        assert!(
            Instant::now() < deadline,
            "the envelopes were not cut into a block"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ops = net_ops_address(&net).unwrap();
    let text = wait_for_series(
        &ops,
        &[
            r#"grpc_server_stream_requests_received{method="Broadcast",service="orderer.AtomicBroadcast"}"#,
            r#"grpc_server_stream_messages_received{method="Broadcast",service="orderer.AtomicBroadcast"}"#,
            r#"grpc_server_stream_messages_sent{method="Broadcast",service="orderer.AtomicBroadcast"}"#,
            r#"grpc_server_stream_requests_completed{code="OK",method="Broadcast",service="orderer.AtomicBroadcast"}"#,
            r#"grpc_server_stream_request_duration_count{code="OK",method="Broadcast",service="orderer.AtomicBroadcast"}"#,
            r#"grpc_server_stream_requests_received{method="Deliver",service="orderer.AtomicBroadcast"}"#,
            r#"grpc_server_stream_messages_sent{method="Deliver",service="orderer.AtomicBroadcast"}"#,
            "grpc_comm_conn_opened",
            r#"ledger_blockstorage_commit_time_count{channel="mychannel"}"#,
            r#"ledger_blockchain_height{channel="mychannel"}"#,
            r#"deliver_blocks_sent{channel="mychannel",data_type="block",filtered="false"}"#,
            r#"participation_status{channel="mychannel"}"#,
            r#"logging_entries_checked{level="info"}"#,
            r#"logging_entries_written{level="info"}"#,
        ],
    )
    .await;
    let messages = sample(
        &text,
        r#"grpc_server_stream_messages_received{method="Broadcast",service="orderer.AtomicBroadcast"}"#,
    )
    .unwrap();
    assert_eq!(messages, 2.0, "two envelopes on the Broadcast stream");
    // Fabric's relation of a Kafka or solo channel: "other" (0).
    assert_eq!(
        sample(
            &text,
            r#"participation_consensus_relation{channel="mychannel"}"#
        ),
        Some(0.0)
    );
    let height = sample(&text, r#"ledger_blockchain_height{channel="mychannel"}"#).unwrap();
    assert_eq!(height as usize, blocks.len());
    net.stop();
}

/// A node ordering on a real Kafka broker reports the client's figures under
/// Fabric's `consensus_kafka_*` names, by broker id and by topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_client_figures_are_reported() {
    let brokers = std::env::var("KORDER_KAFKA_BOOTSTRAP").unwrap_or_else(|_| {
        panic!(
            "KORDER_KAFKA_BOOTSTRAP is not set: this test needs a real Kafka broker; run \
             scripts/test, or start one with scripts/kafka start and export its bootstrap"
        )
    });
    let mut c = Cluster::init("metrics", 1, &brokers, &["--batch-timeout", "100ms"]);
    c.start_ready(1).await;
    let client = c.client();
    let channel = c.channel.clone();
    broadcast_ok(&c.address(1), &client, &channel, 5).await;
    let ops = c.ops_address(1).unwrap();
    let topic = format!("{{topic=\"{channel}\"}}");
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let (_, text) = http_get(&ops, "/metrics").unwrap();
        let by_broker = text.lines().any(|l| {
            l.starts_with("consensus_kafka_request_rate{broker_id=\"") && !l.ends_with(" 0")
        });
        let by_topic =
            sample(&text, &format!("consensus_kafka_batch_size{topic}")).is_some_and(|v| v > 0.0);
        if by_broker && by_topic {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        // Keep the producer busy so that the next statistics window has requests.
        broadcast_ok(&c.address(1), &client, &channel, 1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for name in [
        "consensus_kafka_incoming_byte_rate{broker_id=",
        "consensus_kafka_outgoing_byte_rate{broker_id=",
        "consensus_kafka_response_rate{broker_id=",
        "consensus_kafka_request_size{broker_id=",
        "consensus_kafka_response_size{broker_id=",
        "consensus_kafka_request_latency{broker_id=",
        &format!("consensus_kafka_record_send_rate{topic}"),
        &format!("consensus_kafka_records_per_request{topic}"),
        &format!("consensus_kafka_compression_ratio{topic}"),
        &format!("consensus_kafka_last_offset_persisted{{channel=\"{channel}\"}}"),
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    c.stop_all();
}
