//! The `Kafka` section: how korder talks to the brokers when a channel's log is a
//! Kafka topic. Defaults for unset or zero values are Fabric's.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::general::map;
use crate::node::{Node, Section, value_error};

/// `Kafka` section.
#[derive(Clone, Debug, PartialEq)]
pub struct Kafka {
    /// `Retry`.
    pub retry: KafkaRetry,
    /// `Topic.ReplicationFactor`: used when korder creates a channel's topic (default 3).
    pub topic_replication_factor: u16,
    /// `Verbose`: log Kafka client activity at debug level.
    pub verbose: bool,
    /// `TLS` towards the brokers.
    pub tls: KafkaTls,
    /// `SASLPlain`.
    pub sasl_plain: SaslPlain,
    /// `Version`: Kafka protocol version to speak (default 0.10.2.0).
    pub version: KafkaVersion,
}

/// `Kafka.Retry`: the start-up retry windows of a chain and the Kafka client's own
/// timeouts and retries. [`Default`] gives the values orderer.yaml falls back to
/// when a key is unset or zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaRetry {
    /// `ShortInterval` (default 1m): pause between attempts in the short phase.
    pub short_interval: Duration,
    /// `ShortTotal` (default 10m): length of the short phase.
    pub short_total: Duration,
    /// `LongInterval` (default 10m): pause between attempts in the long phase.
    pub long_interval: Duration,
    /// `LongTotal` (default 12h): length of the long phase.
    pub long_total: Duration,
    /// `NetworkTimeouts.DialTimeout` (default 30s): TCP (and TLS) connection set-up.
    pub dial_timeout: Duration,
    /// `NetworkTimeouts.ReadTimeout` (default 30s): a request without an answer fails.
    pub read_timeout: Duration,
    /// `NetworkTimeouts.WriteTimeout` (default 30s): a produce request without an
    /// answer fails.
    pub write_timeout: Duration,
    /// `Metadata.RetryBackoff` (default 250ms): pause between metadata refreshes
    /// while a partition has no leader.
    pub metadata_retry_backoff: Duration,
    /// `Metadata.RetryMax` (default 3): kept for fidelity with orderer.yaml; the
    /// client refreshes metadata until the leader is known, bounded by the produce
    /// timeout.
    pub metadata_retry_max: u32,
    /// `Producer.RetryBackoff` (default 100ms): pause before a produce request is
    /// retried.
    pub producer_retry_backoff: Duration,
    /// `Producer.RetryMax` (default 3): retries of one produce request.
    pub producer_retry_max: u32,
    /// `Consumer.RetryBackoff` (default 2s): pause after a fetch error.
    pub consumer_retry_backoff: Duration,
}

impl Default for KafkaRetry {
    fn default() -> Self {
        Self {
            short_interval: Duration::from_secs(60),
            short_total: Duration::from_secs(10 * 60),
            long_interval: Duration::from_secs(10 * 60),
            long_total: Duration::from_secs(12 * 60 * 60),
            dial_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            metadata_retry_backoff: Duration::from_millis(250),
            metadata_retry_max: 3,
            producer_retry_backoff: Duration::from_millis(100),
            producer_retry_max: 3,
            consumer_retry_backoff: Duration::from_secs(2),
        }
    }
}

/// PEM material given inline or, with Fabric's `File:` convention, by file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PemSource {
    /// PEM text in the configuration itself.
    Inline(String),
    /// `File: path`; a relative path is resolved against the configuration file's
    /// directory.
    File(PathBuf),
}

impl PemSource {
    /// The PEM bytes. `key` names the setting in errors.
    pub fn read(&self, key: &str) -> Result<Vec<u8>, ConfigError> {
        match self {
            PemSource::Inline(text) => Ok(text.clone().into_bytes()),
            PemSource::File(path) => std::fs::read(path).map_err(|source| ConfigError::PemFile {
                key: key.to_string(),
                path: path.clone(),
                source,
            }),
        }
    }

