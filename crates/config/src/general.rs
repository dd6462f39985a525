//! The `General` section: listener, TLS, keepalive, bootstrap, local MSP.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;
use crate::node::{Node, Section, scalar_text, value_error};

/// Mapping with keys in the given order.
pub(crate) fn map(entries: Vec<(&str, Node)>) -> Node {
    Node::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// `General` section.
#[derive(Clone, Debug, PartialEq)]
pub struct General {
    /// `LedgerType`: only `file` is supported by korder (`json` and `ram` are refused
    /// by [`crate::Config::validate`]).
    pub ledger_type: String,
    /// `ListenAddress`: address the gRPC server binds.
    pub listen_address: String,
    /// `ListenPort`: port the gRPC server binds (0 or unset means 7050).
    pub listen_port: u16,
    /// `TLS` of the gRPC server.
    pub tls: Tls,
    /// `Keepalive` of the gRPC server.
    pub keepalive: Keepalive,
    /// `ConnectionTimeout`: how long a new gRPC connection may take to complete its
    /// TLS handshake and send its first bytes (zero or unset means 5s, as Fabric).
    pub connection_timeout: Duration,
    /// `Backoff` (Fabric 3.x): reconnection backoff of Raft/BFT cluster links; `None`
    /// when the file does not have it. Read and checked, not used.
    pub backoff: Option<Backoff>,
    /// `MaxRecvMsgSize` (Fabric 2.2 and later): largest gRPC message the server
    /// accepts, in bytes (zero or unset means 100 MiB, as Fabric).
    pub max_recv_msg_size: u32,
    /// `MaxSendMsgSize` (Fabric 2.2 and later): largest gRPC message the server
    /// sends, in bytes (zero or unset means 100 MiB, as Fabric).
    pub max_send_msg_size: u32,
    /// `Throttling` (Fabric 3.x): Broadcast rate limit; `None` when the file does not
    /// have it. Read and checked, not used yet.
    pub throttling: Option<Throttling>,
    /// `Cluster`: read and checked, not used (a Kafka orderer has no cluster links);
    /// `None` when the file does not have it.
    pub cluster: Option<Cluster>,
    /// `GenesisMethod` (v1.4 name): `provisional` or `file`.
    pub genesis_method: GenesisMethod,
    /// `GenesisProfile`: configtx.yaml profile for the `provisional` method.
    pub genesis_profile: String,
    /// `SystemChannel`: channel id for the `provisional` method.
    pub system_channel: String,
    /// `GenesisFile` (v1.4 name): genesis block for the `file` method.
    pub genesis_file: PathBuf,
    /// `BootstrapMethod` (v2 name); when set it takes precedence over `GenesisMethod`.
    pub bootstrap_method: Option<BootstrapMethod>,
    /// `BootstrapFile` (v2 name); when unset, `GenesisFile` is used.
    pub bootstrap_file: Option<PathBuf>,
    /// `LocalMSPDir`: directory of the orderer's signing identity.
    pub local_msp_dir: PathBuf,
    /// `LocalMSPID`: MSP id of the orderer's organization.
    pub local_msp_id: String,
    /// `Profile`: Go pprof server; accepted, not used.
    pub profile: Profile,
    /// `BCCSP`: crypto provider; only `SW` is supported.
    pub bccsp: Bccsp,
    /// `Authentication`.
    pub authentication: Authentication,
}

/// Where the system channel's genesis block comes from, once the v1.4 and v2 keys
/// are reconciled (see [`General::bootstrap`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Read the genesis block from this file.
    File(PathBuf),
    /// Generate it from a configtx.yaml profile for the named system channel.
    Provisional {
        /// `GenesisProfile`.
        profile: String,
        /// `SystemChannel`.
        system_channel: String,
    },
    /// No system channel.
    None,
}

