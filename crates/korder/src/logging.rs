//! Logging set-up: korder's own `KORDER_LOG` (a tracing `EnvFilter`), and Fabric's
//! `FABRIC_LOGGING_SPEC` and `FABRIC_LOGGING_FORMAT`, with the level changeable at
//! run time through `/logspec` on the operations endpoint.
//!
//! A Fabric logging spec is `[logger[,logger...]=]level[:...]`: a bare level is the
//! default, `name=level` sets the loggers named `name` or below it
//! (`orderer.consensus` covers `orderer.consensus.kafka`), and a name ending in a
//! dot sets that logger alone. Fabric's logger names are mapped to korder's tracing
//! targets by [`FABRIC_LOGGERS`]; any other name is taken as a tracing target with
//! `.` for `::` (`korder_server.deliver=debug`), since `:` separates the segments.
//!
//! `FABRIC_LOGGING_FORMAT` is `json` (one JSON object a line, with Fabric's keys
//! `level`, `ts`, `name`, `caller`, `msg`), `logfmt`, or a Fabric format string
//! (`%{color}`, `%{id}`, `%{level}`, `%{message}`, `%{module}`, `%{shortfunc}`,
//! `%{time}`, each with an optional `:format`). Unset, korder's own format is used.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// Fabric's orderer logger names and the korder tracing targets that do the same
/// work. Names are Fabric's own, misspelling included (`orderer.commmon.multichannel`).
pub const FABRIC_LOGGERS: &[(&str, &[&str])] = &[
    (
        "orderer.common.server",
        &["korder::node", "korder::cmd", "korder::lock"],
    ),
    ("orderer.common.broadcast", &["korder_server::broadcast"]),
    ("common.deliver", &["korder_server::deliver"]),
    (
        "orderer.common.blockcutter",
        &["korder_consensus::blockcutter"],
    ),
    (
        "orderer.common.msgprocessor",
        &["korder_server::msgprocessor"],
    ),
    (
        "orderer.commmon.multichannel",
        &[
            "korder_server::registrar",
            "korder_server::blockwriter",
            "korder_server::channel",
        ],
    ),
    (
        "orderer.consensus.kafka",
        &[
            "korder_kafka",
            "korder_server::chain",
            "korder_server::resume",
            "korder_consensus::chain",
        ],
    ),
    ("orderer.consensus.kafka.sarama", &["rdkafka"]),
    ("orderer.consensus.solo", &["korder_log"]),
    (
        "orderer.operations",
        &["korder_server::operations", "korder_server::metrics"],
    ),
    ("common.ledger.blockledger.file", &["korder_ledger"]),
    ("common.channelconfig", &["korder_channelconfig"]),
    ("policies", &["korder_channelconfig::policies"]),
    ("msp", &["korder_msp"]),
    (
        "comm.grpc.server",
        &["korder_server::connections", "korder_server::service"],
    ),
    ("comm.tls", &["korder_server::tls"]),
    ("grpc", &["tonic", "h2", "hyper", "hyper_util", "tower"]),
    ("localconfig", &["korder_config"]),
];

/// A Fabric log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `payload`: below debug (korder's trace).
    Payload,
    /// `debug`.
    Debug,
    /// `info` (also `notice`).
    Info,
    /// `warn` or `warning`.
    Warn,
    /// `error` (also `critical`).
    Error,
    /// `dpanic`.
    DPanic,
    /// `panic`.
    Panic,
    /// `fatal`.
    Fatal,
}

impl Level {
    /// Fabric's level words, either all lower or all upper case.
    pub fn parse(word: &str) -> Option<Level> {
        Some(match word {
            "PAYLOAD" | "payload" => Level::Payload,
            "DEBUG" | "debug" => Level::Debug,
            "INFO" | "info" | "NOTICE" | "notice" => Level::Info,
            "WARNING" | "WARN" | "warning" | "warn" => Level::Warn,
            "ERROR" | "error" | "CRITICAL" | "critical" => Level::Error,
            "DPANIC" | "dpanic" => Level::DPanic,
            "PANIC" | "panic" => Level::Panic,
            "FATAL" | "fatal" => Level::Fatal,
            _ => return None,
        })
    }

