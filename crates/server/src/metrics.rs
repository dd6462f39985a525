//! The node's metrics under Fabric's names, so existing dashboards keep working.
//!
//! Every metric is declared once, in [`DEFS`], with Fabric's namespace, subsystem,
//! name, label names and StatsD name format. The provider chosen by
//! `Metrics.Provider` decides where recordings go:
//!
//! ```text
//!   call site ── with_label_values(..).inc() ──▶ Prometheus registry ──▶ GET /metrics
//!                                           └──▶ StatsD buffer ──every WriteInterval──▶ UDP/TCP
//!                                           └──▶ nothing (disabled)
//! ```
//!
//! The Prometheus name is `namespace_subsystem_name` (`grpc_server_stream_requests_received`),
//! the StatsD name Fabric's format with the dotted name and the label values
//! (`grpc.server.stream_requests_received.orderer_AtomicBroadcast.Broadcast`).
//! `docs/metrics.md` lists them all.

pub mod statsd;

use std::sync::Arc;

use prometheus::{Encoder, HistogramOpts, Opts, Registry, TextEncoder};

pub use statsd::{Statsd, StatsdSender};

/// How a metric records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; StatsD `|c` with the increase since the last flush.
    Counter,
    /// A value that is set; StatsD `|g`.
    Gauge,
    /// Observations in seconds; Prometheus buckets, StatsD `|ms` per observation.
    Histogram,
}

/// One metric, declared once for every provider.
#[derive(Debug)]
pub struct Def {
    /// Fabric's namespace (`grpc`, `broadcast`, ...).
    pub namespace: &'static str,
    /// Fabric's subsystem (`server`, `kafka`, or empty).
    pub subsystem: &'static str,
    /// Fabric's name inside namespace and subsystem.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The help text.
    pub help: &'static str,
    /// Label names, in the order values are given.
    pub labels: &'static [&'static str],
    /// Fabric's `StatsdFormat`: `%{#fqname}` and `%{label}` placeholders.
    pub statsd_format: &'static str,
    /// Whether Fabric's orderer has this metric (false: korder's own).
    pub fabric: bool,
}