impl General {
    /// The bootstrap to perform: `BootstrapMethod` when set (its file defaulting to
    /// `GenesisFile`); else, when only `BootstrapFile` is set (a Fabric 3.x file,
    /// which has neither method key), that file; else `GenesisMethod`.
    pub fn bootstrap(&self) -> Bootstrap {
        match self.bootstrap_method {
            Some(BootstrapMethod::None) => Bootstrap::None,
            Some(BootstrapMethod::File) => Bootstrap::File(
                self.bootstrap_file
                    .clone()
                    .unwrap_or_else(|| self.genesis_file.clone()),
            ),
            None if self.bootstrap_file.is_some() => {
                Bootstrap::File(self.bootstrap_file.clone().unwrap_or_default())
            }
            None => match self.genesis_method {
                GenesisMethod::File => Bootstrap::File(self.genesis_file.clone()),
                GenesisMethod::Provisional => Bootstrap::Provisional {
                    profile: self.genesis_profile.clone(),
                    system_channel: self.system_channel.clone(),
                },
            },
        }
    }

    /// Default `ConnectionTimeout`.
    pub const DEFAULT_CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default `MaxRecvMsgSize` and `MaxSendMsgSize`: 100 MiB, as Fabric.
    pub const DEFAULT_MAX_MSG_SIZE: u32 = 100 * 1024 * 1024;

    pub(crate) fn decode(s: &mut Section<'_>) -> Result<General, ConfigError> {
        let ledger_type = s.string_or("LedgerType", "file")?;
        let listen_address = s.string_or("ListenAddress", "127.0.0.1")?;
        let listen_port = port(s, "ListenPort")?.unwrap_or(7050);
        let mut t = s.section("TLS")?;
        let tls = Tls::decode(&mut t)?;
        t.finish()?;
        let mut k = s.section("Keepalive")?;
        let keepalive = Keepalive::decode(&mut k)?;
        k.finish()?;
        let connection_timeout = s.duration_or("ConnectionTimeout", Duration::ZERO)?;
        let connection_timeout = if connection_timeout.is_zero() {
            Self::DEFAULT_CONNECTION_TIMEOUT
        } else {
            connection_timeout
        };
        let backoff = optional_section(s, "Backoff", Backoff::decode)?;
        let max_recv_msg_size = msg_size(s, "MaxRecvMsgSize")?;
        let max_send_msg_size = msg_size(s, "MaxSendMsgSize")?;
        let throttling = optional_section(s, "Throttling", Throttling::decode)?;
        let cluster = optional_section(s, "Cluster", Cluster::decode)?;
        let genesis_method =
            choice(s, "GenesisMethod", GenesisMethod::parse)?.unwrap_or(GenesisMethod::Provisional);
        let genesis_profile = s.string_or("GenesisProfile", "SampleSingleMSPSolo")?;
        let system_channel = s.string_or("SystemChannel", "test-system-channel-name")?;
        let genesis_file = s
            .path("GenesisFile")?
            .unwrap_or_else(|| "genesisblock".into());
        let bootstrap_method = choice(s, "BootstrapMethod", BootstrapMethod::parse)?;
        let bootstrap_file = s.path("BootstrapFile")?;
        let local_msp_dir = s.path("LocalMSPDir")?.unwrap_or_else(|| "msp".into());
        let local_msp_id = s.string_or("LocalMSPID", "SampleOrg")?;
        let mut p = s.section("Profile")?;
        let profile = Profile::decode(&mut p)?;
        p.finish()?;
        let mut b = s.section("BCCSP")?;
        let bccsp = Bccsp::decode(&mut b)?;
        b.finish()?;
        let mut a = s.section("Authentication")?;
        let authentication = Authentication::decode(&mut a)?;
        a.finish()?;
        Ok(General {
            ledger_type,
            listen_address,
            listen_port,
            tls,
            keepalive,
            connection_timeout,
            backoff,
            max_recv_msg_size,
            max_send_msg_size,
            throttling,
            cluster,
            genesis_method,
            genesis_profile,
            system_channel,
            genesis_file,
            bootstrap_method,
            bootstrap_file,
            local_msp_dir,
            local_msp_id,
            profile,
            bccsp,
            authentication,
        })
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![
            ("LedgerType", Node::str(&self.ledger_type)),
            ("ListenAddress", Node::str(&self.listen_address)),
            ("ListenPort", Node::Int(i64::from(self.listen_port))),
            ("TLS", self.tls.encode()),
            ("Keepalive", self.keepalive.encode()),
            ("ConnectionTimeout", Node::duration(self.connection_timeout)),
            (
                "Backoff",
                self.backoff.as_ref().map_or(Node::Null, Backoff::encode),
            ),
            ("MaxRecvMsgSize", Node::uint(self.max_recv_msg_size)),
            ("MaxSendMsgSize", Node::uint(self.max_send_msg_size)),
            (
                "Throttling",
                self.throttling
                    .as_ref()
                    .map_or(Node::Null, Throttling::encode),
            ),
            (
                "Cluster",
                self.cluster.as_ref().map_or(Node::Null, Cluster::encode),
            ),
            ("GenesisMethod", Node::str(self.genesis_method.as_str())),
            ("GenesisProfile", Node::str(&self.genesis_profile)),
            ("SystemChannel", Node::str(&self.system_channel)),
            ("GenesisFile", Node::path(&self.genesis_file)),
            (
                "BootstrapMethod",
                self.bootstrap_method
                    .map_or(Node::Null, |m| Node::str(m.as_str())),
            ),
            (
                "BootstrapFile",
                Node::opt_path(self.bootstrap_file.as_ref()),
            ),
            ("LocalMSPDir", Node::path(&self.local_msp_dir)),
            ("LocalMSPID", Node::str(&self.local_msp_id)),
            ("Profile", self.profile.encode()),
            ("BCCSP", self.bccsp.encode()),
            ("Authentication", self.authentication.encode()),
        ])
        .without_null(&["Backoff", "Throttling", "Cluster"])
    }
}