    /// The name Fabric writes back in a spec.
    pub fn name(self) -> &'static str {
        match self {
            Level::Payload => "payload",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::DPanic => "dpanic",
            Level::Panic => "panic",
            Level::Fatal => "fatal",
        }
    }

    /// The tracing level that lets this level's records through (korder has no
    /// levels above error).
    fn directive(self) -> &'static str {
        match self {
            Level::Payload => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            _ => "error",
        }
    }

    fn of(level: &tracing::Level) -> Level {
        match *level {
            tracing::Level::TRACE => Level::Payload,
            tracing::Level::DEBUG => Level::Debug,
            tracing::Level::INFO => Level::Info,
            tracing::Level::WARN => Level::Warn,
            _ => Level::Error,
        }
    }

    /// Fabric's upper-case form, as in its console lines.
    fn capital(self) -> &'static str {
        match self {
            Level::Payload => "PAYLOAD",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
            Level::DPanic => "DPANIC",
            Level::Panic => "PANIC",
            Level::Fatal => "FATAL",
        }
    }
}

/// A parsed Fabric logging spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSpec {
    /// The level of every logger no other entry names.
    pub default: Level,
    /// `(logger, level)`, in the order given; a logger named twice keeps the last.
    pub loggers: Vec<(String, Level)>,
}

fn valid_logger_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '#' | ':' | '-'))
        })
}

impl LogSpec {
    /// Parses `spec` with Fabric's grammar and its error texts. The empty spec is
    /// `info`.
    pub fn parse(spec: &str) -> Result<LogSpec, String> {
        let bad = |segment: &str| {
            format!("invalid logging specification '{spec}': bad segment '{segment}'")
        };
        let mut default = Level::Info;
        let mut loggers: Vec<(String, Level)> = Vec::new();
        for field in spec.split(':') {
            let split: Vec<&str> = field.split('=').collect();
            match split.as_slice() {
                [level] => {
                    if !field.is_empty() {
                        default = Level::parse(level).ok_or_else(|| bad(field))?;
                    } else {
                        default = Level::Info;
                    }
                }
                [names, level] => {
                    if names.is_empty() {
                        return Err(format!(
                            "invalid logging specification '{spec}': no logger specified in segment '{field}'"
                        ));
                    }
                    let level = Level::parse(level).ok_or_else(|| bad(field))?;
                    for name in names.split(',') {
                        if !valid_logger_name(name.strip_suffix('.').unwrap_or(name)) {
                            return Err(format!(
                                "invalid logging specification '{spec}': bad logger name '{name}'"
                            ));
                        }
                        loggers.retain(|(n, _)| n != name);
                        loggers.push((name.to_string(), level));
                    }
                }
                _ => return Err(bad(field)),
            }
        }
        Ok(LogSpec { default, loggers })
    }

    /// The level of logger `name`: the entry for `name.` (that logger alone), else
    /// for `name`, else for the nearest parent, else the default.
    pub fn level_of(&self, name: &str) -> Level {
        let find = |n: &str| self.loggers.iter().find(|(l, _)| l == n).map(|(_, v)| *v);
        if let Some(l) = find(&format!("{name}.")) {
            return l;
        }
        let mut candidate = name;
        loop {
            if let Some(l) = find(candidate) {
                return l;
            }
            match candidate.rfind('.') {
                Some(i) if i > 0 => candidate = &candidate[..i],
                _ => return self.default,
            }
        }
    }

    /// The equivalent `EnvFilter` directives: the default level, each korder target
    /// of a Fabric logger at that logger's level, and every other name in the spec
    /// as a tracing target of its own (dots read as `::`).
    pub fn directives(&self) -> String {
        let mut out = vec![self.default.directive().to_string()];
        for (name, targets) in FABRIC_LOGGERS {
            let level = self.level_of(name);
            if level != self.default {
                for t in *targets {
                    out.push(format!("{t}={}", level.directive()));
                }
            }
        }
        for (name, level) in &self.loggers {
            let bare = name.strip_suffix('.').unwrap_or(name);
            let fabric = FABRIC_LOGGERS.iter().any(|(n, _)| {
                *n == bare
                    || n.strip_prefix(bare)
                        .is_some_and(|rest| rest.starts_with('.'))
            });
            if !fabric {
                out.push(format!("{}={}", bare.replace('.', "::"), level.directive()));
            }
        }
        out.join(",")
    }
}

