//! The whole configuration: loading, environment overrides, validation, summary and
//! writing back as YAML.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::duration::format_duration;
use crate::error::ConfigError;
use crate::general::optional_section;
use crate::general::{Bootstrap, BootstrapMethod, GenesisMethod, Tls};
use crate::kafka::{Kafka, PEM_KEYS, PemSource};
use crate::node::{Node, Section, value_error};
use crate::sections::{
    Admin, ChannelParticipation, Debug, FileLedger, Korder, Metrics, MetricsProvider, Operations,
    RamLedger, resolve_operations,
};
use crate::{General, general::map};

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "ORDERER_";

/// The orderer's local configuration, section by section as in Fabric's
/// `orderer.yaml`, plus korder's own `Korder` section.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `General`.
    pub general: General,
    /// `FileLedger`.
    pub file_ledger: FileLedger,
    /// `RAMLedger` (accepted, not used).
    pub ram_ledger: RamLedger,
    /// `Kafka`.
    pub kafka: Kafka,
    /// `Debug` (accepted, not used).
    pub debug: Debug,
    /// `Consensus`: opaque settings of a consensus plugin; a Kafka orderer has none,
    /// so korder keeps them only to write them back.
    pub consensus: BTreeMap<String, String>,
    /// `Operations`.
    pub operations: Operations,
    /// `Metrics`.
    pub metrics: Metrics,
    /// `Admin` (Fabric 2.3 and later): the admin endpoint, served when present; `None` when
    /// absent.
    pub admin: Option<Admin>,
    /// `ChannelParticipation` (Fabric 2.2 and later): the API on the admin
    /// endpoint; `None` when absent (the API is then off).
    pub channel_participation: Option<ChannelParticipation>,
    /// `Korder`.
    pub korder: Korder,
}

impl Default for Config {
    /// Fabric's defaults for every key (the values used when a key is absent), with
    /// korder's defaults for the `Korder` section. Paths stay relative.
    fn default() -> Config {
        match Config::decode(&Node::Null) {
            Ok(config) => config,
            Err(e) => panic!("the built-in defaults must decode: {e}"),
        }
    }
}

