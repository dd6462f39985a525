//! `korder log check|truncate|reset`: inspect and recover a channel's embedded log
//! while the node is stopped; and, while it runs, the removal of log segments whose
//! records are already in the ledger.

use korder_ledger::BlockNumber;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use korder_config::{Config, env_from_process};
use korder_ledger::block::consenter_metadata;
use korder_ledger::{BlockStore, Ledgers, StoreOptions};
use korder_log::{EmbeddedLog, LogOffset};
use korder_server::Metrics;

/// How often a running node looks for log segments it may remove.
const RETENTION_INTERVAL: Duration = Duration::from_secs(5);

/// Embedded log tools. Run them with the node stopped.
#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Verify every record of the channels' embedded logs and report the first
    /// damage (file, byte, offset), changing nothing. Exit status 1 if a log is damaged.
    Check(LogArgs),
    /// Cut a channel's log at its first damage, discarding every record from there on.
    /// Acknowledged records after the damage are lost: needs --accept-loss.
    Truncate(LogArgs),
    /// Discard a channel's whole log: it restarts empty at the offset after the one
    /// recorded in the channel's last block. Records not yet in a block are lost:
    /// needs --accept-loss.
    Reset(LogArgs),
}

/// Options of the `korder log` subcommands.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Data directory of a dev network (holding orderer.yaml).
    #[arg(long, conflicts_with = "config")]
    pub data_dir: Option<PathBuf>,
    /// The node's orderer.yaml (its FileLedger.Location and Korder.EmbeddedLogDir).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The channel (check: every channel when absent).
    #[arg(long)]
    pub channel: Option<String>,
    /// Confirms that records discarded by truncate or reset are lost.
    #[arg(long)]
    pub accept_loss: bool,
}

/// Runs a `korder log` subcommand.
pub fn run(cmd: LogCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LogCommand::Check(a) => check(&a),
        LogCommand::Truncate(a) => truncate(&a),
        LogCommand::Reset(a) => reset(&a),
    }
}

fn load_config(args: &LogArgs) -> anyhow::Result<Config> {
    let path = match &args.config {
        Some(p) => p.clone(),
        None => args
            .data_dir
            .clone()
            .unwrap_or_else(crate::default_data_dir)
            .join("orderer.yaml"),
    };
    Config::load(&path, &env_from_process()).with_context(|| format!("loading {}", path.display()))
}

fn channel_arg(args: &LogArgs) -> anyhow::Result<&str> {
    args.channel
        .as_deref()
        .context("--channel is required: name the channel whose log to change")
}