impl std::fmt::Display for LogSpec {
    /// Fabric's normal form: `logger=level` entries sorted, then the default.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut fields: Vec<String> = self
            .loggers
            .iter()
            .map(|(n, l)| format!("{n}={}", l.name()))
            .collect();
        fields.sort();
        fields.push(self.default.name().to_string());
        f.write_str(&fields.join(":"))
    }
}

/// The Fabric logger name of a tracing target: the logger whose korder target is
/// the longest prefix of it, else the target itself.
pub fn module_of(target: &str) -> &str {
    let mut best: Option<(&str, usize)> = None;
    for (name, targets) in FABRIC_LOGGERS {
        for t in *targets {
            let matches = target == *t
                || target
                    .strip_prefix(t)
                    .is_some_and(|rest| rest.starts_with("::"));
            if matches && best.is_none_or(|(_, len)| t.len() > len) {
                best = Some((name, t.len()));
            }
        }
    }
    best.map_or(target, |(n, _)| n)
}

/// How log lines are written.
#[derive(Clone, Debug, PartialEq)]
pub enum Format {
    /// korder's own format (tracing-subscriber's).
    Korder,
    /// One JSON object a line, with Fabric's keys.
    Json,
    /// `key=value` pairs, as Fabric's `logfmt`.
    Logfmt,
    /// A Fabric format string.
    Pattern(Vec<Piece>),
}

/// One part of a Fabric format string.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// Text written as it is.
    Literal(String),
    /// `%{color}` (the level's colour), `%{color:bold}`, `%{color:reset}`.
    Color(Option<String>),
    /// `%{id}`: the record's sequence number.
    Id(GoVerb),
    /// `%{level}`.
    Level(GoVerb),
    /// `%{message}` (with the record's fields as `key=value` after it).
    Message(GoVerb),
    /// `%{module}`: the Fabric logger name.
    Module(GoVerb),
    /// `%{shortfunc}`: the last part of the tracing target.
    ShortFunc(GoVerb),
    /// `%{time}` with a Go time layout.
    Time(String),
}

/// A Go `fmt` verb such as `%s`, `%.4s`, `%-10s` or `%04x`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoVerb {
    left: bool,
    zero: bool,
    width: usize,
    precision: Option<usize>,
    verb: char,
}

impl GoVerb {
    fn parse(text: &str) -> Result<GoVerb, String> {
        let t = text.strip_prefix('%').unwrap_or(text);
        let mut chars = t.chars().peekable();
        let mut v = GoVerb {
            left: false,
            zero: false,
            width: 0,
            precision: None,
            verb: 's',
        };
        while let Some(&c) = chars.peek() {
            match c {
                '-' => v.left = true,
                '0' => v.zero = true,
                '+' | ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut num = String::new();
        while let Some(&c) = chars.peek().filter(|c| c.is_ascii_digit()) {
            num.push(c);
            chars.next();
        }
        v.width = num.parse().unwrap_or(0);
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&c) = chars.peek().filter(|c| c.is_ascii_digit()) {
                p.push(c);
                chars.next();
            }
            v.precision = Some(p.parse().unwrap_or(0));
        }
        v.verb = chars.next().unwrap_or('s');
        if chars.next().is_some() || !matches!(v.verb, 's' | 'v' | 'q' | 'd' | 'x' | 'X') {
            return Err(format!("unsupported format verb %{t}"));
        }
        Ok(v)
    }

    fn pad(&self, s: &str, out: &mut String) {
        let len = s.chars().count();
        let fill = self.width.saturating_sub(len);
        if self.left {
            out.push_str(s);
            out.extend(std::iter::repeat_n(' ', fill));
        } else {
            let c = if self.zero { '0' } else { ' ' };
            out.extend(std::iter::repeat_n(c, fill));
            out.push_str(s);
        }
    }

