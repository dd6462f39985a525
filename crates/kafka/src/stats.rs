//! The Kafka client's statistics in the terms of Fabric's `consensus_kafka_*`
//! metrics (which Fabric read from its Go client, Sarama).
//!
//! librdkafka reports cumulative counters per client every statistics interval.
//! Each report is turned into rates over the time since that client's previous
//! report; the figures of every live client of the process (a producer and a
//! consumer per client configuration, each serving every channel's topic) are then
//! combined per broker and per topic and handed to the [`StatsHook`]. A client's
//! report lists each of its topics apart, so the topic figures stay per channel:
//!
//! | figure | from librdkafka |
//! | --- | --- |
//! | `incoming_byte_rate` / `outgoing_byte_rate` (broker) | Δ`rxbytes` / Δt, Δ`txbytes` / Δt, summed over clients |
//! | `request_rate` / `response_rate` (broker) | Δ`tx` / Δt, Δ`rx` / Δt, summed over clients |
//! | `request_size` / `response_size` (broker) | Δ`txbytes` / Δ`tx`, Δ`rxbytes` / Δ`rx` over all clients |
//! | `request_latency` (broker, ms) | `rtt.avg`, weighted by each client's request rate |
//! | `batch_size` (topic, bytes) | the producer's `batchsize.avg` |
//! | `records_per_request` (topic) | the producer's `batchcnt.avg` (records per batch) |
//! | `record_send_rate` (topic) | Δ(Σ partitions `txmsgs`) / Δt |
//!
//! | `compression_ratio` (topic, %) | 100 for a topic with batches: korder's producer never compresses (librdkafka reports no compressed size to derive it from) |
//!
//! Brokers are named by their node id
//! (`broker_id`); bootstrap connections not yet bound to a node are left out.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use korder_types::sync::MutexExt;
use rdkafka::statistics::Statistics;

/// A broker's figures over the last statistics interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrokerFigures {
    /// Bytes per second read from the broker.
    pub incoming_byte_rate: f64,
    /// Bytes per second written to the broker.
    pub outgoing_byte_rate: f64,
    /// Requests per second sent.
    pub request_rate: f64,
    /// Responses per second received.
    pub response_rate: f64,
    /// Mean request size in bytes.
    pub request_size: f64,
    /// Mean response size in bytes.
    pub response_size: f64,
    /// Mean round-trip time in milliseconds.
    pub request_latency_ms: f64,
}

/// A topic's producer figures over the last statistics interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TopicFigures {
    /// Records per second sent.
    pub record_send_rate: f64,
    /// Mean batch size in bytes.
    pub batch_size: f64,
    /// Mean records per batch.
    pub records_per_request: f64,
    /// Compressed size as a percentage of the uncompressed size.
    pub compression_ratio: f64,
}

/// The figures of every live client, per broker node id and per topic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KafkaFigures {
    /// By broker node id.
    pub brokers: BTreeMap<i32, BrokerFigures>,
    /// By topic.
    pub topics: BTreeMap<String, TopicFigures>,
}

/// Receives the combined figures after every client report.
pub type StatsHook = Arc<dyn Fn(&KafkaFigures) + Send + Sync>;

/// Statistics collection: how often librdkafka reports, and where the figures go.
#[derive(Clone)]
pub struct StatsConfig {
    /// `statistics.interval.ms` of the producers and consumers.
    pub interval: Duration,
    /// Called with the figures of every live client.
    pub hook: StatsHook,
}

impl std::fmt::Debug for StatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsConfig")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl PartialEq for StatsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.interval == other.interval && Arc::ptr_eq(&self.hook, &other.hook)
    }
}

impl Eq for StatsConfig {}

/// Cumulative counters of one broker in one client's report.
#[derive(Clone, Copy, Debug, Default)]
struct BrokerCounters {
    tx: u64,
    txbytes: u64,
    rx: u64,
    rxbytes: u64,
    rtt_avg_us: i64,
}

/// One client's last report, reduced to what the rates need.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    ts_us: i64,
    brokers: HashMap<i32, BrokerCounters>,
    topic_txmsgs: HashMap<String, u64>,
}

