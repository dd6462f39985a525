//! The block record of Fabric's block files: `varint(len(body)) ‖ body`, where body is
//! `varint(number) ‖ raw(data_hash) ‖ raw(previous_hash) ‖ varint(n) raw(data)… ‖
//! varint(m) raw(metadata)…` and `raw(x) = varint(len(x)) ‖ x`. Not a protobuf `Block`.
//!
//! Decoding never panics and never allocates more than the input can justify: every
//! count is checked against the bytes left.

use bytes::Bytes;
use korder_proto::common::{Block, BlockData, BlockHeader, BlockMetadata};
use prost::encoding::{decode_varint, encode_varint};

/// Longest unsigned varint (a u64 takes at most 10 bytes).
pub const MAX_VARINT_LEN: usize = 10;

/// Why a record body does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("bad varint at body offset {at}")]
    BadVarint { at: usize },
    #[error("{what} at body offset {at} claims {len} bytes but only {left} remain")]
    Overrun {
        what: &'static str,
        at: usize,
        len: u64,
        left: usize,
    },
    #[error("{count} {what} entries cannot fit in the {left} bytes left")]
    TooManyEntries {
        what: &'static str,
        count: u64,
        left: usize,
    },
    #[error("{extra} unexpected bytes after the record body")]
    TrailingBytes { extra: usize },
}

/// Result of reading a varint from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Varint {
    /// Decoded value and the number of bytes it took.
    Value(u64, usize),
    /// The buffer ends inside the varint.
    Incomplete,
    /// Longer than 10 bytes or overflowing 64 bits.
    Invalid,
}

/// Reads an unsigned LEB128 varint (protobuf's) from the front of `buf`.
pub fn get_varint(buf: &[u8]) -> Varint {
    let mut rest = buf;
    match decode_varint(&mut rest) {
        Ok(v) => Varint::Value(v, buf.len() - rest.len()),
        // prost reports a varint cut short like a bad one; a torn write must be told
        // apart: fewer than 10 bytes, every one of them saying "more follows".
        Err(_) if buf.len() < MAX_VARINT_LEN && buf.iter().all(|b| b & 0x80 != 0) => {
            Varint::Incomplete
        }
        Err(_) => Varint::Invalid,
    }
}

fn put_raw(out: &mut Vec<u8>, b: &[u8]) {
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// Serialized body of `block` (without the record's length prefix).
pub fn encode_body(block: &Block) -> Vec<u8> {
    let header = block.header.clone().unwrap_or_default();
    let data: &[Bytes] = block.data.as_ref().map_or(&[], |d| &d.data);
    let metadata: &[Bytes] = block.metadata.as_ref().map_or(&[], |m| &m.metadata);
    let size = 40
        + header.data_hash.len()
        + header.previous_hash.len()
        + data.iter().map(|d| d.len() + 5).sum::<usize>()
        + metadata.iter().map(|m| m.len() + 5).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    encode_varint(header.number, &mut out);
    put_raw(&mut out, &header.data_hash);
    put_raw(&mut out, &header.previous_hash);
    encode_varint(data.len() as u64, &mut out);
    for d in data {
        put_raw(&mut out, d);
    }
    encode_varint(metadata.len() as u64, &mut out);
    for m in metadata {
        put_raw(&mut out, m);
    }
    out
}

/// A full record: `varint(len(body)) ‖ body`.
pub fn encode_record(block: &Block) -> Vec<u8> {
    let body = encode_body(block);
    let mut out = Vec::with_capacity(body.len() + MAX_VARINT_LEN);
    encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(&body);
    out
}

struct Cursor {
    buf: Bytes,
    pos: usize,
}

impl Cursor {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn varint(&mut self) -> Result<u64, RecordError> {
        match get_varint(&self.buf[self.pos..]) {
            Varint::Value(v, n) => {
                self.pos += n;
                Ok(v)
            }
            Varint::Incomplete | Varint::Invalid => Err(RecordError::BadVarint { at: self.pos }),
        }
    }

    fn raw(&mut self, what: &'static str) -> Result<Bytes, RecordError> {
        let at = self.pos;
        let len = self.varint()?;
        if len > self.left() as u64 {
            return Err(RecordError::Overrun {
                what,
                at,
                len,
                left: self.left(),
            });
        }
        let b = self.buf.slice(self.pos..self.pos + len as usize);
        self.pos += len as usize;
        Ok(b)
    }

    fn list(&mut self, what: &'static str) -> Result<Vec<Bytes>, RecordError> {
        let count = self.varint()?;
        // Every entry takes at least its one-byte length prefix.
        if count > self.left() as u64 {
            return Err(RecordError::TooManyEntries {
                what,
                count,
                left: self.left(),
            });
        }
        (0..count).map(|_| self.raw(what)).collect()
    }
}

/// Decodes a record body. Empty hashes decode as empty byte strings; entries are
/// zero-copy slices of `body`.
pub fn decode_body(body: Bytes) -> Result<Block, RecordError> {
    let (block, used) = decode_body_prefix(body.clone())?;
    if used != body.len() {
        return Err(RecordError::TrailingBytes {
            extra: body.len() - used,
        });
    }
    Ok(block)
}

/// Decodes the record body at the start of `bytes` (which may go on past it): the
/// block and the body's length in bytes.
pub fn decode_body_prefix(bytes: Bytes) -> Result<(Block, usize), RecordError> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let number = c.varint()?;
    let data_hash = c.raw("data hash")?;
    let previous_hash = c.raw("previous hash")?;
    let data = c.list("data")?;
    let metadata = c.list("metadata")?;
    let block = Block {
        header: Some(BlockHeader {
            number,
            previous_hash,
            data_hash,
        }),
        data: Some(BlockData { data }),
        metadata: Some(BlockMetadata { metadata }),
    };
    Ok((block, c.pos))
}