/// What `decode` gives for an empty section: every key at its default.
fn defaults_of<T>(decode: fn(&mut Section<'_>) -> Result<T, ConfigError>) -> T {
    let decoded = Section::new(None, "").and_then(|mut s| decode(&mut s));
    match decoded {
        Ok(value) => value,
        Err(e) => panic!("the built-in defaults must decode: {e}"),
    }
}

/// The `ORDERER_*` variables of this process, for [`Config::load`].
/// Variables whose name or value is not valid Unicode are skipped.
pub fn env_from_process() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

/// Make a relative path relative to `base` (the configuration file's directory).
pub(crate) fn resolve_path(base: &Path, path: &mut PathBuf) {
    if path.is_relative() && !path.as_os_str().is_empty() && !base.as_os_str().is_empty() {
        *path = base.join(&*path);
    }
}

impl Config {
    /// Read `path`, apply the `ORDERER_*` overrides found in `env` (other variables
    /// are ignored), fill Fabric's defaults for unset or zero values and resolve
    /// relative file paths against the file's directory. Does not check files or
    /// limits: call [`Config::validate`] for that.
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        Config::parse(&text, path, Some(base), env)
    }

    /// Like [`Config::load`] for YAML text; relative file paths are resolved against
    /// `base_dir` when given.
    pub fn from_yaml_str(
        text: &str,
        base_dir: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("<string>"), base_dir, env)
    }

    fn parse(
        text: &str,
        origin: &Path,
        base_dir: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut tree = if text.trim().is_empty() {
            Node::Null
        } else {
            serde_saphyr::from_str::<Node>(text).map_err(|e| ConfigError::Yaml {
                path: origin.to_path_buf(),
                message: e.to_string(),
            })?
        };
        if !matches!(tree, Node::Map(_) | Node::Null) {
            return Err(ConfigError::Yaml {
                path: origin.to_path_buf(),
                message: "the top level must be a mapping of sections".to_string(),
            });
        }
        apply_env(&mut tree, env)?;
        let mut config = Config::decode(&tree)?;
        if let Some(base) = base_dir {
            config.resolve_paths(base);
        }
        Ok(config)
    }

    fn decode(tree: &Node) -> Result<Config, ConfigError> {
        let mut root = Section::new(Some(tree), "")?;
        let mut s = root.section("General")?;
        let general = General::decode(&mut s)?;
        s.finish()?;
        let mut s = root.section("FileLedger")?;
        let file_ledger = FileLedger::decode(&mut s)?;
        s.finish()?;
        let mut s = root.section("RAMLedger")?;
        let ram_ledger = RamLedger::decode(&mut s)?;
        s.finish()?;
        let mut s = root.section("Kafka")?;
        let kafka = Kafka::decode(&mut s)?;
        s.finish()?;
        let mut s = root.section("Debug")?;
        let debug = Debug::decode(&mut s)?;
        s.finish()?;
        let mut s = root.section("Consensus")?;
        let mut consensus = BTreeMap::new();
        for (key, node) in s.take_rest() {
            let path = format!("Consensus.{key}");
            let value = match node {
                Node::Null => String::new(),
                Node::Str(t) | Node::Env { value: t, .. } => t.clone(),
                Node::Bool(b) => b.to_string(),
                Node::Int(i) => i.to_string(),
                Node::Float(f) => f.to_string(),
                Node::Seq(_) | Node::Map(_) => {
                    return Err(value_error(
                        node,
                        &path,
                        "only single values are supported in Consensus",
                    ));
                }
            };
            consensus.insert(key.to_string(), value);
        }
        s.finish()?;
        let mut s = root.section("Operations")?;
        let operations = Operations::decode(&mut s)?;
        s.finish()?;
        let mut s = root.section("Metrics")?;
        let metrics = Metrics::decode(&mut s)?;
        s.finish()?;
        let admin = optional_section(&mut root, "Admin", Admin::decode)?;
        let channel_participation = optional_section(
            &mut root,
            "ChannelParticipation",
            ChannelParticipation::decode,
        )?;
        let mut s = root.section("Korder")?;
        let korder = Korder::decode(&mut s)?;
        s.finish()?;
        root.finish()?;
        Ok(Config {
            general,
            file_ledger,
            ram_ledger,
            kafka,
            debug,
            consensus,
            operations,
            metrics,
            admin,
            channel_participation,
            korder,
        })
    }

    fn encode(&self) -> Node {
        map(vec![
            ("General", self.general.encode()),
            ("FileLedger", self.file_ledger.encode()),
            ("RAMLedger", self.ram_ledger.encode()),
            ("Kafka", self.kafka.encode()),
            ("Debug", self.debug.encode()),
            (
                "Consensus",
                Node::Map(
                    self.consensus
                        .iter()
                        .map(|(k, v)| (k.clone(), Node::str(v)))
                        .collect(),
                ),
            ),
            ("Operations", self.operations.encode()),
            ("Metrics", self.metrics.encode()),
            (
                "Admin",
                self.admin.as_ref().map_or(Node::Null, Admin::encode),
            ),
            (
                "ChannelParticipation",
                self.channel_participation
                    .as_ref()
                    .map_or(Node::Null, ChannelParticipation::encode),
            ),
            ("Korder", self.korder.encode()),
        ])
        .without_null(&["Admin", "ChannelParticipation"])
    }

    /// Every key korder knows, each with its default: the configuration with every
    /// optional section present. The environment overrides are derived from it.
    fn schema() -> Node {
        use crate::general::{Backoff, Cluster, PluginOpts, Throttling};
        let mut c = Config::default();
        c.general.backoff = Some(defaults_of(Backoff::decode));
        c.general.throttling = Some(defaults_of(Throttling::decode));
        c.general.cluster = Some(defaults_of(Cluster::decode));
        c.general.bccsp.plugin = Some(PluginOpts::default());
        c.admin = Some(defaults_of(Admin::decode));
        c.channel_participation = Some(defaults_of(ChannelParticipation::decode));
        c.encode()
    }

    fn resolve_paths(&mut self, base: &Path) {
        let g = &mut self.general;
        g.tls.resolve(base);
        if let Some(c) = g.cluster.as_mut() {
            c.resolve(base);
        }
        if let Some(a) = self.admin.as_mut() {
            a.tls.resolve(base);
        }
        resolve_path(base, &mut g.genesis_file);
        if let Some(p) = g.bootstrap_file.as_mut() {
            resolve_path(base, p);
        }
        resolve_path(base, &mut g.local_msp_dir);
        for p in g
            .bccsp
            .sw
            .key_store
            .iter_mut()
            .chain(g.bccsp.pkcs11.key_store.iter_mut())
        {
            resolve_path(base, p);
        }
        self.kafka.resolve(base);
        resolve_operations(&mut self.operations, base);
    }

    /// A configuration for a single development node keeping everything under
    /// `data_dir`: ledger in `data_dir/ledger` (embedded log in
    /// `data_dir/ledger/log`), signing identity in `data_dir/msp`, genesis block
    /// read from `data_dir/genesis.block`, gRPC on 127.0.0.1:7050, operations on
    /// 127.0.0.1:8443 with Prometheus metrics, no TLS.
    pub fn default_for_dev(data_dir: &Path) -> Config {
        let mut config = Config::default();
        config.general.genesis_method = GenesisMethod::File;
        config.general.genesis_file = data_dir.join("genesis.block");
        config.general.bootstrap_method = Some(BootstrapMethod::File);
        config.general.local_msp_dir = data_dir.join("msp");
        config.file_ledger.location = data_dir.join("ledger");
        config.metrics.provider = MetricsProvider::Prometheus;
        config
    }

    /// The configuration as an orderer.yaml that [`Config::load`] reads back to an
    /// equal value (every key written, defaults included).
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        let body = serde_saphyr::to_string(&self.encode()).map_err(|e| ConfigError::Serialize {
            message: e.to_string(),
        })?;
        Ok(format!(
            "# korder orderer configuration (Fabric orderer.yaml layout).\n\
             # Every key is described in docs/configuration.md; any key can be\n\
             # overridden by an ORDERER_<SECTION>_<KEY> environment variable.\n{body}"
        ))
    }

    /// Where the embedded log keeps its files.
    pub fn embedded_log_dir(&self) -> PathBuf {
        self.korder.embedded_log_dir(&self.file_ledger)
    }

    /// Check limits and that the files the enabled features need exist. Returns
    /// every problem found, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let g = &self.general;
        if g.ledger_type != "file" {
            problems.push(format!(
                "General.LedgerType: {:?} is not supported (korder has the file ledger only)",
                g.ledger_type
            ));
        }
        if g.listen_address.trim().is_empty() {
            problems.push("General.ListenAddress: must not be empty".to_string());
        }
        if g.listen_port == 0 {
            problems.push("General.ListenPort: must be between 1 and 65535".to_string());
        }
        check_tls(&g.tls, "General.TLS", &mut problems);
        if self.metrics.provider == MetricsProvider::Statsd {
            let st = &self.metrics.statsd;
            if st.stream().is_none() {
                problems.push(format!(
                    "Metrics.Statsd.Network: {:?} is not one of udp, udp4, udp6, tcp, tcp4, tcp6",
                    st.network
                ));
            }
            if st.address.trim().is_empty() {
                problems.push("Metrics.Statsd.Address: must not be empty".to_string());
            }
            if st.write_interval.is_zero() {
                problems.push("Metrics.Statsd.WriteInterval: must be more than 0".to_string());
            }
        }
        for (key, d) in [
            (
                "General.Keepalive.ServerMinInterval",
                g.keepalive.server_min_interval,
            ),
            (
                "General.Keepalive.ServerInterval",
                g.keepalive.server_interval,
            ),
            (
                "General.Keepalive.ServerTimeout",
                g.keepalive.server_timeout,
            ),
            (
                "General.Authentication.TimeWindow",
                g.authentication.time_window,
            ),
        ] {
            if d.is_zero() {
                problems.push(format!("{key}: must be a positive duration"));
            }
        }
        match g.bootstrap() {
            // The genesis block is read only to create an empty ledger.
            Bootstrap::File(path) if !path.is_file() && !self.file_ledger.has_channels() => {
                problems.push(match (&g.bootstrap_method, &g.bootstrap_file) {
                    (_, Some(_)) => format!(
                        "General.BootstrapFile: genesis block file {} does not exist",
                        path.display()
                    ),
                    // Fabric 2.x's keys with an empty BootstrapFile: Fabric falls back
                    // to GenesisFile (default `genesisblock`), and so does korder.
                    (Some(_), None) => format!(
                        "General.BootstrapFile: empty, and the fallback General.GenesisFile {} does not exist; set General.BootstrapFile (ORDERER_GENERAL_BOOTSTRAPFILE) to the system channel's genesis block",
                        path.display()
                    ),
                    (None, None) => format!(
                        "General.GenesisFile: genesis block file {} does not exist",
                        path.display()
                    ),
                });
            }
            _ => {}
        }
        if !g.local_msp_dir.is_dir() {
            problems.push(format!(
                "General.LocalMSPDir: directory {} does not exist",
                g.local_msp_dir.display()
            ));
        }
        if g.local_msp_id.trim().is_empty() {
            problems.push("General.LocalMSPID: must not be empty".to_string());
        }
        if !g.bccsp.default.eq_ignore_ascii_case("SW") {
            problems.push(format!(
                "General.BCCSP.Default: {:?} is not supported (korder has the SW provider only)",
                g.bccsp.default
            ));
        }
        self.validate_kafka(&mut problems);
        if host_port(&self.operations.listen_address).is_none() {
            problems.push(format!(
                "Operations.ListenAddress: {:?} is not host:port",
                self.operations.listen_address
            ));
        }
        check_tls(&self.operations.tls, "Operations.TLS", &mut problems);
        let ops_tls = &self.operations.tls;
        if ops_tls.enabled && ops_tls.client_auth_required && ops_tls.client_root_cas.is_empty() {
            problems.push(
                "Operations.TLS.ClientRootCAs: required when Operations.TLS.ClientAuthRequired is true"
                    .to_string(),
            );
        }
        self.validate_fabric_values(&mut problems);
        let k = &self.korder;
        if !(Korder::MIN_SEGMENT_BYTES..=Korder::MAX_SEGMENT_BYTES)
            .contains(&k.embedded_log_segment_bytes)
        {
            problems.push(format!(
                "Korder.EmbeddedLog.SegmentBytes: {} is outside {}..={}",
                k.embedded_log_segment_bytes,
                Korder::MIN_SEGMENT_BYTES,
                Korder::MAX_SEGMENT_BYTES
            ));
        }
        if !(1..=Korder::MAX_IN_FLIGHT_BLOCKS).contains(&k.max_in_flight_blocks) {
            problems.push(format!(
                "Korder.MaxInFlightBlocks: {} is outside 1..={}",
                k.max_in_flight_blocks,
                Korder::MAX_IN_FLIGHT_BLOCKS
            ));
        }
        if !k.early_cut.is_zero() && k.early_cut < Korder::MIN_EARLY_CUT {
            problems.push(format!(
                "Korder.EarlyCut: {:?} is shorter than {:?} (0s turns it off)",
                k.early_cut,
                Korder::MIN_EARLY_CUT
            ));
        }
        if k.shutdown_grace_period > Korder::MAX_SHUTDOWN_GRACE_PERIOD {
            problems.push(format!(
                "Korder.ShutdownGracePeriod: {:?} is longer than {:?}",
                k.shutdown_grace_period,
                Korder::MAX_SHUTDOWN_GRACE_PERIOD
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    fn validate_kafka(&self, problems: &mut Vec<String>) {
        let r = &self.kafka.retry;
        for (key, d) in [
            ("ShortInterval", r.short_interval),
            ("ShortTotal", r.short_total),
            ("LongInterval", r.long_interval),
            ("LongTotal", r.long_total),
            ("NetworkTimeouts.DialTimeout", r.dial_timeout),
            ("NetworkTimeouts.ReadTimeout", r.read_timeout),
            ("NetworkTimeouts.WriteTimeout", r.write_timeout),
            ("Metadata.RetryBackoff", r.metadata_retry_backoff),
            ("Producer.RetryBackoff", r.producer_retry_backoff),
            ("Consumer.RetryBackoff", r.consumer_retry_backoff),
        ] {
            if d.is_zero() {
                problems.push(format!("Kafka.Retry.{key}: must be a positive duration"));
            }
        }
        let rf = self.kafka.topic_replication_factor;
        if rf == 0 || rf > i16::MAX as u16 {
            problems.push(format!(
                "Kafka.Topic.ReplicationFactor: {rf} is outside 1..={}",
                i16::MAX
            ));
        }
        let t = &self.kafka.tls;
        if t.enabled {
            for (key, source) in [
                ("PrivateKey", &t.private_key),
                ("Certificate", &t.certificate),
                ("RootCAs", &t.root_cas),
            ] {
                match source {
                    None => problems.push(format!(
                        "Kafka.TLS.{key}: required when Kafka.TLS.Enabled is true"
                    )),
                    Some(PemSource::File(p)) if !p.is_file() => problems.push(format!(
                        "Kafka.TLS.{key}: file {} does not exist",
                        p.display()
                    )),
                    Some(_) => {}
                }
            }
        }
        let sasl = &self.kafka.sasl_plain;
        if sasl.enabled {
            if sasl.user.is_empty() {
                problems.push(
                    "Kafka.SASLPlain.User: required when Kafka.SASLPlain.Enabled is true"
                        .to_string(),
                );
            }
            if sasl.password.is_empty() {
                problems.push(
                    "Kafka.SASLPlain.Password: required when Kafka.SASLPlain.Enabled is true"
                        .to_string(),
                );
            }
        }
    }

    /// Values of Fabric's keys that korder cannot honour safely: each is refused
    /// with the reason, rather than run in a way the operator did not ask for.
    fn validate_fabric_values(&self, problems: &mut Vec<String>) {
        let shift = "korder checks certificates against the current time only; renew the expired certificates and remove the shift";
        for (key, d) in [
            (
                "General.TLS.TLSHandshakeTimeShift",
                self.general.tls.tls_handshake_time_shift,
            ),
            (
                "Operations.TLS.TLSHandshakeTimeShift",
                self.operations.tls.tls_handshake_time_shift,
            ),
            (
                "Kafka.TLS.TLSHandshakeTimeShift",
                self.kafka.tls.tls_handshake_time_shift,
            ),
        ] {
            if !d.is_zero() {
                problems.push(format!(
                    "{key}: {} is not supported: {shift}",
                    format_duration(d)
                ));
            }
        }
        if let Some(admin) = &self.admin
            && !admin.tls.tls_handshake_time_shift.is_zero()
        {
            problems.push(format!(
                "Admin.TLS.TLSHandshakeTimeShift: {} is not supported: {shift}",
                format_duration(admin.tls.tls_handshake_time_shift)
            ));
        }
        if let Some(admin) = &self.admin
            && admin.tls.enabled
            && !admin.tls.client_auth_required
        {
            problems.push(
                "Admin.TLS.ClientAuthRequired: must be true when Admin.TLS.Enabled is true (as Fabric requires)"
                    .to_string(),
            );
        }
    }

    /// Settings korder accepts without acting on, one start-up line each: Fabric's
    /// sections for Raft/BFT and channel participation (when the file has them) and
    /// values other than the default of keys korder does not use.
    pub fn ignored_settings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let g = &self.general;
        if g.profile.enabled {
            out.push("General.Profile.Enabled: there is no profiling server".to_string());
        }
        if g.cluster.is_some() {
            out.push(
                "General.Cluster: not used by korder yet (Raft/BFT cluster links; korder nodes share the channel's log instead)"
                    .to_string(),
            );
        }
        if g.backoff.is_some() {
            out.push(
                "General.Backoff: not used by korder yet (reconnection backoff of Raft/BFT cluster links)"
                    .to_string(),
            );
        }
        if self.admin.is_none()
            && self
                .channel_participation
                .as_ref()
                .is_some_and(|p| p.enabled)
        {
            out.push(
                "ChannelParticipation.Enabled: the API is served on the Admin endpoint, and the file has no Admin section"
                    .to_string(),
            );
        }
        if self
            .channel_participation
            .as_ref()
            .is_some_and(|p| p.remove_storage)
        {
            out.push(
                "ChannelParticipation.RemoveStorage: a removed channel's ledger is always deleted (as in Fabric 2.3 and later)"
                    .to_string(),
            );
        }
        if self.debug.broadcast_trace_dir.is_some() || self.debug.deliver_trace_dir.is_some() {
            out.push("Debug: request tracing is not implemented".to_string());
        }
        if !self.consensus.is_empty() {
            let keys: Vec<&str> = self.consensus.keys().map(String::as_str).collect();
            out.push(format!(
                "Consensus: {} not used by korder yet (settings of the Raft/BFT consenters)",
                keys.join(", ")
            ));
        }
        if self.kafka.tls.client_auth_required || self.kafka.tls.client_root_cas.is_some() {
            out.push(
                "Kafka.TLS.ClientAuthRequired/ClientRootCAs: not used by a client".to_string(),
            );
        }
        out
    }

    /// One line of the effective settings for the start-up log. Secrets are never
    /// shown: passwords and PINs are masked, PEM material is named by source only.
    pub fn summary(&self) -> String {
        let g = &self.general;
        let on = |b: bool| if b { "on" } else { "off" };
        let d = format_duration;
        let bootstrap = match g.bootstrap() {
            Bootstrap::File(p) => format!("file:{}", p.display()),
            Bootstrap::Provisional {
                profile,
                system_channel,
            } => format!("provisional:{profile}/{system_channel}"),
            Bootstrap::None => "none".to_string(),
        };
        let pem = |s: &Option<PemSource>| match s {
            None => "unset".to_string(),
            Some(PemSource::Inline(_)) => "inline".to_string(),
            Some(PemSource::File(p)) => format!("file:{}", p.display()),
        };
        let r = &self.kafka.retry;
        let sasl = &self.kafka.sasl_plain;
        let mut parts = vec![
            format!("listen={}:{}", g.listen_address, g.listen_port),
            format!("tls={}", on(g.tls.enabled)),
            format!(
                "client_auth={}",
                on(g.tls.enabled && g.tls.client_auth_required)
            ),
            format!(
                "keepalive_min_interval={}",
                d(g.keepalive.server_min_interval)
            ),
            format!("bootstrap={bootstrap}"),
            format!("msp_dir={}", g.local_msp_dir.display()),
            format!("msp_id={}", g.local_msp_id),
            format!("time_window={}", d(g.authentication.time_window)),
            format!(
                "expiration_checks={}",
                on(!g.authentication.no_expiration_checks)
            ),
            format!("ledger={}", self.file_ledger.location.display()),
            format!("log_backend={}", self.korder.log_backend.as_str()),
            format!("embedded_log={}", self.embedded_log_dir().display()),
            format!("segment_bytes={}", self.korder.embedded_log_segment_bytes),
            format!("max_in_flight_blocks={}", self.korder.max_in_flight_blocks),
            format!("early_cut={}", d(self.korder.early_cut)),
            format!(
                "shutdown_grace_period={}",
                d(self.korder.shutdown_grace_period)
            ),
            format!("kafka.version={}", self.kafka.version),
            format!(
                "kafka.retry=short:{}/{},long:{}/{}",
                d(r.short_interval),
                d(r.short_total),
                d(r.long_interval),
                d(r.long_total)
            ),
            format!(
                "kafka.timeouts=dial:{},read:{},write:{}",
                d(r.dial_timeout),
                d(r.read_timeout),
                d(r.write_timeout)
            ),
            format!(
                "kafka.replication_factor={}",
                self.kafka.topic_replication_factor
            ),
            format!("kafka.tls={}", on(self.kafka.tls.enabled)),
        ];
        if self.kafka.tls.enabled {
            parts.push(format!(
                "kafka.tls.key={},cert={},roots={}",
                pem(&self.kafka.tls.private_key),
                pem(&self.kafka.tls.certificate),
                pem(&self.kafka.tls.root_cas)
            ));
        }
        parts.push(format!("kafka.sasl={}", on(sasl.enabled)));
        if sasl.enabled {
            parts.push(format!("kafka.sasl.user={},password=****", sasl.user));
        }
        parts.push(format!(
            "operations={} tls={}",
            self.operations.listen_address,
            on(self.operations.tls.enabled)
        ));
        parts.push(format!("metrics={}", self.metrics.provider.as_str()));
        parts.join(" ")
    }
}

/// Split `host:port` (host may be empty or a bracketed IPv6 address).
fn host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    Some((host, port))
}