    fn decode(s: &mut Section<'_>, key: &str) -> Result<Option<PemSource>, ConfigError> {
        let path = s.key_path(key);
        let Some(node) = s.take(key) else {
            return Ok(None);
        };
        match node {
            Node::Map(_) => {
                let mut inner = Section::new(Some(node), &path)?;
                let file = inner.path("File")?;
                inner.finish()?;
                Ok(file.map(PemSource::File))
            }
            Node::Seq(items) => {
                let mut pems = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Node::Str(t) | Node::Env { value: t, .. } => pems.push(t.clone()),
                        Node::Null => {}
                        _ => {
                            return Err(value_error(
                                item,
                                &format!("{path}[{i}]"),
                                "expected PEM text",
                            ));
                        }
                    }
                }
                Ok((!pems.is_empty()).then(|| PemSource::Inline(pems.join("\n"))))
            }
            Node::Str(t) | Node::Env { value: t, .. } => {
                Ok((!t.trim().is_empty()).then(|| PemSource::Inline(t.clone())))
            }
            _ => Err(value_error(
                node,
                &path,
                "expected PEM text or a mapping with a File key",
            )),
        }
    }

    fn encode(source: Option<&PemSource>) -> Node {
        match source {
            None => Node::Null,
            Some(PemSource::Inline(t)) => Node::str(t),
            Some(PemSource::File(p)) => map(vec![("File", Node::path(p))]),
        }
    }

    fn resolve(source: &mut Option<PemSource>, base: &Path) {
        if let Some(PemSource::File(p)) = source {
            crate::config::resolve_path(base, p);
        }
    }
}

/// `Kafka.TLS`: client TLS towards the brokers. Material is PEM, inline or `File:`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaTls {
    /// `Enabled`: when true, `PrivateKey`, `Certificate` and `RootCAs` are required.
    pub enabled: bool,
    /// `PrivateKey`: the client key.
    pub private_key: Option<PemSource>,
    /// `Certificate`: the client certificate.
    pub certificate: Option<PemSource>,
    /// `RootCAs`: roots that broker certificates must chain to.
    pub root_cas: Option<PemSource>,
    /// `ClientAuthRequired`: accepted, meaningless for a client; ignored.
    pub client_auth_required: bool,
    /// `ClientRootCAs`: accepted, meaningless for a client; ignored.
    pub client_root_cas: Option<PemSource>,
    /// `TLSHandshakeTimeShift` (Fabric 1.4.x, 2.2 and later): check the brokers'
    /// certificates against a shifted clock. korder cannot, so a non-zero shift is
    /// refused by [`crate::Config::validate`].
    pub tls_handshake_time_shift: Duration,
}

/// `Kafka.SASLPlain`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaslPlain {
    /// `Enabled`: authenticate with SASL/PLAIN; `User` and `Password` are then required.
    pub enabled: bool,
    /// `User`.
    pub user: String,
    /// `Password` (a secret: masked in the summary).
    pub password: String,
}

/// A Kafka protocol version such as `0.10.2.0` or `2.8.1`: three or four dotted
/// numbers, at least 0.8.2.0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KafkaVersion(pub [u32; 4]);

impl KafkaVersion {
    /// Fabric's default.
    pub const DEFAULT: KafkaVersion = KafkaVersion([0, 10, 2, 0]);
    /// The oldest version Fabric knew.
    pub const OLDEST: KafkaVersion = KafkaVersion([0, 8, 2, 0]);

    /// Parse `a.b.c` or `a.b.c.d`; `v` prefix allowed.
    pub fn parse(text: &str) -> Result<KafkaVersion, String> {
        let t = text.trim();
        let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
        let parts: Vec<&str> = t.split('.').collect();
        if !(parts.len() == 3 || parts.len() == 4) {
            return Err(format!(
                "invalid Kafka version {text:?} (expected e.g. \"0.10.2.0\" or \"2.8.1\")"
            ));
        }
        let mut v = [0u32; 4];
        for (slot, part) in v.iter_mut().zip(&parts) {
            *slot = part.parse().map_err(|_| {
                format!("invalid Kafka version {text:?} (expected e.g. \"0.10.2.0\" or \"2.8.1\")")
            })?;
        }
        let v = KafkaVersion(v);
        if v < KafkaVersion::OLDEST {
            return Err(format!(
                "Kafka version {text:?} is older than the oldest supported, 0.8.2.0"
            ));
        }
        Ok(v)
    }
}

