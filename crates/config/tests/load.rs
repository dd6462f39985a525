//! Loading orderer.yaml: Fabric's sample file, defaults, environment overrides,
//! errors, validation, summary and the YAML round trip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use korder_config::{
    Bootstrap, BootstrapMethod, Config, ConfigError, GenesisMethod, KafkaVersion, LogBackend,
    MetricsProvider, PemSource, ResolvedLog,
};

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/fabric-v1.4.12/sampleconfig")
        .canonicalize()
        .expect("fixtures present")
}

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_sample(env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
    Config::load(&sample_dir().join("orderer.yaml"), env)
}

fn from_str(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str(text, None, &no_env())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Fabric v1.4.12's sample orderer.yaml loads unchanged and every value it sets is read.
#[test]
fn sample_file_loads_with_its_values() {
    let dir = sample_dir();
    let c = load_sample(&no_env()).unwrap();
    let g = &c.general;
    assert_eq!(g.ledger_type, "file");
    assert_eq!(g.listen_address, "127.0.0.1");
    assert_eq!(g.listen_port, 7050);
    assert!(!g.tls.enabled);
    assert_eq!(g.tls.private_key, Some(dir.join("tls/server.key")));
    assert_eq!(g.tls.certificate, Some(dir.join("tls/server.crt")));
    assert_eq!(g.tls.root_cas, vec![dir.join("tls/ca.crt")]);
    assert!(!g.tls.client_auth_required);
    assert!(g.tls.client_root_cas.is_empty());
    assert_eq!(g.keepalive.server_min_interval, secs(60));
    assert_eq!(g.keepalive.server_interval, secs(7200));
    assert_eq!(g.keepalive.server_timeout, secs(20));
    let cluster = g.cluster.as_ref().expect("the sample has General.Cluster");
    assert_eq!(cluster.send_buffer_size, 10);
    assert_eq!(cluster.listen_port, None);
    assert_eq!(cluster.client_certificate, None);
    assert_eq!(g.genesis_method, GenesisMethod::Provisional);
    assert_eq!(g.genesis_profile, "SampleInsecureSolo");
    assert_eq!(g.genesis_file, dir.join("genesisblock"));
    assert_eq!(g.bootstrap_method, None);
    assert_eq!(
        g.bootstrap(),
        Bootstrap::Provisional {
            profile: "SampleInsecureSolo".into(),
            system_channel: "test-system-channel-name".into()
        }
    );
    assert_eq!(g.local_msp_dir, dir.join("msp"));
    assert_eq!(g.local_msp_id, "SampleOrg");
    assert!(!g.profile.enabled);
    assert_eq!(g.profile.address, "0.0.0.0:6060");
    assert_eq!(g.bccsp.default, "SW");
    assert_eq!(g.bccsp.sw.hash, "SHA2");
    assert_eq!(g.bccsp.sw.security, 256);
    assert_eq!(g.bccsp.sw.key_store, None);
    assert_eq!(g.bccsp.pkcs11.pin, None);
    assert_eq!(g.authentication.time_window, secs(15 * 60));
    assert!(!g.authentication.no_expiration_checks);

    assert_eq!(
        c.file_ledger.location,
        PathBuf::from("/var/hyperledger/production/orderer")
    );
    assert_eq!(c.file_ledger.prefix, "hyperledger-fabric-ordererledger");
    assert_eq!(c.ram_ledger.history_size, 1000);

    let r = &c.kafka.retry;
    assert_eq!(r.short_interval, secs(5));
    assert_eq!(r.short_total, secs(600));
    assert_eq!(r.long_interval, secs(300));
    assert_eq!(r.long_total, secs(12 * 3600));
    assert_eq!(r.dial_timeout, secs(10));
    assert_eq!(r.read_timeout, secs(10));
    assert_eq!(r.write_timeout, secs(10));
    assert_eq!(r.metadata_retry_backoff, Duration::from_millis(250));
    assert_eq!(r.metadata_retry_max, 3);
    assert_eq!(r.producer_retry_backoff, Duration::from_millis(100));
    assert_eq!(r.producer_retry_max, 3);
    assert_eq!(r.consumer_retry_backoff, secs(2));
    assert_eq!(c.kafka.topic_replication_factor, 3);
    assert!(!c.kafka.verbose);
    assert!(!c.kafka.tls.enabled);
    assert_eq!(c.kafka.tls.private_key, None);
    assert_eq!(c.kafka.tls.root_cas, None);
    assert!(!c.kafka.sasl_plain.enabled);
    assert_eq!(c.kafka.version, KafkaVersion::DEFAULT);

    assert_eq!(c.debug.broadcast_trace_dir, None);
    assert_eq!(c.operations.listen_address, "127.0.0.1:8443");
    assert!(!c.operations.tls.enabled);
    assert_eq!(c.metrics.provider, MetricsProvider::Disabled);
    assert_eq!(c.metrics.statsd.network, "udp");
    assert_eq!(c.metrics.statsd.address, "127.0.0.1:8125");
    assert_eq!(c.metrics.statsd.write_interval, secs(30));
    assert_eq!(
        c.consensus.get("WALDir").map(String::as_str),
        Some("/var/hyperledger/production/orderer/etcdraft/wal")
    );
    assert_eq!(c.consensus.len(), 2);

    assert_eq!(c.korder.log_backend, LogBackend::Auto);
    assert_eq!(
        c.embedded_log_dir(),
        PathBuf::from("/var/hyperledger/production/orderer/log")
    );
    c.validate().unwrap();
}

/// An empty file gives Fabric's defaults, including the Kafka table of defaults.
#[test]
fn defaults_for_an_empty_file() {
    let c = from_str("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.general.listen_address, "127.0.0.1");
    assert_eq!(c.general.listen_port, 7050);
    assert_eq!(c.general.genesis_profile, "SampleSingleMSPSolo");
    assert_eq!(c.general.system_channel, "test-system-channel-name");
    assert_eq!(c.general.genesis_file, PathBuf::from("genesisblock"));
    assert_eq!(c.general.local_msp_dir, PathBuf::from("msp"));
    assert_eq!(c.general.keepalive.server_interval, secs(7200));
    assert_eq!(c.general.authentication.time_window, secs(900));
    let r = &c.kafka.retry;
    assert_eq!(r.short_interval, secs(60));
    assert_eq!(r.short_total, secs(600));
    assert_eq!(r.long_interval, secs(600));
    assert_eq!(r.long_total, secs(12 * 3600));
    assert_eq!(r.dial_timeout, secs(30));
    assert_eq!(r.read_timeout, secs(30));
    assert_eq!(r.write_timeout, secs(30));
    assert_eq!(r.metadata_retry_backoff, Duration::from_millis(250));
    assert_eq!(r.producer_retry_backoff, Duration::from_millis(100));
    assert_eq!(r.consumer_retry_backoff, secs(2));
    assert_eq!(c.kafka.version.to_string(), "0.10.2.0");
    assert_eq!(c.korder.embedded_log_segment_bytes, 64 << 20);
    assert_eq!(c.korder.max_in_flight_blocks, 16);
    assert_eq!(c.general.connection_timeout, secs(5));
    assert_eq!(c.korder.max_connections, 4096);
    assert_eq!(c.korder.max_connections_per_address, 1024);
    assert_eq!(c.korder.max_concurrent_streams, 1024);
    assert_eq!(
        c.korder.early_cut,
        Duration::ZERO,
        "early cut is off by default"
    );
}

/// `Korder.EarlyCut` is read as a duration.
#[test]
fn early_cut_is_read() {
    let c = from_str("Korder:\n  EarlyCut: 100ms\n").unwrap();
    assert_eq!(c.korder.early_cut, Duration::from_millis(100));
}

/// The connection limits are read from `General.ConnectionTimeout` and the
/// `Korder` section; zero takes the default.
#[test]
fn connection_limits_are_read() {
    let c = from_str(
        "General:\n  ConnectionTimeout: 2s\nKorder:\n  MaxConnections: 10\n  MaxConnectionsPerAddress: 3\n  MaxConcurrentStreams: 7\n",
    )
    .unwrap();
    assert_eq!(c.general.connection_timeout, secs(2));
    assert_eq!(c.korder.max_connections, 10);
    assert_eq!(c.korder.max_connections_per_address, 3);
    assert_eq!(c.korder.max_concurrent_streams, 7);
    let c = from_str("General:\n  ConnectionTimeout: 0s\nKorder:\n  MaxConnections: 0\n").unwrap();
    assert_eq!(c.general.connection_timeout, secs(5));
    assert_eq!(c.korder.max_connections, 4096);
}

/// Zero values take the default, as in Fabric; null and empty values count as unset.
#[test]
fn zero_and_empty_values_take_defaults() {
    let c = from_str(
        "General:\n  ListenPort: 0\n  ListenAddress: ''\nKafka:\n  Retry:\n    ShortInterval: 0\n    LongTotal: 0s\n    Producer:\n      RetryMax: 0\n  Topic:\n    ReplicationFactor: 0\n  Version:\n",
    )
    .unwrap();
    assert_eq!(c.general.listen_port, 7050);
    assert_eq!(c.general.listen_address, "127.0.0.1");
    assert_eq!(c.kafka.retry.short_interval, secs(60));
    assert_eq!(c.kafka.retry.long_total, secs(12 * 3600));
    assert_eq!(c.kafka.retry.producer_retry_max, 3);
    assert_eq!(c.kafka.topic_replication_factor, 3);
    assert_eq!(c.kafka.version, KafkaVersion::DEFAULT);
}

/// Keys are matched ignoring case, as Fabric does.
#[test]
fn keys_ignore_case() {
    let c = from_str("general:\n  listenport: 9000\nKAFKA:\n  retry:\n    shortinterval: 2s\n")
        .unwrap();
    assert_eq!(c.general.listen_port, 9000);
    assert_eq!(c.kafka.retry.short_interval, secs(2));
}

/// Each kind of environment override (number, duration, bool, path, list, PEM file,
/// opaque key, korder key) replaces the file's value.
#[test]
fn env_overrides_of_every_kind() {
    let dir = sample_dir();
    let c = load_sample(&env(&[
        ("ORDERER_GENERAL_LISTENPORT", "7051"),
        ("ORDERER_KAFKA_RETRY_SHORTINTERVAL", "1s"),
        ("ORDERER_GENERAL_TLS_ENABLED", "true"),
        ("ORDERER_FILELEDGER_LOCATION", "/x"),
        ("ORDERER_GENERAL_TLS_ROOTCAS", "[a.pem, /abs/b.pem]"),
        ("ORDERER_GENERAL_TLS_CLIENTROOTCAS", "c.pem,d.pem e.pem"),
        ("ORDERER_KAFKA_TLS_ROOTCAS_FILE", "kafka/ca.pem"),
        (
            "ORDERER_KAFKA_TLS_PRIVATEKEY",
            "-----BEGIN PRIVATE KEY-----",
        ),
        ("ORDERER_KAFKA_VERSION", "2.8.1"),
        ("ORDERER_KAFKA_RETRY_METADATA_RETRYMAX", "7"),
        ("ORDERER_CONSENSUS_WALDIR", "/wal"),
        ("ORDERER_KORDER_LOGBACKEND", "kafka"),
        ("ORDERER_KORDER_EMBEDDEDLOG_SEGMENTBYTES", "8MB"),
        ("ORDERER_GENERAL_BOOTSTRAPMETHOD", "none"),
        ("ORDERER_METRICS_PROVIDER", "prometheus"),
        ("PATH", "/usr/bin"),
    ]))
    .unwrap();
    assert_eq!(c.general.listen_port, 7051);
    assert_eq!(c.kafka.retry.short_interval, secs(1));
    assert!(c.general.tls.enabled);
    assert_eq!(c.file_ledger.location, PathBuf::from("/x"));
    assert_eq!(
        c.general.tls.root_cas,
        vec![dir.join("a.pem"), PathBuf::from("/abs/b.pem")]
    );
    assert_eq!(
        c.general.tls.client_root_cas,
        vec![dir.join("c.pem"), dir.join("d.pem"), dir.join("e.pem")]
    );
    assert_eq!(
        c.kafka.tls.root_cas,
        Some(PemSource::File(dir.join("kafka/ca.pem")))
    );
    assert_eq!(
        c.kafka.tls.private_key,
        Some(PemSource::Inline("-----BEGIN PRIVATE KEY-----".into()))
    );
    assert_eq!(c.kafka.version, KafkaVersion([2, 8, 1, 0]));
    assert_eq!(c.kafka.retry.metadata_retry_max, 7);
    assert_eq!(c.consensus.get("WALDir").map(String::as_str), Some("/wal"));
    assert_eq!(c.korder.log_backend, LogBackend::Kafka);
    assert_eq!(c.korder.embedded_log_segment_bytes, 8 << 20);
    assert_eq!(c.general.bootstrap_method, Some(BootstrapMethod::None));
    assert_eq!(c.general.bootstrap(), Bootstrap::None);
    assert_eq!(c.metrics.provider, MetricsProvider::Prometheus);
    // Values the overrides did not touch keep the file's.
    assert_eq!(c.kafka.retry.short_total, secs(600));
}

/// An override applies to a key the file leaves out, and to one spelled in another case.
#[test]
fn env_overrides_keys_absent_or_differently_spelled() {
    let c = Config::from_yaml_str(
        "general:\n  listenport: 1\n",
        None,
        &env(&[
            ("ORDERER_GENERAL_LISTENPORT", "2"),
            ("ORDERER_GENERAL_AUTHENTICATION_NOEXPIRATIONCHECKS", "1"),
        ]),
    )
    .unwrap();
    assert_eq!(c.general.listen_port, 2);
    assert!(c.general.authentication.no_expiration_checks);
}

/// An ORDERER_ variable that names no key is an error naming the variable.
#[test]
fn unknown_env_override_is_an_error() {
    let err = load_sample(&env(&[("ORDERER_GENERAL_LISTENPORTT", "1")])).unwrap_err();
    assert!(
        matches!(&err, ConfigError::UnknownEnvOverride { var } if var == "ORDERER_GENERAL_LISTENPORTT"),
        "{err}"
    );
    assert!(err.to_string().contains("ORDERER_GENERAL_LISTENPORTT"));
    // A section name alone is not a key.
    let err = load_sample(&env(&[("ORDERER_GENERAL", "x")])).unwrap_err();
    assert!(
        matches!(err, ConfigError::UnknownEnvOverride { .. }),
        "{err}"
    );
}

/// Bad override values are errors naming the variable and the key it overrides.
#[test]
fn bad_env_values_name_the_variable() {
    for (var, value, reason) in [
        ("ORDERER_GENERAL_LISTENPORT", "70000", "maximum"),
        ("ORDERER_GENERAL_LISTENPORT", "seven", "whole number"),
        ("ORDERER_KAFKA_RETRY_SHORTINTERVAL", "5", "no unit"),
        ("ORDERER_GENERAL_TLS_ENABLED", "yes", "true or false"),
        ("ORDERER_KORDER_LOGBACKEND", "solo", "auto, embedded, kafka"),
        ("ORDERER_KAFKA_VERSION", "0.8.1.0", "older"),
    ] {
        let err = load_sample(&env(&[(var, value)])).unwrap_err();
        match &err {
            ConfigError::InvalidEnvValue {
                var: v,
                reason: r,
                key,
            } => {
                assert_eq!(v, var);
                assert!(r.contains(reason), "{var}: {r}");
                assert!(!key.is_empty());
            }
            other => panic!("{var}={value}: unexpected {other}"),
        }
    }
}

/// An unknown key in the file is an error naming its full path, at any depth.
#[test]
fn unknown_key_in_file_names_full_path() {
    for (yaml, key) in [
        ("General:\n  ListenPortt: 7050\n", "General.ListenPortt"),
        (
            "Kafka:\n  Retry:\n    NetworkTimeouts:\n      DialTimeOut2: 1s\n",
            "Kafka.Retry.NetworkTimeouts.DialTimeOut2",
        ),
        ("Adminn:\n  ListenAddress: x\n", "Adminn"),
        ("Admin:\n  TLS:\n    Enable: true\n", "Admin.TLS.Enable"),
        ("General:\n  TLS:\n    Enable: true\n", "General.TLS.Enable"),
        (
            "General:\n  Cluster:\n    ListenPortt: 1\n",
            "General.Cluster.ListenPortt",
        ),
        (
            "General:\n  Throttling:\n    Rates: 1\n",
            "General.Throttling.Rates",
        ),
        (
            "Kafka:\n  TLS:\n    RootCAs:\n      Files: x\n",
            "Kafka.TLS.RootCAs.Files",
        ),
        (
            "Korder:\n  EmbeddedLog:\n    Dirr: x\n",
            "Korder.EmbeddedLog.Dirr",
        ),
    ] {
        let err = from_str(yaml).unwrap_err();
        assert!(
            matches!(&err, ConfigError::UnknownKey { key: k } if k == key),
            "{yaml}: {err}"
        );
        assert_eq!(err.to_string(), format!("{key}: unknown key"));
    }
}

/// Bad values in the file are errors naming the key and saying why.
#[test]
fn bad_values_in_file_name_the_key() {
    for (yaml, key, reason) in [
        (
            "General:\n  ListenPort: 70000\n",
            "General.ListenPort",
            "maximum 65535",
        ),
        (
            "General:\n  ListenPort: -1\n",
            "General.ListenPort",
            "negative",
        ),
        (
            "General:\n  ListenPort: abc\n",
            "General.ListenPort",
            "whole number",
        ),
        (
            "Kafka:\n  Retry:\n    ShortInterval: 5 seconds\n",
            "Kafka.Retry.ShortInterval",
            "unknown unit",
        ),
        (
            "Kafka:\n  Retry:\n    LongTotal: -1h\n",
            "Kafka.Retry.LongTotal",
            "negative",
        ),
        (
            "General:\n  TLS:\n    Enabled: maybe\n",
            "General.TLS.Enabled",
            "true or false",
        ),
        ("General:\n  TLS: yes\n", "General.TLS", "mapping"),
        (
            "General:\n  ListenAddress: [a, b]\n",
            "General.ListenAddress",
            "list",
        ),
        (
            "General:\n  GenesisMethod: magic\n",
            "General.GenesisMethod",
            "provisional, file",
        ),
        (
            "Metrics:\n  Provider: graphite\n",
            "Metrics.Provider",
            "statsd",
        ),
        (
            "Kafka:\n  Version: banana\n",
            "Kafka.Version",
            "invalid Kafka version",
        ),
        (
            "Korder:\n  EmbeddedLog:\n    SegmentBytes: lots\n",
            "Korder.EmbeddedLog.SegmentBytes",
            "byte count",
        ),
        (
            "Consensus:\n  WALDir: [a]\n",
            "Consensus.WALDir",
            "single values",
        ),
    ] {
        let err = from_str(yaml).unwrap_err();
        match &err {
            ConfigError::InvalidValue { key: k, reason: r } => {
                assert_eq!(k, key, "{yaml}");
                assert!(r.contains(reason), "{yaml}: {r}");
            }
            other => panic!("{yaml}: unexpected {other}"),
        }
    }
}

/// Text that is not YAML, or not a mapping at the top, is refused with the file named.
#[test]
fn malformed_yaml_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("orderer.yaml");
    std::fs::write(&path, "General: [unclosed\n").unwrap();
    let err = Config::load(&path, &no_env()).unwrap_err();
    assert!(matches!(err, ConfigError::Yaml { .. }), "{err}");
    assert!(err.to_string().contains("orderer.yaml"));
    let err = from_str("- a\n- b\n").unwrap_err();
    assert!(matches!(err, ConfigError::Yaml { .. }), "{err}");
    let err = Config::load(&tmp.path().join("missing.yaml"), &no_env()).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
}

/// Fabric's `File:` convention for Kafka PEM material resolves against the config
/// file's directory and reads the file; inline PEM lists are joined.
#[test]
fn kafka_pem_file_convention() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("kafka")).unwrap();
    std::fs::write(tmp.path().join("kafka/ca.pem"), "ROOTS").unwrap();
    let path = tmp.path().join("orderer.yaml");
    std::fs::write(
        &path,
        "Kafka:\n  TLS:\n    Enabled: true\n    PrivateKey: KEY\n    Certificate:\n      - CERT1\n      - CERT2\n    RootCAs:\n      File: kafka/ca.pem\n",
    )
    .unwrap();
    let c = Config::load(&path, &no_env()).unwrap();
    let roots = c.kafka.tls.root_cas.as_ref().unwrap();
    assert_eq!(roots, &PemSource::File(tmp.path().join("kafka/ca.pem")));
    assert_eq!(roots.read("Kafka.TLS.RootCAs").unwrap(), b"ROOTS");
    assert_eq!(
        c.kafka.tls.certificate,
        Some(PemSource::Inline("CERT1\nCERT2".into()))
    );
    let missing = PemSource::File(tmp.path().join("nope.pem"));
    let err = missing.read("Kafka.TLS.PrivateKey").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Kafka.TLS.PrivateKey: cannot read")
    );
}