fn check_tls(tls: &Tls, prefix: &str, problems: &mut Vec<String>) {
    if !tls.enabled {
        return;
    }
    for (key, value) in [
        ("PrivateKey", &tls.private_key),
        ("Certificate", &tls.certificate),
    ] {
        match value {
            None => problems.push(format!(
                "{prefix}.{key}: required when {prefix}.Enabled is true"
            )),
            Some(p) if !p.is_file() => problems.push(format!(
                "{prefix}.{key}: file {} does not exist",
                p.display()
            )),
            Some(_) => {}
        }
    }
    for (key, list) in [
        ("RootCAs", &tls.root_cas),
        ("ClientRootCAs", &tls.client_root_cas),
    ] {
        for p in list.iter().filter(|p| !p.is_file()) {
            problems.push(format!(
                "{prefix}.{key}: file {} does not exist",
                p.display()
            ));
        }
    }
}

/// Every environment variable name that may override a key, with the key path
/// (canonical spelling) it sets.
fn override_targets(tree: &Node) -> HashMap<String, Vec<String>> {
    let mut leaves = Vec::new();
    Config::schema().leaf_paths(&mut Vec::new(), &mut leaves);
    for key in PEM_KEYS {
        leaves.push(vec![
            "Kafka".into(),
            "TLS".into(),
            key.into(),
            "File".into(),
        ]);
    }
    // The Raft consenter's keys (Fabric 1.4 to 3.x), whether or not the file has them.
    for key in [
        "WALDir",
        "SnapDir",
        "EvictionSuspicion",
        "TickIntervalOverride",
    ] {
        leaves.push(vec!["Consensus".into(), key.into()]);
    }
    if let Some(Node::Map(entries)) = tree.at(&["Consensus"]) {
        for (k, _) in entries {
            leaves.push(vec!["Consensus".into(), k.clone()]);
        }
    }
    leaves
        .into_iter()
        .map(|path| {
            let var = format!("{ENV_PREFIX}{}", path.join("_").to_ascii_uppercase());
            (var, path)
        })
        .collect()
}

