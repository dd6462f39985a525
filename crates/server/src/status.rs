//! The one place where korder's errors become Fabric statuses.
//!
//! Fabric's mapping is narrow and clients depend on it: only the signature filter
//! yields FORBIDDEN, an unknown channel for a normal message is NOT_FOUND,
//! maintenance mode is SERVICE_UNAVAILABLE, and everything else a filter or the
//! config-update path refuses is BAD_REQUEST (never 413). Consenter problems
//! (not ready, halted, log write failed) are SERVICE_UNAVAILABLE.

use korder_proto::common::Status;

/// Why a message was refused before it reached the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// Normal message for a channel this node does not have.
    #[error("channel does not exist")]
    ChannelNotFound,
    /// The signature filter refused the message.
    #[error("{0}: permission denied")]
    PermissionDenied(String),
    /// The channel is in maintenance mode.
    #[error("{0}: maintenance mode")]
    Maintenance(String),
    /// Anything else: malformed, oversized, expired, invalid config update.
    #[error("{0}")]
    BadRequest(String),
}

impl ProcessError {
    /// A BAD_REQUEST with this text.
    pub fn bad(text: impl Into<String>) -> Self {
        ProcessError::BadRequest(text.into())
    }

    /// Prefixes the error's text, keeping its status (Fabric wraps errors this way).
    pub fn context(self, prefix: &str) -> Self {
        match self {
            ProcessError::ChannelNotFound => {
                ProcessError::BadRequest(format!("{prefix}: channel does not exist"))
            }
            ProcessError::PermissionDenied(t) => {
                ProcessError::PermissionDenied(format!("{prefix}: {t}"))
            }
            ProcessError::Maintenance(t) => ProcessError::Maintenance(format!("{prefix}: {t}")),
            ProcessError::BadRequest(t) => ProcessError::BadRequest(format!("{prefix}: {t}")),
        }
    }

    /// The Fabric status a client sees.
    pub fn status(&self) -> Status {
        match self {
            ProcessError::ChannelNotFound => Status::NotFound,
            ProcessError::PermissionDenied(_) => Status::Forbidden,
            ProcessError::Maintenance(_) => Status::ServiceUnavailable,
            ProcessError::BadRequest(_) => Status::BadRequest,
        }
    }
}

/// Why the consenter could not take a message (always SERVICE_UNAVAILABLE).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsenterError {
    #[error("backing Kafka cluster has not completed booting; try again later")]
    NotStarted,
    #[error("consenter for this channel has been halted")]
    Halted,
    #[error("cannot enqueue: {0}")]
    CannotEnqueue(String),
    /// The chain stopped on an error (it may be rebuilding itself).
    #[error("consenter for this channel has stopped: {0}")]
    Stopped(String),
    /// Ingress stayed closed (a config resubmission in flight) for this long.
    #[error("consenter for this channel is not ready (waited {0:?}); try again later")]
    NotReady(std::time::Duration),
}

impl ConsenterError {
    /// Always SERVICE_UNAVAILABLE, as Fabric answers for consenter failures.
    pub fn status(&self) -> Status {
        Status::ServiceUnavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each error kind maps to the status Fabric's classifier gives it, and context keeps it.
    #[test]
    fn statuses_follow_fabric() {
        assert_eq!(ProcessError::ChannelNotFound.status(), Status::NotFound);
        assert_eq!(
            ProcessError::PermissionDenied("x".into()).status(),
            Status::Forbidden
        );
        assert_eq!(
            ProcessError::Maintenance("x".into()).status(),
            Status::ServiceUnavailable
        );
        assert_eq!(ProcessError::bad("x").status(), Status::BadRequest);
        let e = ProcessError::PermissionDenied("implicit policy evaluation failed".into())
            .context("config update for existing channel did not pass initial checks");
        assert_eq!(e.status(), Status::Forbidden);
        assert_eq!(
            e.to_string(),
            "config update for existing channel did not pass initial checks: implicit policy evaluation failed: permission denied"
        );
        assert_eq!(
            ConsenterError::NotStarted.status(),
            Status::ServiceUnavailable
        );
    }
}
