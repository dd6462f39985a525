//! The `korder` command: run an ordering node, set up a dev network, and the client
//! and maintenance tools that go with it.

mod cmd;
mod lock;
mod logging;
mod network;
mod node;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// korder: an ordering service for Hyperledger Fabric networks.
#[derive(Parser, Debug)]
#[command(name = "korder", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a ready-to-run dev network: CA, MSPs, genesis block, orderer.yaml.
    Init(cmd::init::InitArgs),
    /// Run the orderer (runs `init` first when the data directory is empty).
    Start(cmd::start::StartArgs),
    /// Measure Broadcast-to-Deliver throughput and latency against a running orderer.
    Bench(cmd::bench::BenchArgs),
    /// Inspect block files.
    #[command(subcommand)]
    Block(cmd::block::BlockCommand),
    /// Check channel ledgers.
    #[command(subcommand)]
    Ledger(cmd::ledger::LedgerCommand),
    /// Check and recover a channel's embedded log (the node must be stopped).
    #[command(subcommand)]
    Log(cmd::log::LogCommand),
    /// Fetch blocks of a channel to files (oldest, newest, a number, or the last config block).
    Fetch(cmd::client::FetchArgs),
    /// Broadcast the envelopes stored in files.
    Broadcast(cmd::client::BroadcastArgs),
    /// Create channels, change their configuration, fetch and sign config updates.
    #[command(subcommand)]
    Channel(cmd::channel::ChannelCommand),
    /// Call an orderer's Admin endpoint: list, join and remove channels (as osnadmin).
    #[command(subcommand)]
    Admin(cmd::admin::AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // KORDER_LOG, or Fabric's FABRIC_LOGGING_SPEC and FABRIC_LOGGING_FORMAT.
    if let Err(e) = logging::init() {
        eprintln!("korder: error: logging: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Init(a) => cmd::init::run(a),
        Command::Start(a) => cmd::start::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Block(c) => cmd::block::run(c),
        Command::Ledger(c) => cmd::ledger::run(c),
        Command::Log(c) => cmd::log::run(c),
        Command::Fetch(a) => cmd::client::fetch(a),
        Command::Broadcast(a) => cmd::client::broadcast(a),
        Command::Channel(c) => cmd::channel::run(c),
        Command::Admin(c) => cmd::admin::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("korder: error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `outer: cause: root`. A cause whose text
/// the message already ends with is left out: many errors print their source in
/// their own text, and the chain would otherwise say it twice.
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// The default data directory of `init`, `start` and the client commands.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("korder-data")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause already printed by the error above it appears once.
    #[test]
    fn error_text_says_each_cause_once() {
        #[derive(Debug)]
        struct Repeats(std::io::Error);
        impl std::fmt::Display for Repeats {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "reading x: {}", self.0)
            }
        }
        impl std::error::Error for Repeats {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let root = io.to_string();
        let e = anyhow::Error::new(Repeats(io)).context("loading y");
        assert_eq!(error_text(&e), format!("loading y: reading x: {root}"));
    }
}