/// to_yaml writes a file that loads back to an equal configuration (sample, dev
/// default, and one with every optional value set).
#[test]
fn to_yaml_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rich = Config::default_for_dev(tmp.path());
    rich.general.tls.enabled = true;
    rich.general.tls.private_key = Some(tmp.path().join("k.pem"));
    rich.general.tls.root_cas = vec![tmp.path().join("a.pem"), tmp.path().join("b.pem")];
    let mut cluster = load_sample(&no_env()).unwrap().general.cluster.unwrap();
    cluster.listen_port = Some(7060);
    cluster.listen_address = Some("0.0.0.0".into());
    cluster.replication_policy = Some("simple".into());
    rich.general.cluster = Some(cluster);
    rich.general.max_recv_msg_size = 1 << 20;
    rich.general.bccsp.pkcs11.key_ids = vec![("ab".into(), "cd".into())];
    rich.general.bccsp.pkcs11.alt_id = Some("alt".into());
    rich.general.bccsp.pkcs11.pin = Some("1234".into());
    rich.general.bccsp.pkcs11.security = Some(384);
    rich.kafka.retry.short_interval = Duration::from_millis(1500);
    rich.kafka.version = KafkaVersion([3, 9, 0, 0]);
    rich.kafka.tls.private_key = Some(PemSource::Inline(
        "-----BEGIN EC PRIVATE KEY-----\nabc\n-----END EC PRIVATE KEY-----\n".into(),
    ));
    rich.kafka.tls.root_cas = Some(PemSource::File(tmp.path().join("ca.pem")));
    rich.kafka.sasl_plain.user = "true".into();
    rich.kafka.sasl_plain.password = "0123".into();
    rich.consensus.insert("WALDir".into(), "/wal".into());
    rich.korder.embedded_log_dir = Some(tmp.path().join("elog"));
    rich.korder.log_backend = LogBackend::Embedded;
    rich.metrics.statsd.prefix = "7050".into();
    rich.general.local_msp_id = "null".into();

    for (name, config) in [
        ("sample", load_sample(&no_env()).unwrap()),
        ("dev", Config::default_for_dev(tmp.path())),
        ("rich", rich),
    ] {
        let yaml = config.to_yaml().unwrap();
        let path = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&path, &yaml).unwrap();
        let back = Config::load(&path, &no_env()).unwrap();
        assert_eq!(back, config, "{name}:\n{yaml}");
    }
}

