//! Resume check: before a chain writes anything to a shared log (Kafka), it makes
//! sure the log is the one its ledger was built from.
//!
//! Two cases, decided from the ledger alone:
//! - **genesis** (the ledger holds only the channel's first block): the chain needs
//!   every record from offset 0. A log whose oldest record is above 0 (retention,
//!   DeleteRecords) would make the node cut a different chain from the same genesis
//!   block: refused.
//! - **after block N** (the last block records `last_offset_persisted = o`): the
//!   record at `o` must exist, and the block's last envelope must be that record
//!   or one of the [`SEARCH_BACK_RECORDS`] records before it (a block cut by its
//!   TIMETOCUT, or cut before an envelope that did not fit, ends at a record that
//!   is not one of its envelopes). An envelope is signed and carries its
//!   transaction id: another log does not hold it there. A log that ends
//!   before `o` (deleted and recreated, truncated), lost `o` to retention, or holds
//!   something else at `o` (recreated and refilled by other nodes) is refused.
//!
//! Failures to reach the log (brokers down, timeouts) are transient: the caller
//! retries, and writes nothing meanwhile. A refusal is final until the operator
//! acts: the caller stops the channel with the refusal as its error.
//!
//! The check only reads, through the [`Log`] trait: open a reader at an offset, take
//! records; the log's out-of-range error carries its current range.

use std::time::Duration;

use bytes::Bytes;
use korder_consensus::{BlockNumber, Record, decode_record};
use korder_log::{Log, LogError, LogOffset, LogReader, LogRecord, ReadFrom};
use korder_proto::Message;
use korder_proto::common::Envelope;

/// How many records up to the last block's offset may be read to find the block's
/// last envelope. Between the two lie only records that went into no block
/// (CONNECT, TIMETOCUTs, rejected envelopes).
pub const SEARCH_BACK_RECORDS: i64 = 4096;

/// What the ledger says the log must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumePoint {
    /// Only the genesis block: the chain reads the log from offset 0.
    Genesis,
    /// The chain resumes after the record at `offset`, where block `block` was cut.
    After {
        block: BlockNumber,
        offset: LogOffset,
        /// The block's last envelope, as stored in the ledger.
        last_envelope: Bytes,
    },
    /// Nothing to check against (the last block carries no consenter metadata).
    Unchecked,
}

/// Why the check did not pass.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The log could not be read now; a later attempt may pass.
    #[error("{0}")]
    Transient(String),
    /// The log is not the one the ledger was built from: the chain must not run on
    /// it.
    #[error("{0}")]
    Refused(String),
    /// The log no longer holds the records the chain needs next (retention or
    /// DeleteRecords removed them): the chain must not run on it until the ledger
    /// has caught up, from other orderers, past the removed records.
    #[error("{0}")]
    Behind(String),
}

/// Checks that `log` holds what `point` requires. Reads only; each read is bounded
/// by `read_timeout`.
pub async fn check<L: Log>(
    log: &L,
    channel: &str,
    point: &ResumePoint,
    read_timeout: Duration,
) -> Result<(), ResumeError> {
    match point {
        ResumePoint::Unchecked => Ok(()),
        ResumePoint::Genesis => check_genesis(log, channel).await,
        ResumePoint::After {
            block,
            offset,
            last_envelope,
        } => check_after(log, channel, *block, *offset, last_envelope, read_timeout).await,
    }
}

async fn check_genesis<L: Log>(log: &L, channel: &str) -> Result<(), ResumeError> {
    match log.reader(ReadFrom::Offset(LogOffset::FIRST)).await {
        Ok(_) => Ok(()),
        Err(LogError::OffsetOutOfRange { oldest, next, .. }) if oldest > 0 => {
            Err(ResumeError::Behind(format!(
                "channel {channel}: the ledger holds only the genesis block, so the chain \
                 needs the log from offset 0, but the log's oldest record is at offset \
                 {oldest} (it holds {oldest}..{next}): records 0..{oldest} were removed \
                 (retention or DeleteRecords). Reading from {oldest} would cut a chain \
                 that differs from the other nodes'; the channel is stopped"
            )))
        }
        Err(e) => Err(ResumeError::Transient(format!(
            "channel {channel}: checking that the log starts at offset 0: {e}"
        ))),
    }
}

