//! The one error type of this crate.

use std::path::PathBuf;

/// Why a configuration could not be loaded, overridden, written or accepted.
///
/// Every variant names what the operator has to fix: the file, the full key path
/// (`General.TLS.Enabled`) or the environment variable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The file is not valid YAML, or not a mapping at its top level.
    #[error("{path}: invalid YAML: {message}")]
    Yaml {
        /// The file (or `<string>` for text given directly).
        path: PathBuf,
        /// What the parser said.
        message: String,
    },

    /// A key in the file that korder does not know (a typo, or a setting of another
    /// Fabric version).
    #[error("{key}: unknown key")]
    UnknownKey {
        /// Full key path as spelled in the file, e.g. `General.ListenPortt`.
        key: String,
    },

    /// The same key appears twice in one mapping (keys are compared ignoring case).
    #[error("{key}: duplicate key")]
    DuplicateKey {
        /// Full key path.
        key: String,
    },

    /// A value in the file has the wrong type or is out of range.
    #[error("{key}: {reason}")]
    InvalidValue {
        /// Full key path, e.g. `Kafka.Retry.ShortInterval`.
        key: String,
        /// Why the value was refused.
        reason: String,
    },

    /// An `ORDERER_*` environment variable that matches no configuration key.
    #[error("environment variable {var}: no such configuration key")]
    UnknownEnvOverride {
        /// The variable.
        var: String,
    },

    /// An `ORDERER_*` environment variable whose value is not valid for its key.
    #[error("environment variable {var} (overrides {key}): {reason}")]
    InvalidEnvValue {
        /// The variable.
        var: String,
        /// The key it overrides.
        key: String,
        /// Why the value was refused.
        reason: String,
    },

    /// A PEM file named by a `File:` entry could not be read.
    #[error("{key}: cannot read {path}: {source}")]
    PemFile {
        /// Full key path.
        key: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },

    /// The loaded configuration breaks one or more limits (see [`crate::Config::validate`]).
    #[error("invalid configuration: {}", .problems.join("; "))]
    Invalid {
        /// One message per problem, each starting with the key it concerns.
        problems: Vec<String>,
    },

    /// The configuration could not be written as YAML.
    #[error("cannot write configuration as YAML: {message}")]
    Serialize {
        /// What the serializer said.
        message: String,
    },
}