/// validate accepts a complete dev setup and reports every broken limit by key.
#[test]
fn validate_reports_problems_by_key() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("msp")).unwrap();
    std::fs::write(tmp.path().join("genesis.block"), b"x").unwrap();
    let good = Config::default_for_dev(tmp.path());
    good.validate().unwrap();

    let mut bad = good.clone();
    bad.general.tls.enabled = true;
    bad.general.tls.certificate = Some(tmp.path().join("missing.crt"));
    bad.kafka.tls.enabled = true;
    bad.kafka.sasl_plain.enabled = true;
    bad.kafka.retry.read_timeout = Duration::ZERO;
    bad.kafka.topic_replication_factor = 0;
    bad.operations.listen_address = "nowhere".into();
    bad.korder.max_in_flight_blocks = 0;
    bad.korder.embedded_log_segment_bytes = 10;
    bad.korder.early_cut = Duration::from_millis(5);
    bad.general.ledger_type = "ram".into();
    bad.general.genesis_file = tmp.path().join("absent.block");
    let Err(ConfigError::Invalid { problems }) = bad.validate() else {
        panic!("expected problems");
    };
    for key in [
        "General.TLS.PrivateKey: required",
        "General.TLS.Certificate: file",
        "Kafka.TLS.PrivateKey: required",
        "Kafka.TLS.Certificate: required",
        "Kafka.TLS.RootCAs: required",
        "Kafka.SASLPlain.User: required",
        "Kafka.SASLPlain.Password: required",
        "Kafka.Retry.NetworkTimeouts.ReadTimeout: must be a positive",
        "Kafka.Topic.ReplicationFactor",
        "Operations.ListenAddress",
        "Korder.MaxInFlightBlocks",
        "Korder.EmbeddedLog.SegmentBytes",
        "Korder.EarlyCut",
        "General.LedgerType",
        "General.BootstrapFile",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(key)),
            "missing {key:?} in {problems:#?}"
        );
    }
}