/// A section that korder reads and checks but does not use: `None` when the file
/// (or the environment) does not have it, so that its presence can be reported.
pub(crate) fn optional_section<T>(
    s: &mut Section<'_>,
    key: &str,
    decode: fn(&mut Section<'_>) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    let path = s.key_path(key);
    // Absent, or present with nothing under it: there is nothing to report.
    let Some(node) = s.take(key) else {
        return Ok(None);
    };
    let mut inner = Section::new(Some(node), &path)?;
    let value = decode(&mut inner)?;
    inner.finish()?;
    Ok(Some(value))
}

/// A gRPC message size limit: Fabric's `int32`, where zero or unset means the
/// default and a negative number is refused.
fn msg_size(s: &mut Section<'_>, key: &str) -> Result<u32, ConfigError> {
    Ok(s.uint(key, i32::MAX as u64)?
        .filter(|&n| n != 0)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(General::DEFAULT_MAX_MSG_SIZE))
}

/// `General.Backoff` (Fabric 3.x): how a Raft/BFT node backs off when it reconnects
/// to another. Read and checked, not used.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// `BaseDelay` (default 1s).
    pub base_delay: Duration,
    /// `Multiplier` (default 1.6).
    pub multiplier: f64,
    /// `MaxDelay` (default 2m).
    pub max_delay: Duration,
}

impl Backoff {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<Backoff, ConfigError> {
        Ok(Backoff {
            base_delay: s.duration_or("BaseDelay", Duration::from_secs(1))?,
            multiplier: s.float("Multiplier")?.filter(|&m| m != 0.0).unwrap_or(1.6),
            max_delay: s.duration_or("MaxDelay", Duration::from_secs(120))?,
        })
    }

    fn encode(&self) -> Node {
        map(vec![
            ("BaseDelay", Node::duration(self.base_delay)),
            ("Multiplier", Node::Float(self.multiplier)),
            ("MaxDelay", Node::duration(self.max_delay)),
        ])
    }
}

/// `General.Throttling` (Fabric 3.x): a Broadcast rate limit shared by all clients.
/// korder throttles Broadcast the same way (clients with a TLS certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Throttling {
    /// `Rate`: transactions per second for all clients together; 0 turns
    /// throttling off (the default).
    pub rate: u64,
    /// `InactivityTimeout`: a client idle this long no longer counts when the rate
    /// is shared out (default 5s).
    pub inactivity_timeout: Duration,
}

impl Throttling {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<Throttling, ConfigError> {
        Ok(Throttling {
            rate: s.uint("Rate", i64::MAX as u64)?.unwrap_or(0),
            inactivity_timeout: s.duration_or("InactivityTimeout", Duration::from_secs(5))?,
        })
    }

    fn encode(&self) -> Node {
        map(vec![
            ("Rate", Node::uint(self.rate)),
            ("InactivityTimeout", Node::duration(self.inactivity_timeout)),
        ])
    }
}