impl fmt::Display for KafkaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        if a == 0 {
            write!(f, "{a}.{b}.{c}.{d}")
        } else {
            write!(f, "{a}.{b}.{c}")
        }
    }
}

fn retry_max(s: &mut Section<'_>) -> Result<u32, ConfigError> {
    Ok(s.uint("RetryMax", u64::from(u32::MAX))?
        .filter(|&n| n != 0)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(3))
}

impl KafkaRetry {
    fn decode(s: &mut Section<'_>) -> Result<KafkaRetry, ConfigError> {
        let d = KafkaRetry::default();
        let short_interval = s.duration_or("ShortInterval", d.short_interval)?;
        let short_total = s.duration_or("ShortTotal", d.short_total)?;
        let long_interval = s.duration_or("LongInterval", d.long_interval)?;
        let long_total = s.duration_or("LongTotal", d.long_total)?;
        let mut nt = s.section("NetworkTimeouts")?;
        let dial_timeout = nt.duration_or("DialTimeout", d.dial_timeout)?;
        let read_timeout = nt.duration_or("ReadTimeout", d.read_timeout)?;
        let write_timeout = nt.duration_or("WriteTimeout", d.write_timeout)?;
        nt.finish()?;
        let mut md = s.section("Metadata")?;
        let metadata_retry_backoff = md.duration_or("RetryBackoff", d.metadata_retry_backoff)?;
        let metadata_retry_max = retry_max(&mut md)?;
        md.finish()?;
        let mut pr = s.section("Producer")?;
        let producer_retry_backoff = pr.duration_or("RetryBackoff", d.producer_retry_backoff)?;
        let producer_retry_max = retry_max(&mut pr)?;
        pr.finish()?;
        let mut co = s.section("Consumer")?;
        let consumer_retry_backoff = co.duration_or("RetryBackoff", d.consumer_retry_backoff)?;
        co.finish()?;
        Ok(KafkaRetry {
            short_interval,
            short_total,
            long_interval,
            long_total,
            dial_timeout,
            read_timeout,
            write_timeout,
            metadata_retry_backoff,
            metadata_retry_max,
            producer_retry_backoff,
            producer_retry_max,
            consumer_retry_backoff,
        })
    }

    fn encode(&self) -> Node {
        map(vec![
            ("ShortInterval", Node::duration(self.short_interval)),
            ("ShortTotal", Node::duration(self.short_total)),
            ("LongInterval", Node::duration(self.long_interval)),
            ("LongTotal", Node::duration(self.long_total)),
            (
                "NetworkTimeouts",
                map(vec![
                    ("DialTimeout", Node::duration(self.dial_timeout)),
                    ("ReadTimeout", Node::duration(self.read_timeout)),
                    ("WriteTimeout", Node::duration(self.write_timeout)),
                ]),
            ),
            (
                "Metadata",
                map(vec![
                    ("RetryBackoff", Node::duration(self.metadata_retry_backoff)),
                    ("RetryMax", Node::uint(self.metadata_retry_max)),
                ]),
            ),
            (
                "Producer",
                map(vec![
                    ("RetryBackoff", Node::duration(self.producer_retry_backoff)),
                    ("RetryMax", Node::uint(self.producer_retry_max)),
                ]),
            ),
            (
                "Consumer",
                map(vec![(
                    "RetryBackoff",
                    Node::duration(self.consumer_retry_backoff),
                )]),
            ),
        ])
    }
}

impl Kafka {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<Kafka, ConfigError> {
        let mut retry_s = s.section("Retry")?;
        let retry = KafkaRetry::decode(&mut retry_s)?;
        retry_s.finish()?;

        let mut topic = s.section("Topic")?;
        let topic_replication_factor = topic
            .uint("ReplicationFactor", u64::from(u16::MAX))?
            .filter(|&n| n != 0)
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(3);
        topic.finish()?;