/// The summary lists the effective settings and never shows a password or inline key.
#[test]
fn summary_masks_secrets() {
    let mut c = load_sample(&no_env()).unwrap();
    c.kafka.sasl_plain.enabled = true;
    c.kafka.sasl_plain.user = "orderer".into();
    c.kafka.sasl_plain.password = "hunter2".into();
    c.kafka.tls.enabled = true;
    c.kafka.tls.private_key = Some(PemSource::Inline("SECRETKEYMATERIAL".into()));
    c.general.bccsp.pkcs11.pin = Some("98765".into());
    let s = c.summary();
    assert!(s.contains("listen=127.0.0.1:7050"), "{s}");
    assert!(
        s.contains("kafka.retry=short:5s/10m0s,long:5m0s/12h0m0s"),
        "{s}"
    );
    assert!(s.contains("kafka.sasl.user=orderer,password=****"), "{s}");
    assert!(s.contains("kafka.tls.key=inline"), "{s}");
    assert!(!s.contains("hunter2"), "{s}");
    assert!(!s.contains("SECRETKEYMATERIAL"), "{s}");
    assert!(!s.contains("98765"), "{s}");
    assert!(!s.contains('\n'));
}

/// `auto` follows the channel's consensus type (kafka or solo, refusing others);
/// explicit backends ignore it.
#[test]
fn log_backend_resolution() {
    let resolve = |b: LogBackend, t: &str| b.resolve_channel("ch", t).ok();
    assert_eq!(resolve(LogBackend::Auto, "kafka"), Some(ResolvedLog::Kafka));
    assert_eq!(
        resolve(LogBackend::Auto, "solo"),
        Some(ResolvedLog::Embedded)
    );
    assert_eq!(resolve(LogBackend::Auto, "etcdraft"), None);
    assert_eq!(
        resolve(LogBackend::Embedded, "kafka"),
        Some(ResolvedLog::Embedded)
    );
    assert_eq!(
        resolve(LogBackend::Embedded, "etcdraft"),
        Some(ResolvedLog::Embedded)
    );
    assert_eq!(resolve(LogBackend::Kafka, "solo"), Some(ResolvedLog::Kafka));
}

