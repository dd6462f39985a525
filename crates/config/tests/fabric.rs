//! Fabric's orderer.yaml of every release from 1.4 to 3.1: the sample files load
//! as they are, every key is known, and each key is honoured, accepted with a
//! start-up note, or refused with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use korder_config::{Bootstrap, Config, ConfigError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .canonicalize()
        .expect("fixtures present")
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_str(text: &str) -> Result<Config, ConfigError> {
    Config::from_yaml_str(text, None, &BTreeMap::new())
}

/// Loads a Fabric sample file with only the paths and the bootstrap file set
/// through environment overrides, as an operator would.
fn load_release(release: &str, ledger: &Path) -> Config {
    let f = fixtures();
    let file = f.join(release).join("sampleconfig/orderer.yaml");
    let msp = f.join("fabric-v1.4.12/sampleconfig/msp");
    let genesis = f.join("fabric-v2.5.16/blocks/system-kafka-v2caps-genesis.block");
    let text = |p: &Path| p.to_str().expect("UTF-8 paths").to_string();
    let overrides: BTreeMap<String, String> = [
        ("ORDERER_GENERAL_LOCALMSPDIR", text(&msp)),
        ("ORDERER_GENERAL_BOOTSTRAPFILE", text(&genesis)),
        ("ORDERER_FILELEDGER_LOCATION", text(ledger)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let config = Config::load(&file, &overrides).unwrap_or_else(|e| panic!("{release}: {e}"));
    config
        .validate()
        .unwrap_or_else(|e| panic!("{release}: {e}"));
    assert_eq!(config.general.bootstrap(), Bootstrap::File(genesis));
    config
}

/// Fabric v2.5.16's sample orderer.yaml loads unchanged and validates once the paths
/// and BootstrapFile are overridden; its Fabric 2.x keys are read.
#[test]
fn fabric_2_5_sample_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let c = load_release("fabric-v2.5.16", tmp.path());
    assert_eq!(c.general.max_recv_msg_size, 104_857_600);
    assert_eq!(c.general.max_send_msg_size, 104_857_600);
    assert_eq!(c.general.cluster.as_ref().unwrap().send_buffer_size, 100);
    let admin = c.admin.as_ref().expect("Admin read");
    assert_eq!(admin.listen_address, "127.0.0.1:9443");
    assert!(admin.tls.client_auth_required);
    let cp = c
        .channel_participation
        .as_ref()
        .expect("ChannelParticipation read");
    assert!(!cp.enabled);
    assert_eq!(cp.max_request_body_size, 1 << 20);
    assert!(c.general.throttling.is_none());
}

/// Fabric v3.1.5's sample orderer.yaml (no Kafka section, no bootstrap keys, Fabric
/// 3.x's Backoff, Throttling and ReplicationPolicy) loads unchanged with the same
/// overrides, and its BootstrapFile alone selects the file bootstrap.
#[test]
fn fabric_3_1_sample_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let c = load_release("fabric-v3.1.5", tmp.path());
    let backoff = c.general.backoff.as_ref().expect("Backoff read");
    assert_eq!(backoff.base_delay, Duration::from_secs(1));
    assert_eq!(backoff.multiplier, 1.6);
    assert_eq!(backoff.max_delay, Duration::from_secs(120));
    let throttling = c.general.throttling.as_ref().expect("Throttling read");
    assert_eq!(throttling.rate, 0);
    assert_eq!(throttling.inactivity_timeout, Duration::from_secs(5));
    assert!(c.channel_participation.as_ref().unwrap().enabled);
}

/// Each sample file leaves one start-up note per section korder does not use, each
/// saying "not used by korder yet", and none for the keys korder honours.
#[test]
fn sample_files_note_what_does_not_apply() {
    let tmp = tempfile::tempdir().unwrap();
    for release in ["fabric-v2.5.16", "fabric-v3.1.5"] {
        let notes = load_release(release, tmp.path()).ignored_settings();
        for section in ["General.Cluster:", "Consensus: SnapDir, WALDir"] {
            assert!(
                notes
                    .iter()
                    .any(|n| n.starts_with(section) && n.contains("not used by korder yet")),
                "{release}: no note for {section} in {notes:#?}"
            );
        }
        assert!(
            !notes.iter().any(|n| n.contains("MaxRecvMsgSize")),
            "{release}: {notes:#?}"
        );
        assert!(
            !notes
                .iter()
                .any(|n| n.starts_with("Admin") || n.starts_with("ChannelParticipation")),
            "{release}: the Admin endpoint is served: {notes:#?}"
        );
    }
}