impl Def {
    fn parts(&self) -> impl Iterator<Item = &'static str> {
        [self.namespace, self.subsystem, self.name]
            .into_iter()
            .filter(|p| !p.is_empty())
    }

    /// The Prometheus name: the non-empty parts joined with `_`.
    pub fn prometheus_name(&self) -> String {
        self.parts().collect::<Vec<_>>().join("_")
    }

    /// Fabric's fully qualified name: the non-empty parts joined with `.`.
    pub fn fq_name(&self) -> String {
        self.parts().collect::<Vec<_>>().join(".")
    }

    /// The StatsD name for these label values (given in [`Def::labels`] order), as
    /// Fabric's namer builds it: placeholders replaced, and in label values every
    /// `.`, `|`, `:` and whitespace replaced by `_`.
    pub fn statsd_name(&self, values: &[&str]) -> String {
        let mut out = String::new();
        let mut rest = self.statsd_format;
        while let Some(start) = rest.find("%{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let key = &after[..end];
            match key {
                "#fqname" => out.push_str(&self.fq_name()),
                "#namespace" => out.push_str(self.namespace),
                "#subsystem" => out.push_str(self.subsystem),
                "#name" => out.push_str(self.name),
                label => {
                    let value = self
                        .labels
                        .iter()
                        .position(|l| *l == label)
                        .and_then(|i| values.get(i))
                        .copied()
                        .unwrap_or("unknown");
                    out.extend(value.chars().map(|c| match c {
                        '.' | '|' | ':' => '_',
                        c if c.is_whitespace() => '_',
                        c => c,
                    }));
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

macro_rules! def {
    ($ns:literal, $sub:literal, $name:literal, $kind:ident, $labels:expr, $fmt:expr, $help:literal) => {
        Def {
            namespace: $ns,
            subsystem: $sub,
            name: $name,
            kind: Kind::$kind,
            help: $help,
            labels: $labels,
            statsd_format: $fmt,
            fabric: true,
        }
    };
}

const CTS: &[&str] = &["channel", "type", "status"];
const CH: &[&str] = &["channel"];
const SM: &[&str] = &["service", "method"];
const SMC: &[&str] = &["service", "method", "code"];
const TOPIC: &[&str] = &["topic"];
const BROKER: &[&str] = &["broker_id"];
const FQ_CTS: &str = "%{#fqname}.%{channel}.%{type}.%{status}";
const FQ_CH: &str = "%{#fqname}.%{channel}";
const FQ_SM: &str = "%{#fqname}.%{service}.%{method}";
const FQ_SMC: &str = "%{#fqname}.%{service}.%{method}.%{code}";
const FQ_TOPIC: &str = "%{#fqname}.%{topic}";
const FQ_BROKER: &str = "%{#fqname}.%{broker_id}";

/// Every metric korder records, in the order of the fields of [`Metrics`].
pub static DEFS: &[Def] = &[
    def!(
        "broadcast",
        "",
        "validate_duration",
        Histogram,
        CTS,
        FQ_CTS,
        "The time to validate a transaction in seconds."
    ),
    def!(
        "broadcast",
        "",
        "enqueue_duration",
        Histogram,
        CTS,
        FQ_CTS,
        "The time to enqueue a transaction in seconds."
    ),
    def!(
        "broadcast",
        "",
        "processed_count",
        Counter,
        CTS,
        FQ_CTS,
        "The number of transactions processed."
    ),
    def!(
        "deliver",
        "",
        "streams_opened",
        Counter,
        &[],
        "%{#fqname}",
        "The number of GRPC streams that have been opened for the deliver service."
    ),
    def!(
        "deliver",
        "",
        "streams_closed",
        Counter,
        &[],
        "%{#fqname}",
        "The number of GRPC streams that have been closed for the deliver service."
    ),
    def!(
        "deliver",
        "",
        "requests_received",
        Counter,
        &["channel", "filtered", "data_type"],
        "%{#fqname}.%{channel}.%{filtered}.%{data_type}",
        "The number of deliver requests that have been received."
    ),
    def!(
        "deliver",
        "",
        "requests_completed",
        Counter,
        &["channel", "filtered", "data_type", "success"],
        "%{#fqname}.%{channel}.%{filtered}.%{data_type}.%{success}",
        "The number of deliver requests that have been completed."
    ),
    def!(
        "deliver",
        "",
        "blocks_sent",
        Counter,
        &["channel", "filtered", "data_type"],
        "%{#fqname}.%{channel}.%{filtered}.%{data_type}",
        "The number of blocks sent by the deliver service."
    ),
    def!(
        "blockcutter",
        "",
        "block_fill_duration",
        Histogram,
        CH,
        FQ_CH,
        "The time from first transaction enqueing to the block being cut in seconds."
    ),
    def!(
        "ledger",
        "",
        "blockchain_height",
        Gauge,
        CH,
        FQ_CH,
        "Height of the chain in blocks."
    ),
    def!(
        "ledger",
        "",
        "blockstorage_commit_time",
        Histogram,
        CH,
        FQ_CH,
        "Time taken in seconds for committing the block to storage."
    ),
    def!(
        "consensus",
        "kafka",
        "last_offset_persisted",
        Gauge,
        CH,
        FQ_CH,
        "The offset specified in the block metadata of the most recently committed block."
    ),
    def!(
        "consensus",
        "kafka",
        "batch_size",
        Gauge,
        TOPIC,
        FQ_TOPIC,
        "The mean batch size in bytes sent to topics."
    ),
    def!(
        "consensus",
        "kafka",
        "compression_ratio",
        Gauge,
        TOPIC,
        FQ_TOPIC,
        "The mean compression ratio (as percentage) for topics."
    ),
    def!(
        "consensus",
        "kafka",
        "record_send_rate",
        Gauge,
        TOPIC,
        FQ_TOPIC,
        "The number of records per second sent to topics."
    ),
    def!(
        "consensus",
        "kafka",
        "records_per_request",
        Gauge,
        TOPIC,
        FQ_TOPIC,
        "The mean number of records sent per request to topics."
    ),
    def!(
        "consensus",
        "kafka",
        "incoming_byte_rate",
        Gauge,
        BROKER,
        FQ_BROKER,
        "Bytes/second read off brokers."
    ),
    def!(
        "consensus",
        "kafka",
        "outgoing_byte_rate",
        Gauge,
        BROKER,
        FQ_BROKER,
        "Bytes/second written to brokers."
    ),
    def!(
        "consensus",
        "kafka",
        "request_latency",
        Gauge,
        BROKER,
        FQ_BROKER,
        "The mean request latency in ms to brokers."
    ),
    def!(
        "consensus",
        "kafka",
        "request_rate",
        Gauge,
        BROKER,
        FQ_BROKER,
        "Requests/second sent to brokers."
    ),
    def!(
        "consensus",
        "kafka",
        "request_size",
        Gauge,
        BROKER,
        FQ_BROKER,
        "The mean request size in bytes to brokers."
    ),
    def!(
        "consensus",
        "kafka",
        "response_rate",
        Gauge,
        BROKER,
        FQ_BROKER,
        "Requests/second sent to brokers."
    ),
    def!(
        "consensus",
        "kafka",
        "response_size",
        Gauge,
        BROKER,
        FQ_BROKER,
        "The mean response size in bytes from brokers."
    ),
    def!(
        "grpc",
        "server",
        "unary_requests_received",
        Counter,
        SM,
        FQ_SM,
        "The number of unary requests received."
    ),
    def!(
        "grpc",
        "server",
        "unary_requests_completed",
        Counter,
        SMC,
        FQ_SMC,
        "The number of unary requests completed."
    ),
    def!(
        "grpc",
        "server",
        "unary_request_duration",
        Histogram,
        SMC,
        FQ_SMC,
        "The time to complete a unary request."
    ),
    def!(
        "grpc",
        "server",
        "stream_requests_received",
        Counter,
        SM,
        FQ_SM,
        "The number of stream requests received."
    ),
    def!(
        "grpc",
        "server",
        "stream_requests_completed",
        Counter,
        SMC,
        FQ_SMC,
        "The number of stream requests completed."
    ),
    def!(
        "grpc",
        "server",
        "stream_request_duration",
        Histogram,
        SMC,
        FQ_SMC,
        "The time to complete a stream request."
    ),
    def!(
        "grpc",
        "server",
        "stream_messages_received",
        Counter,
        SM,
        FQ_SM,
        "The number of stream messages received."
    ),
    def!(
        "grpc",
        "server",
        "stream_messages_sent",
        Counter,
        SM,
        FQ_SM,
        "The number of stream messages sent."
    ),
    def!(
        "grpc",
        "comm",
        "conn_opened",
        Counter,
        &[],
        "%{#fqname}",
        "gRPC connections opened. Open minus closed is the active number of connections."
    ),
    def!(
        "grpc",
        "comm",
        "conn_closed",
        Counter,
        &[],
        "%{#fqname}",
        "gRPC connections closed. Open minus closed is the active number of connections."
    ),
    def!(
        "logging",
        "",
        "entries_checked",
        Counter,
        &["level"],
        "%{#fqname}.%{level}",
        "Number of log entries checked against the active logging level"
    ),
    def!(
        "logging",
        "",
        "entries_written",
        Counter,
        &["level"],
        "%{#fqname}.%{level}",
        "Number of log entries that are written"
    ),
    def!(
        "",
        "",
        "fabric_version",
        Gauge,
        &["version"],
        "%{#fqname}.%{version}",
        "The active version of Fabric."
    ),
    def!(
        "participation",
        "",
        "status",
        Gauge,
        CH,
        FQ_CH,
        "The channel participation status of the node: 0 if inactive, 1 if active, 2 if onboarding, 3 if failed."
    ),
    def!(
        "participation",
        "",
        "consensus_relation",
        Gauge,
        CH,
        FQ_CH,
        "The channel participation consensus relation of the node: 0 if other, 1 if consenter, 2 if follower, 3 if config-tracker."
    ),
    Def {
        fabric: false,
        ..def!(
            "korder",
            "embedded_log",
            "bytes",
            Gauge,
            CH,
            FQ_CH,
            "Bytes in the segment files of a channel's embedded log."
        )
    },
    Def {
        fabric: false,
        ..def!(
            "korder",
            "embedded_log",
            "segments",
            Gauge,
            CH,
            FQ_CH,
            "Segment files of a channel's embedded log."
        )
    },
    Def {
        fabric: false,
        ..def!(
            "korder",
            "catchup",
            "blocks_pulled",
            Counter,
            CH,
            FQ_CH,
            "Blocks pulled from other orderers, verified and handed to the ledger."
        )
    },
    Def {
        fabric: false,
        ..def!(
            "korder",
            "catchup",
            "blocks_refused",
            Counter,
            CH,
            FQ_CH,
            "Blocks pulled from other orderers that failed verification and were dropped."
        )
    },
];

/// Where recordings go (`Metrics.Provider`).
#[derive(Clone, Debug)]
pub enum Provider {
    /// Nowhere.
    Disabled,
    /// A Prometheus registry, rendered by [`Metrics::render`].
    Prometheus,
    /// A StatsD buffer with this prefix (a `.` is added when it lacks one), sent by
    /// a [`StatsdSender`].
    Statsd {
        /// `Metrics.Statsd.Prefix`.
        prefix: String,
    },
}

#[derive(Clone, Debug)]
enum Sink {
    Off,
    Counter(prometheus::IntCounterVec),
    Gauge(prometheus::GaugeVec),
    Histogram(prometheus::HistogramVec),
    Statsd(Arc<Statsd>),
}

/// One declared metric bound to the provider.
#[derive(Clone, Debug)]
pub struct Metric {
    def: &'static Def,
    sink: Sink,
}

/// One series of a [`Metric`]: the metric with its label values.
#[derive(Clone, Debug)]
pub enum Series {
    /// Recording is off.
    Off,
    /// A Prometheus counter.
    Counter(prometheus::IntCounter),
    /// A Prometheus gauge.
    Gauge(prometheus::Gauge),
    /// A Prometheus histogram.
    Histogram(prometheus::Histogram),
    /// A StatsD name (prefix included) in the buffer.
    Statsd(Arc<Statsd>, Kind, String),
}

impl Metric {
    fn new(
        def: &'static Def,
        provider: &Provider,
        registry: &Registry,
        statsd: Option<&Arc<Statsd>>,
    ) -> prometheus::Result<Metric> {
        let sink = match provider {
            Provider::Disabled => Sink::Off,
            Provider::Statsd { .. } => statsd.map_or(Sink::Off, |s| Sink::Statsd(s.clone())),
            Provider::Prometheus => {
                let name = def.prometheus_name();
                let opts = Opts::new(name.clone(), def.help);
                let sink = match def.kind {
                    Kind::Counter => {
                        Sink::Counter(prometheus::IntCounterVec::new(opts, def.labels)?)
                    }
                    Kind::Gauge => Sink::Gauge(prometheus::GaugeVec::new(opts, def.labels)?),
                    Kind::Histogram => Sink::Histogram(prometheus::HistogramVec::new(
                        HistogramOpts::new(name, def.help),
                        def.labels,
                    )?),
                };
                match &sink {
                    Sink::Counter(c) => registry.register(Box::new(c.clone()))?,
                    Sink::Gauge(g) => registry.register(Box::new(g.clone()))?,
                    Sink::Histogram(h) => registry.register(Box::new(h.clone()))?,
                    Sink::Off | Sink::Statsd(_) => {}
                }
                sink
            }
        };
        Ok(Metric { def, sink })
    }

    /// The declaration.
    pub fn def(&self) -> &'static Def {
        self.def
    }

    /// The series with these label values, in [`Def::labels`] order.
    pub fn with_label_values(&self, values: &[&str]) -> Series {
        debug_assert_eq!(values.len(), self.def.labels.len(), "{}", self.def.name);
        if values.len() != self.def.labels.len() {
            return Series::Off;
        }
        match &self.sink {
            Sink::Off => Series::Off,
            Sink::Counter(c) => Series::Counter(c.with_label_values(values)),
            Sink::Gauge(g) => Series::Gauge(g.with_label_values(values)),
            Sink::Histogram(h) => Series::Histogram(h.with_label_values(values)),
            Sink::Statsd(s) => {
                Series::Statsd(s.clone(), self.def.kind, self.def.statsd_name(values))
            }
        }
    }

    /// Adds one to a counter without labels.
    pub fn inc(&self) {
        self.with_label_values(&[]).inc();
    }
}

impl Series {
    /// Adds one (counters).
    pub fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `n` (counters).
    pub fn inc_by(&self, n: u64) {
        match self {
            Series::Counter(c) => c.inc_by(n),
            Series::Statsd(s, Kind::Counter, name) => s.count(name, n as f64),
            _ => debug_assert!(matches!(self, Series::Off), "inc on a non-counter"),
        }
    }

    /// Sets an integer value (gauges).
    pub fn set(&self, v: i64) {
        self.set_f64(v as f64);
    }

    /// Sets a value (gauges).
    pub fn set_f64(&self, v: f64) {
        match self {
            Series::Gauge(g) => g.set(v),
            Series::Statsd(s, Kind::Gauge, name) => s.gauge(name, v),
            _ => debug_assert!(matches!(self, Series::Off), "set on a non-gauge"),
        }
    }

    /// Records one observation in seconds (histograms).
    pub fn observe(&self, seconds: f64) {
        match self {
            Series::Histogram(h) => h.observe(seconds),
            Series::Statsd(s, Kind::Histogram, name) => s.timing(name, seconds),
            _ => debug_assert!(matches!(self, Series::Off), "observe on a non-histogram"),
        }
    }
}

/// Every metric the node records, bound to one provider.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Option<Registry>,
    statsd: Option<Arc<Statsd>>,
    pub broadcast_validate_duration: Metric,
    pub broadcast_enqueue_duration: Metric,
    pub broadcast_processed_count: Metric,
    pub deliver_streams_opened: Metric,
    pub deliver_streams_closed: Metric,
    pub deliver_requests_received: Metric,
    pub deliver_requests_completed: Metric,
    pub deliver_blocks_sent: Metric,
    pub block_fill_duration: Metric,
    pub ledger_height: Metric,
    pub ledger_commit_time: Metric,
    pub kafka_last_offset_persisted: Metric,
    pub kafka_batch_size: Metric,
    pub kafka_compression_ratio: Metric,
    pub kafka_record_send_rate: Metric,
    pub kafka_records_per_request: Metric,
    pub kafka_incoming_byte_rate: Metric,
    pub kafka_outgoing_byte_rate: Metric,
    pub kafka_request_latency: Metric,
    pub kafka_request_rate: Metric,
    pub kafka_request_size: Metric,
    pub kafka_response_rate: Metric,
    pub kafka_response_size: Metric,
    pub grpc_unary_received: Metric,
    pub grpc_unary_completed: Metric,
    pub grpc_unary_duration: Metric,
    pub grpc_stream_received: Metric,
    pub grpc_stream_completed: Metric,
    pub grpc_stream_duration: Metric,
    pub grpc_stream_messages_received: Metric,
    pub grpc_stream_messages_sent: Metric,
    pub grpc_conn_opened: Metric,
    pub grpc_conn_closed: Metric,
    pub logging_entries_checked: Metric,
    pub logging_entries_written: Metric,
    pub fabric_version: Metric,
    pub participation_status: Metric,
    pub participation_consensus_relation: Metric,
    pub embedded_log_bytes: Metric,
    pub embedded_log_segments: Metric,
    pub catchup_blocks_pulled: Metric,
    pub catchup_blocks_refused: Metric,
}

impl Metrics {
    /// Every metric in a fresh Prometheus registry.
    pub fn new() -> prometheus::Result<Metrics> {
        Metrics::with_provider(&Provider::Prometheus)
    }

    /// Every metric bound to `provider`. `fabric_version` is set to korder's version.
    pub fn with_provider(provider: &Provider) -> prometheus::Result<Metrics> {
        let registry = matches!(provider, Provider::Prometheus).then(Registry::new);
        let statsd = match provider {
            Provider::Statsd { prefix } => Some(Arc::new(Statsd::new(prefix))),
            _ => None,
        };
        let r = registry.clone().unwrap_or_default();
        let mut all = DEFS
            .iter()
            .map(|d| Metric::new(d, provider, &r, statsd.as_ref()))
            .collect::<prometheus::Result<Vec<_>>>()?
            .into_iter();
        let mut next = || all.next().expect("one field per declared metric");
        let m = Metrics {
            registry,
            statsd,
            broadcast_validate_duration: next(),
            broadcast_enqueue_duration: next(),
            broadcast_processed_count: next(),
            deliver_streams_opened: next(),
            deliver_streams_closed: next(),
            deliver_requests_received: next(),
            deliver_requests_completed: next(),
            deliver_blocks_sent: next(),
            block_fill_duration: next(),
            ledger_height: next(),
            ledger_commit_time: next(),
            kafka_last_offset_persisted: next(),
            kafka_batch_size: next(),
            kafka_compression_ratio: next(),
            kafka_record_send_rate: next(),
            kafka_records_per_request: next(),
            kafka_incoming_byte_rate: next(),
            kafka_outgoing_byte_rate: next(),
            kafka_request_latency: next(),
            kafka_request_rate: next(),
            kafka_request_size: next(),
            kafka_response_rate: next(),
            kafka_response_size: next(),
            grpc_unary_received: next(),
            grpc_unary_completed: next(),
            grpc_unary_duration: next(),
            grpc_stream_received: next(),
            grpc_stream_completed: next(),
            grpc_stream_duration: next(),
            grpc_stream_messages_received: next(),
            grpc_stream_messages_sent: next(),
            grpc_conn_opened: next(),
            grpc_conn_closed: next(),
            logging_entries_checked: next(),
            logging_entries_written: next(),
            fabric_version: next(),
            participation_status: next(),
            participation_consensus_relation: next(),
            embedded_log_bytes: next(),
            embedded_log_segments: next(),
            catchup_blocks_pulled: next(),
            catchup_blocks_refused: next(),
        };
        assert!(all.next().is_none(), "a declared metric has no field");
        m.fabric_version
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(m)
    }

    /// Every metric, in [`DEFS`] order.
    pub fn all(&self) -> [&Metric; 42] {
        [
            &self.broadcast_validate_duration,
            &self.broadcast_enqueue_duration,
            &self.broadcast_processed_count,
            &self.deliver_streams_opened,
            &self.deliver_streams_closed,
            &self.deliver_requests_received,
            &self.deliver_requests_completed,
            &self.deliver_blocks_sent,
            &self.block_fill_duration,
            &self.ledger_height,
            &self.ledger_commit_time,
            &self.kafka_last_offset_persisted,
            &self.kafka_batch_size,
            &self.kafka_compression_ratio,
            &self.kafka_record_send_rate,
            &self.kafka_records_per_request,
            &self.kafka_incoming_byte_rate,
            &self.kafka_outgoing_byte_rate,
            &self.kafka_request_latency,
            &self.kafka_request_rate,
            &self.kafka_request_size,
            &self.kafka_response_rate,
            &self.kafka_response_size,
            &self.grpc_unary_received,
            &self.grpc_unary_completed,
            &self.grpc_unary_duration,
            &self.grpc_stream_received,
            &self.grpc_stream_completed,
            &self.grpc_stream_duration,
            &self.grpc_stream_messages_received,
            &self.grpc_stream_messages_sent,
            &self.grpc_conn_opened,
            &self.grpc_conn_closed,
            &self.logging_entries_checked,
            &self.logging_entries_written,
            &self.fabric_version,
            &self.participation_status,
            &self.participation_consensus_relation,
            &self.embedded_log_bytes,
            &self.embedded_log_segments,
            &self.catchup_blocks_pulled,
            &self.catchup_blocks_refused,
        ]
    }

    /// A channel's chain started with `height` blocks: its height, and its
    /// participation as Fabric reports a chain this node orders (active consenter).
    pub fn report_channel(&self, channel: &str, height: u64) {
        let ch = [channel];
        self.ledger_height
            .with_label_values(&ch)
            .set(i64::try_from(height).unwrap_or(i64::MAX));
        self.participation_status.with_label_values(&ch).set(1);
        // Fabric's relation "other" (0): kafka and solo are not cluster consensus.
        self.participation_consensus_relation
            .with_label_values(&ch)
            .set(0);
    }

    /// Records that `channel` was removed: its participation status becomes
    /// inactive (0), as Fabric reports a channel the node no longer stores.
    pub fn report_removed(&self, channel: &str) {
        self.participation_status
            .with_label_values(&[channel])
            .set(0);
    }

    /// Whether `/metrics` has anything to serve (the provider is Prometheus).
    pub fn is_prometheus(&self) -> bool {
        self.registry.is_some()
    }

    /// The StatsD buffer when the provider is StatsD.
    pub fn statsd(&self) -> Option<Arc<Statsd>> {
        self.statsd.clone()
    }

    /// The Prometheus text exposition of every metric (empty unless the provider
    /// is Prometheus).
    pub fn render(&self) -> String {
        let Some(registry) = &self.registry else {
            return String::new();
        };
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The name gRPC-Go gives a status code, as Fabric's `code` label carries it.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric is exposed under Fabric's name once it has a value.
    #[test]
    fn exposes_fabric_names() {
        let m = Metrics::new().unwrap();
        m.broadcast_processed_count
            .with_label_values(&["ch", "ENDORSER_TRANSACTION", "SUCCESS"])
            .inc();
        m.broadcast_validate_duration
            .with_label_values(&["ch", "ENDORSER_TRANSACTION", "SUCCESS"])
            .observe(0.001);
        m.kafka_last_offset_persisted
            .with_label_values(&["ch"])
            .set(41);
        m.deliver_streams_opened.inc();
        let text = m.render();
        for name in [
            "broadcast_processed_count{channel=\"ch\",status=\"SUCCESS\",type=\"ENDORSER_TRANSACTION\"} 1",
            "broadcast_validate_duration_bucket",
            "consensus_kafka_last_offset_persisted{channel=\"ch\"} 41",
            "deliver_streams_opened 1",
            &format!(
                "fabric_version{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    /// The fields of `Metrics` are bound to the declarations in order.
    #[test]
    fn fields_follow_the_declarations() {
        let m = Metrics::new().unwrap();
        assert_eq!(m.all().len(), DEFS.len());
        for (metric, def) in m.all().into_iter().zip(DEFS) {
            assert!(std::ptr::eq(metric.def(), def), "{}", def.name);
        }
        assert_eq!(
            m.grpc_stream_received.def().prometheus_name(),
            "grpc_server_stream_requests_received"
        );
        assert_eq!(
            m.ledger_commit_time.def().prometheus_name(),
            "ledger_blockstorage_commit_time"
        );
    }

    /// StatsD names follow Fabric's formats: dotted name, label values with dots,
    /// pipes, colons and spaces turned into underscores.
    #[test]
    fn statsd_names_are_fabrics() {
        let m = Metrics::new().unwrap();
        assert_eq!(
            m.grpc_stream_received
                .def()
                .statsd_name(&["orderer.AtomicBroadcast", "Broadcast"]),
            "grpc.server.stream_requests_received.orderer_AtomicBroadcast.Broadcast"
        );
        assert_eq!(
            m.broadcast_processed_count
                .def()
                .statsd_name(&["my ch", "CONFIG", "a|b:c"]),
            "broadcast.processed_count.my_ch.CONFIG.a_b_c"
        );
        assert_eq!(
            m.grpc_conn_opened.def().statsd_name(&[]),
            "grpc.comm.conn_opened"
        );
        assert_eq!(
            m.fabric_version.def().statsd_name(&["2.5.16"]),
            "fabric_version.2_5_16"
        );
        assert_eq!(
            m.kafka_request_latency.def().statsd_name(&["1"]),
            "consensus.kafka.request_latency.1"
        );
    }

    /// With the StatsD provider nothing is registered for Prometheus and the
    /// recordings reach the StatsD buffer.
    #[test]
    fn statsd_provider_records_into_the_buffer() {
        let m = Metrics::with_provider(&Provider::Statsd {
            prefix: "ord".into(),
        })
        .unwrap();
        assert!(!m.is_prometheus());
        assert_eq!(m.render(), "");
        m.ledger_height.with_label_values(&["ch"]).set(3);
        m.deliver_streams_opened.inc();
        let lines = m.statsd().unwrap().take_lines();
        assert!(
            lines.contains(&"ord.ledger.blockchain_height.ch:3.000000|g".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"ord.deliver.streams_opened:1.000000|c".to_string()),
            "{lines:?}"
        );
    }

    /// Fabric 2.5's orderer metrics (metrics_reference.rst, orderer section) that
    /// korder has: everything but the Raft and cluster families.
    const FABRIC_ORDERER: &[&str] = &[
        "blockcutter_block_fill_duration",
        "broadcast_enqueue_duration",
        "broadcast_processed_count",
        "broadcast_validate_duration",
        "consensus_kafka_batch_size",
        "consensus_kafka_compression_ratio",
        "consensus_kafka_incoming_byte_rate",
        "consensus_kafka_last_offset_persisted",
        "consensus_kafka_outgoing_byte_rate",
        "consensus_kafka_record_send_rate",
        "consensus_kafka_records_per_request",
        "consensus_kafka_request_latency",
        "consensus_kafka_request_rate",
        "consensus_kafka_request_size",
        "consensus_kafka_response_rate",
        "consensus_kafka_response_size",
        "deliver_blocks_sent",
        "deliver_requests_completed",
        "deliver_requests_received",
        "deliver_streams_closed",
        "deliver_streams_opened",
        "fabric_version",
        "grpc_comm_conn_closed",
        "grpc_comm_conn_opened",
        "grpc_server_stream_messages_received",
        "grpc_server_stream_messages_sent",
        "grpc_server_stream_request_duration",
        "grpc_server_stream_requests_completed",
        "grpc_server_stream_requests_received",
        "grpc_server_unary_request_duration",
        "grpc_server_unary_requests_completed",
        "grpc_server_unary_requests_received",
        "ledger_blockchain_height",
        "ledger_blockstorage_commit_time",
        "logging_entries_checked",
        "logging_entries_written",
        "participation_consensus_relation",
        "participation_status",
    ];

    /// The rows of the table in docs/metrics.md: Prometheus name and StatsD name.
    fn documented() -> Vec<(String, String)> {
        include_str!("../../../docs/metrics.md")
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let name = cells.get(1)?.trim_matches('`');
                let statsd = cells.get(4)?.trim_matches('`');
                statsd
                    .contains('.')
                    .then(|| (name.to_string(), statsd.to_string()))
            })
            .collect()
    }

    /// The Prometheus exposition holds every metric of docs/metrics.md and of
    /// Fabric's orderer list once each has a value; the documentation lists every
    /// declared metric with its StatsD format, and nothing else.
    #[test]
    fn exposition_and_docs_cover_every_metric() {
        let m = Metrics::new().unwrap();
        for metric in m.all() {
            let values: Vec<&str> = metric.def().labels.iter().map(|_| "x").collect();
            let series = metric.with_label_values(&values);
            match metric.def().kind {
                Kind::Counter => series.inc(),
                Kind::Gauge => series.set(1),
                Kind::Histogram => series.observe(0.5),
            }
        }
        let text = m.render();
        let documented = documented();
        assert_eq!(documented.len(), DEFS.len(), "{documented:?}");
        for (name, statsd) in &documented {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} not exposed"
            );
            let def = DEFS
                .iter()
                .find(|d| d.prometheus_name() == *name)
                .unwrap_or_else(|| panic!("{name} is documented but not declared"));
            assert_eq!(
                def.statsd_format.replace("%{#fqname}", &def.fq_name()),
                *statsd,
                "{name}"
            );
        }
        for name in FABRIC_ORDERER {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} not exposed"
            );
            assert!(
                DEFS.iter()
                    .any(|d| d.prometheus_name() == *name && d.fabric)
            );
        }
        assert_eq!(
            DEFS.iter().filter(|d| d.fabric).count(),
            FABRIC_ORDERER.len()
        );
    }

    /// The disabled provider records nothing and serves nothing.
    #[test]
    fn disabled_records_nothing() {
        let m = Metrics::with_provider(&Provider::Disabled).unwrap();
        m.deliver_streams_opened.inc();
        assert_eq!(m.render(), "");
        assert!(m.statsd().is_none());
    }
}
