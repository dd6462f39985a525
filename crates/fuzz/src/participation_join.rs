//! The body of a channel participation join request, read as the Admin endpoint
//! reads it (`korder_server::participation::join_block_of`), and the join block's
//! validation (`korder_server::registrar::validate_join_block`).
//!
//! Two modes:
//! - **structured**: a `multipart/form-data` body built from arbitrary parts (form
//!   names, files or values, other dispositions, extra headers, CRLF or LF line
//!   ends, transport padding, preamble and epilogue) under an arbitrary boundary,
//!   quoted or not, among other content-type parameters; a part's content is a
//!   genesis block of the fixtures, such a block with a byte changed, or raw bytes.
//!   An independent model of the form says which part, if any, the parser must
//!   return (lines end as the first delimiter line ends; a part ends at the line
//!   end before the next delimiter; the join takes the single file field
//!   `config-block` and refuses any other field);
//! - **raw**: a content type (up to the first line end) and arbitrary bytes as the
//!   body.
//!
//! Invariants: nothing panics; every refusal is an error text; in the structured
//! mode the parser accepts exactly the forms the model accepts and returns the
//! file part's bytes exactly, the block it returns is those bytes decoded, and a
//! genesis block of the fixtures sent unchanged is a valid join block; a
//! block accepted by `validate_join_block` is accepted again, to the same channel
//! and kind, also after a trip over the wire, and a refused one is refused again
//! with the same reason.

use arbitrary::{Arbitrary, Unstructured};
use korder_proto::Message;
use korder_proto::common::Block;
use korder_server::participation::{CONFIG_BLOCK_KEY, config_block_bytes, join_block_of};
use korder_server::registrar::validate_join_block;

/// Genesis blocks of the fixtures: system channels (Kafka and Raft) and an
/// application channel.
pub const GENESIS_BLOCKS: &[&[u8]] = &[
    include_bytes!(
        "../../../tests/fixtures/fabric-v2.5.16/blocks/system-kafka-v2caps-genesis.block"
    ),
    include_bytes!(
        "../../../tests/fixtures/fabric-v2.5.16/blocks/system-kafka-v1_4caps-genesis.block"
    ),
    include_bytes!("../../../tests/fixtures/fabric-v1.4.12/blocks/common-cluster-mychannel.block"),
    include_bytes!("../../../tests/fixtures/fabric-v1.4.12/blocks/common-server-genesis.block"),
];

const MAX_PARTS: usize = 8;
const MAX_BOUNDARY_CHARS: usize = 70;
/// RFC 2046's boundary characters, without the space (which may not end one).
const BOUNDARY_CHARS: &[u8] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?";
/// Characters of form and file names (no quote, semicolon or line end).
const NAME_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-_.";

