//! `korder admin channel list|info|join|remove`: the channel participation API of
//! an orderer's Admin endpoint, with osnadmin's flags and output (`Status: N` and
//! the JSON body, indented).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use korder_proto::Message;
use korder_proto::common::Block;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest a whole exchange with the Admin endpoint may take.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

/// Largest answer read from the endpoint.
const ANSWER_BYTES_MAX: u64 = 16 << 20;

/// The channel collection of the API.
const CHANNELS: &str = "/participation/v1/channels";

/// `korder admin ...`.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Channel actions (osnadmin channel).
    #[command(subcommand)]
    Channel(ChannelAction),
}

/// `korder admin channel ...`.
#[derive(Subcommand, Debug)]
pub enum ChannelAction {
    /// List the channels the orderer serves, or one channel's details with --channelID.
    List {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Channel id: show this channel's details.
        #[arg(short = 'c', long = "channelID")]
        channel: Option<String>,
    },
    /// One channel's details (the same as list --channelID).
    Info {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Channel id.
        #[arg(short = 'c', long = "channelID")]
        channel: String,
    },
    /// Join the orderer to a channel by its genesis config block.
    Join {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Channel id; must be the config block's.
        #[arg(short = 'c', long = "channelID")]
        channel: String,
        /// The channel's config block file.
        #[arg(short = 'b', long = "config-block")]
        config_block: PathBuf,
    },
    /// Remove the orderer from a channel (its data is deleted).
    Remove {
        #[command(flatten)]
        endpoint: Endpoint,
        /// Channel id.
        #[arg(short = 'c', long = "channelID")]
        channel: String,
    },
}

/// Where and how to reach the Admin endpoint (osnadmin's flags).
#[derive(Args, Debug, Clone)]
pub struct Endpoint {
    /// Admin endpoint of the orderer, host:port.
    #[arg(short = 'o', long = "orderer-address")]
    pub orderer_address: String,
    /// PEM file of the TLS CA certificate(s) of the orderer; without it, plain HTTP.
    #[arg(long = "ca-file")]
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client's TLS certificate (mutual TLS).
    #[arg(long = "client-cert")]
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client's TLS private key (mutual TLS).
    #[arg(long = "client-key")]
    pub client_key: Option<PathBuf>,
    /// Print the body only, without the `Status:` line.
    #[arg(long = "no-status")]
    pub no_status: bool,
}