/// Every key of Fabric's orderer.yaml in any release from 1.4.0 to 3.1.5 (the
/// configuration structs of each release, sample file or not) is known to korder.
#[test]
fn every_fabric_key_is_known() {
    let yaml = r#"
General:
  LedgerType: file
  ListenAddress: 0.0.0.0
  ListenPort: 7050
  TLS:
    Enabled: false
    PrivateKey: tls/server.key
    Certificate: tls/server.crt
    RootCAs: [tls/ca.crt]
    ClientAuthRequired: false
    ClientRootCAs: []
    TLSHandshakeTimeShift: 0s
  Keepalive:
    ServerMinInterval: 60s
    ServerInterval: 7200s
    ServerTimeout: 20s
  ConnectionTimeout: 5s
  Backoff:
    BaseDelay: 1s
    Multiplier: 1.6
    MaxDelay: 2m
  MaxRecvMsgSize: 104857600
  MaxSendMsgSize: 104857600
  Throttling:
    Rate: 0
    InactivityTimeout: 5s
  Cluster:
    SendBufferSize: 100
    ClientCertificate: c.crt
    ClientPrivateKey: c.key
    ListenPort: 7051
    ListenAddress: 0.0.0.0
    ServerCertificate: s.crt
    ServerPrivateKey: s.key
    RootCAs: [ca.crt]
    DialTimeout: 5s
    RPCTimeout: 7s
    ReplicationBufferSize: 20971520
    ReplicationPullTimeout: 5s
    ReplicationRetryTimeout: 5s
    ReplicationBackgroundRefreshInterval: 5m
    ReplicationMaxRetries: 12
    ReplicationPolicy: consensus
    CertExpirationWarningThreshold: 168h
    TLSHandshakeTimeShift: 0s
  GenesisMethod: file
  GenesisProfile: SampleInsecureSolo
  SystemChannel: system-channel
  GenesisFile: genesisblock
  BootstrapMethod: file
  BootstrapFile: genesisblock
  LocalMSPDir: msp
  LocalMSPID: SampleOrg
  Profile:
    Enabled: false
    Address: 0.0.0.0:6060
  BCCSP:
    Default: SW
    SW:
      Hash: SHA2
      Security: 256
      FileKeyStore:
        KeyStore:
    PKCS11:
      Library: /usr/lib/softhsm/libsofthsm2.so
      Label: fabric
      Pin: "98765432"
      Hash: SHA2
      Security: 256
      SoftwareVerify: false
      Immutable: false
      AltID: alt
      TempKeys: false
      KeyIDs:
        - SKI: "0a1b"
          ID: "key-1"
      FileKeyStore:
        KeyStore:
    PLUGIN:
      Library: /opt/bccsp.so
      Config:
        anything: goes
  Authentication:
    TimeWindow: 15m
    NoExpirationChecks: false
FileLedger:
  Location: /var/hyperledger/production/orderer
  Prefix: hyperledger-fabric-ordererledger
RAMLedger:
  HistorySize: 1000
Kafka:
  Retry:
    ShortInterval: 5s
    ShortTotal: 10m
    LongInterval: 5m
    LongTotal: 12h
    NetworkTimeouts:
      DialTimeout: 10s
      ReadTimeout: 10s
      WriteTimeout: 10s
    Metadata:
      RetryBackoff: 250ms
      RetryMax: 3
    Producer:
      RetryBackoff: 100ms
      RetryMax: 3
    Consumer:
      RetryBackoff: 2s
  Topic:
    ReplicationFactor: 3
  Verbose: false
  TLS:
    Enabled: false
    PrivateKey:
    Certificate:
    RootCAs:
    ClientAuthRequired: false
    ClientRootCAs:
    TLSHandshakeTimeShift: 0s
  SASLPlain:
    Enabled: false
    User:
    Password:
  Version: 2.8.1
Debug:
  BroadcastTraceDir:
  DeliverTraceDir:
Consensus:
  WALDir: /var/hyperledger/production/orderer/etcdraft/wal
  SnapDir: /var/hyperledger/production/orderer/etcdraft/snapshot
  EvictionSuspicion: 10m
  TickIntervalOverride: 500ms
Operations:
  ListenAddress: 127.0.0.1:8443
  TLS:
    Enabled: false
    Certificate:
    PrivateKey:
    RootCAs: []
    ClientAuthRequired: false
    ClientRootCAs: []
    TLSHandshakeTimeShift: 0s
Metrics:
  Provider: prometheus
  Statsd:
    Network: udp
    Address: 127.0.0.1:8125
    WriteInterval: 30s
    Prefix: orderer
Admin:
  ListenAddress: 127.0.0.1:9443
  TLS:
    Enabled: true
    Certificate: admin.crt
    PrivateKey: admin.key
    RootCAs: []
    ClientAuthRequired: true
    ClientRootCAs: [admin-ca.crt]
    TLSHandshakeTimeShift: 0s
ChannelParticipation:
  Enabled: true
  RemoveStorage: false
  MaxRequestBodySize: 1 MB
"#;
    let c = from_str(yaml).unwrap();
    assert_eq!(
        c.general.bccsp.pkcs11.key_ids,
        [("0a1b".into(), "key-1".into())]
    );
    assert_eq!(
        c.general
            .cluster
            .as_ref()
            .unwrap()
            .replication_policy
            .as_deref(),
        Some("consensus")
    );
    assert_eq!(c.consensus.len(), 4);
    // Written back and read again, nothing is lost.
    let again = Config::from_yaml_str(&c.to_yaml().unwrap(), None, &BTreeMap::new()).unwrap();
    assert_eq!(again, c);
}

