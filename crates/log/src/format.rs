//! Bytes on disk of the embedded log: segment names, segment header, record frame.
//!
//! All integers are big-endian. See the crate documentation (FORMAT) for the layout.

/// Magic bytes that open every segment file (format version 1).
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"KORDLOG1";
/// Segment header: magic, then the base offset as u64.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
/// Record frame header: value length u32, CRC32C u32, offset u64.
pub(crate) const RECORD_HEADER_LEN: u64 = 16;
/// File name prefix of a segment; the base offset follows as 20 decimal digits.
const SEGMENT_PREFIX: &str = "log_";
const SEGMENT_DIGITS: usize = 20;

/// File name of the segment whose first record has offset `base`.
pub(crate) fn segment_name(base: i64) -> String {
    assert!(base >= 0, "segment base offset {base} is negative");
    format!("{SEGMENT_PREFIX}{base:0SEGMENT_DIGITS$}")
}

/// The base offset named by a segment file name, or `None` for any other file.
pub(crate) fn parse_segment_name(name: &str) -> Option<i64> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()
}

/// The 16-byte header written at the start of every segment.
pub(crate) fn encode_segment_header(base: i64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut out = [0u8; SEGMENT_HEADER_LEN as usize];
    out[..8].copy_from_slice(&SEGMENT_MAGIC);
    out[8..].copy_from_slice(&offset_to_u64(base).to_be_bytes());
    out
}

/// Checks a segment header; returns the base offset it records.
pub(crate) fn decode_segment_header(bytes: &[u8; SEGMENT_HEADER_LEN as usize]) -> Option<i64> {
    if bytes[..8] != SEGMENT_MAGIC {
        return None;
    }
    let mut base = [0u8; 8];
    base.copy_from_slice(&bytes[8..]);
    i64::try_from(u64::from_be_bytes(base)).ok()
}

/// A decoded record frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub value_len: u32,
    pub crc: u32,
    pub offset: i64,
}

impl RecordHeader {
    /// Bytes the whole frame (header and value) occupies.
    pub(crate) fn frame_len(&self) -> u64 {
        RECORD_HEADER_LEN + u64::from(self.value_len)
    }

    /// Whether `value` is the value this header was written for.
    pub(crate) fn checks(&self, value: &[u8]) -> bool {
        self.crc == record_crc(self.value_len, self.offset, value)
    }
}

/// Decodes a frame header. Any 16 bytes decode; the checksum tells whether they were
/// a real frame. A negative offset cannot have been written and yields `None`.
pub(crate) fn decode_record_header(
    bytes: &[u8; RECORD_HEADER_LEN as usize],
) -> Option<RecordHeader> {
    let mut len = [0u8; 4];
    let mut crc = [0u8; 4];
    let mut off = [0u8; 8];
    len.copy_from_slice(&bytes[0..4]);
    crc.copy_from_slice(&bytes[4..8]);
    off.copy_from_slice(&bytes[8..16]);
    Some(RecordHeader {
        value_len: u32::from_be_bytes(len),
        crc: u32::from_be_bytes(crc),
        offset: i64::try_from(u64::from_be_bytes(off)).ok()?,
    })
}

/// Appends the frame of one record to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, offset: i64, value: &[u8]) {
    let value_len = u32::try_from(value.len()).unwrap_or_else(|_| {
        panic!(
            "record of {} bytes does not fit a frame; the size limit must prevent this",
            value.len()
        )
    });
    let crc = record_crc(value_len, offset, value);
    out.extend_from_slice(&value_len.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&offset_to_u64(offset).to_be_bytes());
    out.extend_from_slice(value);
}

/// CRC32C over the length, the offset and the value: a frame moved to another place
/// in the log, or whose length was damaged, fails the check as surely as bad data.
fn record_crc(value_len: u32, offset: i64, value: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&value_len.to_be_bytes());
    let crc = crc32c::crc32c_append(crc, &offset_to_u64(offset).to_be_bytes());
    crc32c::crc32c_append(crc, value)
}

fn offset_to_u64(offset: i64) -> u64 {
    u64::try_from(offset).unwrap_or_else(|_| panic!("log offset {offset} is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segment names sort like their offsets and parse back to them.
    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_name(0), "log_00000000000000000000");
        assert_eq!(parse_segment_name(&segment_name(123_456)), Some(123_456));
        assert_eq!(parse_segment_name("log_123"), None);
        assert_eq!(parse_segment_name("other_00000000000000000000"), None);
        assert_eq!(parse_segment_name("log_0000000000000000000x"), None);
        assert!(segment_name(9) < segment_name(10));
    }

    /// A frame decodes to what was encoded and its checksum catches a flipped bit.
    #[test]
    fn record_frame_round_trip_and_checksum() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 42, b"hello");
        assert_eq!(buf.len() as u64, RECORD_HEADER_LEN + 5);
        let mut head = [0u8; RECORD_HEADER_LEN as usize];
        head.copy_from_slice(&buf[..16]);
        let h = decode_record_header(&head).unwrap();
        assert_eq!(h.value_len, 5);
        assert_eq!(h.offset, 42);
        assert!(h.checks(b"hello"));
        assert!(!h.checks(b"hellp"));
        let moved = RecordHeader { offset: 43, ..h };
        assert!(!moved.checks(b"hello"));
    }

    /// The segment header carries the magic and the base offset.
    #[test]
    fn segment_header_round_trip() {
        let h = encode_segment_header(77);
        assert_eq!(decode_segment_header(&h), Some(77));
        let mut bad = h;
        bad[0] ^= 1;
        assert_eq!(decode_segment_header(&bad), None);
    }
}
