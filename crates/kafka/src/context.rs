//! The librdkafka client context: routes the client's own log lines and error
//! callbacks into `tracing`, tagged with the topic the client serves (`*` for the
//! clients shared by the logs of many topics).

use korder_types::sync::MutexExt;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How many librdkafka clients (with their threads) are alive in the process.
static LIVE_CLIENTS: Mutex<usize> = Mutex::new(0);
static CLIENTS_CLOSED: Condvar = Condvar::new();

/// One client's share of [`LIVE_CLIENTS`]. Every client owns its context, and the
/// context holds this token, so the count drops only after the client was destroyed
/// (librdkafka joins the client's threads before that) and every copy of its
/// context is gone. A client shared by many logs counts once.
#[derive(Debug)]
pub(crate) struct LiveClient;

impl LiveClient {
    fn new() -> Arc<Self> {
        *LIVE_CLIENTS.lock_unpoisoned() += 1;
        Arc::new(LiveClient)
    }
}

impl Drop for LiveClient {
    fn drop(&mut self) {
        let mut live = LIVE_CLIENTS.lock_unpoisoned();
        *live = live.saturating_sub(1);
        CLIENTS_CLOSED.notify_all();
    }
}

/// Waits until every Kafka client of the process has been destroyed, at most
/// `limit`; whether they all were.
///
/// A process must not exit while a client still runs: exiting tears down the TLS
/// library under the client's threads (a request cut short at shutdown, for
/// instance a metadata fetch on a blocking thread, ends on its own timeout).
pub fn wait_for_clients_closed(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut live = LIVE_CLIENTS.lock_unpoisoned();
    while *live > 0 {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        live = match CLIENTS_CLOSED.wait_timeout(live, deadline - now) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
    true
}

/// How many Kafka clients are alive in the process.
pub fn live_clients() -> usize {
    *LIVE_CLIENTS.lock_unpoisoned()
}

/// Context shared by korder's producers, consumers and admin clients.
#[derive(Clone, Debug)]
pub(crate) struct TracingContext {
    /// Which client this is (`producer`, `consumer`, `admin`), for the logs.
    pub(crate) client: &'static str,
    /// The topic the client serves, `*` for a client shared by many.
    pub(crate) topic: String,
    /// The most telling connection-level error the client reported, such as a
    /// failed TLS handshake or SASL authentication; request failures (which
    /// librdkafka reports only as "broker transport failure") quote it.
    pub(crate) last_error: Arc<Mutex<Option<String>>>,
    /// Counts this client among the live ones until it is destroyed.
    pub(crate) _live: Arc<LiveClient>,
    /// Where this client's statistics go, when collected.
    pub(crate) stats: Option<crate::StatsConfig>,
}

impl TracingContext {
    pub(crate) fn new(client: &'static str, topic: &str) -> Self {
        Self {
            client,
            topic: topic.to_owned(),
            last_error: Arc::default(),
            _live: LiveClient::new(),
            stats: None,
        }
    }

    /// Reports statistics as `config` asks.
    pub(crate) fn with_stats(mut self, config: &crate::KafkaConfig) -> Self {
        self.stats = config.statistics.clone();
        self
    }

    /// The last connection-level error reported by the client, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock_unpoisoned().clone()
    }

    fn note_error(&self, error: &KafkaError, reason: &str) {
        // "All brokers are down" follows the real cause and says less.
        if is_out_of_range(error)
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown)
        {
            return;
        }
        self.set_last_error(if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_owned()
        });
    }

    fn set_last_error(&self, text: String) {
        *self.last_error.lock_unpoisoned() = Some(text);
    }
}

/// Whether `e` says the consumer's position is not in the partition.
pub(crate) fn is_out_of_range(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::AutoOffsetReset | RDKafkaErrorCode::OffsetOutOfRange)
    )
}

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let (client, topic) = (self.client, self.topic.as_str());
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                // Failed connections (TLS, SASL) arrive as error-level log lines.
                self.set_last_error(format!("[{facility}] {message}"));
                tracing::error!(target: "korder_kafka::client", client, topic, facility, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                // A client certificate the brokers will not accept shows up only
                // as a TLS warning before the broker drops the connection.
                if matches!(facility, "SSL" | "SASL" | "SASLAUTH" | "AUTH") {
                    self.set_last_error(format!("[{facility}] {message}"));
                }
                tracing::warn!(target: "korder_kafka::client", client, topic, facility, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "korder_kafka::client", client, topic, facility, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "korder_kafka::client", client, topic, facility, "{message}")
            }
        }
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(config) = &self.stats {
            crate::stats::report(config, &statistics);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // A consumer's partition errors (a position out of range) also reach the
        // reader of the partition, through its queue.
        self.note_error(&error, reason);
        // librdkafka retries connection-level failures by itself; these reports are
        // for the operator, the caller sees failures through results.
        tracing::warn!(
            target: "korder_kafka::client",
            client = self.client,
            topic = %self.topic,
            %error,
            "{reason}"
        );
    }
}

impl ConsumerContext for TracingContext {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A context counts as a live client until its last copy is dropped, and the
    /// exit wait returns once it is.
    #[test]
    fn live_clients_are_counted_until_destroyed() {
        let context = TracingContext::new("admin", "t");
        let copy = context.clone();
        assert!(live_clients() >= 1);
        assert!(
            !wait_for_clients_closed(Duration::from_millis(20)),
            "a live client must hold the exit wait"
        );
        drop(context);
        assert!(!wait_for_clients_closed(Duration::from_millis(20)));
        let closer = std::thread::spawn(move || drop(copy));
        assert!(wait_for_clients_closed(Duration::from_secs(10)));
        closer.join().unwrap();
    }
}
