//! Seek resolution: which blocks a Deliver request asks for, given the ledger's
//! height when the request arrives. A pure function of the request and the height,
//! so that it can be tested and fuzzed without a channel.
//!
//! Start positions: OLDEST is block 0, NEWEST the last block (`height - 1`), a
//! SPECIFIED number up to the height (the height itself means "wait for the next
//! block"; above it is NOT_FOUND), NEXT_COMMIT the height; a start without a type is
//! NOT_FOUND (as Fabric's ledger iterator answers). Stop positions: OLDEST stops at
//! the start, NEWEST at the last block (at the start for NEWEST..NEWEST, so that one
//! block is sent however fast the ledger grows), SPECIFIED at that number,
//! NEXT_COMMIT at the height; a stop without a type counts as block 0, as in Fabric.
//! A request without start or stop is BAD_REQUEST, and so is a SPECIFIED stop below
//! the start. Any other stop that resolves below the start (a NEWEST stop under a
//! start at the height, an untyped stop after block 0) is never reached: Fabric
//! serves such a request as an endless stream of blocks, and so does korder, so that
//! a client sees the same answer from both.

use korder_proto::common::Status;
use korder_proto::orderer::{SeekInfo, SeekPosition, seek_info, seek_position};
use korder_types::ids::BlockNumber;

/// The blocks a request is served: from `start` to `stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeekRange {
    /// First block to send.
    pub start: BlockNumber,
    /// Where the request ends with SUCCESS.
    pub stop: Stop,
    /// FAIL_IF_NOT_READY: NOT_FOUND instead of waiting when a block is not there yet.
    pub fail_if_not_ready: bool,
}

/// The end of a Deliver request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After sending this block (never below the start).
    After(BlockNumber),
    /// Never: the stream goes on as long as the client stays.
    Never,
}

impl Stop {
    /// Whether `sent` is the last block of the request.
    pub fn is_last(self, sent: BlockNumber) -> bool {
        self == Stop::After(sent)
    }
}

/// Resolves `seek` against a ledger of `height` blocks; the error is the status
/// that ends the request (BAD_REQUEST or NOT_FOUND).
///
/// Never `start > stop` (a stop below the start that Fabric serves as an endless
/// stream is [`Stop::Never`]); `start <= height`; with FAIL_IF_NOT_READY, `start < height`
/// (otherwise NOT_FOUND at once, as the first step of the delivery loop would answer).
pub fn resolve(seek: &SeekInfo, height: u64) -> Result<SeekRange, Status> {
    let (Some(start), Some(stop)) = (seek.start.as_ref(), seek.stop.as_ref()) else {
        return Err(Status::BadRequest);
    };
    let start_num = start_number(start, height)?;
    let stop_num = match &stop.r#type {
        Some(seek_position::Type::Oldest(_)) => start_num,
        Some(seek_position::Type::Newest(_)) if start == stop => start_num,
        Some(seek_position::Type::Newest(_)) => height.saturating_sub(1),
        Some(seek_position::Type::Specified(s)) if s.number < start_num => {
            return Err(Status::BadRequest);
        }
        Some(seek_position::Type::Specified(s)) => s.number,
        Some(seek_position::Type::NextCommit(_)) => height,
        None => 0,
    };
    let stop = if stop_num < start_num {
        Stop::Never
    } else {
        Stop::After(BlockNumber::new(stop_num))
    };
    let fail_if_not_ready = seek.behavior == seek_info::SeekBehavior::FailIfNotReady as i32;
    if fail_if_not_ready && start_num >= height {
        return Err(Status::NotFound);
    }
    Ok(SeekRange {
        start: BlockNumber::new(start_num),
        stop,
        fail_if_not_ready,
    })
}