/// A TCP port; 0 and unset both give `None`.
pub(crate) fn port(s: &mut Section<'_>, key: &str) -> Result<Option<u16>, ConfigError> {
    let value = s.uint(key, u64::from(u16::MAX))?;
    Ok(value
        .and_then(|v| u16::try_from(v).ok())
        .filter(|&p| p != 0))
}

/// One of a fixed set of words, compared ignoring case.
pub(crate) fn choice<T>(
    s: &mut Section<'_>,
    key: &str,
    parse: fn(&str) -> Result<T, &'static str>,
) -> Result<Option<T>, ConfigError> {
    let path = s.key_path(key);
    let Some(node) = s.take(key) else {
        return Ok(None);
    };
    let text = scalar_text(node, &path)?.unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    parse(text).map(Some).map_err(|allowed| {
        value_error(
            node,
            &path,
            format!("expected one of {allowed}, found {text:?}"),
        )
    })
}

/// `General.GenesisMethod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenesisMethod {
    /// Generate the genesis block from `GenesisProfile`.
    Provisional,
    /// Read `GenesisFile`.
    File,
}

impl GenesisMethod {
    fn parse(s: &str) -> Result<GenesisMethod, &'static str> {
        match s.to_ascii_lowercase().as_str() {
            "provisional" => Ok(GenesisMethod::Provisional),
            "file" => Ok(GenesisMethod::File),
            _ => Err("provisional, file"),
        }
    }

    /// The word written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            GenesisMethod::Provisional => "provisional",
            GenesisMethod::File => "file",
        }
    }
}

/// `General.BootstrapMethod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootstrapMethod {
    /// Read `BootstrapFile` (or `GenesisFile`).
    File,
    /// Start without a system channel.
    None,
}

impl BootstrapMethod {
    fn parse(s: &str) -> Result<BootstrapMethod, &'static str> {
        match s.to_ascii_lowercase().as_str() {
            "file" => Ok(BootstrapMethod::File),
            "none" => Ok(BootstrapMethod::None),
            _ => Err("file, none"),
        }
    }

    /// The word written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            BootstrapMethod::File => "file",
            BootstrapMethod::None => "none",
        }
    }
}

/// A TLS server setting whose material lives in files (`General.TLS`,
/// `Operations.TLS`). Relative paths are resolved against the configuration
/// file's directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// `Enabled`.
    pub enabled: bool,
    /// `PrivateKey`: PEM private key file.
    pub private_key: Option<PathBuf>,
    /// `Certificate`: PEM certificate file.
    pub certificate: Option<PathBuf>,
    /// `RootCAs`: PEM files of trusted roots.
    pub root_cas: Vec<PathBuf>,
    /// `ClientAuthRequired`: require and verify client certificates.
    pub client_auth_required: bool,
    /// `ClientRootCAs`: PEM files of roots accepted for client certificates.
    pub client_root_cas: Vec<PathBuf>,
    /// `TLSHandshakeTimeShift` (Fabric 1.4.x, 2.2 and later): check certificates
    /// against a shifted clock during the handshake. korder checks them against the
    /// current time only, so a non-zero shift is refused by
    /// [`crate::Config::validate`].
    pub tls_handshake_time_shift: Duration,
}

impl Tls {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<Tls, ConfigError> {
        let tls = Tls {
            enabled: s.bool("Enabled")?,
            private_key: s.path("PrivateKey")?,
            certificate: s.path("Certificate")?,
            root_cas: s.paths("RootCAs")?,
            client_auth_required: s.bool("ClientAuthRequired")?,
            client_root_cas: s.paths("ClientRootCAs")?,
            tls_handshake_time_shift: s
                .duration("TLSHandshakeTimeShift")?
                .unwrap_or(Duration::ZERO),
        };
        Ok(tls)
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![
            ("Enabled", Node::Bool(self.enabled)),
            ("PrivateKey", Node::opt_path(self.private_key.as_ref())),
            ("Certificate", Node::opt_path(self.certificate.as_ref())),
            ("RootCAs", Node::paths(&self.root_cas)),
            ("ClientAuthRequired", Node::Bool(self.client_auth_required)),
            ("ClientRootCAs", Node::paths(&self.client_root_cas)),
            (
                "TLSHandshakeTimeShift",
                Node::duration(self.tls_handshake_time_shift),
            ),
        ])
    }

    pub(crate) fn resolve(&mut self, base: &std::path::Path) {
        for p in self
            .private_key
            .iter_mut()
            .chain(self.certificate.iter_mut())
        {
            crate::config::resolve_path(base, p);
        }
        for p in self
            .root_cas
            .iter_mut()
            .chain(self.client_root_cas.iter_mut())
        {
            crate::config::resolve_path(base, p);
        }
    }
}