/// What sits at some offset of a block file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A complete record: prefix length and body length.
    Complete { prefix_len: usize, body_len: u64 },
    /// The bytes end inside the prefix or the body: a torn write.
    Truncated,
    /// The prefix is not a valid varint although enough bytes remain.
    BadPrefix,
}

/// Classifies the record starting at the front of `head` in a file where `remaining`
/// bytes are left from that point (`head` holds the first bytes of them).
pub fn framing(head: &[u8], remaining: u64) -> Framing {
    match get_varint(head) {
        Varint::Value(len, n) => {
            if (n as u64).saturating_add(len) > remaining {
                Framing::Truncated
            } else {
                Framing::Complete {
                    prefix_len: n,
                    body_len: len,
                }
            }
        }
        Varint::Incomplete if (head.len() as u64) == remaining => Framing::Truncated,
        Varint::Incomplete | Varint::Invalid => Framing::BadPrefix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::next_block;
    use proptest::prelude::*;
    use prost::encoding::encoded_len_varint;

    /// Block 0 of the spec's worked example is stored as the 61-byte record of the spec.
    #[test]
    fn worked_example_record() {
        let env = Bytes::from(hex::decode("0a0f67656e657369732d7061796c6f6164").unwrap());
        let b0 = next_block(None, vec![env]);
        let rec = encode_record(&b0);
        let want = hex::decode(
            "3c 00 20 f78da82b0552bcbc20c372c90e77e21e2c534eb167484a56df96b53be71b59aa 00 01 11 0a0f67656e657369732d7061796c6f6164 05 00 00 00 00 00"
                .replace(' ', ""),
        )
        .unwrap();
        assert_eq!(rec.len(), 61);
        assert_eq!(rec, want);
        assert_eq!(decode_body(Bytes::from(rec[1..].to_vec())).unwrap(), b0);
    }

    /// Varints round trip at the 7-bit boundaries and reject 11-byte or overflowing encodings.
    #[test]
    fn varint_edges() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX >> 1, u64::MAX] {
            let mut out = Vec::new();
            encode_varint(v, &mut out);
            assert_eq!(out.len(), encoded_len_varint(v));
            assert_eq!(get_varint(&out), Varint::Value(v, out.len()));
            assert_eq!(get_varint(&out[..out.len() - 1]), Varint::Incomplete);
        }
        assert_eq!(get_varint(&[]), Varint::Incomplete);
        assert_eq!(get_varint(&[0xff; 9]), Varint::Incomplete);
        assert_eq!(get_varint(&[0xff; 10]), Varint::Invalid);
        assert_eq!(get_varint(&[0xff; 11]), Varint::Invalid);
        let mut ten = vec![0xff; 9];
        ten.push(0x81);
        assert_eq!(get_varint(&ten), Varint::Invalid);
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(get_varint(&over), Varint::Invalid);
    }

    /// Framing tells complete, torn and invalid prefixes apart.
    #[test]
    fn framing_cases() {
        assert_eq!(
            framing(&[0x03], 4),
            Framing::Complete {
                prefix_len: 1,
                body_len: 3
            }
        );
        assert_eq!(framing(&[0x03], 3), Framing::Truncated);
        assert_eq!(framing(&[0x80, 0x80], 2), Framing::Truncated);
        assert_eq!(framing(&[0xff; 10], 100), Framing::BadPrefix);
    }

    /// Bodies with trailing bytes, overruns or absurd counts are errors, not panics.
    #[test]
    fn bad_bodies_are_errors() {
        assert!(matches!(
            decode_body(Bytes::from_static(&[0, 0, 0, 0, 0, 9])),
            Err(RecordError::TrailingBytes { extra: 1 })
        ));
        assert!(matches!(
            decode_body(Bytes::from_static(&[0, 5, 1])),
            Err(RecordError::Overrun { .. })
        ));
        assert!(matches!(
            decode_body(Bytes::from_static(&[0, 0, 0, 0xff, 0xff, 0x7f])),
            Err(RecordError::TooManyEntries { .. })
        ));
        assert!(matches!(
            decode_body(Bytes::new()),
            Err(RecordError::BadVarint { at: 0 })
        ));
    }

    proptest! {
        /// Any block survives encode → decode of its record.
        #[test]
        fn record_round_trip(
            n in any::<u64>(),
            prev in proptest::collection::vec(any::<u8>(), 0..40),
            data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..6),
            md in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 0..6),
        ) {
            let block = Block {
                header: Some(BlockHeader { number: n, previous_hash: Bytes::from(prev), data_hash: Bytes::from_static(&[3; 32]) }),
                data: Some(BlockData { data: data.into_iter().map(Bytes::from).collect() }),
                metadata: Some(BlockMetadata { metadata: md.into_iter().map(Bytes::from).collect() }),
            };
            let rec = encode_record(&block);
            let Varint::Value(len, p) = get_varint(&rec) else { panic!("prefix") };
            prop_assert_eq!(len as usize + p, rec.len());
            prop_assert_eq!(decode_body(Bytes::from(rec[p..].to_vec())).unwrap(), block);
        }

        /// Decoding arbitrary bytes never panics.
        #[test]
        fn decode_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_body(Bytes::from(bytes));
        }
    }
}
