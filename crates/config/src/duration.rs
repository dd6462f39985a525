//! Durations written the way Go's `time.ParseDuration` reads them: "10s", "5m",
//! "12h", "250ms", "1h30m", "1.5s". Fabric's orderer.yaml uses this syntax, so an
//! operator's existing file reads the same here.

use std::time::Duration;

/// Parse a Go-syntax duration. Negative durations are refused (no korder setting
/// has a use for one). A bare `0` is zero; any other number needs a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    let body = match s.strip_prefix('-') {
        Some(rest) => {
            if rest.trim_start_matches(['0', '.']).is_empty() {
                return Ok(Duration::ZERO);
            }
            return Err(format!("negative duration {text:?} is not allowed"));
        }
        None => s.strip_prefix('+').unwrap_or(s),
    };
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = body;
    let mut total_ns: u128 = 0;
    if rest.is_empty() {
        return Err(format!("invalid duration {text:?}"));
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        rest = &rest[number_len..];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(format!(
                "invalid duration {text:?} (expected e.g. \"10s\", \"5m\", \"1h30m\", \"250ms\")"
            ));
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => {
                return Err(format!(
                    "duration {text:?} has no unit (use ns, us, ms, s, m or h, e.g. \"{number}s\")"
                ));
            }
            other => {
                return Err(format!(
                    "duration {text:?} has unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ));
            }
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole
                .parse()
                .map_err(|_| format!("duration {text:?} is too large"))?
        };
        let mut part = whole
            .checked_mul(unit_ns)
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
        // Fractions: add digit by digit, scaling the unit down by ten each time.
        let mut scale = unit_ns;
        for digit in frac.bytes() {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total_ns = total_ns
            .checked_add(part)
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
    }
    let secs = u64::try_from(total_ns / 1_000_000_000)
        .map_err(|_| format!("duration {text:?} is too large"))?;
    let nanos = u32::try_from(total_ns % 1_000_000_000)
        .map_err(|_| format!("duration {text:?} is too large"))?;
    Ok(Duration::new(secs, nanos))
}

/// Write a duration so that [`parse_duration`] (and Go) read back exactly the same
/// value: the largest units first, zero parts left out ("1h30m", "250ms", "0s").
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let mut ns = d.as_nanos();
    let mut out = String::new();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ] {
        let count = ns / size;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(unit);
            ns %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form used in Fabric's sample file and the Go syntax variants parse to the right value.
    #[test]
    fn parses_go_syntax() {
        let cases = [
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("12h", Duration::from_secs(12 * 3600)),
            ("250ms", Duration::from_millis(250)),
            ("1h30m", Duration::from_secs(5400)),
            ("7200s", Duration::from_secs(7200)),
            ("1.5s", Duration::from_millis(1500)),
            (".5m", Duration::from_secs(30)),
            ("3us", Duration::from_micros(3)),
            ("3µs", Duration::from_micros(3)),
            ("42ns", Duration::from_nanos(42)),
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("+2s", Duration::from_secs(2)),
            ("1m30s500ms", Duration::from_millis(90_500)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    /// Malformed, unit-less, unknown-unit and negative durations are refused with a reason.
    #[test]
    fn refuses_bad_durations() {
        for (text, needle) in [
            ("", "empty"),
            ("5", "no unit"),
            ("5x", "unknown unit"),
            ("-5s", "negative"),
            ("s", "invalid"),
            ("1..2s", "invalid"),
            ("ten seconds", "invalid"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    /// Formatting then parsing gives back the same duration.
    #[test]
    fn format_round_trips() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(250),
            Duration::from_secs(5400),
            Duration::from_secs(12 * 3600),
            Duration::new(61, 1_001_001),
        ] {
            let text = format_duration(d);
            assert_eq!(parse_duration(&text), Ok(d), "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
