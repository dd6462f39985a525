//! The channel participation API of Fabric 2.5 on the admin endpoint
//! (`Admin.ListenAddress`): list, inspect, join and remove channels.
//!
//! ```text
//! GET    /participation/v1/channels          200 {"systemChannel":…,"channels":[…]}
//! POST   /participation/v1/channels          201 channel info (multipart form,
//!                                                one file part "config-block")
//! GET    /participation/v1/channels/{name}   200 channel info | 404
//! DELETE /participation/v1/channels/{name}   204 | 404 | 405 (system channel exists)
//! GET    /participation/v1/                  302 to /participation/v1/channels
//! ```
//!
//! Paths, JSON bodies, status codes, headers (`Content-Type`, `Cache-Control`,
//! `Location`, `Allow` on 405) and error texts (`{"error":"…"}`) are Fabric's. With
//! `ChannelParticipation.Enabled: false` every call is 503. A join by a later config
//! block of a channel on a shared log (Kafka) answers 201 with status `onboarding`
//! while the blocks before it are pulled from other orderers (see the registrar's
//! onboarding); on a node's own log it is refused (400).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use korder_proto::Message;
use korder_proto::common::Block;

use crate::registrar::{BlockTarget, ChannelInfo, ParticipationError, Registrar};

/// The API's root; the server answers nothing outside it (404).
pub const URL_BASE_V1: &str = "/participation/v1/";
/// The channel collection.
pub const URL_CHANNELS: &str = "/participation/v1/channels";
/// The form field that carries the join block.
pub const CONFIG_BLOCK_KEY: &str = "config-block";

/// `ChannelParticipation.MaxRequestBodySize` when the section is absent (Fabric's 1 MiB).
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: usize = 1 << 20;

/// Most parts a join form may have, as Go's multipart reader limits them.
const FORM_PARTS_MAX: usize = 1000;

/// `ChannelParticipation` as the API applies it.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// `Enabled`: when false every call is 503.
    pub enabled: bool,
    /// `MaxRequestBodySize`: a longer join request is refused (400).
    pub max_request_body_bytes: usize,
}

struct Api {
    registrar: Registrar,
    settings: Settings,
}

/// The admin endpoint's router: the channel participation API under
/// [`URL_BASE_V1`], 404 elsewhere.
pub fn router(registrar: Registrar, settings: Settings) -> Router {
    Router::new().fallback(handle).with_state(Arc::new(Api {
        registrar,
        settings,
    }))
}

/// Serves `app` over plain HTTP on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// On the TLS admin endpoint every path needs a client certificate, as Fabric
/// registers the API with `secure` set when `Admin.TLS.Enabled`.
pub fn needs_certificate(_path: &str) -> bool {
    true
}

async fn handle(State(api): State<Arc<Api>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    if path == URL_BASE_V1.trim_end_matches('/') {
        // Go's ServeMux sends the subtree's root without its slash to the subtree.
        return redirect(StatusCode::MOVED_PERMANENTLY, URL_BASE_V1);
    }
    let Some(rest) = path.strip_prefix(URL_BASE_V1) else {
        return not_found();
    };
    if !api.settings.enabled {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "channel participation API is disabled",
        );
    }
    match rest {
        "" if method == Method::GET => redirect(StatusCode::FOUND, URL_CHANNELS),
        "" => StatusCode::METHOD_NOT_ALLOWED.into_response(),
        "channels" => match method {
            Method::GET => list(&api, request.headers()),
            Method::POST if is_multipart(request.headers()) => join(&api, request).await,
            Method::POST => {
                let values: Vec<String> = request
                    .headers()
                    .get_all(header::CONTENT_TYPE)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                error(
                    StatusCode::BAD_REQUEST,
                    &format!("unsupported Content-Type: [{}]", values.join(" ")),
                )
            }
            other => not_allowed(&format!("invalid request method: {other}"), "GET, POST"),
        },
        _ => match rest.strip_prefix("channels/") {
            Some(tail) if block_path(tail).is_some() => {
                let (name, id) = block_path(tail).unwrap_or_default();
                match method {
                    Method::GET => fetch_block(&api, request.headers(), name, id),
                    _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
                }
            }
            Some(name) if !name.is_empty() && !name.contains('/') => match method {
                Method::GET => info(&api, request.headers(), name),
                Method::DELETE => remove(&api, request.headers(), name).await,
                other => not_allowed(&format!("invalid request method: {other}"), "GET, DELETE"),
            },
            _ => not_found(),
        },
    }
}

