//! Errors of opening and using a Kafka-backed log.

use korder_log::LogError;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// What can go wrong while opening a [`crate::KafkaLog`] or querying its topic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaLogError {
    /// The configuration cannot work; the message names the key.
    #[error("invalid Kafka configuration: {0}")]
    InvalidConfig(String),
    /// The channel name is not a usable topic name.
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: &'static str },
    /// librdkafka refused to build a client with these properties.
    #[error("cannot create the Kafka {client} for topic {topic}: {source}")]
    Client {
        client: &'static str,
        topic: String,
        #[source]
        source: KafkaError,
    },
    /// The brokers refused to create the topic.
    #[error(
        "cannot create topic {topic} (1 partition, replication factor {replication_factor}): {code}"
    )]
    CreateTopic {
        topic: String,
        replication_factor: i16,
        code: RDKafkaErrorCode,
    },
    /// A request to the brokers failed (unreachable, timed out, refused).
    /// `broker_error` is the client's last connection-level report (a failed TLS
    /// handshake, refused SASL credentials), which librdkafka does not attach to
    /// the request's own error.
    #[error("Kafka request failed ({what}) for topic {topic}: {source}{}", broker_note(.broker_error))]
    Request {
        what: &'static str,
        topic: String,
        #[source]
        source: Box<KafkaError>,
        broker_error: Option<Box<str>>,
    },
    /// The topic does not exist and the configuration says not to create it.
    #[error(
        "topic {topic} does not exist; the node's ledger holds blocks ordered on it, so it \
         does not create a new, empty one (was the topic deleted?)"
    )]
    TopicMissing { topic: String },
    /// The topic or its partition 0 is not in the cluster's metadata.
    #[error("topic {topic} partition 0 is not in the cluster metadata: {reason}")]
    MissingPartition { topic: String, reason: String },
}

fn broker_note(broker_error: &Option<Box<str>>) -> String {
    broker_error
        .as_deref()
        .map(|e| format!("; last broker connection error: {e}"))
        .unwrap_or_default()
}

impl KafkaLogError {
    /// Whether a later attempt may succeed (brokers down, leader election, timeouts);
    /// configuration and naming errors never heal by themselves.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::InvalidConfig(_) | Self::InvalidTopic { .. } | Self::Client { .. } => false,
            Self::CreateTopic { code, .. } => !matches!(
                code,
                RDKafkaErrorCode::InvalidTopic
                    | RDKafkaErrorCode::InvalidReplicationFactor
                    | RDKafkaErrorCode::InvalidPartitions
                    | RDKafkaErrorCode::InvalidConfig
                    | RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            ),
            // Someone may restore the topic meanwhile; nothing is written.
            Self::Request { .. } | Self::MissingPartition { .. } | Self::TopicMissing { .. } => {
                true
            }
        }
    }
}

impl From<KafkaLogError> for LogError {
    fn from(e: KafkaLogError) -> Self {
        LogError::Unavailable(e.to_string())
    }
}