/// `General.Keepalive` (gRPC server keepalive). Zero or unset means the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keepalive {
    /// `ServerMinInterval`: clients pinging more often are disconnected (default 60s).
    pub server_min_interval: Duration,
    /// `ServerInterval`: time between server pings (default 2h).
    pub server_interval: Duration,
    /// `ServerTimeout`: wait for a ping answer before closing (default 20s).
    pub server_timeout: Duration,
}

impl Keepalive {
    fn decode(s: &mut Section<'_>) -> Result<Keepalive, ConfigError> {
        Ok(Keepalive {
            server_min_interval: s.duration_or("ServerMinInterval", Duration::from_secs(60))?,
            server_interval: s.duration_or("ServerInterval", Duration::from_secs(7200))?,
            server_timeout: s.duration_or("ServerTimeout", Duration::from_secs(20))?,
        })
    }

    fn encode(&self) -> Node {
        map(vec![
            (
                "ServerMinInterval",
                Node::duration(self.server_min_interval),
            ),
            ("ServerInterval", Node::duration(self.server_interval)),
            ("ServerTimeout", Node::duration(self.server_timeout)),
        ])
    }
}

/// `General.Cluster`: settings of Raft-style intra-cluster links. A Kafka orderer
/// has none, so korder reads and type-checks these keys and then ignores them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// `SendBufferSize` (default 10).
    pub send_buffer_size: u64,
    /// `ClientCertificate`.
    pub client_certificate: Option<PathBuf>,
    /// `ClientPrivateKey`.
    pub client_private_key: Option<PathBuf>,
    /// `ListenPort`.
    pub listen_port: Option<u16>,
    /// `ListenAddress`.
    pub listen_address: Option<String>,
    /// `ServerCertificate`.
    pub server_certificate: Option<PathBuf>,
    /// `ServerPrivateKey`.
    pub server_private_key: Option<PathBuf>,
    /// `RootCAs`.
    pub root_cas: Vec<PathBuf>,
    /// `DialTimeout` (default 5s).
    pub dial_timeout: Duration,
    /// `RPCTimeout` (default 7s).
    pub rpc_timeout: Duration,
    /// `ReplicationBufferSize` in bytes (default 20 MiB).
    pub replication_buffer_size: u64,
    /// `ReplicationPullTimeout` (default 5s).
    pub replication_pull_timeout: Duration,
    /// `ReplicationRetryTimeout` (default 5s).
    pub replication_retry_timeout: Duration,
    /// `ReplicationBackgroundRefreshInterval` (default 5m).
    pub replication_background_refresh_interval: Duration,
    /// `ReplicationMaxRetries` (default 12).
    pub replication_max_retries: u64,
    /// `CertExpirationWarningThreshold` (default 168h).
    pub cert_expiration_warning_threshold: Duration,
    /// `TLSHandshakeTimeShift` (default 0).
    pub tls_handshake_time_shift: Duration,
    /// `ReplicationPolicy` (Fabric 3.x): `simple` or `consensus`; unset when empty.
    pub replication_policy: Option<String>,
}