fn start_number(start: &SeekPosition, height: u64) -> Result<u64, Status> {
    match &start.r#type {
        Some(seek_position::Type::Oldest(_)) => Ok(0),
        Some(seek_position::Type::Newest(_)) => Ok(height.saturating_sub(1)),
        Some(seek_position::Type::Specified(s)) if s.number <= height => Ok(s.number),
        Some(seek_position::Type::NextCommit(_)) => Ok(height),
        Some(seek_position::Type::Specified(_)) | None => Err(Status::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use korder_proto::orderer::{SeekNewest, SeekNextCommit, SeekOldest, SeekSpecified};

    fn oldest() -> SeekPosition {
        SeekPosition {
            r#type: Some(seek_position::Type::Oldest(SeekOldest {})),
        }
    }
    fn newest() -> SeekPosition {
        SeekPosition {
            r#type: Some(seek_position::Type::Newest(SeekNewest {})),
        }
    }
    fn next_commit() -> SeekPosition {
        SeekPosition {
            r#type: Some(seek_position::Type::NextCommit(SeekNextCommit {})),
        }
    }
    fn at(number: u64) -> SeekPosition {
        SeekPosition {
            r#type: Some(seek_position::Type::Specified(SeekSpecified { number })),
        }
    }
    fn untyped() -> SeekPosition {
        SeekPosition { r#type: None }
    }
    fn seek(start: SeekPosition, stop: SeekPosition) -> SeekInfo {
        SeekInfo {
            start: Some(start),
            stop: Some(stop),
            ..Default::default()
        }
    }
    fn range(start: u64, stop: u64) -> Result<SeekRange, Status> {
        Ok(SeekRange {
            start: BlockNumber::new(start),
            stop: Stop::After(BlockNumber::new(stop)),
            fail_if_not_ready: false,
        })
    }
    fn endless(start: u64) -> Result<SeekRange, Status> {
        Ok(SeekRange {
            start: BlockNumber::new(start),
            stop: Stop::Never,
            fail_if_not_ready: false,
        })
    }

    /// Each start position resolves to its block against a ledger of height 10.
    #[test]
    fn start_positions() {
        assert_eq!(resolve(&seek(oldest(), at(20)), 10), range(0, 20));
        assert_eq!(resolve(&seek(newest(), at(20)), 10), range(9, 20));
        assert_eq!(resolve(&seek(at(4), at(20)), 10), range(4, 20));
        assert_eq!(resolve(&seek(at(10), at(20)), 10), range(10, 20));
        assert_eq!(resolve(&seek(next_commit(), at(20)), 10), range(10, 20));
        assert_eq!(resolve(&seek(at(11), at(20)), 10), Err(Status::NotFound));
        assert_eq!(resolve(&seek(untyped(), at(20)), 10), Err(Status::NotFound));
    }

    /// Each stop position resolves as Fabric does; NEWEST..NEWEST is one block.
    #[test]
    fn stop_positions() {
        assert_eq!(resolve(&seek(at(3), oldest()), 10), range(3, 3));
        assert_eq!(resolve(&seek(at(3), newest()), 10), range(3, 9));
        assert_eq!(resolve(&seek(newest(), newest()), 10), range(9, 9));
        assert_eq!(resolve(&seek(at(3), next_commit()), 10), range(3, 10));
        assert_eq!(resolve(&seek(at(3), at(u64::MAX)), 10), range(3, u64::MAX));
        assert_eq!(resolve(&seek(oldest(), newest()), 0), range(0, 0));
    }

    /// A request without start or stop, or whose SPECIFIED stop is below its start,
    /// is BAD_REQUEST.
    #[test]
    fn bad_requests() {
        let missing = SeekInfo {
            start: Some(oldest()),
            ..Default::default()
        };
        assert_eq!(resolve(&missing, 10), Err(Status::BadRequest));
        assert_eq!(resolve(&seek(at(5), at(4)), 10), Err(Status::BadRequest));
    }

    /// Other stops below the start are served as Fabric serves them: an endless
    /// stream (stop never reached); an untyped stop is block 0.
    #[test]
    fn stops_below_the_start_are_never_reached() {
        assert_eq!(resolve(&seek(at(5), untyped()), 10), endless(5));
        assert_eq!(resolve(&seek(oldest(), untyped()), 10), range(0, 0));
        assert_eq!(resolve(&seek(next_commit(), newest()), 10), endless(10));
        assert_eq!(resolve(&seek(at(10), newest()), 10), endless(10));
    }

    /// FAIL_IF_NOT_READY answers NOT_FOUND for a start at the height, and serves a
    /// start below it.
    #[test]
    fn fail_if_not_ready() {
        let mut s = seek(next_commit(), next_commit());
        s.behavior = seek_info::SeekBehavior::FailIfNotReady as i32;
        assert_eq!(resolve(&s, 10), Err(Status::NotFound));
        s.start = Some(at(9));
        assert_eq!(
            resolve(&s, 10),
            Ok(SeekRange {
                start: BlockNumber::new(9),
                stop: Stop::After(BlockNumber::new(10)),
                fail_if_not_ready: true
            })
        );
    }
}