fn list(api: &Api, headers: &HeaderMap) -> Response {
    if let Some(r) = refuse_accept(headers) {
        return r;
    }
    let system = api.registrar.system_channel_id();
    let channels: Vec<String> = api
        .registrar
        .participation_ids()
        .into_iter()
        .filter(|c| Some(c) != system.as_ref())
        .collect();
    let short = |name: &str| {
        format!(
            r#"{{"name":{},"url":{}}}"#,
            json_string(name),
            json_string(&channel_url(name))
        )
    };
    let system = system.map_or_else(|| "null".to_string(), |s| short(&s));
    // Go encodes an empty list of channels as null.
    let channels = if channels.is_empty() {
        "null".to_string()
    } else {
        let items: Vec<String> = channels.iter().map(|c| short(c)).collect();
        format!("[{}]", items.join(","))
    };
    let mut r = json(
        StatusCode::OK,
        format!(r#"{{"systemChannel":{system},"channels":{channels}}}"#),
    );
    no_store(&mut r);
    r
}

fn info(api: &Api, headers: &HeaderMap, name: &str) -> Response {
    if let Some(r) = refuse_accept(headers) {
        return r;
    }
    if let Some(r) = refuse_channel_id(name) {
        return r;
    }
    match api.registrar.channel_info(name) {
        Some(info) => {
            let mut r = json(StatusCode::OK, info_json(&info));
            no_store(&mut r);
            r
        }
        None => error(
            StatusCode::NOT_FOUND,
            &ParticipationError::ChannelNotExist.to_string(),
        ),
    }
}

/// `{channel}/blocks/{block}` (Fabric 3.x's block fetch): the channel and the block
/// id.
fn block_path(tail: &str) -> Option<(&str, &str)> {
    let (name, id) = tail.split_once("/blocks/")?;
    (!name.is_empty() && !name.contains('/') && !id.is_empty() && !id.contains('/'))
        .then_some((name, id))
}

/// Which block a fetch names: `oldest`, `newest`, `config` (the last config block)
/// or a number, as Fabric 3.x's `osnadmin channel fetch --blockID` sends it.
fn block_target(id: &str) -> Result<BlockTarget, String> {
    match id {
        "oldest" => Ok(BlockTarget::Oldest),
        "newest" => Ok(BlockTarget::Newest),
        "config" => Ok(BlockTarget::Config),
        _ => id
            .parse::<i64>()
            .map(BlockTarget::Number)
            .map_err(|_| format!("'{id}' not equal <newest|oldest|config|(number)>")),
    }
}

/// `GET /participation/v1/channels/{channel}/blocks/{block}` (Fabric 3.x): the block,
/// marshalled, as `application/octet-stream`.
fn fetch_block(api: &Api, headers: &HeaderMap, name: &str, id: &str) -> Response {
    if let Some(r) = refuse_accept(headers) {
        return r;
    }
    if let Some(r) = refuse_channel_id(name) {
        return r;
    }
    let target = match block_target(id) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid block ID: {e}")),
    };
    match api.registrar.fetch_block(name, target) {
        Ok(block) => {
            let mut r = (StatusCode::OK, block.encode_to_vec()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            no_store(&mut r);
            r
        }
        Err(e) => error(StatusCode::NOT_FOUND, &e),
    }
}

async fn join(api: &Api, request: Request) -> Response {
    if let Some(r) = refuse_accept(request.headers()) {
        return r;
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let boundary = match form_boundary(&content_type) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let limit = api.settings.max_request_body_bytes;
    let body = match axum::body::to_bytes(request.into_body(), limit).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "cannot read form from request body: http: request body too large",
            );
        }
    };
    let block = match block_of_form(&body, &boundary) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match api.registrar.join(block).await {
        Ok(info) => {
            let url = channel_url(&info.name);
            let mut r = json(StatusCode::CREATED, info_json(&info));
            if let Ok(v) = HeaderValue::from_str(&url) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(e) => join_error(&e),
    }
}

