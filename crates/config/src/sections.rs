//! The smaller sections: `FileLedger`, `RAMLedger`, `Debug`, `Operations`,
//! `Metrics`, and korder's own `Korder`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigError;
use crate::general::{Tls, choice, map};
use crate::node::{Node, Section};

/// `FileLedger` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLedger {
    /// `Location`: directory of the block store (default
    /// `/var/hyperledger/production/orderer`). Relative paths are relative to the
    /// working directory, as in Fabric.
    pub location: PathBuf,
    /// `Prefix`: Fabric's temporary-directory prefix; accepted, not used.
    pub prefix: String,
}

impl FileLedger {
    pub(crate) const DEFAULT_LOCATION: &str = "/var/hyperledger/production/orderer";

    /// Whether the ledger already holds a channel (an entry under `chains/`), read
    /// without creating anything. Like Fabric, a node with channels starts from its
    /// ledger and never reads the genesis block; an unreadable `chains/` counts as
    /// none (the genesis block is then required, and start-up reports the error).
    pub fn has_channels(&self) -> bool {
        std::fs::read_dir(self.location.join("chains"))
            .is_ok_and(|mut entries| entries.next().is_some())
    }

    pub(crate) fn decode(s: &mut Section<'_>) -> Result<FileLedger, ConfigError> {
        Ok(FileLedger {
            location: s
                .path("Location")?
                .unwrap_or_else(|| Self::DEFAULT_LOCATION.into()),
            prefix: s.string_or("Prefix", "hyperledger-fabric-ordererledger")?,
        })
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![
            ("Location", Node::path(&self.location)),
            ("Prefix", Node::str(&self.prefix)),
        ])
    }
}

/// `RAMLedger` section: accepted, not used (korder has only the file ledger).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RamLedger {
    /// `HistorySize` (default 1000).
    pub history_size: u64,
}

impl RamLedger {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<RamLedger, ConfigError> {
        Ok(RamLedger {
            history_size: s
                .uint("HistorySize", u64::from(u32::MAX))?
                .filter(|&n| n != 0)
                .unwrap_or(1000),
        })
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![("HistorySize", Node::uint(self.history_size))])
    }
}

/// `Debug` section: accepted, not used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Debug {
    /// `BroadcastTraceDir`.
    pub broadcast_trace_dir: Option<PathBuf>,
    /// `DeliverTraceDir`.
    pub deliver_trace_dir: Option<PathBuf>,
}

impl Debug {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<Debug, ConfigError> {
        Ok(Debug {
            broadcast_trace_dir: s.path("BroadcastTraceDir")?,
            deliver_trace_dir: s.path("DeliverTraceDir")?,
        })
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![
            (
                "BroadcastTraceDir",
                Node::opt_path(self.broadcast_trace_dir.as_ref()),
            ),
            (
                "DeliverTraceDir",
                Node::opt_path(self.deliver_trace_dir.as_ref()),
            ),
        ])
    }
}

/// `Operations` section: the HTTP server for `/healthz`, `/metrics`, `/version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operations {
    /// `ListenAddress` as `host:port` (default `127.0.0.1:8443`).
    pub listen_address: String,
    /// `TLS`.
    pub tls: Tls,
}

impl Operations {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<Operations, ConfigError> {
        let listen_address = s.string_or("ListenAddress", "127.0.0.1:8443")?;
        let mut t = s.section("TLS")?;
        let tls = Tls::decode(&mut t)?;
        t.finish()?;
        Ok(Operations {
            listen_address,
            tls,
        })
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![
            ("ListenAddress", Node::str(&self.listen_address)),
            ("TLS", self.tls.encode()),
        ])
    }
}

/// `Admin` section (Fabric 2.3 and later): the HTTP server of the channel
/// participation API, served when the section is present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    /// `ListenAddress` (Fabric's default `127.0.0.1:0`).
    pub listen_address: String,
    /// `TLS`.
    pub tls: Tls,
}

