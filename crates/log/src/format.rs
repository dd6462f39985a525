//! Bytes on disk of the embedded log: segment names, segment header, record frame.
//!
//! All integers are big-endian. See the crate documentation (FORMAT) for the layout.

/// Magic bytes that open a segment file of format version 1 (read, never written).
pub(crate) const SEGMENT_MAGIC_V1: [u8; 8] = *b"KORDLOG1";
/// Magic bytes that open a segment file of format version 2 (records and commit frames).
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"KORDLOG2";
/// Value length that marks a commit frame instead of a record.
pub(crate) const COMMIT_MARKER: u32 = u32::MAX;
/// Commit frame: marker u32, CRC32C u32, next offset u64, own file position u64.
pub(crate) const COMMIT_FRAME_LEN: u64 = 24;
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

/// Format version of a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// Records only: a damaged record in the last segment cannot be told from a torn write.
    V1,
    /// Records, and a commit frame after every durable group commit.
    V2,
}

/// Checks a segment header; returns the format version and the base offset it records.
pub(crate) fn decode_segment_header(
    bytes: &[u8; SEGMENT_HEADER_LEN as usize],
) -> Option<(Version, i64)> {
    let version = if bytes[..8] == SEGMENT_MAGIC {
        Version::V2
    } else if bytes[..8] == SEGMENT_MAGIC_V1 {
        Version::V1
    } else {
        return None;
    };
    let mut base = [0u8; 8];
    base.copy_from_slice(&bytes[8..]);
    Some((version, i64::try_from(u64::from_be_bytes(base)).ok()?))
}

/// Appends a commit frame to `out`: everything before `pos` in the segment, records
/// up to `next_offset` (exclusive), was made durable and acknowledged.
pub(crate) fn encode_commit(out: &mut Vec<u8>, next_offset: i64, pos: u64) {
    let next = offset_to_u64(next_offset);
    out.extend_from_slice(&COMMIT_MARKER.to_be_bytes());
    out.extend_from_slice(&commit_crc(next, pos).to_be_bytes());
    out.extend_from_slice(&next.to_be_bytes());
    out.extend_from_slice(&pos.to_be_bytes());
}

/// Decodes a commit frame read at file position `pos`: the next offset it records,
/// or `None` if the bytes are not a valid commit frame written at `pos`.
pub(crate) fn decode_commit(bytes: &[u8; COMMIT_FRAME_LEN as usize], pos: u64) -> Option<i64> {
    let word = |i: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[i..i + 4]);
        u32::from_be_bytes(b)
    };
    let long = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        u64::from_be_bytes(b)
    };
    if word(0) != COMMIT_MARKER {
        return None;
    }
    let (next, at) = (long(8), long(16));
    if at != pos || word(4) != commit_crc(next, at) {
        return None;
    }
    i64::try_from(next).ok()
}

/// CRC32C over the marker, the next offset and the frame's own position: a commit
/// frame copied elsewhere in the file does not check.
fn commit_crc(next: u64, pos: u64) -> u32 {
    let crc = crc32c::crc32c(&COMMIT_MARKER.to_be_bytes());
    let crc = crc32c::crc32c_append(crc, &next.to_be_bytes());
    crc32c::crc32c_append(crc, &pos.to_be_bytes())
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

    /// A commit frame checks only at the position it was written for and without damage.
    #[test]
    fn commit_frame_round_trip() {
        let mut buf = Vec::new();
        encode_commit(&mut buf, 1234, 4096);
        assert_eq!(buf.len() as u64, COMMIT_FRAME_LEN);
        let mut frame = [0u8; COMMIT_FRAME_LEN as usize];
        frame.copy_from_slice(&buf);
        assert_eq!(decode_commit(&frame, 4096), Some(1234));
        assert_eq!(decode_commit(&frame, 4097), None);
        for bit in 0..COMMIT_FRAME_LEN as usize * 8 {
            let mut bad = frame;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode_commit(&bad, 4096), None, "bit {bit}");
        }
    }

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
        assert_eq!(decode_segment_header(&h), Some((Version::V2, 77)));
        let mut v1 = h;
        v1[..8].copy_from_slice(&SEGMENT_MAGIC_V1);
        assert_eq!(decode_segment_header(&v1), Some((Version::V1, 77)));
        let mut bad = h;
        bad[0] ^= 1;
        assert_eq!(decode_segment_header(&bad), None);
    }
}