/// Fabric's status for each join refusal; a failure of the node is 500.
fn join_error(e: &ParticipationError) -> Response {
    let text = format!("cannot join: {e}");
    match e {
        ParticipationError::InvalidJoinBlock(reason) => error(
            StatusCode::BAD_REQUEST,
            &format!("invalid join block: {reason}"),
        ),
        ParticipationError::SystemChannelExists => not_allowed(&text, "GET"),
        ParticipationError::ChannelAlreadyExists => not_allowed(&text, "GET, DELETE"),
        ParticipationError::AppChannelsAlreadyExist => error(StatusCode::FORBIDDEN, &text),
        ParticipationError::Failed(_) => error(StatusCode::INTERNAL_SERVER_ERROR, &text),
        _ => error(StatusCode::BAD_REQUEST, &text),
    }
}

async fn remove(api: &Api, headers: &HeaderMap, name: &str) -> Response {
    if let Some(r) = refuse_accept(headers) {
        return r;
    }
    if let Some(r) = refuse_channel_id(name) {
        return r;
    }
    match api.registrar.remove(name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            let text = format!("cannot remove: {e}");
            match e {
                ParticipationError::SystemChannelExists => not_allowed(&text, "GET"),
                ParticipationError::ChannelNotExist => error(StatusCode::NOT_FOUND, &text),
                ParticipationError::Failed(_) => error(StatusCode::INTERNAL_SERVER_ERROR, &text),
                _ => error(StatusCode::BAD_REQUEST, &text),
            }
        }
    }
}

/// The channel's URL path, as the API reports it.
fn channel_url(name: &str) -> String {
    format!("{URL_CHANNELS}/{name}")
}

fn info_json(info: &ChannelInfo) -> String {
    format!(
        r#"{{"name":{},"url":{},"consensusRelation":{},"status":{},"height":{}}}"#,
        json_string(&info.name),
        json_string(&channel_url(&info.name)),
        json_string(info.consensus_relation),
        json_string(info.status),
        info.height
    )
}

/// A JSON string as Go's encoder writes it (`<`, `>` and `&` escaped).
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string())
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A JSON body as Go's encoder ends it, with a newline.
fn json(code: StatusCode, mut body: String) -> Response {
    body.push('\n');
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response()
}

fn error(code: StatusCode, text: &str) -> Response {
    json(code, format!(r#"{{"error":{}}}"#, json_string(text)))
}

fn not_allowed(text: &str, allow: &'static str) -> Response {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, text);
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn no_store(r: &mut Response) {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        "404 page not found\n",
    )
        .into_response()
}

fn redirect(code: StatusCode, to: &'static str) -> Response {
    (
        code,
        [
            (header::LOCATION, to),
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        ],
        format!(
            "<a href=\"{to}\">{}</a>.\n\n",
            code.canonical_reason().unwrap_or("")
        ),
    )
        .into_response()
}

/// The API answers JSON only: a request whose `Accept` admits none is 406.
fn refuse_accept(headers: &HeaderMap) -> Option<Response> {
    let accept = String::from_utf8_lossy(headers.get(header::ACCEPT)?.as_bytes()).into_owned();
    let admits_json = accept.is_empty()
        || accept.split(',').any(|o| {
            o.contains("application/json") || o.contains("application/*") || o.contains("*/*")
        });
    (!admits_json).then(|| {
        error(
            StatusCode::NOT_ACCEPTABLE,
            "response Content-Type is application/json only",
        )
    })
}

/// Fabric's channel name rule, with its texts: 400 for a bad name.
fn refuse_channel_id(name: &str) -> Option<Response> {
    let max = korder_channelconfig::bundle::NAME_LEN_MAX;
    let reason = if name.is_empty() {
        "channel ID illegal, cannot be empty".to_string()
    } else if name.len() > max {
        format!("channel ID illegal, cannot be longer than {max}")
    } else if korder_channelconfig::bundle::validate_channel_id(name).is_err() {
        format!("'{name}' contains illegal characters")
    } else {
        return None;
    };
    Some(error(
        StatusCode::BAD_REQUEST,
        &format!("invalid channel ID: {reason}"),
    ))
}

/// The block a join request carries, read as the join handler reads it (the body
/// already within `Admin`'s size limit): the boundary from `content_type`, the
/// form's single file part [`CONFIG_BLOCK_KEY`], that part decoded as a block. An
/// error is the text of the 400 answer. Whether the block may be joined is
/// [`crate::registrar::validate_join_block`]'s and the registrar's to say.
pub fn join_block_of(content_type: &str, body: &[u8]) -> Result<Block, String> {
    block_of_form(body, &form_boundary(content_type)?)
}

/// The bytes of the file part [`CONFIG_BLOCK_KEY`] of a join request, exactly as
/// sent; an error is the text of the 400 answer.
pub fn config_block_bytes<'a>(content_type: &str, body: &'a [u8]) -> Result<&'a [u8], String> {
    config_block_part(body, &form_boundary(content_type)?)
}