impl Snapshot {
    fn of(s: &Statistics) -> Snapshot {
        let brokers = s
            .brokers
            .values()
            .filter(|b| b.nodeid >= 0)
            .map(|b| {
                (
                    b.nodeid,
                    BrokerCounters {
                        tx: b.tx,
                        txbytes: b.txbytes,
                        rx: b.rx,
                        rxbytes: b.rxbytes,
                        rtt_avg_us: b.rtt.as_ref().map_or(0, |w| w.avg),
                    },
                )
            })
            .collect();
        let topic_txmsgs = s
            .topics
            .iter()
            .map(|(name, t)| {
                let sent = t
                    .partitions
                    .iter()
                    .filter(|(id, _)| **id >= 0)
                    .map(|(_, p)| p.txmsgs)
                    .sum();
                (name.clone(), sent)
            })
            .collect();
        Snapshot {
            ts_us: s.ts,
            brokers,
            topic_txmsgs,
        }
    }
}

/// One client's figures over its last interval.
#[derive(Clone, Debug, Default)]
struct ClientFigures {
    /// Per broker: (request rate, response rate, txbytes rate, rxbytes rate, rtt ms).
    brokers: HashMap<i32, (f64, f64, f64, f64, f64)>,
    topics: HashMap<String, TopicFigures>,
}

fn client_figures(prev: &Snapshot, cur: &Snapshot, s: &Statistics) -> Option<ClientFigures> {
    let dt = (cur.ts_us - prev.ts_us) as f64 / 1e6;
    if dt <= 0.0 {
        return None;
    }
    let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / dt;
    let mut out = ClientFigures::default();
    for (id, b) in &cur.brokers {
        let p = prev.brokers.get(id).copied().unwrap_or_default();
        out.brokers.insert(
            *id,
            (
                rate(b.tx, p.tx),
                rate(b.rx, p.rx),
                rate(b.txbytes, p.txbytes),
                rate(b.rxbytes, p.rxbytes),
                b.rtt_avg_us as f64 / 1000.0,
            ),
        );
    }
    for (name, t) in &s.topics {
        let sent = cur.topic_txmsgs.get(name).copied().unwrap_or(0);
        let before = prev.topic_txmsgs.get(name).copied().unwrap_or(0);
        out.topics.insert(
            name.clone(),
            TopicFigures {
                record_send_rate: rate(sent, before),
                batch_size: t.batchsize.avg as f64,
                records_per_request: t.batchcnt.avg as f64,
                compression_ratio: if t.batchcnt.avg > 0 { 100.0 } else { 0.0 },
            },
        );
    }
    Some(out)
}

/// The last report and figures of every client of the process, combined for the
/// hook.
#[derive(Default)]
struct Combined {
    clients: HashMap<String, (Instant, Snapshot, Option<ClientFigures>)>,
}

static COMBINED: Mutex<Option<Combined>> = Mutex::new(None);

impl Combined {
    fn figures(&self) -> KafkaFigures {
        let mut sums: BTreeMap<i32, (f64, f64, f64, f64, f64)> = BTreeMap::new();
        let mut topics: BTreeMap<String, TopicFigures> = BTreeMap::new();
        for (_, _, figures) in self.clients.values() {
            let Some(f) = figures else { continue };
            for (id, (req, resp, txb, rxb, rtt)) in &f.brokers {
                let s = sums.entry(*id).or_default();
                s.0 += req;
                s.1 += resp;
                s.2 += txb;
                s.3 += rxb;
                s.4 += rtt * req;
            }
            for (name, t) in &f.topics {
                let e = topics.entry(name.clone()).or_default();
                e.record_send_rate += t.record_send_rate;
                // Only a producer batches; a consumer reports zero.
                e.batch_size = e.batch_size.max(t.batch_size);
                e.records_per_request = e.records_per_request.max(t.records_per_request);
                e.compression_ratio = e.compression_ratio.max(t.compression_ratio);
            }
        }
        let per = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let brokers = sums
            .into_iter()
            .map(|(id, (req, resp, txb, rxb, rtt_weighted))| {
                (
                    id,
                    BrokerFigures {
                        incoming_byte_rate: rxb,
                        outgoing_byte_rate: txb,
                        request_rate: req,
                        response_rate: resp,
                        request_size: per(txb, req),
                        response_size: per(rxb, resp),
                        request_latency_ms: per(rtt_weighted, req),
                    },
                )
            })
            .collect();
        KafkaFigures { brokers, topics }
    }
}