impl Cluster {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<Cluster, ConfigError> {
        Ok(Cluster {
            send_buffer_size: s.uint("SendBufferSize", u64::from(u32::MAX))?.unwrap_or(10),
            client_certificate: s.path("ClientCertificate")?,
            client_private_key: s.path("ClientPrivateKey")?,
            listen_port: port(s, "ListenPort")?,
            listen_address: s.string("ListenAddress")?,
            server_certificate: s.path("ServerCertificate")?,
            server_private_key: s.path("ServerPrivateKey")?,
            root_cas: s.paths("RootCAs")?,
            dial_timeout: s.duration_or("DialTimeout", Duration::from_secs(5))?,
            rpc_timeout: s.duration_or("RPCTimeout", Duration::from_secs(7))?,
            replication_buffer_size: s
                .bytes("ReplicationBufferSize")?
                .filter(|&n| n != 0)
                .unwrap_or(20 * 1024 * 1024),
            replication_pull_timeout: s
                .duration_or("ReplicationPullTimeout", Duration::from_secs(5))?,
            replication_retry_timeout: s
                .duration_or("ReplicationRetryTimeout", Duration::from_secs(5))?,
            replication_background_refresh_interval: s.duration_or(
                "ReplicationBackgroundRefreshInterval",
                Duration::from_secs(300),
            )?,
            replication_max_retries: s
                .uint("ReplicationMaxRetries", u64::from(u32::MAX))?
                .filter(|&n| n != 0)
                .unwrap_or(12),
            cert_expiration_warning_threshold: s.duration_or(
                "CertExpirationWarningThreshold",
                Duration::from_secs(7 * 24 * 3600),
            )?,
            tls_handshake_time_shift: s
                .duration("TLSHandshakeTimeShift")?
                .unwrap_or(Duration::ZERO),
            replication_policy: choice(s, "ReplicationPolicy", |p| {
                match p.to_ascii_lowercase().as_str() {
                    "simple" => Ok("simple".to_string()),
                    "consensus" => Ok("consensus".to_string()),
                    _ => Err("simple, consensus"),
                }
            })?,
        })
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![
            ("SendBufferSize", Node::uint(self.send_buffer_size)),
            (
                "ClientCertificate",
                Node::opt_path(self.client_certificate.as_ref()),
            ),
            (
                "ClientPrivateKey",
                Node::opt_path(self.client_private_key.as_ref()),
            ),
            (
                "ListenPort",
                self.listen_port
                    .map_or(Node::Null, |p| Node::Int(i64::from(p))),
            ),
            (
                "ListenAddress",
                self.listen_address.as_ref().map_or(Node::Null, Node::str),
            ),
            (
                "ServerCertificate",
                Node::opt_path(self.server_certificate.as_ref()),
            ),
            (
                "ServerPrivateKey",
                Node::opt_path(self.server_private_key.as_ref()),
            ),
            ("RootCAs", Node::paths(&self.root_cas)),
            ("DialTimeout", Node::duration(self.dial_timeout)),
            ("RPCTimeout", Node::duration(self.rpc_timeout)),
            (
                "ReplicationBufferSize",
                Node::uint(self.replication_buffer_size),
            ),
            (
                "ReplicationPullTimeout",
                Node::duration(self.replication_pull_timeout),
            ),
            (
                "ReplicationRetryTimeout",
                Node::duration(self.replication_retry_timeout),
            ),
            (
                "ReplicationBackgroundRefreshInterval",
                Node::duration(self.replication_background_refresh_interval),
            ),
            (
                "ReplicationMaxRetries",
                Node::uint(self.replication_max_retries),
            ),
            (
                "CertExpirationWarningThreshold",
                Node::duration(self.cert_expiration_warning_threshold),
            ),
            (
                "TLSHandshakeTimeShift",
                Node::duration(self.tls_handshake_time_shift),
            ),
            (
                "ReplicationPolicy",
                self.replication_policy
                    .as_ref()
                    .map_or(Node::Null, Node::str),
            ),
        ])
    }

    pub(crate) fn resolve(&mut self, base: &std::path::Path) {
        for p in self
            .client_certificate
            .iter_mut()
            .chain(self.client_private_key.iter_mut())
            .chain(self.server_certificate.iter_mut())
            .chain(self.server_private_key.iter_mut())
            .chain(self.root_cas.iter_mut())
        {
            crate::config::resolve_path(base, p);
        }
    }
}

/// `General.Profile` (Go pprof server): accepted, not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// `Enabled`.
    pub enabled: bool,
    /// `Address` (default `0.0.0.0:6060`).
    pub address: String,
}

impl Profile {
    fn decode(s: &mut Section<'_>) -> Result<Profile, ConfigError> {
        Ok(Profile {
            enabled: s.bool("Enabled")?,
            address: s.string_or("Address", "0.0.0.0:6060")?,
        })
    }