async fn check_after<L: Log>(
    log: &L,
    channel: &str,
    block: BlockNumber,
    offset: LogOffset,
    last_envelope: &Bytes,
    read_timeout: Duration,
) -> Result<(), ResumeError> {
    let o = offset.get();
    let out_of_range = |oldest: i64, next: i64| {
        if o >= next {
            ResumeError::Refused(format!(
                "channel {channel}: the last block ({block}) was cut at log offset {o}, but \
                 the log ends before it (it holds offsets {oldest}..{next}): it is not the \
                 log this ledger was built from (topic deleted and recreated?) or it lost \
                 records; the channel is stopped"
            ))
        } else {
            ResumeError::Behind(format!(
                "channel {channel}: the last block ({block}) was cut at log offset {o}, but \
                 that record was removed (the log holds offsets {oldest}..{next}; \
                 retention or DeleteRecords), so the node cannot confirm that the log is \
                 the one its ledger was built from"
            ))
        }
    };
    let first = match read_range(log, o, o, read_timeout).await {
        Ok(records) => records,
        // Only the record at the offset is gone: the log still holds every record
        // the chain reads next (the other orderers of the channel have read the same
        // log up to here, or the node has just caught up from them).
        Err(ReadError::OutOfRange { oldest, next }) if oldest == o + 1 && oldest <= next => {
            tracing::warn!(
                channel,
                block = block.get(),
                offset = o,
                "the record at the last block's offset was removed (retention or DeleteRecords), \
                 but the log holds every record after it: resuming without checking that record"
            );
            return Ok(());
        }
        Err(e) => return Err(e.into_resume(channel, &out_of_range)),
    };
    let Some(at) = first.into_iter().next() else {
        return Err(ResumeError::Transient(format!(
            "channel {channel}: no record read at offset {o}"
        )));
    };
    let found = match decode_record(at.value.clone()) {
        Ok(Record::Regular(r)) if same_envelope(&r.envelope, last_envelope) => return Ok(()),
        Ok(other) => describe(&other),
        Err(e) => format!("not a record korder or Fabric writes ({e})"),
    };
    // A block cut by its TIMETOCUT, or before an envelope that did not fit (the
    // block then ends at the record before that envelope): its last envelope lies
    // shortly before.
    let mut window = 64;
    let mut hi = o - 1;
    while hi >= 0 {
        let lo = (o - window).max(0);
        let records = match read_range(log, lo, hi, read_timeout).await {
            Ok(r) => r,
            Err(ReadError::OutOfRange { oldest, .. }) if oldest > lo && oldest <= hi => {
                read_range(log, oldest, hi, read_timeout)
                    .await
                    .map_err(|e| e.into_resume(channel, &out_of_range))?
            }
            Err(e) => return Err(e.into_resume(channel, &out_of_range)),
        };
        let hit = records.iter().rev().any(|r| {
            matches!(decode_record(r.value.clone()),
                     Ok(Record::Regular(reg)) if same_envelope(&reg.envelope, last_envelope))
        });
        if hit {
            return Ok(());
        }
        let searched_from = records.first().map_or(lo, |r| r.offset.get());
        if searched_from > lo || window >= SEARCH_BACK_RECORDS {
            break;
        }
        hi = lo - 1;
        window = (window * 4).min(SEARCH_BACK_RECORDS);
    }
    Err(ResumeError::Refused(format!(
        "channel {channel}: the last block ({block}) was cut at log offset {o}, but the \
         record there is {found}, and none of the {SEARCH_BACK_RECORDS} records up to it \
         carries the block's last envelope: the log is not the one this ledger was built \
         from (topic deleted and recreated, then written by other nodes?); the channel is \
         stopped"
    )))
}

/// How reading a range failed.
enum ReadError {
    OutOfRange { oldest: i64, next: i64 },
    Other(String),
}

impl ReadError {
    fn into_resume(
        self,
        channel: &str,
        out_of_range: &dyn Fn(i64, i64) -> ResumeError,
    ) -> ResumeError {
        match self {
            Self::OutOfRange { oldest, next } => out_of_range(oldest, next),
            Self::Other(e) => {
                ResumeError::Transient(format!("channel {channel}: reading the log: {e}"))
            }
        }
    }
}

/// Pause after a transient client error before reading again.
const UNAVAILABLE_PAUSE: Duration = Duration::from_millis(50);