/// Takes one client's report: updates its figures, forgets clients silent for
/// three intervals (destroyed ones), and calls the hook with the combined figures.
pub(crate) fn report(config: &StatsConfig, s: &Statistics) {
    let now = Instant::now();
    let snapshot = Snapshot::of(s);
    let figures = {
        let mut guard = COMBINED.lock_unpoisoned();
        let combined = guard.get_or_insert_with(Combined::default);
        let client = combined.clients.remove(&s.name);
        let figures = client.and_then(|(_, prev, _)| client_figures(&prev, &snapshot, s));
        combined
            .clients
            .insert(s.name.clone(), (now, snapshot, figures));
        let stale = config.interval * 3;
        combined
            .clients
            .retain(|_, (seen, _, _)| now.duration_since(*seen) <= stale);
        combined.figures()
    };
    (config.hook)(&figures);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(ts_us: i64, tx: u64, txbytes: u64, rx: u64, rxbytes: u64, txmsgs: u64) -> Snapshot {
        Snapshot {
            ts_us,
            brokers: HashMap::from([(
                1,
                BrokerCounters {
                    tx,
                    txbytes,
                    rx,
                    rxbytes,
                    rtt_avg_us: 2500,
                },
            )]),
            topic_txmsgs: HashMap::from([("ch".to_string(), txmsgs)]),
        }
    }

    /// Rates are the counters' increase over the time between two reports, and
    /// two clients' rates on one broker add up, sizes being bytes per request.
    #[test]
    fn rates_from_two_reports_and_two_clients() {
        let stats = Statistics::default();
        let a = client_figures(
            &snapshot(0, 10, 1000, 10, 500, 5),
            &snapshot(2_000_000, 30, 5000, 30, 2500, 25),
            &stats,
        )
        .unwrap();
        assert_eq!(a.brokers[&1], (10.0, 10.0, 2000.0, 1000.0, 2.5));
        let mut combined = Combined::default();
        combined.clients.insert(
            "a".into(),
            (Instant::now(), Snapshot::default(), Some(a.clone())),
        );
        combined
            .clients
            .insert("b".into(), (Instant::now(), Snapshot::default(), Some(a)));
        let f = combined.figures();
        let b = &f.brokers[&1];
        assert_eq!(b.request_rate, 20.0);
        assert_eq!(b.outgoing_byte_rate, 4000.0);
        assert_eq!(b.request_size, 200.0);
        assert_eq!(b.response_size, 100.0);
        assert_eq!(b.request_latency_ms, 2.5);
    }

    /// One client's report covering two topics (a producer shared by two channels)
    /// gives each topic its own send rate and batch figures.
    #[test]
    fn a_shared_clients_topics_keep_their_own_figures() {
        let mut stats = Statistics::default();
        for (name, batch_bytes, per_batch) in [("ch1", 3000, 3), ("ch2", 500, 1)] {
            let mut t = rdkafka::statistics::Topic {
                topic: name.to_owned(),
                ..Default::default()
            };
            t.batchsize.avg = batch_bytes;
            t.batchcnt.avg = per_batch;
            stats.topics.insert(name.to_owned(), t);
        }
        let mut before = snapshot(0, 0, 0, 0, 0, 0);
        let mut after = snapshot(1_000_000, 0, 0, 0, 0, 0);
        before.topic_txmsgs = HashMap::from([("ch1".to_owned(), 10), ("ch2".to_owned(), 0)]);
        after.topic_txmsgs = HashMap::from([("ch1".to_owned(), 40), ("ch2".to_owned(), 5)]);
        let figures = client_figures(&before, &after, &stats).unwrap();
        let mut combined = Combined::default();
        combined.clients.insert(
            "producer".into(),
            (Instant::now(), Snapshot::default(), Some(figures)),
        );
        let topics = combined.figures().topics;
        assert_eq!(topics.len(), 2);
        assert_eq!(
            (topics["ch1"].record_send_rate, topics["ch1"].batch_size),
            (30.0, 3000.0)
        );
        assert_eq!(topics["ch1"].records_per_request, 3.0);
        assert_eq!(
            (topics["ch2"].record_send_rate, topics["ch2"].batch_size),
            (5.0, 500.0)
        );
        assert_eq!(topics["ch2"].records_per_request, 1.0);
    }

    /// A report at the same instant as the previous one gives no rates.
    #[test]
    fn no_rates_without_elapsed_time() {
        let s = snapshot(5, 1, 1, 1, 1, 1);
        assert!(client_figures(&s, &s, &Statistics::default()).is_none());
    }
}