fn check(args: &LogArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args)?;
    let root = config.embedded_log_dir();
    let channels = match &args.channel {
        Some(c) => vec![c.clone()],
        None => {
            let mut names = Vec::new();
            let entries =
                std::fs::read_dir(&root).with_context(|| format!("listing {}", root.display()))?;
            for entry in entries {
                let entry = entry?;
                if entry.file_type()?.is_dir() {
                    names.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            names.sort();
            names
        }
    };
    let mut ok = true;
    for channel in channels {
        let dir = root.join(&channel);
        let report = EmbeddedLog::check(&dir)?;
        println!(
            "{channel}: {} segment(s), {} bytes, offsets {}..{}",
            report.segments, report.bytes, report.oldest, report.next
        );
        if let Some(torn) = &report.torn_tail {
            println!(
                "{channel}: an unacknowledged torn write at {torn}; the node cuts it when it opens the log"
            );
        }
        if let Some(damage) = &report.damage {
            ok = false;
            println!("{channel}: DAMAGED: {damage}");
            println!(
                "{channel}: records from offset {} on cannot be read; to recover, stop the node and run 'korder log truncate' or 'korder log reset' (see docs/operations.md)",
                damage.offset
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The offset the channel's chain reads from next: after the one recorded in its
/// last block (0 when no block records one).
fn ledger_next_offset(config: &Config, channel: &str) -> anyhow::Result<i64> {
    let location = &config.file_ledger.location;
    let ledgers = Ledgers::open_dir(location, StoreOptions::default())
        .with_context(|| format!("opening the ledger at {}", location.display()))?;
    if !ledgers.channels()?.iter().any(|c| c == channel) {
        bail!(
            "the ledger at {} has no channel {channel}",
            location.display()
        );
    }
    let store = ledgers.open(channel)?;
    let next = store_next_offset(&store)?;
    store.close();
    Ok(next)
}

fn store_next_offset(store: &BlockStore) -> anyhow::Result<i64> {
    let Some(last) = store.last_block_number() else {
        return Ok(0);
    };
    let block = store.block(last)?;
    Ok(consenter_metadata(&block)?.map_or(0, |m| m.last_offset_persisted + 1))
}

fn truncate(args: &LogArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args)?;
    let channel = channel_arg(args)?;
    let dir = config.embedded_log_dir().join(channel);
    let report = EmbeddedLog::check(&dir)?;
    let Some(damage) = report.damage else {
        println!("{channel}: the log is not damaged; nothing to cut");
        return Ok(ExitCode::SUCCESS);
    };
    println!("{channel}: DAMAGED: {damage}");
    if !args.accept_loss {
        println!(
            "{channel}: truncating discards every record from offset {} on, acknowledged ones included; run again with --accept-loss to do it",
            damage.offset
        );
        return Ok(ExitCode::FAILURE);
    }
    EmbeddedLog::truncate(&dir)?;
    let after = EmbeddedLog::check(&dir)?;
    println!(
        "{channel}: cut at {}: the log now holds offsets {}..{}",
        damage.file, after.oldest, after.next
    );
    let needed = ledger_next_offset(&config, channel)?;
    if after.next < needed {
        println!(
            "{channel}: the ledger already holds records up to offset {}, past the log's new end: run 'korder log reset --channel {channel} --accept-loss' before starting the node",
            needed - 1
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn reset(args: &LogArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(args)?;
    let channel = channel_arg(args)?;
    let dir = config.embedded_log_dir().join(channel);
    let next = ledger_next_offset(&config, channel)?;
    if !args.accept_loss {
        println!(
            "{channel}: reset discards the whole log in {}; records not yet in a block are lost; the log restarts at offset {next}. Run again with --accept-loss to do it",
            dir.display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let removed = EmbeddedLog::reset(&dir, next)?;
    println!(
        "{channel}: removed {removed} segment file(s) from {}; the log restarts at offset {next}, after the last block's",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// While the node runs: every few seconds, removes the channel's log segments whose
/// records all precede the offset recorded in the block before the last one (a
/// margin of one block), and reports the log's size in the metrics. Stops when the
/// log is dropped.
pub(crate) fn keep_bounded(
    runtime: &tokio::runtime::Handle,
    log: Arc<EmbeddedLog>,
    store: BlockStore,
    channel: String,
    metrics: Arc<Metrics>,
) {
    let weak: Weak<EmbeddedLog> = Arc::downgrade(&log);
    drop(log);
    runtime.spawn(async move {
        loop {
            let Some(log) = weak.upgrade() else {
                return;
            };
            let store = store.clone();
            let done = tokio::task::spawn_blocking(move || trim(&log, &store)).await;
            match done {
                Ok(Ok((bytes, segments))) => {
                    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
                    let segments = i64::try_from(segments).unwrap_or(i64::MAX);
                    metrics
                        .embedded_log_bytes
                        .with_label_values(&[&channel])
                        .set(bytes);
                    metrics
                        .embedded_log_segments
                        .with_label_values(&[&channel])
                        .set(segments);
                }
                Ok(Err(e)) => {
                    tracing::warn!(channel, error = %e, "cannot remove old log segments");
                }
                Err(e) => tracing::warn!(channel, error = %e, "log retention task failed"),
            }
            tokio::time::sleep(RETENTION_INTERVAL).await;
        }
    });
}

/// One retention pass; returns the log's bytes and segments afterwards.
fn trim(log: &EmbeddedLog, store: &BlockStore) -> anyhow::Result<(u64, usize)> {
    if let Some(previous) = store.last_block_number().and_then(BlockNumber::prev) {
        let previous = store.block(previous)?;
        if let Some(md) = consenter_metadata(&previous)? {
            // Records up to the one this block recorded are in blocks older than the
            // last one.
            log.remove_segments_below(LogOffset::new(md.last_offset_persisted).next())?;
        }
    }
    Ok(log.disk_usage())
}
