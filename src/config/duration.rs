//! Human-friendly durations for options and config keys: `250ms`, `5s`, `2m`, `1h`, or plain seconds.

use super::text::printable;
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
            printable(&self.original)
        )
    }
}

impl std::error::Error for DurationError {}

/// The longest duration any setting takes, wherever it is given (command line, config file,
/// builder, [`Config`](crate::Config) fields): 365 days, `8760h`. Longer would mean "never",
/// which `off` says for the timeouts that can be off; and every deadline the forwarder computes
/// from a setting stays far from where `Instant` arithmetic overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Why `duration` cannot be the value of a setting, if it cannot: above [`MAX_DURATION`], or
/// zero where zero cannot work (`zero_allowed` false: a connect or peek deadline of zero would
/// refuse every client). The one bounds check every place that takes a duration applies.
///
/// ```
/// use std::time::Duration;
/// use tcp_router::config::check_duration;
///
/// assert_eq!(check_duration(Duration::ZERO, false), Err("must be greater than zero"));
/// assert_eq!(check_duration(Duration::MAX, true), Err("must be at most 8760h (365 days)"));
/// assert_eq!(check_duration(Duration::from_secs(5), false), Ok(Duration::from_secs(5)));
/// ```
pub fn check_duration(duration: Duration, zero_allowed: bool) -> Result<Duration, &'static str> {
    if duration.is_zero() && !zero_allowed {
        Err("must be greater than zero")
    } else if duration > MAX_DURATION {
        Err("must be at most 8760h (365 days)")
    } else {
        Ok(duration)
    }
}

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
    let nanos_per_unit: u128 = match unit {
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return Err(err()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    // Only plain decimal digits, with at least one before the point ("1e3" and "inf" are not
    // durations), read exactly: no float rounding, so a whole number of milliseconds parses to
    // exactly that, and what `format_duration` writes reads back the same.
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(err());
    }
    let nanos = exact_nanos(whole, fraction, nanos_per_unit).ok_or_else(err)?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| err())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// `whole.fraction` units of `nanos_per_unit` nanoseconds, in whole nanoseconds (digits past a
/// nanosecond are dropped); `None` if it overflows.
fn exact_nanos(whole: &str, fraction: &str, nanos_per_unit: u128) -> Option<u128> {
    let mut nanos = whole
        .bytes()
        .try_fold(0u128, |n, b| {
            n.checked_mul(10)?.checked_add(u128::from(b - b'0'))
        })?
        .checked_mul(nanos_per_unit)?;
    let mut place = nanos_per_unit;
    for b in fraction.bytes() {
        place /= 10;
        if place == 0 {
            break;
        }
        nanos = nanos.checked_add(u128::from(b - b'0') * place)?;
    }
    Some(nanos)
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
    fn the_bounds_hold_at_their_edges() {
        let max = MAX_DURATION;
        assert_eq!(format_duration(max), "8760h");
        assert_eq!(check_duration(max, false), Ok(max));
        assert!(check_duration(max + Duration::from_nanos(1), true).is_err());
        assert_eq!(check_duration(Duration::ZERO, true), Ok(Duration::ZERO));
        assert!(check_duration(Duration::ZERO, false).is_err());
        assert!(check_duration(Duration::from_nanos(1), false).is_ok());
        assert!(check_duration(Duration::MAX, true).is_err());
    }

    #[test]
    fn format_round_trips() {
        for text in ["250ms", "5s", "2m", "1h", "90s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    // Found by the fuzz target `durations` (inputs `4588186.6`, `6666666.6`,
    // `1844674407375161.5` and more): a number read as an f64 and multiplied by the unit does
    // not always give exactly a whole number of milliseconds from about 52 days on, and
    // format_duration's output would not parse back to the value it showed.
    #[test]
    fn whole_milliseconds_parse_exactly_and_round_trip() {
        let days_53 = parse_duration("4588186.6").unwrap();
        assert_eq!(days_53, Duration::from_millis(4_588_186_600));
        assert_eq!(format_duration(days_53), "4588186600ms");
        assert_eq!(parse_duration("4588186600ms"), Ok(days_53));
        for text in ["6666666.6", "5050515.10", "1844674407375161.5"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{text}");
        }
        assert_eq!(
            parse_duration("0.0000000001s"),
            Ok(Duration::ZERO),
            "below a nanosecond"
        );
        assert!(
            parse_duration("99999999999999999999999h").is_err(),
            "overflow is an error"
        );
    }
}