/// Honoured: General.MaxRecvMsgSize and MaxSendMsgSize are read (zero means Fabric's
/// 100 MiB), and a value Fabric's int32 cannot hold is refused naming the key.
#[test]
fn message_size_limits_are_honoured() {
    let c = from_str("General:\n  MaxRecvMsgSize: 1048576\n  MaxSendMsgSize: 2097152\n").unwrap();
    assert_eq!(c.general.max_recv_msg_size, 1 << 20);
    assert_eq!(c.general.max_send_msg_size, 2 << 20);
    let c = from_str("General:\n  MaxRecvMsgSize: 0\n").unwrap();
    assert_eq!(c.general.max_recv_msg_size, 100 << 20);
    assert_eq!(c.general.max_send_msg_size, 100 << 20);
    let c = Config::from_yaml_str(
        "",
        None,
        &env(&[("ORDERER_GENERAL_MAXSENDMSGSIZE", "4194304")]),
    )
    .unwrap();
    assert_eq!(c.general.max_send_msg_size, 4 << 20);
    for bad in ["-1", "2147483648"] {
        let err = from_str(&format!("General:\n  MaxRecvMsgSize: {bad}\n")).unwrap_err();
        assert!(
            err.to_string().starts_with("General.MaxRecvMsgSize: "),
            "{bad}: {err}"
        );
    }
}

/// Accepted with a note: the sections of Raft and channel participation set
/// through compose-style environment variables, each one line naming the key and
/// "not used by korder yet"; a Throttling rate is applied, so it gets none.
#[test]
fn unused_keys_are_accepted_with_a_note() {
    let c = Config::from_yaml_str(
        "General:\n  Throttling:\n    Rate: 1000\n",
        None,
        &env(&[
            ("ORDERER_ADMIN_LISTENADDRESS", "0.0.0.0:9443"),
            ("ORDERER_CHANNELPARTICIPATION_ENABLED", "true"),
            ("ORDERER_GENERAL_CLUSTER_LISTENPORT", "7051"),
            ("ORDERER_CONSENSUS_WALDIR", "/wal"),
        ]),
    )
    .unwrap();
    assert_eq!(c.admin.as_ref().unwrap().listen_address, "0.0.0.0:9443");
    let notes = c.ignored_settings();
    assert!(
        !notes.iter().any(|n| n.contains("Throttling")),
        "{notes:#?}"
    );
    // The Admin endpoint and the channel participation API are served: no note.
    assert!(
        !notes
            .iter()
            .any(|n| n.starts_with("Admin") || n.starts_with("ChannelParticipation")),
        "{notes:#?}"
    );
    for key in ["General.Cluster:", "Consensus: WALDir"] {
        let note = notes
            .iter()
            .find(|n| n.starts_with(key))
            .unwrap_or_else(|| panic!("no note for {key} in {notes:#?}"));
        assert!(note.contains("not used by korder yet"), "{note}");
        assert!(!note.contains('\n'), "{note}");
    }
    // Noted keys are still type-checked.
    for bad in ["-1.5", "fast"] {
        let err = from_str(&format!("General:\n  Backoff:\n    Multiplier: {bad}\n")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("General.Backoff.Multiplier: expected a number"),
            "{bad}: {err}"
        );
    }
    // Throttling switched off (Fabric's default) needs no note.
    let c = from_str("General:\n  Throttling:\n    Rate: 0\n").unwrap();
    assert!(
        c.ignored_settings().is_empty(),
        "{:?}",
        c.ignored_settings()
    );
}

