//! Durations in channel configs (`BatchTimeout`) are Go duration strings. They are
//! read with the same parser as orderer.yaml (`korder_config::parse_duration`);
//! this module writes them the way Go prints a duration.

use std::time::Duration;

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
            assert_eq!(korder_config::parse_duration(s), Ok(d));
        }
    }
}