/// The form's boundary, or the text of the 400 answer.
fn form_boundary(content_type: &str) -> Result<String, String> {
    media_type_boundary(content_type).map_err(|e| format!("cannot parse Mime media type: {e}"))
}

/// The form's config block, or the text of the 400 answer.
fn block_of_form(body: &[u8], boundary: &str) -> Result<Block, String> {
    let bytes = config_block_part(body, boundary)?;
    Block::decode(bytes)
        .map_err(|e| format!("cannot unmarshal file part {CONFIG_BLOCK_KEY} into a block: {e}"))
}

/// Whether the request is routed to join: a `Content-Type` naming a multipart form.
fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_TYPE)
        .iter()
        .any(|v| String::from_utf8_lossy(v.as_bytes()).contains("multipart/form-dat"))
}

/// The `boundary` parameter of a `multipart/form-data` content type.
fn media_type_boundary(content_type: &str) -> Result<String, String> {
    let mut parts = content_type.split(';');
    let media = parts.next().unwrap_or("").trim();
    if media.is_empty() {
        return Err("mime: no media type".into());
    }
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| "mime: invalid media parameter".to_string())?;
        if key.trim().eq_ignore_ascii_case("boundary") {
            return Ok(unquote(value.trim()).to_string());
        }
    }
    Ok(String::new())
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// One part of a multipart form: its field name, whether it is a file (its
/// disposition has a file name), and its content.
#[derive(Debug, PartialEq, Eq)]
struct FormPart<'a> {
    name: Option<String>,
    is_file: bool,
    content: &'a [u8],
}

/// The content of the form's single file part [`CONFIG_BLOCK_KEY`], with Fabric's
/// refusals: the part missing, or any other part beside it.
fn config_block_part<'a>(body: &'a [u8], boundary: &str) -> Result<&'a [u8], String> {
    let parts = parse_form(body, boundary)
        .map_err(|e| format!("cannot read form from request body: {e}"))?;
    let mut files: Vec<&FormPart<'_>> = Vec::new();
    let mut values = 0;
    for p in parts.iter().filter(|p| p.name.is_some()) {
        if p.is_file {
            files.push(p);
        } else {
            values += 1;
        }
    }
    let key = Some(CONFIG_BLOCK_KEY.to_string());
    let Some(block) = files.iter().find(|p| p.name == key) else {
        return Err(format!(
            "form does not contains part key: {CONFIG_BLOCK_KEY}"
        ));
    };
    let distinct_files = files
        .iter()
        .map(|p| &p.name)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if distinct_files != 1 || values != 0 {
        return Err("form contains too many parts".into());
    }
    Ok(block.content)
}