    fn encode(&self) -> Node {
        map(vec![
            ("Enabled", Node::Bool(self.enabled)),
            ("Address", Node::str(&self.address)),
        ])
    }
}

/// `General.BCCSP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bccsp {
    /// `Default`: `SW` (the only provider korder has) or `PKCS11`.
    pub default: String,
    /// `SW`.
    pub sw: SwOpts,
    /// `PKCS11`: read, not usable.
    pub pkcs11: Pkcs11Opts,
    /// `PLUGIN` (Fabric 1.4): read, not usable; `None` when absent.
    pub plugin: Option<PluginOpts>,
}

/// `General.BCCSP.SW`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwOpts {
    /// `Hash` (default `SHA2`).
    pub hash: String,
    /// `Security` in bits (default 256).
    pub security: u64,
    /// `FileKeyStore.KeyStore`: key directory; unset means `<LocalMSPDir>/keystore`.
    pub key_store: Option<PathBuf>,
}

/// `General.BCCSP.PKCS11`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pkcs11Opts {
    /// `Library`.
    pub library: Option<String>,
    /// `Label`.
    pub label: Option<String>,
    /// `Pin` (a secret: masked in the summary).
    pub pin: Option<String>,
    /// `Hash`.
    pub hash: Option<String>,
    /// `Security`.
    pub security: Option<u64>,
    /// `FileKeyStore.KeyStore`.
    pub key_store: Option<PathBuf>,
    /// `SoftwareVerify`: verify signatures in software.
    pub software_verify: bool,
    /// `Immutable`: keys created in the HSM cannot be changed.
    pub immutable: bool,
    /// `AltID` (Fabric 2.x): the CKA_ID of keys created in the HSM.
    pub alt_id: Option<String>,
    /// `TempKeys` (Fabric 1.4): keys live only for the session.
    pub temp_keys: bool,
    /// `KeyIDs` (Fabric 2.4 and later): `(SKI, ID)` pairs mapping a subject key
    /// identifier to an HSM object id.
    pub key_ids: Vec<(String, String)>,
}

/// `General.BCCSP.PLUGIN` (Fabric 1.4): a crypto provider loaded as a Go plugin.
/// Read, not usable (korder has the SW provider only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginOpts {
    /// `Library`.
    pub library: Option<String>,
    /// `Config`: the plugin's own settings, as `key=value` text of each scalar.
    pub config: Vec<(String, String)>,
}

impl PluginOpts {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<PluginOpts, ConfigError> {
        let library = s.string("Library")?;
        let mut config = Vec::new();
        let mut c = s.section("Config")?;
        for (key, node) in c.take_rest() {
            let path = c.key_path(key);
            config.push((
                key.to_string(),
                scalar_text(node, &path)?.unwrap_or_default(),
            ));
        }
        c.finish()?;
        Ok(PluginOpts { library, config })
    }
}

fn key_store(s: &mut Section<'_>) -> Result<Option<PathBuf>, ConfigError> {
    let mut fks = s.section("FileKeyStore")?;
    let ks = fks.path("KeyStore")?;
    fks.finish()?;
    Ok(ks)
}