impl Admin {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<Admin, ConfigError> {
        let listen_address = s.string_or("ListenAddress", "127.0.0.1:0")?;
        let mut t = s.section("TLS")?;
        let tls = Tls::decode(&mut t)?;
        t.finish()?;
        Ok(Admin {
            listen_address,
            tls,
        })
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![
            ("ListenAddress", Node::str(&self.listen_address)),
            ("TLS", self.tls.encode()),
        ])
    }
}

/// `ChannelParticipation` section (Fabric 2.2 and later): joining and leaving
/// channels through the `Admin` endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelParticipation {
    /// `Enabled` (Fabric 2.x default false; Fabric 3.x forces it on).
    pub enabled: bool,
    /// `MaxRequestBodySize` in bytes (default 1 MiB; `1 MB` style accepted).
    pub max_request_body_size: u64,
    /// `RemoveStorage` (Fabric 2.2 only): delete a removed channel's ledger; korder
    /// always deletes it, as Fabric 2.3 and later do.
    pub remove_storage: bool,
}

impl ChannelParticipation {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<ChannelParticipation, ConfigError> {
        Ok(ChannelParticipation {
            enabled: s.bool("Enabled")?,
            max_request_body_size: s
                .bytes("MaxRequestBodySize")?
                .filter(|&n| n != 0)
                .unwrap_or(1 << 20),
            remove_storage: s.bool("RemoveStorage")?,
        })
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![
            ("Enabled", Node::Bool(self.enabled)),
            ("MaxRequestBodySize", Node::uint(self.max_request_body_size)),
            ("RemoveStorage", Node::Bool(self.remove_storage)),
        ])
    }
}

/// `Metrics.Provider`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsProvider {
    /// No metrics.
    Disabled,
    /// Prometheus text format on the operations server's `/metrics`.
    Prometheus,
    /// StatsD: pushed to `Metrics.Statsd.Address` every `WriteInterval`.
    Statsd,
}

impl MetricsProvider {
    fn parse(s: &str) -> Result<MetricsProvider, &'static str> {
        match s.to_ascii_lowercase().as_str() {
            "disabled" => Ok(MetricsProvider::Disabled),
            "prometheus" => Ok(MetricsProvider::Prometheus),
            "statsd" => Ok(MetricsProvider::Statsd),
            _ => Err("disabled, prometheus, statsd"),
        }
    }

    /// The word written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsProvider::Disabled => "disabled",
            MetricsProvider::Prometheus => "prometheus",
            MetricsProvider::Statsd => "statsd",
        }
    }
}

/// `Metrics` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// `Provider` (default `disabled`).
    pub provider: MetricsProvider,
    /// `Statsd`.
    pub statsd: Statsd,
}

/// `Metrics.Statsd`: where the `statsd` provider sends metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statsd {
    /// `Network`: `udp` or `tcp` (default `udp`).
    pub network: String,
    /// `Address` (default `127.0.0.1:8125`).
    pub address: String,
    /// `WriteInterval` (default 30s).
    pub write_interval: Duration,
    /// `Prefix`.
    pub prefix: String,
}

impl Statsd {
    /// Whether `Network` names a stream (`tcp`, `tcp4`, `tcp6`: true) or datagrams
    /// (`udp`, `udp4`, `udp6`: false); `None` for anything else.
    pub fn stream(&self) -> Option<bool> {
        match self.network.as_str() {
            "udp" | "udp4" | "udp6" => Some(false),
            "tcp" | "tcp4" | "tcp6" => Some(true),
            _ => None,
        }
    }
}

impl Metrics {
    pub(crate) fn decode(s: &mut Section<'_>) -> Result<Metrics, ConfigError> {
        let provider =
            choice(s, "Provider", MetricsProvider::parse)?.unwrap_or(MetricsProvider::Disabled);
        let mut st = s.section("Statsd")?;
        let statsd = Statsd {
            network: st.string_or("Network", "udp")?,
            address: st.string_or("Address", "127.0.0.1:8125")?,
            write_interval: st.duration_or("WriteInterval", Duration::from_secs(30))?,
            prefix: st.string("Prefix")?.unwrap_or_default(),
        };
        st.finish()?;
        Ok(Metrics { provider, statsd })
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![
            ("Provider", Node::str(self.provider.as_str())),
            (
                "Statsd",
                map(vec![
                    ("Network", Node::str(&self.statsd.network)),
                    ("Address", Node::str(&self.statsd.address)),
                    ("WriteInterval", Node::duration(self.statsd.write_interval)),
                    ("Prefix", Node::str(&self.statsd.prefix)),
                ]),
            ),
        ])
    }
}