/// Splits a `multipart/form-data` body (RFC 7578) into its parts.
///
/// Lines end in CRLF, as RFC 2046 has them, unless the first delimiter line ends in
/// LF alone: then every line end is LF (Go's reader, which Fabric uses, does the
/// same). A part's content ends at the line end before the next delimiter; its
/// headers end at their first empty line (CRLF or LF).
fn parse_form<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<FormPart<'a>>, String> {
    if boundary.is_empty() {
        return Err("multipart: boundary is empty".into());
    }
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    // The first delimiter: at the start, or at the start of a line after a preamble.
    let mut at = if body.starts_with(delimiter) {
        0
    } else {
        let line = [b"\n".as_slice(), delimiter].concat();
        find(body, &line, 0).ok_or("multipart: NextPart: EOF")? + 1
    };
    let mut parts = Vec::new();
    // The line end, set by the first delimiter line.
    let mut line_end_of_form: Option<&[u8]> = None;
    loop {
        at += delimiter.len();
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then the line end.
        let line_end = find(body, b"\n", at).ok_or("multipart: NextPart: EOF")?;
        if body[at..line_end]
            .iter()
            .any(|b| !matches!(b, b' ' | b'\t' | b'\r'))
        {
            return Err("multipart: NextPart: malformed delimiter".into());
        }
        let nl = *line_end_of_form.get_or_insert(if body[at..line_end].ends_with(b"\r") {
            b"\r\n"
        } else {
            b"\n"
        });
        let headers_start = line_end + 1;
        let (headers_end, content_start) =
            headers_end(body, headers_start).ok_or("multipart: NextPart: EOF")?;
        let next_line = [nl, delimiter].concat();
        let content_end = find(body, &next_line, content_start).ok_or("unexpected EOF")?;
        let (name, is_file) = disposition(&body[headers_start..headers_end]);
        parts.push(FormPart {
            name,
            is_file,
            content: &body[content_start..content_end],
        });
        if parts.len() > FORM_PARTS_MAX {
            return Err("multipart: message too large".into());
        }
        at = content_end + nl.len();
    }
}

/// Where a part's headers starting at `from` end: the start of their first empty
/// line (LF or CRLF), and the start of the content after it.
fn headers_end(body: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut line = from;
    loop {
        let end = find(body, b"\n", line)?;
        if matches!(&body[line..end], b"" | b"\r") {
            return Some((line, end + 1));
        }
        line = end + 1;
    }
}

