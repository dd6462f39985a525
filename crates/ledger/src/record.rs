//! The block record of Fabric's block files: `varint(len(body)) ‖ body`, where body is
//! `varint(number) ‖ raw(data_hash) ‖ raw(previous_hash) ‖ varint(n) raw(data)… ‖
//! varint(m) raw(metadata)…` and `raw(x) = varint(len(x)) ‖ x`. Not a protobuf `Block`.
//!
//! Decoding never panics and never allocates more than the input can justify: every
//! count is checked against the bytes left.

use bytes::Bytes;
use korder_proto::common::{Block, BlockData, BlockHeader, BlockMetadata};

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

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Length of `v` as a varint.
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
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

/// Reads a varint from the front of `buf`.
pub fn get_varint(buf: &[u8]) -> Varint {
    let mut v: u64 = 0;
    for (i, b) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        let low = u64::from(b & 0x7f);
        if i == 9 && low > 1 {
            return Varint::Invalid;
        }
        v |= low << (7 * i);
        if b & 0x80 == 0 {
            return Varint::Value(v, i + 1);
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        Varint::Invalid
    } else {
        Varint::Incomplete
    }
}

fn put_raw(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
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
    put_varint(&mut out, header.number);
    put_raw(&mut out, &header.data_hash);
    put_raw(&mut out, &header.previous_hash);
    put_varint(&mut out, data.len() as u64);
    for d in data {
        put_raw(&mut out, d);
    }
    put_varint(&mut out, metadata.len() as u64);
    for m in metadata {
        put_raw(&mut out, m);
    }
    out
}

/// A full record: `varint(len(body)) ‖ body`.
pub fn encode_record(block: &Block) -> Vec<u8> {
    let body = encode_body(block);
    let mut out = Vec::with_capacity(body.len() + MAX_VARINT_LEN);
    put_varint(&mut out, body.len() as u64);
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
    let mut c = Cursor { buf: body, pos: 0 };
    let number = c.varint()?;
    let data_hash = c.raw("data hash")?;
    let previous_hash = c.raw("previous hash")?;
    let data = c.list("data")?;
    let metadata = c.list("metadata")?;
    if c.left() != 0 {
        return Err(RecordError::TrailingBytes { extra: c.left() });
    }
    Ok(Block {
        header: Some(BlockHeader {
            number,
            previous_hash,
            data_hash,
        }),
        data: Some(BlockData { data }),
        metadata: Some(BlockMetadata { metadata }),
    })
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