    fn text(&self, s: &str, out: &mut String) {
        let cut: String = match self.precision {
            Some(p) => s.chars().take(p).collect(),
            None => s.to_string(),
        };
        if self.verb == 'q' {
            self.pad(&format!("{cut:?}"), out);
        } else {
            self.pad(&cut, out);
        }
    }

    fn number(&self, n: u64, out: &mut String) {
        let s = match self.verb {
            'x' => format!("{n:x}"),
            'X' => format!("{n:X}"),
            _ => n.to_string(),
        };
        self.pad(&s, out);
    }
}

impl Format {
    /// Parses `FABRIC_LOGGING_FORMAT`; empty means korder's own format.
    pub fn parse(spec: &str) -> Result<Format, String> {
        match spec {
            "" => return Ok(Format::Korder),
            "json" => return Ok(Format::Json),
            "logfmt" => return Ok(Format::Logfmt),
            _ => {}
        }
        let mut pieces = Vec::new();
        let mut rest = spec;
        while let Some(start) = rest.find("%{") {
            let Some(len) = rest[start..].find('}') else {
                break;
            };
            let inner = &rest[start + 2..start + len];
            let (verb, opt) = match inner.split_once(':') {
                Some((v, o)) => (v, Some(o)),
                None => (inner, None),
            };
            let go = |o: Option<&str>, default: &str| GoVerb::parse(o.unwrap_or(default));
            let piece = match verb {
                "color" => match opt {
                    None | Some("") => Piece::Color(None),
                    Some(o @ ("bold" | "reset")) => Piece::Color(Some(o.to_string())),
                    Some(o) => return Err(format!("invalid color option: {o}")),
                },
                "id" => Piece::Id(go(opt, "d")?),
                "level" => Piece::Level(go(opt, "s")?),
                "message" => Piece::Message(go(opt, "s")?),
                "module" => Piece::Module(go(opt, "s")?),
                "shortfunc" => Piece::ShortFunc(go(opt, "s")?),
                "time" => Piece::Time(
                    opt.filter(|o| !o.is_empty())
                        .unwrap_or("2006-01-02T15:04:05.999Z07:00")
                        .to_string(),
                ),
                // Not a verb: kept as text, as Fabric does.
                _ => Piece::Literal(rest[start..start + len + 1].to_string()),
            };
            if start > 0 {
                pieces.push(Piece::Literal(rest[..start].to_string()));
            }
            pieces.push(piece);
            rest = &rest[start + len + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        Ok(Format::Pattern(pieces))
    }
}

/// Fabric's default console format.
#[cfg(test)]
pub const FABRIC_DEFAULT_FORMAT: &str = "%{color}%{time:2006-01-02 15:04:05.000 MST} %{id:04x} %{level:.4s}%{color:reset} [%{module}] %{color:bold}%{shortfunc}%{color:reset} -> %{message}";

/// A UTC time, broken down.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    weekday: u32,
}

fn civil(t: std::time::SystemTime) -> Civil {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a proleptic Gregorian date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: ((rem % 3600) / 60) as u32,
        second: (rem % 60) as u32,
        nanos: d.subsec_nanos(),
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Formats `t` (in UTC) with a Go time layout (reference time
/// `Mon Jan 2 15:04:05 MST 2006`).
pub fn go_time(layout: &str, t: std::time::SystemTime) -> String {
    let c = civil(t);
    let mut out = String::new();
    let mut rest = layout;
    // Longest tokens first where one is a prefix of another.
    const TOKENS: &[&str] = &[
        "January", "Monday", "2006", "Z07:00", "-07:00", "-0700", "Jan", "Mon", "MST", "01", "02",
        "_2", "15", "03", "04", "05", "06", "PM", "pm", "1", "2", "3", "4", "5",
    ];
    while !rest.is_empty() {
        if let Some(frac) = rest
            .strip_prefix(".0")
            .or_else(|| rest.strip_prefix(".9"))
            .map(|_| &rest[1..])
        {
            let digit = frac.as_bytes()[0];
            let n = frac.bytes().take_while(|&b| b == digit).count();
            let digits = format!("{:09}", c.nanos);
            let mut shown = digits[..n.min(9)].to_string();
            if digit == b'9' {
                shown = shown.trim_end_matches('0').to_string();
            }
            if !shown.is_empty() || digit == b'0' {
                out.push('.');
                out.push_str(&shown);
            }
            rest = &frac[n..];
            continue;
        }
        let Some(token) = TOKENS.iter().find(|t| rest.starts_with(**t)) else {
            let ch = rest.chars().next().unwrap_or(' ');
            out.push(ch);
            rest = &rest[ch.len_utf8()..];
            continue;
        };
        let h12 = if c.hour.is_multiple_of(12) {
            12
        } else {
            c.hour % 12
        };
        let _ = match *token {
            "January" => write!(out, "{}", MONTHS[(c.month - 1) as usize]),
            "Jan" => write!(out, "{}", &MONTHS[(c.month - 1) as usize][..3]),
            "Monday" => write!(out, "{}", DAYS[c.weekday as usize]),
            "Mon" => write!(out, "{}", &DAYS[c.weekday as usize][..3]),
            "2006" => write!(out, "{:04}", c.year),
            "06" => write!(out, "{:02}", c.year.rem_euclid(100)),
            "01" => write!(out, "{:02}", c.month),
            "1" => write!(out, "{}", c.month),
            "02" => write!(out, "{:02}", c.day),
            "_2" => write!(out, "{:>2}", c.day),
            "2" => write!(out, "{}", c.day),
            "15" => write!(out, "{:02}", c.hour),
            "03" => write!(out, "{h12:02}"),
            "3" => write!(out, "{h12}"),
            "04" => write!(out, "{:02}", c.minute),
            "4" => write!(out, "{}", c.minute),
            "05" => write!(out, "{:02}", c.second),
            "5" => write!(out, "{}", c.second),
            "PM" => write!(out, "{}", if c.hour >= 12 { "PM" } else { "AM" }),
            "pm" => write!(out, "{}", if c.hour >= 12 { "pm" } else { "am" }),
            "MST" => write!(out, "UTC"),
            "Z07:00" => write!(out, "Z"),
            "-07:00" => write!(out, "+00:00"),
            _ => write!(out, "+0000"),
        };
        rest = &rest[token.len()..];
    }
    out
}

/// The fields of one event.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(String, serde_json::Value)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest.push((
                field.name().to_string(),
                serde_json::Value::String(format!("{value:?}")),
            ));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.rest
                .push((field.name().to_string(), serde_json::Value::from(value)));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.rest
            .push((field.name().to_string(), serde_json::Value::from(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.rest
            .push((field.name().to_string(), serde_json::Value::from(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.rest
            .push((field.name().to_string(), serde_json::Value::from(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.rest
            .push((field.name().to_string(), serde_json::Value::from(value)));
    }
}

fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Writes events in a Fabric format (JSON, logfmt or a format string) to stderr.
pub struct FabricLayer {
    format: Format,
    sequence: AtomicU64,
}

impl FabricLayer {
    /// A layer writing `format` (not [`Format::Korder`]).
    pub fn new(format: Format) -> FabricLayer {
        FabricLayer {
            format,
            sequence: AtomicU64::new(0),
        }
    }

    /// One line for an event (with its newline).
    pub fn line(&self, event: &Event<'_>, now: std::time::SystemTime) -> String {
        let meta = event.metadata();
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = Level::of(meta.level());
        let module = module_of(meta.target());
        let caller = match (meta.file(), meta.line()) {
            (Some(f), Some(l)) => format!("{f}:{l}"),
            _ => meta.target().to_string(),
        };
        let mut out = String::new();
        match &self.format {
            Format::Json | Format::Korder => {
                let ts = now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let mut obj = serde_json::Map::new();
                obj.insert("level".into(), level.name().into());
                obj.insert("ts".into(), ts.into());
                obj.insert("name".into(), module.into());
                obj.insert("caller".into(), caller.into());
                obj.insert("msg".into(), fields.message.into());
                for (k, v) in fields.rest {
                    obj.entry(k).or_insert(v);
                }
                out.push_str(&serde_json::Value::Object(obj).to_string());
            }
            Format::Logfmt => {
                let quote = |s: &str| {
                    if s.is_empty()
                        || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=')
                    {
                        format!("{s:?}")
                    } else {
                        s.to_string()
                    }
                };
                let _ = write!(
                    out,
                    "ts={} level={} name={} caller={} msg={}",
                    go_time("2006-01-02T15:04:05.000Z07:00", now),
                    level.name(),
                    quote(module),
                    quote(&caller),
                    quote(&fields.message)
                );
                for (k, v) in &fields.rest {
                    let _ = write!(out, " {k}={}", quote(&plain(v)));
                }
            }
            Format::Pattern(pieces) => {
                let id = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
                for p in pieces {
                    match p {
                        Piece::Literal(t) => out.push_str(t),
                        Piece::Color(opt) => {
                            let color = match level {
                                Level::Payload => 0,
                                Level::Debug => 36,
                                Level::Info => 34,
                                Level::Warn => 33,
                                Level::Error => 31,
                                _ => 35,
                            };
                            match opt.as_deref() {
                                Some("reset") => out.push_str("\x1b[0m"),
                                Some(_) if color != 0 => {
                                    let _ = write!(out, "\x1b[{color};1m");
                                }
                                _ => {
                                    let _ = write!(out, "\x1b[{color}m");
                                }
                            }
                        }
                        Piece::Id(v) => v.number(id, &mut out),
                        Piece::Level(v) => v.text(level.capital(), &mut out),
                        Piece::Module(v) => v.text(module, &mut out),
                        Piece::ShortFunc(v) => v.text(
                            meta.target().rsplit("::").next().unwrap_or(meta.target()),
                            &mut out,
                        ),
                        Piece::Time(layout) => out.push_str(&go_time(layout, now)),
                        Piece::Message(v) => {
                            let mut m = fields.message.clone();
                            for (k, val) in &fields.rest {
                                let _ = write!(m, " {k}={}", plain(val));
                            }
                            v.text(&m, &mut out);
                        }
                    }
                }
            }
        }
        out.push('\n');
        out
    }
}

impl<S: Subscriber> Layer<S> for FabricLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = self.line(event, std::time::SystemTime::now());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// Where log entries are counted (`logging_entries_checked`/`_written`), once the
/// node's metrics exist.
static METRICS: std::sync::OnceLock<Arc<korder_server::Metrics>> = std::sync::OnceLock::new();

/// Counts the log entries in `metrics` from now on (set once per process).
pub fn count_entries_in(metrics: Arc<korder_server::Metrics>) {
    let _ = METRICS.set(metrics);
}

/// Counts every entry that passed the level filter, by level. An entry reaching
/// this layer was checked against the active level and is then written, so the
/// two counters move together here (Fabric also counts entries its logger level
/// check drops later).
struct EntryCounter;

impl<S: Subscriber> Layer<S> for EntryCounter {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if let Some(m) = METRICS.get() {
            let level = [Level::of(event.metadata().level()).name()];
            m.logging_entries_checked.with_label_values(&level).inc();
            m.logging_entries_written.with_label_values(&level).inc();
        }
    }
}

/// The process's log level, changeable at run time.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    spec: Mutex<String>,
}

impl LogControl {
    /// The active spec: Fabric's normal form, or the `KORDER_LOG` filter as given.
    pub fn spec(&self) -> String {
        self.spec.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Activates a Fabric spec; on error nothing changes.
    pub fn set_spec(&self, spec: &str) -> Result<(), String> {
        let parsed = LogSpec::parse(spec)?;
        let filter = EnvFilter::try_new(parsed.directives())
            .map_err(|e| format!("invalid logging specification '{spec}': {e}"))?;
        self.handle.reload(filter).map_err(|e| e.to_string())?;
        if let Ok(mut s) = self.spec.lock() {
            *s = parsed.to_string();
        }
        Ok(())
    }
}

impl korder_server::operations::LogSpecControl for LogControl {
    fn spec(&self) -> String {
        LogControl::spec(self)
    }
    fn set_spec(&self, spec: &str) -> Result<(), String> {
        LogControl::set_spec(self, spec)
    }
}

/// Sets up logging from the environment: `KORDER_LOG` (an `EnvFilter`; wins when
/// set), else `FABRIC_LOGGING_SPEC`, else `info`; the format from
/// `FABRIC_LOGGING_FORMAT`. Installs the run-time control for `/logspec`.
pub fn init() -> Result<Arc<LogControl>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let (filter, spec) = match (var("KORDER_LOG"), var("FABRIC_LOGGING_SPEC")) {
        (Some(k), _) => (
            EnvFilter::try_new(&k).map_err(|e| format!("KORDER_LOG {k:?}: {e}"))?,
            k,
        ),
        (None, fabric) => {
            let text = fabric.unwrap_or_default();
            let parsed = LogSpec::parse(&text).map_err(|e| format!("FABRIC_LOGGING_SPEC: {e}"))?;
            let filter = EnvFilter::try_new(parsed.directives())
                .map_err(|e| format!("FABRIC_LOGGING_SPEC {text:?}: {e}"))?;
            (filter, parsed.to_string())
        }
    };
    let format = Format::parse(&var("FABRIC_LOGGING_FORMAT").unwrap_or_default())
        .map_err(|e| format!("FABRIC_LOGGING_FORMAT: {e}"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let (korder_fmt, fabric) = match format {
        Format::Korder => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            ),
            None,
        ),
        other => (None, Some(FabricLayer::new(other))),
    };
    Registry::default()
        .with(filter)
        .with(korder_fmt)
        .with(fabric)
        .with(EntryCounter)
        .try_init()
        .map_err(|e| e.to_string())?;
    let control = Arc::new(LogControl {
        handle,
        spec: Mutex::new(spec),
    });
    korder_server::operations::install_log_spec(control.clone());
    Ok(control)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fabric's example spec: a default level and per-logger levels, in Fabric's
    /// normal form when written back.
    #[test]
    fn spec_with_default_and_loggers() {
        let s = LogSpec::parse("info:orderer.consensus.kafka=debug:grpc=warn").unwrap();
        assert_eq!(s.default, Level::Info);
        assert_eq!(s.level_of("orderer.consensus.kafka"), Level::Debug);
        assert_eq!(s.level_of("orderer.consensus.kafka.sarama"), Level::Debug);
        assert_eq!(s.level_of("grpc"), Level::Warn);
        assert_eq!(s.level_of("orderer.common.broadcast"), Level::Info);
        assert_eq!(
            s.to_string(),
            "grpc=warn:orderer.consensus.kafka=debug:info"
        );
    }

    /// A comma list sets several loggers; a trailing dot names one logger and not
    /// those below it; the default may come anywhere, and the last one counts.
    #[test]
    fn spec_lists_exact_names_and_default_anywhere() {
        let s = LogSpec::parse(
            "common.deliver,orderer.common.broadcast=debug:orderer.consensus.kafka.=error:warning",
        )
        .unwrap();
        assert_eq!(s.default, Level::Warn);
        assert_eq!(s.level_of("common.deliver"), Level::Debug);
        assert_eq!(s.level_of("orderer.common.broadcast"), Level::Debug);
        assert_eq!(s.level_of("orderer.consensus.kafka"), Level::Error);
        assert_eq!(s.level_of("orderer.consensus.kafka.sarama"), Level::Warn);
        assert_eq!(LogSpec::parse("").unwrap().default, Level::Info);
        assert_eq!(LogSpec::parse("DEBUG").unwrap().default, Level::Debug);
        assert_eq!(LogSpec::parse("fatal").unwrap().default, Level::Fatal);
        assert_eq!(LogSpec::parse("panic").unwrap().default, Level::Panic);
    }

    /// Bad specs are refused with Fabric's error texts.
    #[test]
    fn bad_specs_use_fabric_errors() {
        for (spec, error) in [
            (
                "chatty",
                "invalid logging specification 'chatty': bad segment 'chatty'",
            ),
            (
                "=debug",
                "invalid logging specification '=debug': no logger specified in segment '=debug'",
            ),
            (
                "a=b=c",
                "invalid logging specification 'a=b=c': bad segment 'a=b=c'",
            ),
            (
                "grpc=loud",
                "invalid logging specification 'grpc=loud': bad segment 'grpc=loud'",
            ),
            (
                "a..b=debug",
                "invalid logging specification 'a..b=debug': bad logger name 'a..b'",
            ),
            (
                "Info",
                "invalid logging specification 'Info': bad segment 'Info'",
            ),
        ] {
            assert_eq!(LogSpec::parse(spec).unwrap_err(), error);
        }
    }

    /// Fabric names become directives for korder's targets; a prefix covers every
    /// logger below it; other names are tracing targets; the result is a valid filter.
    #[test]
    fn directives_map_fabric_names_to_targets() {
        let d =
            LogSpec::parse("warn:orderer.consensus=debug:korder_server.deliver=error:grpc=error")
                .unwrap()
                .directives();
        let parts: Vec<&str> = d.split(',').collect();
        assert_eq!(parts[0], "warn");
        for want in [
            "korder_kafka=debug",
            "rdkafka=debug",
            "korder_log=debug",
            "korder_server::chain=debug",
            "korder_server::deliver=error",
            "h2=error",
            "tonic=error",
        ] {
            assert!(parts.contains(&want), "{want} missing from {d}");
        }
        assert!(!d.contains("korder_server::broadcast"), "{d}");
        EnvFilter::try_new(&d).unwrap();
        let payload = LogSpec::parse("payload").unwrap().directives();
        assert_eq!(payload, "trace");
    }

    /// A target is shown under its Fabric logger name (longest match), else as is.
    #[test]
    fn modules_are_fabric_names() {
        assert_eq!(module_of("korder_server::deliver"), "common.deliver");
        assert_eq!(module_of("korder_kafka::log"), "orderer.consensus.kafka");
        assert_eq!(
            module_of("korder_server::registrar"),
            "orderer.commmon.multichannel"
        );
        assert_eq!(module_of("korder_serverx"), "korder_serverx");
        assert_eq!(
            module_of("rdkafka::client"),
            "orderer.consensus.kafka.sarama"
        );
    }

    /// Fabric's default format parses into its verbs, and a bad colour or verb is refused.
    #[test]
    fn format_strings() {
        let Format::Pattern(p) = Format::parse(FABRIC_DEFAULT_FORMAT).unwrap() else {
            panic!("a pattern")
        };
        assert_eq!(p[0], Piece::Color(None));
        assert_eq!(p[1], Piece::Time("2006-01-02 15:04:05.000 MST".into()));
        assert!(p.iter().any(|x| matches!(x, Piece::Module(_))));
        assert_eq!(Format::parse("json").unwrap(), Format::Json);
        assert_eq!(Format::parse("").unwrap(), Format::Korder);
        assert!(Format::parse("%{color:pink}").is_err());
        assert!(Format::parse("%{level:.4z}").is_err());
        let mut s = String::new();
        GoVerb::parse(".4s").unwrap().text("DEBUG", &mut s);
        GoVerb::parse("04x").unwrap().number(26, &mut s);
        GoVerb::parse("-6s").unwrap().text("ab", &mut s);
        assert_eq!(s, "DEBU001aab    ");
    }

    /// Go time layouts: Fabric's default and RFC 3339 with milliseconds, in UTC.
    #[test]
    fn go_time_layouts() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(
            go_time("2006-01-02 15:04:05.000 MST", t),
            "2023-11-14 22:13:20.123 UTC"
        );
        assert_eq!(
            go_time("Mon Jan _2 15:04:05.999Z07:00", t),
            "Tue Nov 14 22:13:20.123Z"
        );
    }
}