/// Reads the records `lo..=hi`, each read bounded by `read_timeout` (transient
/// client errors within that bound are waited out).
async fn read_range<L: Log>(
    log: &L,
    lo: i64,
    hi: i64,
    read_timeout: Duration,
) -> Result<Vec<LogRecord>, ReadError> {
    let classify = |e: LogError| match e {
        LogError::OffsetOutOfRange { oldest, next, .. } => ReadError::OutOfRange { oldest, next },
        e => ReadError::Other(e.to_string()),
    };
    // A reader may start at the next offset to be written (it waits there): record
    // `hi` exists only if a reader may start at `hi + 1`.
    drop(
        log.reader(ReadFrom::Offset(LogOffset::new(hi).next()))
            .await
            .map_err(classify)?,
    );
    let mut reader = log
        .reader(ReadFrom::Offset(LogOffset::new(lo)))
        .await
        .map_err(classify)?;
    let mut out = Vec::new();
    let mut deadline = tokio::time::Instant::now() + read_timeout;
    while out.last().is_none_or(|r: &LogRecord| r.offset.get() < hi) {
        let record = match tokio::time::timeout_at(deadline, reader.next()).await {
            // The client reports a broker it cannot reach (one that is down while
            // another leads the partition) and keeps trying: so does the check,
            // within the same bound.
            Ok(Err(LogError::Unavailable(_))) => {
                tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + UNAVAILABLE_PAUSE),
                )
                .await;
                continue;
            }
            Ok(r) => r.map_err(classify)?,
            Err(_) => {
                return Err(ReadError::Other(format!(
                    "no record at offset {} within {read_timeout:?}",
                    out.last().map_or(lo, |r: &LogRecord| r.offset.get() + 1)
                )));
            }
        };
        out.push(record);
        deadline = tokio::time::Instant::now() + read_timeout;
    }
    Ok(out)
}