#[derive(Arbitrary, Debug)]
enum Name {
    ConfigBlock,
    Other(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Disposition {
    /// `form-data; name=…` with a file name when `filename` is not empty.
    FormData {
        name: Name,
        filename: Option<Vec<u8>>,
        quoted: bool,
    },
    /// `attachment; name=…`: not a form field.
    Attachment { name: Name },
    /// No `Content-Disposition` header.
    Missing,
}

#[derive(Arbitrary, Debug)]
enum Content {
    Genesis(u8),
    GenesisChanged { block: u8, at: u32, mask: u8 },
    Raw(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Part {
    disposition: Disposition,
    content_type_header: bool,
    /// Spaces and tabs after the delimiter (transport padding).
    padding: u8,
    content: Content,
}

#[derive(Arbitrary, Debug)]
struct Form {
    boundary: Vec<u8>,
    quote_boundary: bool,
    /// A parameter before the boundary in the content type.
    charset_first: bool,
    /// Upper-case `BOUNDARY=`.
    upper_key: bool,
    crlf: bool,
    preamble: Vec<u8>,
    parts: Vec<Part>,
    /// Whether the close delimiter is written.
    closed: bool,
    epilogue: Vec<u8>,
}

/// Arbitrary input: a structured form (first byte even) or a content type and a raw
/// body (odd).
pub fn participation_join(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        let (content_type, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let content_type = String::from_utf8_lossy(content_type);
        check_request(&content_type, body);
        return;
    }
    let Some((content_type, body, expected)) = structured(rest) else {
        return;
    };
    let got = config_block_bytes(&content_type, &body);
    match (&expected, &got) {
        (Expected::Unknown, _) => {}
        (Expected::Accepted(want), Ok(got)) => {
            assert_eq!(
                got, want,
                "the parser returned other bytes than the file part's"
            );
            if GENESIS_BLOCKS.contains(&want.as_slice()) {
                let block = join_block_of(&content_type, &body).expect("a genesis block decodes");
                if let Err(e) = validate_join_block(&block) {
                    panic!("a genesis block of the fixtures is not a valid join block: {e}");
                }
            }
        }
        (Expected::Refused, Err(_)) => {}
        (Expected::Accepted(_), Err(e)) => panic!("a well-formed join form is refused: {e}"),
        (Expected::Refused, Ok(_)) => panic!("a form the model refuses is accepted"),
    }
    check_request(&content_type, &body);
}

fn structured(data: &[u8]) -> Option<(String, Vec<u8>, Expected)> {
    let form = Form::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    Some(build(&form))
}

/// What the model expects of a structured input (the bytes after the mode byte):
/// `accepted`, `refused` or `unknown` (an ambiguous form).
pub fn structured_expectation(data: &[u8]) -> Option<&'static str> {
    structured(data).map(|(_, _, e)| match e {
        Expected::Accepted(_) => "accepted",
        Expected::Refused => "refused",
        Expected::Unknown => "unknown",
    })
}

/// Reads the request as the join handler does and checks the block's validation.
fn check_request(content_type: &str, body: &[u8]) {
    let bytes = config_block_bytes(content_type, body);
    let block = join_block_of(content_type, body);
    match (&bytes, &block) {
        (Ok(bytes), Ok(block)) => {
            let decoded = Block::decode(*bytes).expect("the part decoded once");
            assert_eq!(&decoded, block, "the block is not the file part decoded");
            check_validation(block);
        }
        (Ok(bytes), Err(e)) => assert!(
            Block::decode(*bytes).is_err() && !e.is_empty(),
            "a file part that decodes is refused: {e}"
        ),
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "the two readings refuse differently");
            assert!(!a.is_empty(), "a refusal without a reason");
        }
        (Err(e), Ok(_)) => panic!("a block from a form whose part is refused: {e}"),
    }
}

/// `validate_join_block` gives the same answer twice and after a trip over the wire.
fn check_validation(block: &Block) {
    let first = validate_join_block(block);
    let again = validate_join_block(block);
    let wire = Block::decode(block.encode_to_vec().as_slice()).expect("an encoded block decodes");
    let over_wire = validate_join_block(&wire);
    for other in [&again, &over_wire] {
        match (&first, other) {
            (Ok((a, app_a)), Ok((b, app_b))) => {
                assert_eq!(a.channel_id, b.channel_id);
                assert_eq!(a.sequence, b.sequence);
                assert_eq!(app_a, app_b);
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            (a, b) => panic!(
                "validate_join_block changed its mind: {:?} then {:?}",
                a.as_ref().map(|(b, app)| (&b.channel_id, app)),
                b.as_ref().map(|(b, app)| (&b.channel_id, app)),
            ),
        }
    }
    if let Ok((bundle, is_app)) = &first {
        assert!(
            !bundle.channel_id.is_empty(),
            "a joinable block names no channel"
        );
        assert!(
            *is_app || bundle.is_system_channel(),
            "a joinable block is neither an application nor a system channel"
        );
    }
}

/// What the model expects the parser to return.
enum Expected {
    Accepted(Vec<u8>),
    Refused,
    /// The form is ambiguous (a delimiter line inside a part, for instance): only
    /// the absence of panics is checked.
    Unknown,
}

fn pick(chars: &[u8], raw: &[u8], max: usize) -> String {
    raw.iter()
        .take(max)
        .map(|&b| char::from(chars[usize::from(b) % chars.len()]))
        .collect()
}

fn name_text(name: &Name) -> String {
    match name {
        Name::ConfigBlock => CONFIG_BLOCK_KEY.to_string(),
        Name::Other(raw) => {
            let n = pick(NAME_CHARS, raw, 16);
            if n.is_empty() { "x".into() } else { n }
        }
    }
}

fn content_bytes(content: &Content) -> Vec<u8> {
    match content {
        Content::Genesis(i) => GENESIS_BLOCKS[usize::from(*i) % GENESIS_BLOCKS.len()].to_vec(),
        Content::GenesisChanged { block, at, mask } => {
            let mut b = GENESIS_BLOCKS[usize::from(*block) % GENESIS_BLOCKS.len()].to_vec();
            let i = usize::try_from(*at).unwrap_or(0) % b.len();
            b[i] ^= (*mask).max(1);
            b
        }
        Content::Raw(raw) => raw.clone(),
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The content type, the body and what the parser must return.
fn build(form: &Form) -> (String, Vec<u8>, Expected) {
    let mut boundary = pick(BOUNDARY_CHARS, &form.boundary, MAX_BOUNDARY_CHARS);
    if boundary.is_empty() {
        boundary.push('b');
    }
    let key = if form.upper_key {
        "BOUNDARY"
    } else {
        "boundary"
    };
    let value = if form.quote_boundary {
        format!("\"{boundary}\"")
    } else {
        boundary.clone()
    };
    let content_type = if form.charset_first {
        format!("multipart/form-data; charset=utf-8; {key}={value}")
    } else {
        format!("multipart/form-data; {key}={value}")
    };
    let eol: &[u8] = if form.crlf { b"\r\n" } else { b"\n" };
    let delimiter = format!("--{boundary}").into_bytes();
    let line_delimiter = [b"\n".as_slice(), &delimiter].concat();
    let part_delimiter = [eol, &delimiter].concat();
    let mut ambiguous = false;

    let mut body = Vec::new();
    let preamble: Vec<u8> = form.preamble.iter().copied().take(64).collect();
    if !preamble.is_empty() {
        body.extend_from_slice(&preamble);
        body.extend_from_slice(eol);
    }
    // The first delimiter must be the one written here.
    let first = if body.is_empty() { 0 } else { body.len() };
    body.extend_from_slice(&delimiter);
    let found_first = if body.starts_with(&delimiter) {
        Some(0)
    } else {
        find(&body, &line_delimiter, 0).map(|i| i + 1)
    };
    ambiguous |= found_first != Some(first);

    // Named parts as the parser sees them: (name, is_file, content).
    let mut fields: Vec<(String, bool, Vec<u8>)> = Vec::new();
    for part in form.parts.iter().take(MAX_PARTS) {
        let padding: Vec<u8> = (0..part.padding % 4)
            .map(|i| {
                if (part.padding >> (i + 2)) & 1 == 0 {
                    b' '
                } else {
                    b'\t'
                }
            })
            .collect();
        body.extend_from_slice(&padding);
        body.extend_from_slice(eol);
        match &part.disposition {
            Disposition::FormData {
                name,
                filename,
                quoted,
            } => {
                let name = name_text(name);
                let q = if *quoted { "\"" } else { "" };
                let mut line = format!("Content-Disposition: form-data; name={q}{name}{q}");
                let filename = filename.as_ref().map(|f| pick(NAME_CHARS, f, 16));
                if let Some(f) = &filename {
                    line.push_str(&format!("; filename=\"{f}\""));
                }
                body.extend_from_slice(line.as_bytes());
                body.extend_from_slice(eol);
                let content = content_bytes(&part.content);
                let is_file = filename.is_some_and(|f| !f.is_empty());
                fields.push((name, is_file, content));
            }
            Disposition::Attachment { name } => {
                let line = format!(
                    "Content-Disposition: attachment; name=\"{}\"",
                    name_text(name)
                );
                body.extend_from_slice(line.as_bytes());
                body.extend_from_slice(eol);
            }
            Disposition::Missing => {}
        }
        if part.content_type_header {
            body.extend_from_slice(b"Content-Type: application/octet-stream");
            body.extend_from_slice(eol);
        }
        body.extend_from_slice(eol);
        let content = content_bytes(&part.content);
        let start = body.len();
        body.extend_from_slice(&content);
        let content_end = body.len();
        body.extend_from_slice(eol);
        body.extend_from_slice(&delimiter);
        // The delimiter that ends this part must be the first one after its content.
        ambiguous |= find(&body, &part_delimiter, start) != Some(content_end);
    }
    if form.closed {
        body.extend_from_slice(b"--");
        body.extend_from_slice(eol);
        body.extend_from_slice(&form.epilogue.iter().copied().take(64).collect::<Vec<u8>>());
    } else {
        body.extend_from_slice(eol);
    }

    let expected = if ambiguous {
        Expected::Unknown
    } else if !form.closed {
        Expected::Refused
    } else {
        model(&fields)
    };
    (content_type, body, expected)
}

/// The join form's rule: exactly one file field, named `config-block`, and no
/// value field; that field's first part is the block.
fn model(fields: &[(String, bool, Vec<u8>)]) -> Expected {
    let values = fields.iter().filter(|(_, is_file, _)| !is_file).count();
    let mut file_names: Vec<&str> = fields
        .iter()
        .filter(|(_, is_file, _)| *is_file)
        .map(|(n, _, _)| n.as_str())
        .collect();
    file_names.sort_unstable();
    file_names.dedup();
    if values == 0 && file_names == [CONFIG_BLOCK_KEY] {
        let (_, _, content) = fields
            .iter()
            .find(|(n, is_file, _)| *is_file && n == CONFIG_BLOCK_KEY)
            .expect("the config-block file field");
        Expected::Accepted(content.clone())
    } else {
        Expected::Refused
    }
}

/// An osnadmin-style join request holding `block`, as Go's multipart writer
/// formats it: the content type line, then the body (the raw mode's input).
pub fn osnadmin_request(block: &[u8]) -> Vec<u8> {
    let boundary = "7c2b6f8e3a1d94c05e6b8a2f1d3c7e9b0a4f6d2c8e1b3a5f7d9c0e2a4b6c";
    let mut out = format!("multipart/form-data; boundary={boundary}\n").into_bytes();
    out.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"config-block\"; \
             filename=\"genesis.block\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(block);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}
