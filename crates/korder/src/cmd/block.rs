//! `korder block inspect`: decode one block file, recompute its hashes and verify its
//! signatures, and print what it holds.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Subcommand};
use korder_ledger::block::{
    consenter_metadata, data_hash, header_hash, last_config_index, signed_entries,
};
use korder_msp::Identity;
use korder_proto::Message;
use korder_proto::common::{
    Block, BlockMetadataIndex, ChannelHeader, ConfigEnvelope, Envelope, HeaderType, Payload,
};
use serde_json::{Value, json};

/// Block file tools.
#[derive(Subcommand, Debug)]
pub enum BlockCommand {
    /// Decode a block file, recompute its hashes, verify its signatures and print it.
    ///
    /// The exit status is 0 when the block decodes, its header's data hash equals the
    /// hash of its data and every metadata signature verifies; it is 1 when the file
    /// does not decode as a common.Block, when the data hash does not match (reported
    /// as `data_hash_valid: false`) or when a signature does not verify.
    Inspect(InspectArgs),
}

/// Options of `korder block inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A serialized common.Block (for instance a `.block` file from `korder fetch`).
    pub file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs a `korder block` subcommand.
pub fn run(cmd: BlockCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BlockCommand::Inspect(args) => inspect(&args),
    }
}

fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    let block = read_block(&args.file)?;
    let report = inspect_block(&block)
        .with_context(|| format!("{}: inconsistent block", args.file.display()))?;
    let text = if args.json {
        serde_json::to_string_pretty(&report.json)? + "\n"
    } else {
        render_text(&args.file, &report.json)
    };
    write_stdout(&text)?;
    if report.problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for p in &report.problems {
        eprintln!("korder: {}: {p}", args.file.display());
    }
    Ok(ExitCode::FAILURE)
}

/// Reads and decodes a block file, naming the file in every error.
pub(crate) fn read_block(path: &Path) -> anyhow::Result<Block> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let block = Block::decode(bytes.as_slice()).with_context(|| {
        format!(
            "{}: {} bytes that do not decode as a common.Block",
            path.display(),
            bytes.len()
        )
    })?;
    if block.header.is_none() {
        anyhow::bail!(
            "{}: decodes as a common.Block without a header ({} bytes; not a block file?)",
            path.display(),
            bytes.len()
        );
    }
    Ok(block)
}

/// Result of checking one metadata signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignatureCheck {
    /// Metadata slot the signature sits in.
    pub slot: BlockMetadataIndex,
    /// MSP id of the signer (empty when the creator does not decode).
    pub msp_id: String,
    /// Subject of the signer's certificate (empty when it does not decode).
    pub subject: String,
    /// Why the signature does not verify; `None` when it does.
    pub error: Option<String>,
}

/// Verifies every signature of the SIGNATURES and LAST_CONFIG slots against the
/// certificate in its creator's serialized identity. Fails only when the metadata
/// itself does not decode.
pub(crate) fn check_signatures(block: &Block) -> anyhow::Result<Vec<SignatureCheck>> {
    let entries = signed_entries(block).context("reading the block's signatures")?;
    Ok(entries
        .into_iter()
        .map(|e| match Identity::from_serialized(&e.creator) {
            Err(err) => SignatureCheck {
                slot: e.slot,
                msp_id: String::new(),
                subject: String::new(),
                error: Some(format!("signer identity: {err}")),
            },
            Ok(id) => SignatureCheck {
                slot: e.slot,
                msp_id: id.msp_id().to_owned(),
                subject: id.certificate().subject().to_owned(),
                error: id
                    .verify(&e.signed_data, &e.signature)
                    .err()
                    .map(|err| err.to_string()),
            },
        })
        .collect())
}

/// What `inspect` found: the JSON description and the problems that make the exit
/// status non-zero.
pub(crate) struct Inspection {
    pub json: Value,
    pub problems: Vec<String>,
}

fn slot_name(slot: BlockMetadataIndex) -> &'static str {
    slot.as_str_name()
}

fn header_type_name(t: i32) -> String {
    HeaderType::try_from(t).map_or_else(|_| format!("UNKNOWN({t})"), |h| h.as_str_name().into())
}

/// The payload and channel header of a marshalled envelope.
pub(crate) fn envelope_channel_header(bytes: &Bytes) -> Option<(Payload, ChannelHeader)> {
    let env = Envelope::decode(bytes.clone()).ok()?;
    let payload = Payload::decode(env.payload).ok()?;
    let ch = ChannelHeader::decode(payload.header.as_ref()?.channel_header.as_ref()).ok()?;
    Some((payload, ch))
}