/// BootstrapMethod (v2) wins over GenesisMethod (v1.4); its file falls back to GenesisFile.
#[test]
fn bootstrap_names_reconciled() {
    let c = from_str("General:\n  GenesisMethod: file\n  GenesisFile: /g.block\n").unwrap();
    assert_eq!(c.general.bootstrap(), Bootstrap::File("/g.block".into()));
    let c = from_str(
        "General:\n  GenesisMethod: provisional\n  GenesisFile: /g.block\n  BootstrapMethod: file\n",
    )
    .unwrap();
    assert_eq!(c.general.bootstrap(), Bootstrap::File("/g.block".into()));
    let c = from_str("General:\n  BootstrapMethod: file\n  BootstrapFile: /b.block\n").unwrap();
    assert_eq!(c.general.bootstrap(), Bootstrap::File("/b.block".into()));
}

/// Settings accepted but not acted on are listed for a start-up warning.
#[test]
fn ignored_settings_are_listed() {
    assert_eq!(
        from_str("").unwrap().ignored_settings(),
        Vec::<String>::new()
    );
    let c = from_str("Metrics:\n  Provider: statsd\nGeneral:\n  Profile:\n    Enabled: true\n")
        .unwrap();
    let ignored = c.ignored_settings();
    assert!(
        !ignored.iter().any(|w| w.starts_with("Metrics")),
        "{ignored:?}"
    );
    assert!(
        ignored
            .iter()
            .any(|w| w.starts_with("General.Profile.Enabled"))
    );
}

