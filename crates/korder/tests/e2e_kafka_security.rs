//! End-to-end over secured Kafka listeners: `korder start` processes reach the
//! brokers with mutual TLS, SASL/PLAIN and SASL/PLAIN over TLS as configured in the
//! `Kafka` section of orderer.yaml (set here through `ORDERER_KAFKA_*` overrides),
//! and a node with wrong credentials reports why it cannot reach them.
//!
//! Run through `scripts/test`, or by hand against a running cluster:
//! `eval "$(scripts/kafka security | sed 's/^/export /')"; cargo test -p korder
//! --test e2e_kafka_security`. Without those variables every test fails, on purpose.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use korder_proto::common::{HeaderType, Status};
use support::{Cluster, all_blocks, broadcast_all, envelope, tx_counts};

/// Bound of every wait below.
const LIMIT: Duration = Duration::from_secs(120);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need a real Kafka broker with secured listeners; \
             run scripts/test, or start one with scripts/kafka start and export the lines \
             `scripts/kafka security` prints"
        )
    })
}

fn tls_file(name: &str) -> String {
    PathBuf::from(env("KORDER_KAFKA_TLS_DIR"))
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

/// `ORDERER_KAFKA_TLS_*` overrides: TLS on, with this client key pair and root CA.
fn tls_env(client: &str, ca: &str) -> Vec<(String, String)> {
    vec![
        ("ORDERER_KAFKA_TLS_ENABLED".into(), "true".into()),
        (
            "ORDERER_KAFKA_TLS_PRIVATEKEY_FILE".into(),
            tls_file(&format!("{client}.key")),
        ),
        (
            "ORDERER_KAFKA_TLS_CERTIFICATE_FILE".into(),
            tls_file(&format!("{client}.pem")),
        ),
        (
            "ORDERER_KAFKA_TLS_ROOTCAS_FILE".into(),
            tls_file(&format!("{ca}.pem")),
        ),
    ]
}

/// `ORDERER_KAFKA_SASLPLAIN_*` overrides with the test account and `password`.
fn sasl_env(password: &str) -> Vec<(String, String)> {
    vec![
        ("ORDERER_KAFKA_SASLPLAIN_ENABLED".into(), "true".into()),
        (
            "ORDERER_KAFKA_SASLPLAIN_USER".into(),
            env("KORDER_KAFKA_SASL_USER"),
        ),
        ("ORDERER_KAFKA_SASLPLAIN_PASSWORD".into(), password.into()),
    ]
}

fn start(c: &mut Cluster, k: usize, env: &[(String, String)]) {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    c.start_with_env(k, &pairs);
}

/// Waits until node `k`'s /healthz is 200 (every chain reached its topic).
async fn wait_healthy(c: &Cluster, k: usize) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let (code, body) = c.healthz(k);
        if code == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node{k} never became healthy: {body}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Broadcasts `n` envelopes to node 1 and waits until `nodes` all deliver them.
async fn order_and_check(c: &Cluster, nodes: &[usize], n: usize, tag: &str) {
    let signer = c.client();
    let envelopes = (0..n)
        .map(|i| {
            envelope(
                &signer,
                &c.channel,
                HeaderType::EndorserTransaction,
                &format!("{tag}-{i}"),
                Bytes::from_static(b"secured"),
            )
        })
        .collect();
    let statuses = broadcast_all(&c.address(1), envelopes).await;
    assert!(
        statuses.iter().all(|s| s.0 == Status::Success as i32),
        "Broadcast statuses: {statuses:?}"
    );
    for &k in nodes {
        let deadline = Instant::now() + LIMIT;
        loop {
            let blocks = all_blocks(&c.address(k), &signer, &c.channel).await;
            let counts = tx_counts(&blocks);
            let ours = counts.keys().filter(|id| id.starts_with(tag)).count();
            if ours == n {
                assert!(
                    counts.values().all(|&m| m == 1),
                    "ordered twice: {counts:?}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node{k} delivered {ours} of {n} envelopes\n{}",
                c.logs_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

const BATCH: [&str; 4] = ["--batch-timeout", "200ms", "--max-message-count", "10"];

/// Two nodes reaching the brokers over mutual TLS (client certificate from the CA
/// the brokers trust) order and deliver the same envelopes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_over_mutual_tls() {
    let brokers = env("KORDER_KAFKA_SSL_BOOTSTRAP");
    let mut c = Cluster::init("ktls", 2, &brokers, &BATCH);
    let tls = tls_env("client", "ca");
    start(&mut c, 1, &tls);
    start(&mut c, 2, &tls);
    wait_healthy(&c, 1).await;
    wait_healthy(&c, 2).await;
    order_and_check(&c, &[1, 2], 25, "tls").await;
    c.stop_all();
}

/// A node authenticating with SASL/PLAIN orders and delivers envelopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_over_sasl_plain() {
    let brokers = env("KORDER_KAFKA_SASL_BOOTSTRAP");
    let mut c = Cluster::init("ksasl", 1, &brokers, &BATCH);
    start(&mut c, 1, &sasl_env(&env("KORDER_KAFKA_SASL_PASSWORD")));
    wait_healthy(&c, 1).await;
    order_and_check(&c, &[1], 25, "sasl").await;
    c.stop_all();
}

/// A node with both TLS and SASL/PLAIN enabled uses SASL_SSL, as Fabric does, and
/// orders and delivers envelopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_over_sasl_plain_with_tls() {
    let brokers = env("KORDER_KAFKA_SASL_SSL_BOOTSTRAP");
    let mut c = Cluster::init("ksaslssl", 1, &brokers, &BATCH);
    let mut vars = tls_env("client", "ca");
    vars.extend(sasl_env(&env("KORDER_KAFKA_SASL_PASSWORD")));
    start(&mut c, 1, &vars);
    wait_healthy(&c, 1).await;
    order_and_check(&c, &[1], 25, "saslssl").await;
    c.stop_all();
}

/// Short start-up retries, so that a node that cannot authenticate gives up soon;
/// each phase outlasts one attempt (bounded by the 2s read timeout).
fn short_retries() -> Vec<(String, String)> {
    [
        ("ORDERER_KAFKA_RETRY_SHORTINTERVAL", "1s"),
        ("ORDERER_KAFKA_RETRY_SHORTTOTAL", "4s"),
        ("ORDERER_KAFKA_RETRY_LONGINTERVAL", "2s"),
        ("ORDERER_KAFKA_RETRY_LONGTOTAL", "4s"),
        ("ORDERER_KAFKA_RETRY_NETWORKTIMEOUTS_DIALTIMEOUT", "1s"),
        ("ORDERER_KAFKA_RETRY_NETWORKTIMEOUTS_READTIMEOUT", "2s"),
        ("ORDERER_KAFKA_RETRY_NETWORKTIMEOUTS_WRITETIMEOUT", "2s"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect()
}

/// Waits until node 1's /healthz names `cause`; Broadcast meanwhile is refused
/// with SERVICE_UNAVAILABLE and nothing is ordered.
async fn wait_refused_with(c: &Cluster, cause: &str) {
    let signer = c.client();
    let env = envelope(
        &signer,
        &c.channel,
        HeaderType::EndorserTransaction,
        "refused",
        Bytes::from_static(b"x"),
    );
    let statuses = support::try_broadcast_all(&c.address(1), vec![env]).await;
    assert_eq!(
        statuses.first().map(|s| s.0),
        Some(Status::ServiceUnavailable as i32),
        "Broadcast while the brokers refuse the node"
    );
    let deadline = Instant::now() + LIMIT;
    loop {
        let (code, body) = c.healthz(1);
        assert_eq!(code, 503, "{body}");
        if body.contains(cause) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never named {cause:?}: {body}\n{}",
            c.logs_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A wrong SASL password: the node keeps running, refuses Broadcast with
/// SERVICE_UNAVAILABLE, and its health report says authentication failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_sasl_password_is_reported() {
    let brokers = env("KORDER_KAFKA_SASL_BOOTSTRAP");
    let mut c = Cluster::init("ksaslbad", 1, &brokers, &BATCH);
    let mut vars = sasl_env("not-the-password");
    vars.extend(short_retries());
    start(&mut c, 1, &vars);
    wait_refused_with(&c, "Authentication failed").await;
    assert!(c.is_running(1), "the node must keep running");
    c.stop_all();
}

/// Brokers whose certificate does not chain to `Kafka.TLS.RootCAs`: the node's
/// health report says the certificate could not be verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn untrusted_broker_certificate_is_reported() {
    let brokers = env("KORDER_KAFKA_SSL_BOOTSTRAP");
    let mut c = Cluster::init("ktlsbad", 1, &brokers, &BATCH);
    let mut vars = tls_env("client", "other-ca");
    vars.extend(short_retries());
    start(&mut c, 1, &vars);
    wait_refused_with(&c, "certificate verify failed").await;
    assert!(c.is_running(1), "the node must keep running");
    c.stop_all();
}