/// Whether two envelopes are the same: the same bytes, or the same fields.
fn same_envelope(a: &Bytes, b: &Bytes) -> bool {
    if a == b {
        return true;
    }
    match (Envelope::decode(a.as_ref()), Envelope::decode(b.as_ref())) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn describe(record: &Record) -> String {
    match record {
        Record::Connect => "a CONNECT".into(),
        Record::TimeToCut(n) => format!("the TIMETOCUT of block {}", n.get()),
        Record::Regular(_) => "an envelope that is not in the block".into(),
        Record::Empty => "an empty KafkaMessage".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use korder_consensus::{ConfigSeq, connect_record, order_record, time_to_cut_record};
    use korder_log::MemLog;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn env(i: u32) -> Bytes {
        Envelope {
            payload: Bytes::from(format!("payload {i}")),
            signature: Bytes::from_static(b"sig"),
        }
        .encode_to_vec()
        .into()
    }

    async fn log_of(records: Vec<Bytes>) -> MemLog {
        let log = MemLog::new();
        for r in records {
            log.append(r).await.unwrap();
        }
        log
    }

    fn after(block: u64, offset: i64, last: Bytes) -> ResumePoint {
        ResumePoint::After {
            block: BlockNumber::new(block),
            offset: LogOffset::new(offset),
            last_envelope: last,
        }
    }

    async fn run(log: &MemLog, point: ResumePoint) -> Result<(), ResumeError> {
        check(log, "ch", &point, TIMEOUT).await
    }

    /// The record at the last block's offset is its last envelope: accepted.
    #[tokio::test]
    async fn last_envelope_at_the_offset_passes() {
        let log = log_of(vec![
            connect_record(),
            order_record(env(1), ConfigSeq::new(0)),
            order_record(env(2), ConfigSeq::new(0)),
        ])
        .await;
        run(&log, after(1, 2, env(2))).await.unwrap();
    }

    /// A TIMETOCUT of the block at its offset, the last envelope a few records before
    /// (CONNECT and duplicate TIMETOCUTs between): accepted.
    #[tokio::test]
    async fn time_to_cut_with_the_envelope_before_it_passes() {
        let mut records = vec![connect_record(), order_record(env(1), ConfigSeq::new(0))];
        records.extend((0..100).map(|_| connect_record()));
        records.push(time_to_cut_record(BlockNumber::new(1)));
        let log = log_of(records).await;
        run(&log, after(1, 102, env(1))).await.unwrap();
    }

    /// A TIMETOCUT of the right block number but without the block's envelope before
    /// it (another node's log): refused.
    #[tokio::test]
    async fn time_to_cut_without_the_envelope_is_refused() {
        let log = log_of(vec![
            order_record(env(7), ConfigSeq::new(0)),
            time_to_cut_record(BlockNumber::new(1)),
        ])
        .await;
        let e = run(&log, after(1, 1, env(1))).await.unwrap_err();
        assert!(
            matches!(&e, ResumeError::Refused(m) if m.contains("the TIMETOCUT of block 1")),
            "{e}"
        );
    }

    /// Another envelope, another block's TIMETOCUT or a CONNECT at the offset, and the
    /// block's envelope nowhere before it: refused, naming what was found.
    #[tokio::test]
    async fn other_record_at_the_offset_is_refused() {
        for (record, found) in [
            (
                order_record(env(9), ConfigSeq::new(0)),
                "an envelope that is not in the block",
            ),
            (
                time_to_cut_record(BlockNumber::new(4)),
                "the TIMETOCUT of block 4",
            ),
            (connect_record(), "a CONNECT"),
        ] {
            let log = log_of(vec![order_record(env(2), ConfigSeq::new(0)), record]).await;
            let e = run(&log, after(1, 1, env(1))).await.unwrap_err();
            assert!(
                matches!(&e, ResumeError::Refused(m) if m.contains(found) && m.contains("offset 1")),
                "{e}"
            );
        }
    }

    /// A block cut before an envelope that did not fit ends at the record before that
    /// envelope, here a CONNECT: the envelope just before it is found.
    #[tokio::test]
    async fn block_ending_at_a_connect_passes() {
        let log = log_of(vec![
            order_record(env(1), ConfigSeq::new(0)),
            connect_record(),
            order_record(env(2), ConfigSeq::new(0)),
        ])
        .await;
        run(&log, after(1, 1, env(1))).await.unwrap();
    }

    /// A log that ends at or before the last block's offset: refused, with its range.
    #[tokio::test]
    async fn shorter_log_is_refused() {
        let log = log_of(vec![connect_record(), connect_record()]).await;
        for offset in [2, 5] {
            let e = run(&log, after(3, offset, env(1))).await.unwrap_err();
            assert!(
                matches!(&e, ResumeError::Refused(m) if m.contains("ends before") && m.contains("0..2")),
                "{e}"
            );
        }
    }

    /// The same envelope re-encoded (fields equal, bytes not) still matches.
    #[test]
    fn envelopes_compare_by_fields() {
        let a = env(1);
        let mut b = a.to_vec();
        // An explicit empty field 3 (unknown to Envelope) changes the bytes only.
        b.extend_from_slice(&[0x1a, 0x00]);
        assert!(same_envelope(&a, &Bytes::from(b)));
        assert!(!same_envelope(&a, &env(2)));
    }

    /// Records removed by retention: with only the record at the offset gone (the
    /// log holds every record after it), resuming passes; with a record after it gone
    /// too, the chain is behind its log.
    #[tokio::test]
    async fn removed_records_before_the_next_one_pass_and_after_it_are_behind() {
        let log = log_of(vec![
            connect_record(),
            order_record(env(1), ConfigSeq::new(0)),
            order_record(env(2), ConfigSeq::new(0)),
        ])
        .await;
        log.remove_records_below(LogOffset::new(2));
        run(&log, after(1, 1, env(1))).await.unwrap();
        log.remove_records_below(LogOffset::new(3));
        run(&log, after(1, 2, env(2))).await.unwrap();
        let e = run(&log, after(1, 1, env(1))).await.unwrap_err();
        assert!(
            matches!(&e, ResumeError::Behind(m) if m.contains("was removed") && m.contains("3..3")),
            "{e}"
        );
        let e = run(&log, ResumePoint::Genesis).await.unwrap_err();
        assert!(
            matches!(&e, ResumeError::Behind(m) if m.contains("offset 3")),
            "{e}"
        );
    }

    /// From genesis an empty log or one holding offset 0 passes.
    #[tokio::test]
    async fn genesis_needs_offset_zero() {
        run(&MemLog::new(), ResumePoint::Genesis).await.unwrap();
        run(&log_of(vec![connect_record()]).await, ResumePoint::Genesis)
            .await
            .unwrap();
    }
}