/// The form name and whether a file name is given, from a part's
/// `Content-Disposition: form-data; name="…"; filename="…"`.
fn disposition(headers: &[u8]) -> (Option<String>, bool) {
    let text = String::from_utf8_lossy(headers);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        let mut params = value.split(';');
        if !params
            .next()
            .is_some_and(|d| d.trim().eq_ignore_ascii_case("form-data"))
        {
            return (None, false);
        }
        let mut name = None;
        let mut file = false;
        for p in params {
            let Some((k, v)) = p.split_once('=') else {
                continue;
            };
            let v = unquote(v.trim()).to_string();
            match k.trim().to_ascii_lowercase().as_str() {
                "name" => name = Some(v),
                "filename" => file = !v.is_empty(),
                _ => {}
            }
        }
        return (name, file);
    }
    (None, false)
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, file, content) in parts {
            body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"");
            body.extend_from_slice(name.as_bytes());
            body.push(b'"');
            if let Some(f) = file {
                body.extend_from_slice(format!("; filename=\"{f}\"").as_bytes());
            }
            body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        body
    }

    /// A form with the one file part config-block yields its bytes exactly, CR and LF included.
    #[test]
    fn config_block_part_is_read_exactly() {
        let content = b"\x00\x01\r\n--Xy\r\nend";
        let body = form(&[("config-block", Some("b.block"), content)]);
        assert_eq!(config_block_part(&body, "XyZ"), Ok(content.as_slice()));
    }

    /// Fabric's refusals: the part missing (or sent as a value), a second part, an unterminated form.
    #[test]
    fn config_block_part_refusals() {
        let missing = form(&[("other", Some("x"), b"1")]);
        assert_eq!(
            config_block_part(&missing, "XyZ"),
            Err("form does not contains part key: config-block".into())
        );
        let as_value = form(&[("config-block", None, b"1")]);
        assert_eq!(
            config_block_part(&as_value, "XyZ"),
            Err("form does not contains part key: config-block".into())
        );
        let two = form(&[("config-block", Some("x"), b"1"), ("note", None, b"2")]);
        assert_eq!(
            config_block_part(&two, "XyZ"),
            Err("form contains too many parts".into())
        );
        let cut = b"--XyZ\r\nContent-Disposition: form-data; name=\"config-block\"; filename=\"x\"\r\n\r\nabc";
        assert!(config_block_part(cut, "XyZ").is_err());
        assert!(config_block_part(&form(&[]), "").is_err());
    }

    /// A form whose lines end in LF alone: a part's headers end at their first empty
    /// line, even when its content holds CRLF CRLF, and a CR ending the content is
    /// content.
    #[test]
    fn lf_form_is_read_exactly() {
        let body = b"--XyZ\nContent-Disposition: form-data; name=\"config-block\"; filename=\"b\"\n\nab\r\n\r\ncd\r\n--XyZ--\n";
        assert_eq!(
            config_block_part(body, "XyZ"),
            Ok(b"ab\r\n\r\ncd\r".as_slice())
        );
    }

    /// In a CRLF form, a delimiter after LF alone is content, as in Go's reader.
    #[test]
    fn crlf_form_keeps_a_delimiter_after_lf_alone() {
        let content = b"ab\n--XyZ--\ncd";
        let body = form(&[("config-block", Some("b"), content)]);
        assert_eq!(config_block_part(&body, "XyZ"), Ok(content.as_slice()));
    }

    /// The boundary is read from the content type, quoted or not.
    #[test]
    fn boundary_of_content_type() {
        assert_eq!(
            media_type_boundary("multipart/form-data; boundary=abc").as_deref(),
            Ok("abc")
        );
        assert_eq!(
            media_type_boundary("multipart/form-data; boundary=\"a b\"").as_deref(),
            Ok("a b")
        );
        assert!(media_type_boundary("multipart/form-data; junk").is_err());
    }

    /// Go's JSON escapes and the channel info's field order.
    #[test]
    fn info_json_shape() {
        let info = ChannelInfo {
            name: "mychannel".into(),
            consensus_relation: "other",
            status: "active",
            height: 3,
        };
        assert_eq!(
            info_json(&info),
            r#"{"name":"mychannel","url":"/participation/v1/channels/mychannel","consensusRelation":"other","status":"active","height":3}"#
        );
        assert_eq!(json_string("<a&b>"), r#""\u003ca\u0026b\u003e""#);
    }

    proptest::proptest! {
        /// Any body and boundary: the parser answers (parts or a refusal) without
        /// panicking.
        #[test]
        fn any_body_is_answered(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            boundary in "[a-z-]{0,8}",
        ) {
            let _ = config_block_part(&body, &boundary);
            let _ = parse_form(&body, &boundary);
        }

        /// A form of one file part holding any bytes without the delimiter gives
        /// those bytes back exactly.
        #[test]
        fn file_part_round_trips(
            content in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let content: Vec<u8> = content.into_iter().filter(|&b| b != b'X').collect();
            let body = form(&[("config-block", Some("f"), &content)]);
            proptest::prop_assert_eq!(config_block_part(&body, "XyZ"), Ok(content.as_slice()));
        }
    }

    /// Accept headers that admit JSON pass; others are 406.
    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(refuse_accept(&h).is_none());
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html, */*;q=0.1"),
        );
        assert!(refuse_accept(&h).is_none());
        h.insert(header::ACCEPT, HeaderValue::from_static("text/html"));
        let r = refuse_accept(&h).map(|r| r.status());
        assert_eq!(r, Some(StatusCode::NOT_ACCEPTABLE));
    }

    /// Fabric's texts for a bad channel name.
    #[test]
    fn channel_id_texts() {
        assert!(refuse_channel_id("my-channel.1").is_none());
        for bad in ["My", "a_b", &"a".repeat(250)] {
            let r = refuse_channel_id(bad).map(|r| r.status());
            assert_eq!(r, Some(StatusCode::BAD_REQUEST), "{bad}");
        }
    }
}