/// `Korder.LogBackend`: which log orders a channel's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogBackend {
    /// Follow the channel's `ConsensusType`: `kafka` ⇒ Kafka, `solo` ⇒ embedded;
    /// any other type (e.g. `etcdraft` after a migration) is refused.
    Auto,
    /// Always the embedded file log.
    Embedded,
    /// Always Kafka (the channel config must then list brokers).
    Kafka,
}

/// `Korder.BlockMetadata`: which Fabric generation's block metadata layout korder
/// writes on channels whose orderer capabilities leave the choice open (those with
/// `V2_0` always get the 2.x layout: only 2.x nodes can share them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BlockMetadata {
    /// Fabric 2.x: the ORDERER slot stays empty; the consenter metadata is only in
    /// the SIGNATURES value.
    #[default]
    Fabric2,
    /// Fabric 1.4: the consenter metadata is in the ORDERER slot too.
    Fabric14,
}

impl BlockMetadata {
    fn parse(s: &str) -> Result<BlockMetadata, &'static str> {
        match s.to_ascii_lowercase().as_str() {
            "fabric2" => Ok(BlockMetadata::Fabric2),
            "fabric1.4" => Ok(BlockMetadata::Fabric14),
            _ => Err("fabric2, fabric1.4"),
        }
    }

    /// The word written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockMetadata::Fabric2 => "fabric2",
            BlockMetadata::Fabric14 => "fabric1.4",
        }
    }
}

/// The log a channel actually uses, once [`LogBackend::resolve`] has looked at its
/// consensus type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolvedLog {
    /// The embedded file log.
    Embedded,
    /// A Kafka topic.
    Kafka,
}

impl LogBackend {
    fn parse(s: &str) -> Result<LogBackend, &'static str> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(LogBackend::Auto),
            "embedded" => Ok(LogBackend::Embedded),
            "kafka" => Ok(LogBackend::Kafka),
            _ => Err("auto, embedded, kafka"),
        }
    }

    /// The word written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            LogBackend::Auto => "auto",
            LogBackend::Embedded => "embedded",
            LogBackend::Kafka => "kafka",
        }
    }

    /// The log for `channel`, whose consensus type is `consensus_type`. In `auto`
    /// mode only `kafka` (Kafka) and `solo` (embedded log) are run; any other type,
    /// such as `etcdraft` after a Kafka-to-Raft migration, is refused rather than
    /// silently ordered on the embedded log. An explicit `embedded` or `kafka`
    /// setting applies to every channel whatever its type.
    pub fn resolve_channel(
        self,
        channel: &str,
        consensus_type: &str,
    ) -> Result<ResolvedLog, UnsupportedConsensusType> {
        match self {
            LogBackend::Auto
                if !consensus_type.eq_ignore_ascii_case("kafka")
                    && !consensus_type.eq_ignore_ascii_case("solo") =>
            {
                Err(UnsupportedConsensusType {
                    channel: channel.to_owned(),
                    consensus_type: consensus_type.to_owned(),
                })
            }
            LogBackend::Auto if consensus_type.eq_ignore_ascii_case("kafka") => {
                Ok(ResolvedLog::Kafka)
            }
            LogBackend::Auto | LogBackend::Embedded => Ok(ResolvedLog::Embedded),
            LogBackend::Kafka => Ok(ResolvedLog::Kafka),
        }
    }
}

/// A channel whose consensus type korder does not run (see
/// [`LogBackend::resolve_channel`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "channel {channel} uses consensus type {consensus_type}, which korder does not run; korder orders channels of type kafka (Kafka) and solo (embedded log)"
)]
pub struct UnsupportedConsensusType {
    /// The channel.
    pub channel: String,
    /// Its `/Channel/Orderer/ConsensusType` type.
    pub consensus_type: String,
}