/// A generated file is plain Fabric-style YAML: Go durations, canonical key names.
#[test]
fn generated_yaml_reads_like_orderer_yaml() {
    let y = Config::default_for_dev(Path::new("/data"))
        .to_yaml()
        .unwrap();
    for line in [
        "General:\n",
        "  ListenPort: 7050\n",
        "    ShortInterval: 1m0s\n",
        "    TimeWindow: 15m0s\n",
        "  Location: /data/ledger\n",
        "  LogBackend: auto\n",
    ] {
        assert!(y.contains(line), "missing {line:?} in\n{y}");
    }
}

/// `Metrics.Provider: statsd` is acted on, so its settings are checked at load:
/// a network other than udp/tcp, an empty address or a zero interval is refused.
#[test]
fn statsd_settings_are_checked() {
    let parsed = from_str(
        "Metrics:\n  Provider: statsd\n  Statsd:\n    Network: tcp\n    Address: 127.0.0.1:9125\n    WriteInterval: 2s\n    Prefix: ord\n",
    )
    .unwrap();
    assert_eq!(parsed.metrics.statsd.stream(), Some(true));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("msp")).unwrap();
    std::fs::write(tmp.path().join("genesis.block"), b"x").unwrap();
    let mut good = Config::default_for_dev(tmp.path());
    good.metrics = parsed.metrics.clone();
    good.validate().unwrap();
    type Spoil = fn(&mut Config);
    let bad_values: [(&str, Spoil); 3] = [
        ("Metrics.Statsd.Network", |c| {
            c.metrics.statsd.network = "unix".into()
        }),
        ("Metrics.Statsd.Address", |c| {
            c.metrics.statsd.address = " ".into()
        }),
        ("Metrics.Statsd.WriteInterval", |c| {
            c.metrics.statsd.write_interval = Duration::ZERO
        }),
    ];
    for (key, spoil) in bad_values {
        let mut c = good.clone();
        spoil(&mut c);
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
        // The same settings are not checked when StatsD is not the provider.
        c.metrics.provider = MetricsProvider::Prometheus;
        c.validate().unwrap();
    }
}