/// Runs one `korder admin` command.
pub fn run(command: AdminCommand) -> anyhow::Result<ExitCode> {
    let AdminCommand::Channel(action) = command;
    let (endpoint, request) = match action {
        ChannelAction::List {
            endpoint,
            channel: None,
        } => (endpoint, Request::get(CHANNELS.to_string())),
        ChannelAction::List {
            endpoint,
            channel: Some(channel),
        }
        | ChannelAction::Info { endpoint, channel } => {
            (endpoint, Request::get(format!("{CHANNELS}/{channel}")))
        }
        ChannelAction::Remove { endpoint, channel } => (
            endpoint,
            Request {
                method: "DELETE",
                path: format!("{CHANNELS}/{channel}"),
                content_type: None,
                body: Vec::new(),
            },
        ),
        ChannelAction::Join {
            endpoint,
            channel,
            config_block,
        } => {
            let bytes = std::fs::read(&config_block)
                .with_context(|| format!("reading {}", config_block.display()))?;
            check_block_channel(&bytes, &channel, &config_block)?;
            (endpoint, Request::join(&bytes))
        }
    };
    let tls = endpoint.tls()?;
    let answer = crate::cmd::client::runtime()?.block_on(async {
        tokio::time::timeout(
            EXCHANGE_LIMIT,
            exchange(&endpoint.orderer_address, tls, &request),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {EXCHANGE_LIMIT:?}"))?
    })?;
    if !endpoint.no_status {
        println!("Status: {}", answer.status);
    }
    if !answer.body.is_empty() {
        println!("{}", indent_json(&answer.body));
    }
    Ok(ExitCode::SUCCESS)
}

/// The block's channel must be the one named, as osnadmin checks it.
fn check_block_channel(bytes: &[u8], channel: &str, path: &Path) -> anyhow::Result<()> {
    let block =
        Block::decode(bytes).with_context(|| format!("{} is not a block", path.display()))?;
    let bundle = korder_server::registrar::bundle_of_config_block(&block)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if bundle.channel_id != channel {
        bail!(
            "specified --channelID {channel} does not match channel ID {} in config block",
            bundle.channel_id
        );
    }
    Ok(())
}

impl Endpoint {
    /// The TLS client configuration: the CA roots, and the client certificate when
    /// given (both files, or neither).
    fn tls(&self) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
        let Some(ca_file) = &self.ca_file else {
            return Ok(None);
        };
        let ca =
            std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            let cert =
                cert.with_context(|| format!("{}: not PEM certificates", ca_file.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("{}: a CA certificate", ca_file.display()))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let cert_pem =
                    std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
                let chain = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("{}: not PEM certificates", cert.display()))?;
                let key_pem =
                    std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .with_context(|| format!("{}: not a PEM private key", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("the client certificate and key")?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => bail!("--client-cert and --client-key go together"),
        };
        Ok(Some(Arc::new(config)))
    }
}

/// One HTTP request.
#[derive(Debug)]
struct Request {
    method: &'static str,
    path: String,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl Request {
    fn get(path: String) -> Request {
        Request {
            method: "GET",
            path,
            content_type: None,
            body: Vec::new(),
        }
    }

    /// The join form: the block as the file part `config-block`, as osnadmin sends it.
    fn join(block: &[u8]) -> Request {
        let boundary = format!("korder-{:016x}", hash_of(block));
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"config-block\"; filename=\"config.block\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(block);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        Request {
            method: "POST",
            path: CHANNELS.to_string(),
            content_type: Some(format!("multipart/form-data; boundary={boundary}")),
            body,
        }
    }

    fn encode(&self, host: &str) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.path,
            self.body.len()
        );
        if let Some(ct) = &self.content_type {
            head.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// A boundary that does not occur in the block: FNV-1a of its bytes (a block
/// holding this very line is not a concern for a config block).
fn hash_of(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An HTTP answer: status code and body.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    body: String,
}

async fn exchange(
    address: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    request: &Request,
) -> anyhow::Result<Answer> {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    let host = address
        .rsplit_once(':')
        .map_or(address, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let bytes = request.encode(&host);
    let raw = match tls {
        Some(config) => {
            let name = ServerName::try_from(host.clone())
                .with_context(|| format!("{host} as a TLS server name"))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {address}"))?;
            send(stream, &bytes).await?
        }
        None => send(tcp, &bytes).await?,
    };
    parse_answer(&raw)
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    bytes: &[u8],
) -> anyhow::Result<Vec<u8>> {
    // A refusal may come before the whole request is written: read the answer anyway.
    let wrote = stream.write_all(bytes).await;
    let mut raw = Vec::new();
    let read = (&mut stream)
        .take(ANSWER_BYTES_MAX)
        .read_to_end(&mut raw)
        .await;
    if raw.is_empty() {
        wrote.context("sending the request")?;
        read.context("reading the answer")?;
        bail!("the endpoint closed the connection without an answer");
    }
    Ok(raw)
}

/// Status and body of an HTTP/1.1 answer (body by `Content-Length`, chunks, or to
/// the end).
fn parse_answer(raw: &[u8]) -> anyhow::Result<Answer> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("an incomplete HTTP answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let rest = &raw[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("not an HTTP answer: {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
            if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            }
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else {
        match length {
            Some(n) => rest.get(..n).context("a truncated HTTP answer")?.to_vec(),
            None => rest.to_vec(),
        }
    };
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a truncated chunk")?;
        let size = String::from_utf8_lossy(&rest[..end]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("a bad chunk size")?;
        if size == 0 {
            return Ok(out);
        }
        let data = rest
            .get(end + 2..end + 2 + size)
            .context("a truncated chunk")?;
        out.extend_from_slice(data);
        rest = rest.get(end + 4 + size..).unwrap_or_default();
    }
}

/// A JSON text indented with tabs, keys in the order received (as osnadmin prints
/// it); text that is not JSON is returned as it is.
fn indent_json(text: &str) -> String {
    let text = text.trim();
    if serde_json::from_str::<serde_json::Value>(text).is_err() {
        return text.to_string();
    }
    let mut out = String::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n('\t', depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON is indented with tabs in its own key order, as osnadmin prints it.
    #[test]
    fn json_is_indented_in_order() {
        let text = r#"{"systemChannel":null,"channels":[{"name":"a,b","url":"/x"}],"e":{}}"#;
        assert_eq!(
            indent_json(text),
            "{\n\t\"systemChannel\": null,\n\t\"channels\": [\n\t\t{\n\t\t\t\"name\": \"a,b\",\n\t\t\t\"url\": \"/x\"\n\t\t}\n\t],\n\t\"e\": {}\n}"
        );
        assert_eq!(indent_json("not json"), "not json");
    }

    /// Answers by length, by chunks, and to the end of the stream.
    #[test]
    fn answers_are_parsed() {
        let by_length = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}extra";
        assert_eq!(
            parse_answer(by_length).unwrap(),
            Answer {
                status: 201,
                body: "{}".into()
            }
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{\"\r\n3\r\na\"}\r\n0\r\n\r\n";
        assert_eq!(parse_answer(chunked).unwrap().body, "{\"a\"}");
        let no_body = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_answer(no_body).unwrap().body, "");
        assert!(parse_answer(b"garbage").is_err());
    }
}
