//! The librdkafka client context: routes the client's own log lines and error
//! callbacks into `tracing`, tagged with the topic the client serves.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

/// Context shared by korder's producers, consumers and admin clients.
#[derive(Clone, Debug)]
pub(crate) struct TracingContext {
    /// Which client this is (`producer`, `consumer`, `admin`), for the logs.
    pub(crate) client: &'static str,
    pub(crate) topic: String,
}

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let (client, topic) = (self.client, self.topic.as_str());
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "korder_kafka::client", client, topic, facility, "{message}")
            }
            RDKafkaLogLevel::Warning => {
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
