//! Fuzzes the `key=value` settings of a `route` line (`Overrides::set`): no panics; the input
//! is split at its first `=` into a key and a value, and is also given as the value of every
//! known key. A value taken is in force after merging; a refusal names the key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcp_router::config::{parse_duration, parse_optional_duration, Overrides, Settings};

fn set(key: &str, value: &str) {
    let mut given = Overrides::default();
    if let Err(error) = given.set(key, value) {
        assert!(
            error.contains(key),
            "the error for {key:?} does not name it: {error}"
        );
        return;
    }
    assert!(Overrides::KEYS.contains(&key), "unknown key {key:?} taken");
    assert_ne!(given, Overrides::default(), "{key}={value} set nothing");
    // Durations are read by the one duration parser; deadlines and caps are never zero.
    let duration = parse_duration(value).ok();
    match key {
        "connect_timeout" => assert_eq!(given.connect_timeout, duration),
        "peek_timeout" => assert_eq!(given.peek_timeout, duration),
        "idle_timeout" => assert_eq!(given.idle_timeout, parse_optional_duration(value).ok()),
        "fin_timeout" => assert_eq!(given.fin_timeout, parse_optional_duration(value).ok()),
        _ => {}
    }
    let settings = Settings::default().merge(&given);
    assert!(!settings.connect_timeout.is_zero() && !settings.peek_timeout.is_zero());
    assert_ne!(settings.max_connections, Some(0));
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Free mode: the input as one `key=value` field.
    if let Some((key, value)) = text.split_once('=') {
        set(key, value);
    }
    // Structured mode: the input as the value of each known key.
    for key in Overrides::KEYS {
        set(key, text);
    }
});