/// `Korder` section: settings only korder has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Korder {
    /// `LogBackend` (default `auto`).
    pub log_backend: LogBackend,
    /// `BlockMetadata` (default `fabric2`): the metadata layout of the blocks of
    /// channels whose orderer capabilities do not include `V2_0`.
    pub block_metadata: BlockMetadata,
    /// `EmbeddedLog.Dir`: root of the embedded log (one sub-directory per channel);
    /// unset means `<FileLedger.Location>/log`.
    pub embedded_log_dir: Option<PathBuf>,
    /// `EmbeddedLog.SegmentBytes`: size at which a log segment file is closed and a
    /// new one started (default 64 MiB).
    pub embedded_log_segment_bytes: u64,
    /// `MaxInFlightBlocks`: blocks cut but not yet written to the ledger, per
    /// channel, before the chain stops reading its log (default 16).
    pub max_in_flight_blocks: u32,
    /// `MaxConnections`: gRPC connections open at once (default 4096).
    pub max_connections: u32,
    /// `MaxConnectionsPerAddress`: gRPC connections open at once from one client
    /// IP address (default 1024).
    pub max_connections_per_address: u32,
    /// `MaxConcurrentStreams`: HTTP/2 streams open at once on one connection
    /// (default 1024).
    pub max_concurrent_streams: u32,

    /// `EarlyCut`: the early-cut horizon (default `0s`, off). A pending batch that,
    /// at a check made every `EarlyCut / 20`, is filling too slowly to be full
    /// `EarlyCut` after its first envelope is cut at once (by a TIMETOCUT through
    /// the log, so every node cuts the same block); any batch is cut by then.
    pub early_cut: Duration,

    /// `ShutdownGracePeriod`: how long SIGTERM/SIGINT waits for open streams to end
    /// and the blocks in flight to be written before the process exits anyway
    /// (default 3s).
    pub shutdown_grace_period: Duration,
}

impl Korder {
    /// Default `EmbeddedLog.SegmentBytes`.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
    /// Smallest `EmbeddedLog.SegmentBytes` accepted.
    pub const MIN_SEGMENT_BYTES: u64 = 1 << 20;
    /// Largest `EmbeddedLog.SegmentBytes` accepted.
    pub const MAX_SEGMENT_BYTES: u64 = 16 << 30;
    /// Largest `MaxInFlightBlocks` accepted.
    pub const MAX_IN_FLIGHT_BLOCKS: u32 = 4096;
    /// Default `MaxConnections`.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
    /// Default `MaxConnectionsPerAddress`.
    pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: u32 = 1024;
    /// Default `MaxConcurrentStreams`.
    pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;

    /// Default `ShutdownGracePeriod`.
    pub const DEFAULT_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(3);
    /// Shortest `EarlyCut` accepted (other than 0s, off): checks at least 1 ms apart.
    pub const MIN_EARLY_CUT: Duration = Duration::from_millis(20);

    /// Largest `ShutdownGracePeriod` accepted.
    pub const MAX_SHUTDOWN_GRACE_PERIOD: Duration = Duration::from_secs(600);

