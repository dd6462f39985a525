//! Durations in Go's syntax, the one parser and the one formatter korder has.
//!
//! Fabric writes durations the way Go does: orderer.yaml (`10s`, `5m`, `12h`) and a
//! channel's `BatchTimeout` value (`2s`, `250ms`). [`parse`] reads what Go's
//! `time.ParseDuration` reads (except negative durations, which no korder setting has
//! a use for); [`format()`] writes exactly what Go's `time.Duration.String` writes, so a
//! config value korder writes is byte for byte the one Fabric's tools would write:
//!
//! ```text
//! 0s   1ns   1.1µs   2.5ms   1s   1.5s   1m0s   4m5.001s   1h0m0s   5h6m7.001s
//! ```

use std::fmt;
use std::time::Duration;

const NS_PER_US: u128 = 1_000;
const NS_PER_MS: u128 = 1_000_000;
const NS_PER_S: u128 = 1_000_000_000;
const NS_PER_M: u128 = 60 * NS_PER_S;
const NS_PER_H: u128 = 60 * NS_PER_M;

/// Why a duration did not parse. The text is quoted in every message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseDurationError {
    /// Nothing but whitespace.
    Empty,
    /// A negative, non-zero duration.
    Negative(String),
    /// Not a sequence of numbers each followed by a unit.
    Invalid(String),
    /// A non-zero number without a unit.
    NoUnit {
        /// The whole text.
        text: String,
        /// The number that lacks its unit.
        number: String,
    },
    /// A unit other than ns, us (µs, μs), ms, s, m, h.
    UnknownUnit {
        /// The whole text.
        text: String,
        /// The unit as written.
        unit: String,
    },
    /// More than `Duration` holds.
    TooLarge(String),
}

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "empty duration"),
            Self::Negative(text) => write!(f, "negative duration {text:?} is not allowed"),
            Self::Invalid(text) => write!(
                f,
                "invalid duration {text:?} (expected e.g. \"10s\", \"5m\", \"1h30m\", \"250ms\")"
            ),
            Self::NoUnit { text, number } => write!(
                f,
                "duration {text:?} has no unit (use ns, us, ms, s, m or h, e.g. \"{number}s\")"
            ),
            Self::UnknownUnit { text, unit } => write!(
                f,
                "duration {text:?} has unknown unit {unit:?} (use ns, us, ms, s, m or h)"
            ),
            Self::TooLarge(text) => write!(f, "duration {text:?} is too large"),
        }
    }
}

impl std::error::Error for ParseDurationError {}

