//! Prometheus metrics under Fabric's names, so existing dashboards keep working.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `broadcast_validate_duration` | histogram (s) | channel, type, status |
//! | `broadcast_enqueue_duration` | histogram (s) | channel, type, status |
//! | `broadcast_processed_count` | counter | channel, type, status |
//! | `deliver_streams_opened` / `deliver_streams_closed` | counter | |
//! | `deliver_requests_received` | counter | channel, filtered |
//! | `deliver_requests_completed` | counter | channel, filtered, success |
//! | `deliver_blocks_sent` | counter | channel, filtered |
//! | `consensus_kafka_last_offset_persisted` | gauge | channel |
//! | `blockcutter_block_fill_duration` | histogram (s) | channel |
//! | `ledger_blockchain_height` | gauge | channel |
//! | `korder_embedded_log_bytes` / `korder_embedded_log_segments` (korder's own) | gauge | channel |

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the node records.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    pub broadcast_validate_duration: HistogramVec,
    pub broadcast_enqueue_duration: HistogramVec,
    pub broadcast_processed_count: IntCounterVec,
    pub deliver_streams_opened: IntCounter,
    pub deliver_streams_closed: IntCounter,
    pub deliver_requests_received: IntCounterVec,
    pub deliver_requests_completed: IntCounterVec,
    pub deliver_blocks_sent: IntCounterVec,
    pub kafka_last_offset_persisted: IntGaugeVec,
    pub block_fill_duration: HistogramVec,
    pub ledger_height: IntGaugeVec,
    pub embedded_log_bytes: IntGaugeVec,
    pub embedded_log_segments: IntGaugeVec,
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(HistogramOpts::new(name, help), labels)?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let cts = ["channel", "type", "status"];
        Ok(Metrics {
            broadcast_validate_duration: histogram(
                &r,
                "broadcast_validate_duration",
                "The time to validate a transaction in seconds.",
                &cts,
            )?,
            broadcast_enqueue_duration: histogram(
                &r,
                "broadcast_enqueue_duration",
                "The time to enqueue a transaction in seconds.",
                &cts,
            )?,
            broadcast_processed_count: counter_vec(
                &r,
                "broadcast_processed_count",
                "The number of transactions processed.",
                &cts,
            )?,
            deliver_streams_opened: counter(
                &r,
                "deliver_streams_opened",
                "The number of GRPC streams that have been opened for the deliver service.",
            )?,
            deliver_streams_closed: counter(
                &r,
                "deliver_streams_closed",
                "The number of GRPC streams that have been closed for the deliver service.",
            )?,
            deliver_requests_received: counter_vec(
                &r,
                "deliver_requests_received",
                "The number of deliver requests that have been received.",
                &["channel", "filtered"],
            )?,
            deliver_requests_completed: counter_vec(
                &r,
                "deliver_requests_completed",
                "The number of deliver requests that have been completed.",
                &["channel", "filtered", "success"],
            )?,
            deliver_blocks_sent: counter_vec(
                &r,
                "deliver_blocks_sent",
                "The number of blocks sent by the deliver service.",
                &["channel", "filtered"],
            )?,
            kafka_last_offset_persisted: gauge_vec(
                &r,
                "consensus_kafka_last_offset_persisted",
                "The offset specified in the block metadata of the most recently committed block.",
                &["channel"],
            )?,
            block_fill_duration: histogram(
                &r,
                "blockcutter_block_fill_duration",
                "The time from first transaction enqueing to the block being cut in seconds.",
                &["channel"],
            )?,
            ledger_height: gauge_vec(
                &r,
                "ledger_blockchain_height",
                "Height of the chain in blocks.",
                &["channel"],
            )?,
            embedded_log_bytes: gauge_vec(
                &r,
                "korder_embedded_log_bytes",
                "Bytes in the segment files of a channel's embedded log.",
                &["channel"],
            )?,
            embedded_log_segments: gauge_vec(
                &r,
                "korder_embedded_log_segments",
                "Segment files of a channel's embedded log.",
                &["channel"],
            )?,
            registry: r,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
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
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