/// `PKCS11.KeyIDs`: a list of `{SKI, ID}` mappings.
fn key_ids(s: &mut Section<'_>) -> Result<Vec<(String, String)>, ConfigError> {
    let path = s.key_path("KeyIDs");
    let Some(node) = s.take("KeyIDs") else {
        return Ok(Vec::new());
    };
    let Node::Seq(items) = node else {
        // An override can only say "none".
        if scalar_text(node, &path)?.is_none_or(|t| t.trim().is_empty()) {
            return Ok(Vec::new());
        }
        return Err(value_error(
            node,
            &path,
            "expected a list of SKI/ID mappings",
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        let mut m = Section::new(Some(item), &item_path)?;
        let ski = m.string("SKI")?.unwrap_or_default();
        let id = m.string("ID")?.unwrap_or_default();
        m.finish()?;
        out.push((ski, id));
    }
    Ok(out)
}

fn key_store_node(ks: Option<&PathBuf>) -> Node {
    map(vec![("KeyStore", Node::opt_path(ks))])
}

impl Bccsp {
    fn decode(s: &mut Section<'_>) -> Result<Bccsp, ConfigError> {
        let default = s.string_or("Default", "SW")?;
        let mut sw_s = s.section("SW")?;
        let sw = SwOpts {
            hash: sw_s.string_or("Hash", "SHA2")?,
            security: sw_s.uint("Security", 1024)?.unwrap_or(256),
            key_store: key_store(&mut sw_s)?,
        };
        sw_s.finish()?;
        let mut p = s.section("PKCS11")?;
        let pkcs11 = Pkcs11Opts {
            library: p.string("Library")?,
            label: p.string("Label")?,
            pin: p.string("Pin")?,
            hash: p.string("Hash")?,
            security: p.uint("Security", 1024)?,
            key_store: key_store(&mut p)?,
            software_verify: p.bool("SoftwareVerify")?,
            immutable: p.bool("Immutable")?,
            alt_id: p.string("AltID")?,
            temp_keys: p.bool("TempKeys")?,
            key_ids: key_ids(&mut p)?,
        };
        p.finish()?;
        let plugin = optional_section(s, "PLUGIN", PluginOpts::decode)?;
        Ok(Bccsp {
            default,
            sw,
            pkcs11,
            plugin,
        })
    }

    fn encode(&self) -> Node {
        let opt = |v: &Option<String>| v.as_ref().map_or(Node::Null, Node::str);
        map(vec![
            ("Default", Node::str(&self.default)),
            (
                "SW",
                map(vec![
                    ("Hash", Node::str(&self.sw.hash)),
                    ("Security", Node::uint(self.sw.security)),
                    ("FileKeyStore", key_store_node(self.sw.key_store.as_ref())),
                ]),
            ),
            (
                "PKCS11",
                map(vec![
                    ("Library", opt(&self.pkcs11.library)),
                    ("Label", opt(&self.pkcs11.label)),
                    ("Pin", opt(&self.pkcs11.pin)),
                    ("Hash", opt(&self.pkcs11.hash)),
                    (
                        "Security",
                        self.pkcs11.security.map_or(Node::Null, Node::uint),
                    ),
                    (
                        "FileKeyStore",
                        key_store_node(self.pkcs11.key_store.as_ref()),
                    ),
                    ("SoftwareVerify", Node::Bool(self.pkcs11.software_verify)),
                    ("Immutable", Node::Bool(self.pkcs11.immutable)),
                    ("AltID", opt(&self.pkcs11.alt_id)),
                    ("TempKeys", Node::Bool(self.pkcs11.temp_keys)),
                    (
                        "KeyIDs",
                        Node::Seq(
                            self.pkcs11
                                .key_ids
                                .iter()
                                .map(|(ski, id)| {
                                    map(vec![("SKI", Node::str(ski)), ("ID", Node::str(id))])
                                })
                                .collect(),
                        ),
                    ),
                ]),
            ),
            (
                "PLUGIN",
                self.plugin.as_ref().map_or(Node::Null, |p| {
                    map(vec![
                        ("Library", opt(&p.library)),
                        (
                            "Config",
                            Node::Map(
                                p.config
                                    .iter()
                                    .map(|(k, v)| (k.clone(), Node::str(v)))
                                    .collect(),
                            ),
                        ),
                    ])
                }),
            ),
        ])
    }
}

/// `General.Authentication`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authentication {
    /// `TimeWindow`: how far a Deliver request's timestamp may differ from the
    /// orderer's clock, either way (default 15m).
    pub time_window: Duration,
    /// `NoExpirationChecks`: do not refuse messages signed by expired certificates.
    pub no_expiration_checks: bool,
}

impl Authentication {
    fn decode(s: &mut Section<'_>) -> Result<Authentication, ConfigError> {
        Ok(Authentication {
            time_window: s.duration_or("TimeWindow", Duration::from_secs(15 * 60))?,
            no_expiration_checks: s.bool("NoExpirationChecks")?,
        })
    }

    fn encode(&self) -> Node {
        map(vec![
            ("TimeWindow", Node::duration(self.time_window)),
            ("NoExpirationChecks", Node::Bool(self.no_expiration_checks)),
        ])
    }
}