    pub(crate) fn decode(s: &mut Section<'_>) -> Result<Korder, ConfigError> {
        let log_backend = choice(s, "LogBackend", LogBackend::parse)?.unwrap_or(LogBackend::Auto);
        let block_metadata =
            choice(s, "BlockMetadata", BlockMetadata::parse)?.unwrap_or(BlockMetadata::Fabric2);
        let mut el = s.section("EmbeddedLog")?;
        let embedded_log_dir = el.path("Dir")?;
        let embedded_log_segment_bytes = el
            .bytes("SegmentBytes")?
            .filter(|&n| n != 0)
            .unwrap_or(Self::DEFAULT_SEGMENT_BYTES);
        el.finish()?;
        let max_in_flight_blocks = s
            .uint("MaxInFlightBlocks", u64::from(u32::MAX))?
            .filter(|&n| n != 0)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(16);
        let mut limit = |key: &str, default: u32| -> Result<u32, ConfigError> {
            Ok(s.uint(key, u64::from(u32::MAX))?
                .filter(|&n| n != 0)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(default))
        };
        let max_connections = limit("MaxConnections", Self::DEFAULT_MAX_CONNECTIONS)?;
        let max_connections_per_address = limit(
            "MaxConnectionsPerAddress",
            Self::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
        )?;
        let max_concurrent_streams =
            limit("MaxConcurrentStreams", Self::DEFAULT_MAX_CONCURRENT_STREAMS)?;

        let early_cut = s.duration_or("EarlyCut", Duration::ZERO)?;
        let shutdown_grace_period =
            s.duration_or("ShutdownGracePeriod", Self::DEFAULT_SHUTDOWN_GRACE_PERIOD)?;
        Ok(Korder {
            log_backend,
            block_metadata,
            embedded_log_dir,
            embedded_log_segment_bytes,
            max_in_flight_blocks,
            max_connections,
            max_connections_per_address,
            max_concurrent_streams,
            early_cut,

            shutdown_grace_period,
        })
    }

    pub(crate) fn encode(&self) -> Node {
        map(vec![
            ("LogBackend", Node::str(self.log_backend.as_str())),
            ("BlockMetadata", Node::str(self.block_metadata.as_str())),
            (
                "EmbeddedLog",
                map(vec![
                    ("Dir", Node::opt_path(self.embedded_log_dir.as_ref())),
                    ("SegmentBytes", Node::uint(self.embedded_log_segment_bytes)),
                ]),
            ),
            ("MaxInFlightBlocks", Node::uint(self.max_in_flight_blocks)),
            ("MaxConnections", Node::uint(self.max_connections)),
            (
                "MaxConnectionsPerAddress",
                Node::uint(self.max_connections_per_address),
            ),
            (
                "MaxConcurrentStreams",
                Node::uint(self.max_concurrent_streams),
            ),
            ("EarlyCut", Node::duration(self.early_cut)),
            (
                "ShutdownGracePeriod",
                Node::duration(self.shutdown_grace_period),
            ),
        ])
    }

    /// The embedded log's root directory.
    pub fn embedded_log_dir(&self, file_ledger: &FileLedger) -> PathBuf {
        self.embedded_log_dir
            .clone()
            .unwrap_or_else(|| file_ledger.location.join("log"))
    }
}

/// Resolve every relative path of the Operations TLS setting.
pub(crate) fn resolve_operations(ops: &mut Operations, base: &Path) {
    ops.tls.resolve(base);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In auto mode kafka and solo select their logs and any other type is refused by name.
    #[test]
    fn auto_refuses_types_korder_does_not_run() {
        let auto = LogBackend::Auto;
        assert_eq!(auto.resolve_channel("ch", "kafka"), Ok(ResolvedLog::Kafka));
        assert_eq!(auto.resolve_channel("ch", "Kafka"), Ok(ResolvedLog::Kafka));
        assert_eq!(
            auto.resolve_channel("ch", "solo"),
            Ok(ResolvedLog::Embedded)
        );
        let err = auto.resolve_channel("mychannel", "etcdraft").unwrap_err();
        assert_eq!(
            err.to_string(),
            "channel mychannel uses consensus type etcdraft, which korder does not run; korder orders channels of type kafka (Kafka) and solo (embedded log)"
        );
        assert!(auto.resolve_channel("ch", "").is_err());
        assert!(auto.resolve_channel("ch", "BFT").is_err());
    }

    /// An explicit backend applies to every channel, whatever its consensus type.
    #[test]
    fn explicit_backends_are_kept() {
        for ty in ["kafka", "solo", "etcdraft"] {
            assert_eq!(
                LogBackend::Embedded.resolve_channel("ch", ty),
                Ok(ResolvedLog::Embedded)
            );
            assert_eq!(
                LogBackend::Kafka.resolve_channel("ch", ty),
                Ok(ResolvedLog::Kafka)
            );
        }
    }
}
