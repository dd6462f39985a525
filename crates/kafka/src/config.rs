//! Client configuration: the `Kafka` section of orderer.yaml, and its translation
//! into librdkafka properties.
//!
//! Every property korder relies on is set explicitly (nothing is left to a
//! librdkafka default that might change between versions) and the effective set is
//! logged when a client is built, with secrets redacted.

use std::time::Duration;

use crate::error::KafkaLogError;
use korder_config::KafkaRetry;

/// Largest record the producer sends by default: 100 MiB − 1 MiB, the fixed limit of
/// Fabric's Kafka producer. A channel's AbsoluteMaxBytes must stay below it, and the
/// brokers' `message.max.bytes` must be at least this plus framing.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 100 * 1024 * 1024 - 1024 * 1024;

/// Framing room on top of the largest record: record batch header, record header,
/// key. A single-record batch needs well under 1 KiB; 64 KiB leaves no doubt.
const FRAMING_HEADROOM_BYTES: usize = 64 * 1024;

/// librdkafka refuses `message.max.bytes` and `fetch.max.bytes` above this.
const RDKAFKA_MAX_PROTOCOL_BYTES: usize = 1_000_000_000;

/// `Kafka.TLS`: client-certificate TLS to the brokers. PEM text, already read from
/// files by the configuration loader.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    pub enabled: bool,
    /// PEM private key of this node's client certificate.
    pub private_key_pem: Option<String>,
    /// PEM client certificate.
    pub certificate_pem: Option<String>,
    /// PEM root certificates the brokers' certificates must chain to.
    pub root_cas_pem: Vec<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("enabled", &self.enabled)
            .field(
                "private_key_pem",
                &self.private_key_pem.as_ref().map(|_| "<redacted>"),
            )
            .field("certificate_pem", &self.certificate_pem.is_some())
            .field("root_cas_pem", &self.root_cas_pem.len())
            .finish()
    }
}

