//! Fuzzes the duration parsers (`parse_duration`, `parse_optional_duration`): no panics, the
//! optional form agrees with the plain one, and a parsed duration that is a whole number of
//! milliseconds survives `format_duration` and parsing back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp_router::config::{format_duration, parse_duration, parse_optional_duration};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_duration(text);
    let optional = parse_optional_duration(text);
    // Apart from `off`, the optional form is the plain one with zero meaning off.
    if !text.trim().eq_ignore_ascii_case("off") {
        let expected = parsed.clone().map(|d| (!d.is_zero()).then_some(d));
        assert_eq!(optional, expected, "{text:?}");
    }
    if let Ok(duration) = parsed {
        if duration.subsec_nanos() % 1_000_000 == 0 {
            let shown = format_duration(duration);
            assert_eq!(
                parse_duration(&shown),
                Ok(duration),
                "{text:?} shown as {shown:?}"
            );
        }
    }
});