/// Refused with a reason: values korder cannot honour safely (a shifted TLS
/// handshake clock, required operations client certificates with no roots to check
/// them, an Admin endpoint with TLS but no client authentication) each name the key
/// and say why.
#[test]
fn values_korder_cannot_honour_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("msp")).unwrap();
    std::fs::write(tmp.path().join("genesis.block"), b"x").unwrap();
    let base = Config::default_for_dev(tmp.path());
    base.validate().unwrap();
    type Change = fn(&mut Config);
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "General.TLS.TLSHandshakeTimeShift",
            |c| c.general.tls.tls_handshake_time_shift = Duration::from_secs(3600),
            "current time",
        ),
        (
            "Kafka.TLS.TLSHandshakeTimeShift",
            |c| c.kafka.tls.tls_handshake_time_shift = Duration::from_secs(60),
            "current time",
        ),
        (
            "Operations.TLS.ClientRootCAs",
            |c| {
                c.operations.tls.enabled = true;
                c.operations.tls.client_auth_required = true;
            },
            "required when Operations.TLS.ClientAuthRequired is true",
        ),
        (
            "Admin.TLS.ClientAuthRequired",
            |c| {
                let mut a = from_str("Admin:\n  ListenAddress: x\n")
                    .unwrap()
                    .admin
                    .unwrap();
                a.tls.enabled = true;
                c.admin = Some(a);
            },
            "must be true",
        ),
    ];
    for (key, change, reason) in cases {
        let mut c = base.clone();
        change(&mut c);
        let Err(ConfigError::Invalid { problems }) = c.validate() else {
            panic!("{key}: accepted");
        };
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with(&format!("{key}: ")) && p.contains(reason)),
            "{key}: {problems:#?}"
        );
    }
    // The same shift through the file is read, so that it can be refused.
    let c = from_str("General:\n  TLS:\n    TLSHandshakeTimeShift: 1h\n").unwrap();
    assert_eq!(
        c.general.tls.tls_handshake_time_shift,
        Duration::from_secs(3600)
    );
}

/// Fabric 2.x's keys with an empty BootstrapFile: the problem names
/// General.BootstrapFile (and the GenesisFile fallback it tried), never
/// General.GenesisFile alone.
#[test]
fn empty_bootstrap_file_names_bootstrap_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = fixtures().join("fabric-v2.5.16/sampleconfig/orderer.yaml");
    let msp = fixtures().join("fabric-v1.4.12/sampleconfig/msp");
    let c = Config::load(
        &file,
        &env(&[
            ("ORDERER_GENERAL_LOCALMSPDIR", msp.to_str().unwrap()),
            ("ORDERER_FILELEDGER_LOCATION", tmp.path().to_str().unwrap()),
        ]),
    )
    .unwrap();
    let Err(ConfigError::Invalid { problems }) = c.validate() else {
        panic!("an empty BootstrapFile with no genesisblock next to it is accepted");
    };
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].starts_with("General.BootstrapFile: empty"),
        "{problems:#?}"
    );
    assert!(problems[0].contains("ORDERER_GENERAL_BOOTSTRAPFILE"));
}

/// A ledger that already holds a channel needs no genesis block (Fabric reads it
/// only to create an empty ledger): the same empty BootstrapFile is then accepted,
/// and an empty `chains/` directory does not count as a channel.
#[test]
fn existing_ledger_needs_no_bootstrap_file() {
    let tmp = tempfile::tempdir().unwrap();
    let file = fixtures().join("fabric-v2.5.16/sampleconfig/orderer.yaml");
    let msp = fixtures().join("fabric-v1.4.12/sampleconfig/msp");
    let c = Config::load(
        &file,
        &env(&[
            ("ORDERER_GENERAL_LOCALMSPDIR", msp.to_str().unwrap()),
            ("ORDERER_FILELEDGER_LOCATION", tmp.path().to_str().unwrap()),
        ]),
    )
    .unwrap();
    std::fs::create_dir_all(tmp.path().join("chains")).unwrap();
    assert!(!c.file_ledger.has_channels());
    assert!(c.validate().is_err(), "an empty chains/ is an empty ledger");
    std::fs::create_dir_all(tmp.path().join("chains/mychannel")).unwrap();
    assert!(c.file_ledger.has_channels());
    c.validate().unwrap();
}

/// Both sample files, written back by korder, load again to an equal configuration
/// (the optional Fabric sections keep their presence).
#[test]
fn sample_files_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    for release in ["fabric-v2.5.16", "fabric-v3.1.5"] {
        let c = load_release(release, tmp.path());
        let path = tmp.path().join(format!("{release}.yaml"));
        std::fs::write(&path, c.to_yaml().unwrap()).unwrap();
        let back = Config::load(&path, &BTreeMap::new()).unwrap();
        assert_eq!(back, c, "{release}");
        assert!(back.admin.is_some() && back.general.cluster.is_some());
    }
}