        let verbose = s.bool("Verbose")?;

        let mut t = s.section("TLS")?;
        let tls = KafkaTls {
            enabled: t.bool("Enabled")?,
            private_key: PemSource::decode(&mut t, "PrivateKey")?,
            certificate: PemSource::decode(&mut t, "Certificate")?,
            root_cas: PemSource::decode(&mut t, "RootCAs")?,
            client_auth_required: t.bool("ClientAuthRequired")?,
            client_root_cas: PemSource::decode(&mut t, "ClientRootCAs")?,
            tls_handshake_time_shift: t
                .duration("TLSHandshakeTimeShift")?
                .unwrap_or(Duration::ZERO),
        };
        t.finish()?;

        let mut sasl = s.section("SASLPlain")?;
        let sasl_plain = SaslPlain {
            enabled: sasl.bool("Enabled")?,
            user: sasl.string("User")?.unwrap_or_default(),
            password: sasl.string("Password")?.unwrap_or_default(),
        };
        sasl.finish()?;

        let version_key = s.key_path("Version");
        let version_node = s.take("Version").cloned();
        let version = match (s_string(version_node.as_ref()), version_node.as_ref()) {
            (Some(text), Some(node)) => KafkaVersion::parse(&text)
                .map_err(|reason| value_error(node, &version_key, reason))?,
            _ => KafkaVersion::DEFAULT,
        };

        Ok(Kafka {
            retry,
            topic_replication_factor,
            verbose,
            tls,
            sasl_plain,
            version,
        })
    }

    pub(crate) fn encode(&self) -> Node {
        let t = &self.tls;
        map(vec![
            ("Retry", self.retry.encode()),
            (
                "Topic",
                map(vec![(
                    "ReplicationFactor",
                    Node::uint(self.topic_replication_factor),
                )]),
            ),
            ("Verbose", Node::Bool(self.verbose)),
            (
                "TLS",
                map(vec![
                    ("Enabled", Node::Bool(t.enabled)),
                    ("PrivateKey", PemSource::encode(t.private_key.as_ref())),
                    ("Certificate", PemSource::encode(t.certificate.as_ref())),
                    ("RootCAs", PemSource::encode(t.root_cas.as_ref())),
                    ("ClientAuthRequired", Node::Bool(t.client_auth_required)),
                    (
                        "ClientRootCAs",
                        PemSource::encode(t.client_root_cas.as_ref()),
                    ),
                    (
                        "TLSHandshakeTimeShift",
                        Node::duration(t.tls_handshake_time_shift),
                    ),
                ]),
            ),
            (
                "SASLPlain",
                map(vec![
                    ("Enabled", Node::Bool(self.sasl_plain.enabled)),
                    ("User", Node::str(&self.sasl_plain.user)),
                    ("Password", Node::str(&self.sasl_plain.password)),
                ]),
            ),
            ("Version", Node::str(self.version.to_string())),
        ])
    }

    pub(crate) fn resolve(&mut self, base: &Path) {
        PemSource::resolve(&mut self.tls.private_key, base);
        PemSource::resolve(&mut self.tls.certificate, base);
        PemSource::resolve(&mut self.tls.root_cas, base);
        PemSource::resolve(&mut self.tls.client_root_cas, base);
    }
}

/// Text of a version node: YAML may read `1.0` as a number.
fn s_string(node: Option<&Node>) -> Option<String> {
    match node? {
        Node::Str(t) | Node::Env { value: t, .. } => {
            Some(t.trim().to_string()).filter(|t| !t.is_empty())
        }
        Node::Int(i) => Some(i.to_string()),
        Node::Float(f) => Some(f.to_string()),
        Node::Bool(b) => Some(b.to_string()),
        _ => Some(String::new()),
    }
}

/// Key paths (below `Kafka.TLS`) that hold PEM material and so also accept a
/// `File` sub-key, including through `…_FILE` environment overrides.
pub(crate) const PEM_KEYS: [&str; 4] = ["PrivateKey", "Certificate", "RootCAs", "ClientRootCAs"];