/// Write every `ORDERER_*` variable of `env` into the tree; other variables are
/// ignored. A variable naming no key is an error.
fn apply_env(tree: &mut Node, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let mut targets: Option<HashMap<String, Vec<String>>> = None;
    for (var, value) in env.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)) {
        let targets = targets.get_or_insert_with(|| override_targets(tree));
        let Some(path) = targets.get(var) else {
            return Err(ConfigError::UnknownEnvOverride { var: var.clone() });
        };
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        tree.set_path(
            &path,
            Node::Env {
                var: var.clone(),
                value: value.clone(),
            },
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_text(node: &Node) -> String {
        match node {
            Node::Null => String::new(),
            Node::Bool(b) => b.to_string(),
            Node::Int(i) => i.to_string(),
            Node::Float(f) => f.to_string(),
            Node::Str(s) | Node::Env { value: s, .. } => s.clone(),
            Node::Seq(items) => items.iter().map(leaf_text).collect::<Vec<_>>().join(","),
            Node::Map(_) => panic!("a leaf is never a mapping"),
        }
    }

    /// Every key korder knows can be overridden by its ORDERER_ variable, and
    /// overriding each with its own default value gives the defaults (with every
    /// optional section present).
    #[test]
    fn every_written_key_is_overridable() {
        let tree = Config::schema();
        let defaults = Config::decode(&tree).unwrap();
        let targets = override_targets(&Node::Null);
        let mut env = BTreeMap::new();
        // Consensus keys are opaque: setting one adds it.
        for (var, path) in targets.iter().filter(|(_, p)| p[0] != "Consensus") {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            let value = tree.at(&path).map(leaf_text).unwrap_or_default();
            env.insert(var.clone(), value);
        }
        assert!(env.contains_key("ORDERER_KAFKA_RETRY_NETWORKTIMEOUTS_DIALTIMEOUT"));
        assert!(env.contains_key("ORDERER_KAFKA_TLS_PRIVATEKEY_FILE"));
        assert!(env.contains_key("ORDERER_GENERAL_BCCSP_SW_FILEKEYSTORE_KEYSTORE"));
        for var in [
            "ORDERER_ADMIN_LISTENADDRESS",
            "ORDERER_ADMIN_TLS_CLIENTAUTHREQUIRED",
            "ORDERER_CHANNELPARTICIPATION_ENABLED",
            "ORDERER_GENERAL_MAXRECVMSGSIZE",
            "ORDERER_GENERAL_THROTTLING_RATE",
            "ORDERER_GENERAL_BACKOFF_MULTIPLIER",
            "ORDERER_GENERAL_CLUSTER_REPLICATIONPOLICY",
            "ORDERER_GENERAL_TLS_TLSHANDSHAKETIMESHIFT",
            "ORDERER_KAFKA_TLS_TLSHANDSHAKETIMESHIFT",
        ] {
            assert!(env.contains_key(var), "{var} is not an override");
        }
        assert!(env.len() >= 90, "only {} override targets", env.len());
        let loaded = Config::from_yaml_str("", None, &env).unwrap();
        assert_eq!(loaded, defaults);
    }
}
