//! `korder ledger verify`: walk channel ledgers end to end — framing, numbering, hash
//! chain, data hashes, index — and verify every block signature, without changing
//! anything.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use korder_ledger::verify::{BlockHook, IndexStatus};
use korder_ledger::{BlockNumber, Ledgers, StoreOptions, VerifyReport, verify};
use korder_proto::Message;
use korder_proto::common::Block;

use super::block::check_signatures;

/// Ledger tools.
#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Check channel ledgers: record framing, numbering, hash chain, data hashes, the
    /// index, and every block signature.
    ///
    /// DIR is a ledger root (holding `chains/<channel>/`) or a data directory made by
    /// `korder init` (its ledgers are found under DIR/ledger or DIR/<node>/ledger).
    /// Nothing is written. The exit status is 1 when a block is damaged or its
    /// signatures do not verify; the first bad block is named with its file and offset.
    Verify(VerifyArgs),
}

/// Options of `korder ledger verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Ledger root or data directory.
    pub dir: PathBuf,
    /// Check only this channel.
    #[arg(long)]
    pub channel: Option<String>,
}

/// Runs a `korder ledger` subcommand.
pub fn run(cmd: LedgerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LedgerCommand::Verify(args) => verify_cmd(&args),
    }
}

/// Ledger roots under `dir`: `dir` itself, `dir/ledger`, or `dir/*/ledger`.
fn ledger_roots(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let is_root = |p: &Path| p.join("chains").is_dir();
    if !dir.is_dir() {
        anyhow::bail!("{}: not a directory", dir.display());
    }
    if is_root(dir) {
        return Ok(vec![dir.to_path_buf()]);
    }
    if is_root(&dir.join("ledger")) {
        return Ok(vec![dir.join("ledger")]);
    }
    let mut roots = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = entry?.path().join("ledger");
        if is_root(&p) {
            roots.push(p);
        }
    }
    roots.sort();
    if roots.is_empty() {
        anyhow::bail!(
            "{}: no ledger found (looked for chains/, ledger/chains/ and */ledger/chains/)",
            dir.display()
        );
    }
    Ok(roots)
}

