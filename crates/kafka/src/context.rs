//! The librdkafka client context: routes the client's own log lines and error
//! callbacks into `tracing`, tagged with the topic the client serves.

use korder_types::sync::MutexExt;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Context shared by korder's producers, consumers and admin clients.
#[derive(Clone, Debug)]
pub(crate) struct TracingContext {
    /// Which client this is (`producer`, `consumer`, `admin`), for the logs.
    pub(crate) client: &'static str,
    pub(crate) topic: String,
    /// For a reader's consumer: raised when librdkafka reports that the fetch
    /// position is out of range. librdkafka delivers that either on the message
    /// queue or, when the partition's queue is no longer forwarded (for example
    /// after the topic was deleted), through the error callback; the reader
    /// watches both.
    pub(crate) out_of_range: Option<watch::Sender<bool>>,
    /// The most telling connection-level error the client reported, such as a
    /// failed TLS handshake or SASL authentication; request failures (which
    /// librdkafka reports only as "broker transport failure") quote it.
    pub(crate) last_error: Arc<Mutex<Option<String>>>,
}

impl TracingContext {
    pub(crate) fn new(client: &'static str, topic: &str) -> Self {
        Self {
            client,
            topic: topic.to_owned(),
            out_of_range: None,
            last_error: Arc::default(),
        }
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

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(flag) = self
            .out_of_range
            .as_ref()
            .filter(|_| is_out_of_range(&error))
        {
            flag.send_replace(true);
        }
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