/// Describes a decoded block. Fails when its metadata does not decode.
pub(crate) fn inspect_block(block: &Block) -> anyhow::Result<Inspection> {
    let mut problems = Vec::new();
    let header = block.header.clone().unwrap_or_default();
    let data = block.data.clone().unwrap_or_default();
    let computed = data_hash(&data);
    let data_hash_valid = header.data_hash[..] == computed[..];
    if !data_hash_valid {
        problems.push(format!(
            "block {}: header data_hash {} differs from the hash of the block's data {}",
            header.number,
            hex::encode(&header.data_hash),
            hex::encode(computed)
        ));
    }
    let metadata_slots = block.metadata.as_ref().map_or(0, |m| m.metadata.len());
    let last_config = last_config_index(block)
        .with_context(|| format!("block {}: last config index", header.number))?;
    let kafka = consenter_metadata(block)
        .with_context(|| format!("block {}: consenter metadata", header.number))?;
    let signatures =
        check_signatures(block).with_context(|| format!("block {}: signatures", header.number))?;
    for s in &signatures {
        if let Some(e) = &s.error {
            problems.push(format!(
                "block {}: signature in {} by {:?} does not verify: {e}",
                header.number,
                slot_name(s.slot),
                s.msp_id
            ));
        }
    }

    let mut envelopes = Vec::with_capacity(data.data.len());
    let mut config = Value::Null;
    for (i, entry) in data.data.iter().enumerate() {
        match envelope_channel_header(entry) {
            None => envelopes.push(json!({ "index": i, "error": "not a decodable envelope" })),
            Some((payload, ch)) => {
                if i == 0 && ch.r#type == HeaderType::Config as i32 {
                    config = match ConfigEnvelope::decode(payload.data.as_ref()) {
                        Ok(ce) => json!({
                            "channel_id": ch.channel_id,
                            "sequence": ce.config.as_ref().map_or(0, |c| c.sequence),
                        }),
                        Err(e) => json!({
                            "channel_id": ch.channel_id,
                            "error": format!("ConfigEnvelope does not decode: {e}"),
                        }),
                    };
                }
                envelopes.push(json!({
                    "index": i,
                    "type": header_type_name(ch.r#type),
                    "channel_id": ch.channel_id,
                    "tx_id": ch.tx_id,
                }));
            }
        }
    }

    let json = json!({
        "number": header.number,
        "tx_count": data.data.len(),
        "previous_hash": hex::encode(&header.previous_hash),
        "data_hash": hex::encode(&header.data_hash),
        "computed_data_hash": hex::encode(computed),
        "data_hash_valid": data_hash_valid,
        "header_hash": hex::encode(header_hash(&header)),
        "metadata_slots": metadata_slots,
        "last_config": last_config.get(),
        "kafka_metadata": kafka.map(|k| json!({
            "last_offset_persisted": k.last_offset_persisted,
            "last_original_offset_processed": k.last_original_offset_processed,
            "last_resubmitted_config_offset": k.last_resubmitted_config_offset,
        })),
        "signatures": signatures.iter().map(|s| {
            let mut v = json!({
                "slot": slot_name(s.slot),
                "msp_id": s.msp_id,
                "subject": s.subject,
                "valid": s.error.is_none(),
            });
            if let (Some(e), Some(obj)) = (&s.error, v.as_object_mut()) {
                obj.insert("error".into(), Value::String(e.clone()));
            }
            v
        }).collect::<Vec<_>>(),
        "config": config,
        "envelopes": envelopes,
    });
    Ok(Inspection { json, problems })
}

/// A JSON value as text: strings without quotes.
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn render_text(path: &Path, v: &Value) -> String {
    let mut text = String::new();
    let mut line = |key: &str, value: String| {
        text.push_str(&format!("{:<20}{value}\n", format!("{key}:")));
    };
    line("file", path.display().to_string());
    for key in [
        "number",
        "tx_count",
        "previous_hash",
        "data_hash",
        "computed_data_hash",
        "data_hash_valid",
        "header_hash",
        "metadata_slots",
        "last_config",
    ] {
        line(key, plain(&v[key]));
    }
    if let Some(k) = v["kafka_metadata"].as_object() {
        line(
            "kafka_metadata",
            format!(
                "last_offset_persisted {} last_original_offset_processed {} last_resubmitted_config_offset {}",
                k["last_offset_persisted"],
                k["last_original_offset_processed"],
                k["last_resubmitted_config_offset"]
            ),
        );
    }
    if let Some(c) = v["config"].as_object() {
        let seq = c.get("sequence").map_or_else(|| "?".into(), plain);
        line(
            "config",
            format!("channel {} sequence {seq}", plain(&c["channel_id"])),
        );
    }
    for s in v["signatures"].as_array().into_iter().flatten() {
        let verdict = match s.get("error") {
            Some(e) => format!("INVALID: {}", plain(e)),
            None => "valid".into(),
        };
        line(
            "signature",
            format!(
                "{} {} {:?} {verdict}",
                plain(&s["slot"]),
                plain(&s["msp_id"]),
                plain(&s["subject"])
            ),
        );
    }
    for e in v["envelopes"].as_array().into_iter().flatten() {
        let key = format!("envelope {}", e["index"]);
        match e.get("error") {
            Some(err) => line(&key, plain(err)),
            None => line(
                &key,
                format!(
                    "{} channel {} tx {}",
                    plain(&e["type"]),
                    plain(&e["channel_id"]),
                    plain(&e["tx_id"])
                ),
            ),
        }
    }
    text
}