/// Parses a Go-syntax duration: "10s", "5m", "1h30m", "250ms", "1.5s", ".5m", "3µs".
/// A bare `0` (or `-0`) is zero; any other number needs a unit. Fractions finer than a
/// nanosecond are dropped, as Go drops them. Negative durations are refused.
pub fn parse(text: &str) -> Result<Duration, ParseDurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(ParseDurationError::Empty);
    }
    let body = match s.strip_prefix('-') {
        Some(rest) => {
            if rest.trim_start_matches(['0', '.']).is_empty() {
                return Ok(Duration::ZERO);
            }
            return Err(ParseDurationError::Negative(text.to_owned()));
        }
        None => s.strip_prefix('+').unwrap_or(s),
    };
    if body == "0" {
        return Ok(Duration::ZERO);
    }
    if body.is_empty() {
        return Err(ParseDurationError::Invalid(text.to_owned()));
    }
    let too_large = || ParseDurationError::TooLarge(text.to_owned());
    let mut rest = body;
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        rest = &rest[number_len..];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(ParseDurationError::Invalid(text.to_owned()));
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_ns: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => NS_PER_US,
            "ms" => NS_PER_MS,
            "s" => NS_PER_S,
            "m" => NS_PER_M,
            "h" => NS_PER_H,
            "" => {
                return Err(ParseDurationError::NoUnit {
                    text: text.to_owned(),
                    number: number.to_owned(),
                });
            }
            other => {
                return Err(ParseDurationError::UnknownUnit {
                    text: text.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let mut part = whole.checked_mul(unit_ns).ok_or_else(too_large)?;
        // Fractions: digit by digit, the unit scaled down by ten each time; digits
        // below a nanosecond add nothing.
        let mut scale = unit_ns;
        for digit in frac.bytes() {
            scale /= 10;
            part += u128::from(digit - b'0') * scale;
        }
        total_ns = total_ns.checked_add(part).ok_or_else(too_large)?;
    }
    let secs = u64::try_from(total_ns / NS_PER_S).map_err(|_| too_large())?;
    let nanos = u32::try_from(total_ns % NS_PER_S).map_err(|_| too_large())?;
    Ok(Duration::new(secs, nanos))
}

/// Writes a duration exactly as Go's `time.Duration.String` does: under a second in
/// the largest of ns, µs and ms that fits, with a decimal fraction ("1.5µs",
/// "250ms"); from a second up as hours, minutes and seconds, the zero minutes and
/// seconds kept once a larger unit is written ("1m0s", "1h0m0s", "5h6m7.001s").
/// [`parse`] reads the result back to the same value.
pub fn format(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < NS_PER_S {
        let (size, unit) = if ns < NS_PER_US {
            (1, "ns")
        } else if ns < NS_PER_MS {
            (NS_PER_US, "µs")
        } else {
            (NS_PER_MS, "ms")
        };
        return with_fraction(ns, size, unit);
    }
    let mut out = String::new();
    if ns >= NS_PER_H {
        out.push_str(&(ns / NS_PER_H).to_string());
        out.push('h');
    }
    if ns >= NS_PER_M {
        out.push_str(&(ns % NS_PER_H / NS_PER_M).to_string());
        out.push('m');
    }
    out.push_str(&with_fraction(ns % NS_PER_M, NS_PER_S, "s"));
    out
}

/// `ns` in units of `size` nanoseconds, with the fraction's trailing zeros (and a
/// fraction of zero) left out.
fn with_fraction(ns: u128, size: u128, unit: &str) -> String {
    let whole = ns / size;
    let rest = ns % size;
    if rest == 0 {
        return format!("{whole}{unit}");
    }
    let digits = size.ilog10() as usize;
    let fraction = format!("{rest:0digits$}");
    format!("{whole}.{}{unit}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `time.Duration(ns).String()` for each value, as printed by Go 1.x.
    const GO_STRINGS: &[(u64, &str)] = &[
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1_000, "1µs"),
        (1_100, "1.1µs"),
        (1_500, "1.5µs"),
        (999_999, "999.999µs"),
        (1_000_000, "1ms"),
        (1_000_001, "1.000001ms"),
        (2_200_000, "2.2ms"),
        (250_000_000, "250ms"),
        (999_999_999, "999.999999ms"),
        (1_000_000_000, "1s"),
        (1_500_000_000, "1.5s"),
        (3_300_000_000, "3.3s"),
        (60_000_000_000, "1m0s"),
        (90_000_000_000, "1m30s"),
        (245_000_000_000, "4m5s"),
        (245_001_000_000, "4m5.001s"),
        (480_000_000_001, "8m0.000000001s"),
        (3_600_000_000_000, "1h0m0s"),
        (5_400_000_000_000, "1h30m0s"),
        (18_367_001_000_000, "5h6m7.001s"),
        (43_200_000_000_000, "12h0m0s"),
        (61_001_001_001, "1m1.001001001s"),
        (86_400_000_000_000, "24h0m0s"),
        (9_223_372_036_854_775_807, "2562047h47m16.854775807s"),
    ];

    /// The formatter writes what Go writes, and the parser reads each string back to its value.
    #[test]
    fn formats_exactly_as_go() {
        for &(ns, go) in GO_STRINGS {
            let d = Duration::from_nanos(ns);
            assert_eq!(format(d), go, "{ns}ns");
            assert_eq!(parse(go), Ok(d), "{go}");
        }
    }

    /// Every form used in Fabric's sample file and the Go syntax variants parse to the value Go gives.
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
            ("1.s", Duration::from_secs(1)),
            ("1h1.5m", Duration::from_secs(3690)),
            ("3us", Duration::from_micros(3)),
            ("3µs", Duration::from_micros(3)),
            ("3μs", Duration::from_micros(3)),
            ("42ns", Duration::from_nanos(42)),
            ("1.9ns", Duration::from_nanos(1)),
            ("0.1ns", Duration::ZERO),
            ("1.0000000005s", Duration::from_secs(1)),
            ("0.3333333333s", Duration::from_nanos(333_333_333)),
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("+2s", Duration::from_secs(2)),
            (" 2s ", Duration::from_secs(2)),
            ("1m30s500ms", Duration::from_millis(90_500)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    /// Malformed, unit-less, unknown-unit, negative and oversized durations are refused with a reason.
    #[test]
    fn refuses_bad_durations() {
        for (text, needle) in [
            ("", "empty"),
            ("  ", "empty"),
            ("5", "no unit"),
            ("5x", "unknown unit"),
            ("-5s", "negative"),
            ("s", "invalid"),
            ("+", "invalid"),
            ("1..2s", "invalid"),
            ("ten seconds", "invalid"),
            ("400000000000000000000000000000000000000h", "too large"),
            ("99999999999999999999999h", "too large"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    /// Formatting then parsing gives back the same duration, at every unit boundary and in between.
    #[test]
    fn format_round_trips() {
        let mut ns: u64 = 1;
        while ns < u64::MAX / 7 {
            for d in [ns - 1, ns, ns + 1, ns * 7 / 3] {
                let d = Duration::from_nanos(d);
                assert_eq!(parse(&format(d)), Ok(d), "{d:?}");
            }
            ns *= 10;
        }
        let d = Duration::new(u64::MAX, 999_999_999);
        assert_eq!(parse(&format(d)), Ok(d));
    }
}