/// `Kafka.SASLPlain`: SASL/PLAIN authentication.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SaslPlainConfig {
    pub enabled: bool,
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for SaslPlainConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslPlainConfig")
            .field("enabled", &self.enabled)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Everything a [`crate::KafkaLog`] needs to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` (the channel config's `KafkaBrokers`).
    pub brokers: Vec<String>,
    /// `Kafka.Retry`.
    pub retry: KafkaRetry,
    /// `Kafka.Topic.ReplicationFactor`: used only when korder creates a topic.
    pub topic_replication_factor: i16,
    /// `Kafka.Verbose`: client debug logging.
    pub verbose: bool,
    /// `Kafka.TLS`.
    pub tls: TlsConfig,
    /// `Kafka.SASLPlain`.
    pub sasl_plain: SaslPlainConfig,
    /// Largest record value `append` accepts; larger ones are refused before
    /// anything is sent.
    pub max_record_bytes: usize,
    /// How long the producer may hold records to batch them.
    pub producer_linger: Duration,
    /// Client id reported to the brokers.
    pub client_id: String,
    /// Whether [`crate::KafkaLog::open`] creates the topic when it does not exist.
    /// A node whose ledger holds blocks cut from the topic sets it to false: the
    /// topic was deleted, and a new, empty one is not the log it needs.
    pub create_missing_topic: bool,
    /// Statistics of the producers and consumers (`None`: not collected).
    pub statistics: Option<crate::StatsConfig>,
}

impl KafkaConfig {
    /// A configuration for these brokers with orderer.yaml's defaults elsewhere.
    pub fn new(brokers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            brokers: brokers.into_iter().map(Into::into).collect(),
            retry: KafkaRetry::default(),
            topic_replication_factor: 3,
            verbose: false,
            tls: TlsConfig::default(),
            sasl_plain: SaslPlainConfig::default(),
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            producer_linger: Duration::from_millis(1),
            client_id: "korder".to_owned(),
            create_missing_topic: true,
            statistics: None,
        }
    }

    /// Checks the values librdkafka would otherwise reject later, less clearly.
    pub fn validate(&self) -> Result<(), KafkaLogError> {
        let invalid = |reason: String| Err(KafkaLogError::InvalidConfig(reason));
        if self.brokers.is_empty() {
            return invalid("Kafka broker list is empty".to_owned());
        }
        if let Some(b) = self
            .brokers
            .iter()
            .find(|b| b.trim().is_empty() || b.contains(','))
        {
            return invalid(format!("Kafka broker address {b:?} is not a host:port"));
        }
        if self.topic_replication_factor < 1 {
            return invalid(format!(
                "Kafka.Topic.ReplicationFactor must be at least 1, not {}",
                self.topic_replication_factor
            ));
        }
        if self.max_record_bytes == 0
            || self.max_record_bytes + FRAMING_HEADROOM_BYTES > RDKAFKA_MAX_PROTOCOL_BYTES
        {
            return invalid(format!(
                "maximum record size {} bytes is outside 1..={}",
                self.max_record_bytes,
                RDKAFKA_MAX_PROTOCOL_BYTES - FRAMING_HEADROOM_BYTES
            ));
        }
        if self.retry.producer_retry_max == 0 {
            return invalid(
                "Kafka.Retry.Producer.RetryMax must be at least 1 with an idempotent producer"
                    .to_owned(),
            );
        }
        for (name, d) in [
            (
                "Kafka.Retry.NetworkTimeouts.DialTimeout",
                self.retry.dial_timeout,
            ),
            (
                "Kafka.Retry.NetworkTimeouts.ReadTimeout",
                self.retry.read_timeout,
            ),
            (
                "Kafka.Retry.NetworkTimeouts.WriteTimeout",
                self.retry.write_timeout,
            ),
        ] {
            if d < Duration::from_millis(10) {
                return invalid(format!("{name} must be at least 10ms, not {d:?}"));
            }
        }
        if self.tls.enabled {
            if self
                .tls
                .private_key_pem
                .as_deref()
                .is_none_or(str::is_empty)
            {
                return invalid("Kafka.TLS.Enabled requires Kafka.TLS.PrivateKey".to_owned());
            }
            if self
                .tls
                .certificate_pem
                .as_deref()
                .is_none_or(str::is_empty)
            {
                return invalid("Kafka.TLS.Enabled requires Kafka.TLS.Certificate".to_owned());
            }
            if self.tls.root_cas_pem.iter().all(|c| c.trim().is_empty()) {
                return invalid("Kafka.TLS.Enabled requires Kafka.TLS.RootCAs".to_owned());
            }
        }
        if self.sasl_plain.enabled
            && (self.sasl_plain.user.is_empty() || self.sasl_plain.password.is_empty())
        {
            return invalid("Kafka.SASLPlain.Enabled requires User and Password".to_owned());
        }
        Ok(())
    }

    /// `message.max.bytes` / `fetch.max.bytes` for the client: the largest record
    /// plus framing.
    pub(crate) fn max_request_bytes(&self) -> usize {
        self.max_record_bytes + FRAMING_HEADROOM_BYTES
    }

    /// Properties shared by every client: brokers, timeouts, security, logging.
    fn common_properties(&self) -> Vec<(&'static str, String)> {
        let r = &self.retry;
        let mut p = vec![
            ("bootstrap.servers", self.brokers.join(",")),
            ("client.id", self.client_id.clone()),
            ("socket.connection.setup.timeout.ms", ms(r.dial_timeout)),
            ("socket.timeout.ms", ms(r.read_timeout.max(r.write_timeout))),
            ("socket.keepalive.enable", "true".to_owned()),
            (
                "topic.metadata.refresh.fast.interval.ms",
                ms(r.metadata_retry_backoff),
            ),
            ("topic.metadata.refresh.interval.ms", "300000".to_owned()),
            // Backoff between reconnection attempts to a broker.
            ("reconnect.backoff.ms", "100".to_owned()),
            ("reconnect.backoff.max.ms", "10000".to_owned()),
            ("log_level", if self.verbose { "7" } else { "6" }.to_owned()),
            ("log.connection.close", "false".to_owned()),
            ("statistics.interval.ms", "0".to_owned()),
            // Topics are korder's to create, with the replication factor it is
            // configured with, and a missing topic may be one that was deleted: no
            // client asks the brokers to create one (librdkafka's producer does by
            // default, in every metadata request).
            ("allow.auto.create.topics", "false".to_owned()),
        ];
        if self.verbose {
            p.push((
                "debug",
                "broker,topic,metadata,msg,protocol,fetch,eos".to_owned(),
            ));
        }
        let protocol = match (self.tls.enabled, self.sasl_plain.enabled) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        p.push(("security.protocol", protocol.to_owned()));
        if self.tls.enabled {
            p.push((
                "ssl.key.pem",
                self.tls.private_key_pem.clone().unwrap_or_default(),
            ));
            p.push((
                "ssl.certificate.pem",
                self.tls.certificate_pem.clone().unwrap_or_default(),
            ));
            p.push(("ssl.ca.pem", self.tls.root_cas_pem.join("\n")));
            p.push(("ssl.endpoint.identification.algorithm", "https".to_owned()));
            p.push(("enable.ssl.certificate.verification", "true".to_owned()));
        }
        if self.sasl_plain.enabled {
            p.push(("sasl.mechanisms", "PLAIN".to_owned()));
            p.push(("sasl.username", self.sasl_plain.user.clone()));
            p.push(("sasl.password", self.sasl_plain.password.clone()));
        }
        p
    }

    /// Producer: every record acknowledged by all in-sync replicas, idempotent so
    /// that client retries neither duplicate nor reorder records.
    pub(crate) fn producer_properties(&self) -> Vec<(&'static str, String)> {
        let r = &self.retry;
        // One attempt plus retries, each bounded by the request timeout and backoff.
        let attempts = u32::saturating_add(r.producer_retry_max, 1);
        let delivery_timeout = (r.write_timeout + r.producer_retry_backoff) * attempts;
        let mut p = self.common_properties();
        p.extend([
            ("acks", "all".to_owned()),
            ("enable.idempotence", "true".to_owned()),
            ("max.in.flight.requests.per.connection", "5".to_owned()),
            ("message.send.max.retries", r.producer_retry_max.to_string()),
            ("retry.backoff.ms", ms(r.producer_retry_backoff)),
            (
                "retry.backoff.max.ms",
                ms(r.producer_retry_backoff.max(Duration::from_secs(1))),
            ),
            ("request.timeout.ms", ms(r.write_timeout)),
            ("message.timeout.ms", ms(delivery_timeout)),
            ("message.max.bytes", self.max_request_bytes().to_string()),
            // A record larger than this still goes out, alone in its batch.
            ("batch.size", "1048576".to_owned()),
            ("linger.ms", ms(self.producer_linger)),
            ("compression.codec", "none".to_owned()),
            ("partitioner", "consistent".to_owned()),
            ("queue.buffering.max.messages", "100000".to_owned()),
            ("queue.buffering.max.kbytes", "1048576".to_owned()),
        ]);
        self.statistics_interval(&mut p);
        p
    }

    /// `statistics.interval.ms` for a producer or consumer when statistics are on.
    fn statistics_interval(&self, p: &mut [(&'static str, String)]) {
        if let Some(s) = &self.statistics
            && let Some(entry) = p.iter_mut().find(|(k, _)| *k == "statistics.interval.ms")
        {
            entry.1 = ms(s.interval.max(Duration::from_millis(100)));
        }
    }

    /// Consumer: assigned one partition at an explicit offset, no group membership,
    /// no committed offsets, and an out-of-range position is an error, never a
    /// silent jump.
    pub(crate) fn consumer_properties(&self, group_id: &str) -> Vec<(&'static str, String)> {
        let r = &self.retry;
        let fetch_max = self.max_request_bytes();
        let mut p = self.common_properties();
        p.extend([
            // librdkafka requires a group id even for assign(); nothing is committed.
            ("group.id", group_id.to_owned()),
            ("enable.auto.commit", "false".to_owned()),
            ("enable.auto.offset.store", "false".to_owned()),
            ("auto.offset.reset", "error".to_owned()),
            ("enable.partition.eof", "false".to_owned()),
            ("isolation.level", "read_uncommitted".to_owned()),
            ("fetch.wait.max.ms", "100".to_owned()),
            ("fetch.min.bytes", "1".to_owned()),
            ("fetch.message.max.bytes", "1048576".to_owned()),
            ("fetch.max.bytes", fetch_max.to_string()),
            (
                "receive.message.max.bytes",
                (fetch_max + 1024 * 1024).to_string(),
            ),
            ("fetch.error.backoff.ms", ms(r.consumer_retry_backoff)),
            // Prefetch up to 10,000 records or 64 MiB ahead of the chain. When the
            // chain is that far behind, look again after 10 ms: librdkafka's default
            // (1 s) left the chain idle for most of that second once it caught up.
            ("queued.min.messages", "10000".to_owned()),
            ("queued.max.messages.kbytes", "65536".to_owned()),
            ("fetch.queue.backoff.ms", "10".to_owned()),
            ("check.crcs", "true".to_owned()),
        ]);
        self.statistics_interval(&mut p);
        p
    }

    /// Admin client (topic creation) and metadata queries.
    pub(crate) fn admin_properties(&self) -> Vec<(&'static str, String)> {
        self.common_properties()
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

/// Properties whose values must never reach a log.
pub(crate) fn is_secret(key: &str) -> bool {
    matches!(key, "ssl.key.pem" | "ssl.key.password" | "sasl.password")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(props: &'a [(&'static str, String)], key: &str) -> Option<&'a str> {
        props
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The producer asks for acknowledgement by all in-sync replicas, idempotence and
    /// a message size coherent with the record limit.
    #[test]
    fn producer_properties_are_durable_and_sized() {
        let c = KafkaConfig::new(["127.0.0.1:9092"]);
        let p = c.producer_properties();
        assert_eq!(value(&p, "acks"), Some("all"));
        assert_eq!(value(&p, "enable.idempotence"), Some("true"));
        assert_eq!(
            value(&p, "max.in.flight.requests.per.connection"),
            Some("5")
        );
        let max: usize = value(&p, "message.max.bytes").unwrap().parse().unwrap();
        assert!(max > DEFAULT_MAX_RECORD_BYTES);
        assert_eq!(value(&p, "security.protocol"), Some("plaintext"));
    }

    /// The consumer never commits and never resets its position by itself.
    #[test]
    fn consumer_properties_never_commit_or_reset() {
        let c = KafkaConfig::new(["127.0.0.1:9092"]);
        let p = c.consumer_properties("g");
        assert_eq!(value(&p, "enable.auto.commit"), Some("false"));
        assert_eq!(value(&p, "auto.offset.reset"), Some("error"));
        assert_eq!(value(&p, "group.id"), Some("g"));
    }

    /// A consumer whose prefetch queue is full looks again within milliseconds, not
    /// librdkafka's default second (which stalled block cutting under load).
    #[test]
    fn consumer_backs_off_briefly_when_its_queue_is_full() {
        let c = KafkaConfig::new(["127.0.0.1:9092"]);
        let p = c.consumer_properties("g");
        let backoff: u64 = value(&p, "fetch.queue.backoff.ms")
            .unwrap()
            .parse()
            .unwrap();
        assert!(backoff <= 50, "fetch.queue.backoff.ms = {backoff}");
        let queued: u64 = value(&p, "queued.min.messages").unwrap().parse().unwrap();
        assert!(queued >= 10_000, "queued.min.messages = {queued}");
    }

    /// TLS and SASL/PLAIN select the matching security protocol and settings.
    #[test]
    fn tls_and_sasl_select_security_protocol() {
        let mut c = KafkaConfig::new(["b:9093"]);
        c.tls = TlsConfig {
            enabled: true,
            private_key_pem: Some("KEY".into()),
            certificate_pem: Some("CERT".into()),
            root_cas_pem: vec!["CA1".into(), "CA2".into()],
        };
        c.sasl_plain = SaslPlainConfig {
            enabled: true,
            user: "u".into(),
            password: "p".into(),
        };
        c.validate().unwrap();
        let p = c.admin_properties();
        assert_eq!(value(&p, "security.protocol"), Some("sasl_ssl"));
        assert_eq!(value(&p, "ssl.ca.pem"), Some("CA1\nCA2"));
        assert_eq!(value(&p, "sasl.mechanisms"), Some("PLAIN"));
        assert!(is_secret("sasl.password") && is_secret("ssl.key.pem"));
    }

    /// Incomplete TLS or SASL settings, an empty broker list and a zero replication
    /// factor are refused with a message naming the key.
    #[test]
    fn validate_names_the_missing_key() {
        let mut c = KafkaConfig::new(["b:9093"]);
        c.tls.enabled = true;
        c.tls.certificate_pem = Some("CERT".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("Kafka.TLS.PrivateKey"), "{e}");

        let mut c = KafkaConfig::new(["b:9093"]);
        c.sasl_plain.enabled = true;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("SASLPlain"), "{e}");

        let e = KafkaConfig::new(Vec::<String>::new())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("broker list is empty"), "{e}");

        let mut c = KafkaConfig::new(["b:9093"]);
        c.topic_replication_factor = 0;
        assert!(c.validate().is_err());
    }
}
