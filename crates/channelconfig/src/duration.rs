//! Go's duration syntax (`"2s"`, `"500ms"`, `"1h30m"`, `"1.5s"`), used by
//! `BatchTimeout` in channel configs and by orderer.yaml.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration string. A leading `-` is refused (durations here are never
/// negative); `"0"` is zero.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let mut rest = input.trim();
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(err("empty"));
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit (one of ns, us, ms, s, m, h)"))?;
        let number = &rest[..digits_end];
        if number.is_empty() || number == "." {
            return Err(err("expected a number"));
        }
        rest = &rest[digits_end..];
        let (unit, scale) = UNITS
            .iter()
            .filter(|(u, _)| rest.starts_with(u))
            // "ms" must win over "m": take the longest matching unit.
            .max_by_key(|(u, _)| u.len())
            .ok_or_else(|| err("unknown unit (one of ns, us, ms, s, m, h)"))?;
        rest = &rest[unit.len()..];
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if frac.contains('.') {
            return Err(err("malformed number"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("number too large"))?
        };
        let mut part = whole.checked_mul(*scale).ok_or_else(|| err("too large"))?;
        let mut denom: u128 = 1;
        for c in frac.chars().take(18) {
            denom *= 10;
            let d = u128::from(c.to_digit(10).ok_or_else(|| err("malformed number"))?);
            part += d * *scale / denom;
        }
        total_ns = total_ns.checked_add(part).ok_or_else(|| err("too large"))?;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| err("too large"))?;
    // The remainder of a division by 1e9 always fits in a u32.
    let nanos = (total_ns % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Formats a duration the way Go prints it (`2s`, `500ms`, `1m30s`, `1h0m0s`).
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return trim_fraction(ns, 1_000, "µs");
    }
    if ns < 1_000_000_000 {
        return trim_fraction(ns, 1_000_000, "ms");
    }
    let total_secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let h = total_secs / 3600;
    let m = (total_secs % 3600) / 60;
    let s = total_secs % 60;
    let secs = if sub == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{sub:09}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{secs}")
    } else if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

fn trim_fraction(ns: u128, unit: u128, suffix: &str) -> String {
    let whole = ns / unit;
    let rem = ns % unit;
    if rem == 0 {
        return format!("{whole}{suffix}");
    }
    let width = unit.ilog10() as usize;
    let frac = format!("{rem:0width$}");
    format!("{whole}.{}{suffix}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit Go accepts parses, including compound and fractional forms.
    #[test]
    fn parses_go_durations() {
        let cases = [
            ("2s", Duration::from_secs(2)),
            ("500ms", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5s", Duration::from_millis(1500)),
            ("10us", Duration::from_micros(10)),
            ("10µs", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("12h", Duration::from_secs(43200)),
            ("0", Duration::ZERO),
            ("1m0.25s", Duration::from_millis(60250)),
            (".5s", Duration::from_millis(500)),
        ];
        for (s, d) in cases {
            assert_eq!(parse_go_duration(s), Ok(d), "{s}");
        }
    }

    /// Malformed strings are refused with the input named.
    #[test]
    fn refuses_malformed() {
        for s in ["", "2", "s", "2x", "-1s", "1..2s", "1.2.3s", "ms"] {
            let e = parse_go_duration(s).unwrap_err();
            assert_eq!(e.input, s);
        }
    }

    /// Formatting follows Go and parses back to the same value.
    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(5400), "1h30m0s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::ZERO, "0s"),
        ];
        for (d, s) in cases {
            assert_eq!(format_go_duration(d), s);
            assert_eq!(parse_go_duration(s), Ok(d));
        }
    }
}
