//! Deliver requests: an envelope decoded down to its `SeekInfo` as Deliver reads
//! it, and the seek resolution (`korder_server::seek::resolve`) against ledgers of
//! several heights.

use arbitrary::{Arbitrary, Unstructured};
use korder_ledger::BlockNumber;
use korder_proto::Message;
use korder_proto::common::{ChannelHeader, Envelope, Payload, SignatureHeader, Status};
use korder_proto::orderer::{
    SeekInfo, SeekNewest, SeekNextCommit, SeekOldest, SeekPosition, SeekSpecified, seek_info,
    seek_position,
};
use korder_server::seek::{SeekRange, Stop, resolve};

/// A seek position as the fuzzer builds it.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Position {
    Oldest,
    Newest,
    Specified(u64),
    /// A number near the height: `height + delta - 2`.
    NearHeight(u8),
    NextCommit,
    Untyped,
}

#[derive(Arbitrary, Debug)]
struct Structured {
    start: Option<Position>,
    stop: Option<Position>,
    behavior: i32,
    error_response: i32,
    height: u64,
    small_height: u8,
}

fn position(p: Position, height: u64) -> SeekPosition {
    use seek_position::Type;
    let r#type = match p {
        Position::Oldest => Some(Type::Oldest(SeekOldest {})),
        Position::Newest => Some(Type::Newest(SeekNewest {})),
        Position::Specified(number) => Some(Type::Specified(SeekSpecified { number })),
        Position::NearHeight(d) => Some(Type::Specified(SeekSpecified {
            number: height.saturating_add(u64::from(d % 5)).saturating_sub(2),
        })),
        Position::NextCommit => Some(Type::NextCommit(SeekNextCommit {})),
        Position::Untyped => None,
    };
    SeekPosition { r#type }
}

/// Arbitrary input: a structured request and height (first byte even), or bytes
/// as a Deliver envelope (odd).
///
/// Invariants: nothing panics; the same request and height give the same answer,
/// also after the request went over the wire; a range has `start <= stop` and
/// `start <= height` (`start < height` with FAIL_IF_NOT_READY); the answer is the
/// one the documented seek semantics give (an independent model below); the only
/// errors are BAD_REQUEST and NOT_FOUND.
pub fn deliver_seek(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        let Some(seek) = seek_of_envelope(rest) else {
            return;
        };
        for height in [0, 1, 2, 10, u64::MAX] {
            check(&seek, height);
        }
        return;
    }
    let Ok(input) = Structured::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    for height in [u64::from(input.small_height), input.height] {
        let seek = SeekInfo {
            start: input.start.map(|p| position(p, height)),
            stop: input.stop.map(|p| position(p, height)),
            behavior: input.behavior % 3,
            error_response: input.error_response % 3,
        };
        check(&seek, height);
    }
}

/// Decodes a Deliver envelope the way Deliver does, down to the `SeekInfo`.
fn seek_of_envelope(bytes: &[u8]) -> Option<SeekInfo> {
    let envelope = Envelope::decode(bytes).ok()?;
    let payload = Payload::decode(envelope.payload.as_ref()).ok()?;
    let header = payload.header.as_ref()?;
    ChannelHeader::decode(header.channel_header.as_ref()).ok()?;
    SignatureHeader::decode(header.signature_header.as_ref()).ok()?;
    SeekInfo::decode(payload.data.as_ref()).ok()
}

fn check(seek: &SeekInfo, height: u64) {
    let answer = resolve(seek, height);
    assert_eq!(
        answer,
        resolve(seek, height),
        "same request, another answer"
    );
    let wire =
        SeekInfo::decode(seek.encode_to_vec().as_slice()).expect("an encoded SeekInfo decodes");
    assert_eq!(
        answer,
        resolve(&wire, height),
        "the wire changed the answer"
    );
    match answer {
        Ok(r) => {
            if let Stop::After(stop) = r.stop {
                assert!(r.start <= stop, "range {r:?} starts after its stop");
            }
            assert!(
                r.start.get() <= height,
                "range {r:?} starts above height {height}"
            );
            if r.fail_if_not_ready {
                assert!(
                    r.start.get() < height,
                    "FAIL_IF_NOT_READY would wait: {r:?}"
                );
            }
        }
        Err(s) => assert!(
            matches!(s, Status::BadRequest | Status::NotFound),
            "unexpected status {s:?}"
        ),
    }
    assert_eq!(
        answer,
        model(seek, height),
        "resolution differs from the seek semantics for {seek:?} at height {height}"
    );
}

/// The seek semantics, written independently of the server's code.
fn model(seek: &SeekInfo, height: u64) -> Result<SeekRange, Status> {
    use seek_position::Type;
    let start = seek.start.as_ref().ok_or(Status::BadRequest)?;
    let stop = seek.stop.as_ref().ok_or(Status::BadRequest)?;
    let last = height.saturating_sub(1);
    let from = match start.r#type {
        Some(Type::Oldest(_)) => 0,
        Some(Type::Newest(_)) => last,
        Some(Type::NextCommit(_)) => height,
        Some(Type::Specified(SeekSpecified { number })) => {
            if number > height {
                return Err(Status::NotFound);
            }
            number
        }
        None => return Err(Status::NotFound),
    };
    let to = match stop.r#type {
        Some(Type::Oldest(_)) => from,
        Some(Type::Newest(_)) => {
            if matches!(start.r#type, Some(Type::Newest(_))) {
                from
            } else {
                last
            }
        }
        Some(Type::NextCommit(_)) => height,
        Some(Type::Specified(SeekSpecified { number })) if number < from => {
            return Err(Status::BadRequest);
        }
        Some(Type::Specified(SeekSpecified { number })) => number,
        // Fabric leaves the stop number at its zero value.
        None => 0,
    };
    // Fabric serves a stop below the start as a stream that never reaches it.
    let to = if to < from {
        Stop::Never
    } else {
        Stop::After(BlockNumber::new(to))
    };
    let fail = seek.behavior == seek_info::SeekBehavior::FailIfNotReady as i32;
    if fail && from == height {
        return Err(Status::NotFound);
    }
    Ok(SeekRange {
        start: BlockNumber::new(from),
        stop: to,
        fail_if_not_ready: fail,
    })
}
