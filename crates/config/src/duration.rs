//! Durations written the way Go's `time.ParseDuration` reads them: "10s", "5m",
//! "12h", "250ms", "1h30m", "1.5s". Fabric's orderer.yaml uses this syntax, so an
//! operator's existing file reads the same here. The parser and formatter are
//! [`korder_types::duration`]'s, shared with the channel config.

use std::time::Duration;

/// Parse a Go-syntax duration. Negative durations are refused (no korder setting
/// has a use for one). A bare `0` is zero; any other number needs a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    korder_types::duration::parse(text).map_err(|e| e.to_string())
}

/// Write a duration exactly as Go does ("1h30m0s", "250ms", "0s"), so that
/// [`parse_duration`] (and Go) read back the same value.
pub use korder_types::duration::format as format_duration;

#[cfg(test)]
mod tests {
    use super::*;

    /// The re-exported parser keeps orderer.yaml's messages: a unit-less number names the fix.
    #[test]
    fn parse_error_names_the_fix() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        let err = parse_duration("5").unwrap_err();
        assert!(err.contains("no unit") && err.contains("\"5s\""), "{err}");
    }

    /// orderer.yaml durations are written as Go writes them and read back to the same value.
    #[test]
    fn format_is_gos() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(
            parse_duration(&format_duration(Duration::new(61, 1_001_001))),
            Ok(Duration::new(61, 1_001_001))
        );
    }
}
