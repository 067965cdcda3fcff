//! Human-friendly durations for options and config keys: `250ms`, `5s`, `2m`, `1h`, or plain seconds.

use std::fmt;
use std::time::Duration;

/// Why a duration string was refused; carries the text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationError {
    /// The text that failed to parse, as the user wrote it.
    pub original: String,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration '{}': expected a number with an optional unit ms, s, m or h \
             (e.g. 250ms, 5s, 2m), or a plain number of seconds",
            self.original
        )
    }
}

impl std::error::Error for DurationError {}

/// Parses `250ms`, `5s`, `2m`, `1h`, `1.5s` or a plain number of seconds (`30`).
///
/// ```
/// use std::time::Duration;
/// use tcp_router::config::{format_duration, parse_duration};
///
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(format_duration(parse_duration("120").unwrap()), "2m");
/// assert!(parse_duration("5x").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        original: text.to_string(),
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    // Only plain decimal digits: f64's parser would also take "inf" or "1e3".
    if number.is_empty() || number.starts_with('.') || number.matches('.').count() > 1 {
        return Err(err());
    }
    let value: f64 = number.parse().map_err(|_| err())?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| err())
}

/// Parses a duration that may be switched off with `off` (or `0`); `None` means off.
pub fn parse_optional_duration(text: &str) -> Result<Option<Duration>, DurationError> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let duration = parse_duration(text)?;
    Ok((!duration.is_zero()).then_some(duration))
}

/// Formats a duration the way the parser reads it back (`250ms`, `5s`, `2m`).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 3_600_000 == 0 && millis > 0 {
        format!("{}h", millis / 3_600_000)
    } else if millis % 60_000 == 0 && millis > 0 {
        format!("{}m", millis / 60_000)
    } else if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn plain_number_is_seconds() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage_and_names_the_value() {
        for bad in ["", "5x", "s", "-1s", "1e3", "inf", "1..2s", ".5s", "5 s s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("'{bad}'")), "{err}");
        }
    }

    #[test]
    fn off_and_zero_disable() {
        assert_eq!(parse_optional_duration("off"), Ok(None));
        assert_eq!(parse_optional_duration("0"), Ok(None));
        assert_eq!(
            parse_optional_duration("10s"),
            Ok(Some(Duration::from_secs(10)))
        );
    }

    #[test]
    fn format_round_trips() {
        for text in ["250ms", "5s", "2m", "1h", "90s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