fn verify_cmd(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let mut all_ok = true;
    let mut checked = 0usize;
    for root in ledger_roots(&args.dir)? {
        let ledgers = Ledgers::open_dir(&root, StoreOptions::default())
            .with_context(|| format!("opening the ledger root {}", root.display()))?;
        let mut channels = ledgers
            .channels()
            .with_context(|| format!("listing the channels of {}", root.display()))?;
        channels.sort();
        if let Some(c) = &args.channel {
            channels.retain(|name| name == c);
        }
        for channel in channels {
            checked += 1;
            let outcome = verify_channel(&ledgers, &root, &channel)?;
            println!("{}", outcome.summary);
            all_ok &= outcome.ok;
        }
    }
    if checked == 0 {
        match &args.channel {
            Some(c) => anyhow::bail!("{}: no channel {c:?}", args.dir.display()),
            None => anyhow::bail!("{}: the ledger holds no channel", args.dir.display()),
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Verdict on one channel.
struct ChannelOutcome {
    ok: bool,
    summary: String,
}

/// Signature counts gathered by the per-block hook.
#[derive(Default)]
struct SigStats {
    verified: u64,
    unsigned_genesis: u64,
}

/// Checks the signatures of one block: every entry must verify, and every block but
/// block 0 must carry at least one.
fn check_block_signatures(block: &Block, stats: &mut SigStats) -> Result<(), String> {
    let number = block.header.as_ref().map_or(0, |h| h.number);
    let checks = check_signatures(block).map_err(|e| format!("{e:#}"))?;
    if checks.is_empty() {
        if number == 0 {
            stats.unsigned_genesis += 1;
            return Ok(());
        }
        return Err(format!("block {number} carries no signature"));
    }
    for c in &checks {
        if let Some(e) = &c.error {
            return Err(format!(
                "signature in {} by {:?} ({}) does not verify: {e}",
                c.slot.as_str_name(),
                c.msp_id,
                c.subject
            ));
        }
    }
    stats.verified += checks.len() as u64;
    Ok(())
}

fn verify_channel(ledgers: &Ledgers, root: &Path, channel: &str) -> anyhow::Result<ChannelOutcome> {
    let total_bytes = block_file_bytes(&root.join("chains").join(channel));
    let mut bar = ProgressBar::new(channel, total_bytes);
    let mut stats = SigStats::default();
    let mut hook = |block: &Block| {
        bar.advance(block.encoded_len() as u64);
        check_block_signatures(block, &mut stats)
    };
    let hook: BlockHook<'_> = &mut hook;
    let report = verify(ledgers, channel, &mut |_| {}, Some(hook))
        .with_context(|| format!("verifying channel {channel} in {}", root.display()))?;
    bar.finish();
    Ok(summarize(root, &report, &stats))
}

fn summarize(root: &Path, r: &VerifyReport, stats: &SigStats) -> ChannelOutcome {
    let mut summary = format!(
        "channel {}: {} blocks, {} files, {} bytes, {} signatures verified",
        r.channel, r.blocks_ok, r.files, r.bytes, stats.verified
    );
    if stats.unsigned_genesis > 0 {
        summary.push_str(" (block 0 unsigned)");
    }
    match &r.index {
        IndexStatus::Consistent { .. } => summary.push_str(", index consistent"),
        IndexStatus::Missing => summary.push_str(", no index (rebuilt at next open)"),
        IndexStatus::Behind { last_indexed } => summary.push_str(&format!(
            ", index behind (last indexed {:?}; caught up at next open)",
            last_indexed.map(BlockNumber::get)
        )),
        IndexStatus::Unreadable(e) => summary.push_str(&format!(
            ", index not checked (unreadable while a node holds it, or before the next open repairs it: {e})"
        )),
        IndexStatus::Mismatch { number, reason } => {
            summary.push_str(&format!(", INDEX MISMATCH at block {number}: {reason}"));
        }
    }
    if let Some(t) = &r.torn_tail {
        summary.push_str(&format!(
            ", torn tail of {} bytes in {} at offset {} (cut at next open)",
            t.bytes,
            root.join(&t.file).display(),
            t.offset
        ));
    }
    if let Some(b) = &r.first_bad {
        summary.push_str(&format!(
            "\nchannel {}: BAD block {} in {} at offset {}: {}",
            r.channel,
            b.number,
            root.join(&b.file).display(),
            b.offset,
            b.reason
        ));
    } else if r.is_ok() {
        summary.push_str(": OK");
    }
    ChannelOutcome {
        ok: r.is_ok(),
        summary,
    }
}

/// Total size of the block files of a channel directory (0 when unreadable).
fn block_file_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("blockfile_"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct ProgressBar {
    channel: String,
    total_bytes: u64,
    done_bytes: u64,
    blocks: u64,
    enabled: bool,
    last_draw: Option<Instant>,
}

const BAR_WIDTH: u64 = 30;
const REDRAW_EVERY: Duration = Duration::from_millis(100);

impl ProgressBar {
    fn new(channel: &str, total_bytes: u64) -> Self {
        Self {
            channel: channel.to_owned(),
            total_bytes,
            done_bytes: 0,
            blocks: 0,
            enabled: std::io::stderr().is_terminal(),
            last_draw: None,
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.done_bytes += bytes;
        self.blocks += 1;
        if !self.enabled || self.last_draw.is_some_and(|t| t.elapsed() < REDRAW_EVERY) {
            return;
        }
        self.last_draw = Some(Instant::now());
        self.draw();
    }

    fn draw(&self) {
        let done = self.done_bytes.min(self.total_bytes);
        let filled = (done * BAR_WIDTH)
            .checked_div(self.total_bytes)
            .unwrap_or(0);
        let percent = (done * 100).checked_div(self.total_bytes).unwrap_or(0);
        let bar: String = (0..BAR_WIDTH)
            .map(|i| if i < filled { '#' } else { '-' })
            .collect();
        let mut err = std::io::stderr().lock();
        // A failed progress write is not worth stopping the check for.
        let _ = write!(
            err,
            "\r{} [{bar}] {percent:>3}% {} blocks",
            self.channel, self.blocks
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.enabled && self.last_draw.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{}\r", " ".repeat(self.channel.len() + 60));
            let _ = err.flush();
        }
    }
}
