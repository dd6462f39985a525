//! KafkaLog over TLS, mutual TLS and SASL/PLAIN against a real Apache Kafka broker.
//!
//! `scripts/kafka start` gives every broker SSL (client certificate required),
//! SASL_PLAINTEXT and SASL_SSL listeners besides PLAINTEXT, with generated TLS
//! material; `scripts/kafka security` prints where they are. Run with
//! `eval "$(scripts/kafka security | sed 's/^/export /')" cargo test -p korder-kafka --test security`.
//! Without those variables every test here fails, on purpose.

#![allow(clippy::unwrap_used)] // test helpers; failures should panic

use std::path::PathBuf;
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use korder_kafka::{KafkaConfig, KafkaLog, SaslPlainConfig, TlsConfig};
use korder_log::{Log, LogOffset, LogReader, ReadFrom};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: these tests need a real Kafka broker with secured listeners. \
             Run `scripts/kafka start` (from the repository root) and export the lines \
             `scripts/kafka security` prints"
        )
    })
}

fn brokers(var: &str) -> Vec<String> {
    env(var).split(',').map(str::to_owned).collect()
}

fn tls_file(name: &str) -> String {
    let path = PathBuf::from(env("KORDER_KAFKA_TLS_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// TLS settings with the client key pair `client` and the trusted CA `ca`.
fn tls(client: &str, ca: &str) -> TlsConfig {
    TlsConfig {
        enabled: true,
        private_key_pem: Some(tls_file(&format!("{client}.key"))),
        certificate_pem: Some(tls_file(&format!("{client}.pem"))),
        root_cas_pem: vec![tls_file(&format!("{ca}.pem"))],
    }
}

fn sasl(password: &str) -> SaslPlainConfig {
    SaslPlainConfig {
        enabled: true,
        user: env("KORDER_KAFKA_SASL_USER"),
        password: password.to_owned(),
    }
}

fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// One broker (the script's test cluster for these listeners), short timeouts so
/// that refused connections fail within seconds.
fn config(bootstrap_var: &str) -> KafkaConfig {
    init_tracing();
    let brokers = brokers(bootstrap_var);
    let mut c = KafkaConfig::new(brokers.clone());
    c.topic_replication_factor = i16::try_from(brokers.len()).unwrap();
    c.retry.dial_timeout = Duration::from_secs(3);
    c.retry.read_timeout = Duration::from_secs(8);
    c.retry.write_timeout = Duration::from_secs(8);
    c
}

fn fresh_topic(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("korder-sec-{name}-{}-{nanos}", std::process::id())
}

/// Opens a log with `config`, appends three records and reads them back.
async fn round_trip(config: KafkaConfig, name: &str) {
    let log = KafkaLog::open(config, &fresh_topic(name)).await.unwrap();
    for i in 0..3 {
        let offset = log
            .append(Bytes::from(format!("{name}-{i}")))
            .await
            .unwrap();
        assert_eq!(offset, LogOffset::new(i));
    }
    let mut reader = log.reader(ReadFrom::Oldest).await.unwrap();
    for i in 0..3 {
        let record = tokio::time::timeout(Duration::from_secs(30), reader.next())
            .await
            .expect("no record within 30 s")
            .unwrap();
        assert_eq!(record.offset, LogOffset::new(i));
        assert_eq!(record.value, Bytes::from(format!("{name}-{i}")));
    }
}

/// The error of opening a log with `config`, which must fail.
async fn open_error(config: KafkaConfig, name: &str) -> String {
    match KafkaLog::open(config, &fresh_topic(name)).await {
        Ok(_) => panic!("opening the log over a refused connection succeeded"),
        Err(e) => format!("{e:#}"),
    }
}

/// Mutual TLS with a client certificate from the CA the broker trusts, verifying the
/// broker against the right CA: records are written and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_the_right_material_works() {
    let mut c = config("KORDER_KAFKA_SSL_BOOTSTRAP");
    c.tls = tls("client", "ca");
    round_trip(c, "tls").await;
}

/// A broker certificate that does not chain to the configured root CAs is refused,
/// and the error says that the TLS handshake failed on certificate verification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_wrong_root_ca_fails_clearly() {
    let mut c = config("KORDER_KAFKA_SSL_BOOTSTRAP");
    c.tls = tls("client", "other-ca");
    let e = open_error(c, "tls-wrong-ca").await;
    assert!(
        e.contains("certificate verify failed"),
        "error does not name the failed broker verification: {e}"
    );
}

/// A client certificate from a CA the broker does not trust is refused by the
/// broker (mutual TLS), and the error says that no acceptable client certificate
/// could be sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_foreign_client_certificate_fails_clearly() {
    let mut c = config("KORDER_KAFKA_SSL_BOOTSTRAP");
    c.tls = tls("other-client", "ca");
    let e = open_error(c, "tls-foreign-client").await;
    assert!(
        e.contains("[SSL]") && e.contains("client certificate"),
        "error does not name the refused client certificate: {e}"
    );
}

/// A plaintext client on the TLS listener fails within the timeouts, and the error
/// points at the security protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_on_the_tls_listener_fails_clearly() {
    let c = config("KORDER_KAFKA_SSL_BOOTSTRAP");
    let e = open_error(c, "tls-plaintext").await;
    assert!(
        e.contains("security.protocol"),
        "error does not point at the security protocol: {e}"
    );
}

/// SASL/PLAIN with the right user and password: records are written and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_with_the_right_password_works() {
    let mut c = config("KORDER_KAFKA_SASL_BOOTSTRAP");
    c.sasl_plain = sasl(&env("KORDER_KAFKA_SASL_PASSWORD"));
    round_trip(c, "sasl").await;
}

/// SASL/PLAIN with a wrong password is refused and the error says authentication
/// failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_with_a_wrong_password_fails_clearly() {
    let mut c = config("KORDER_KAFKA_SASL_BOOTSTRAP");
    c.sasl_plain = sasl("not-the-password");
    let e = open_error(c, "sasl-wrong").await;
    assert!(
        e.contains("Authentication failed"),
        "error does not say authentication failed: {e}"
    );
}

/// SASL/PLAIN over TLS (SASL_SSL), as Fabric uses when both are enabled: records
/// are written and read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_over_tls_works() {
    let mut c = config("KORDER_KAFKA_SASL_SSL_BOOTSTRAP");
    c.tls = tls("client", "ca");
    c.sasl_plain = sasl(&env("KORDER_KAFKA_SASL_PASSWORD"));
    round_trip(c, "sasl-ssl").await;
}
