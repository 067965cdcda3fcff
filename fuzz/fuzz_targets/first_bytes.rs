//! Fuzzes the first-bytes matchers with no reader of their own: the SSH identification, a
//! literal prefix (the input's first byte says how many of the following bytes are the pattern)
//! and a regular expression (the same bytes as text, seeing a window the input's second byte
//! gives). No panics, stable answers for prefixes, and an expression never compiles past its
//! size limit.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use tcp_router::proto::{pattern, prefix, ssh, Parsed};

fuzz_target!(|data: &[u8]| {
    common::check_prefixes(data, ssh::parse_identification);
    if matches!(ssh::parse_identification(data), Ok(Parsed::Complete(()))) {
        assert!(data.starts_with(ssh::IDENTIFICATION_START));
    }
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let (pattern, input) = rest.split_at(usize::from(len).min(rest.len()));
    common::check_prefixes(input, |buf| {
        Ok::<_, std::convert::Infallible>(prefix::matches(pattern, buf))
    });
    match prefix::matches(pattern, input) {
        Parsed::Complete(found) => assert_eq!(found, input.starts_with(pattern)),
        Parsed::Partial => assert!(input.len() < pattern.len() && pattern.starts_with(input)),
    }
    check_regex(pattern, input);
});

/// `source` compiled as a `regex=` route's expression, matched over a window of `input` whose
/// size is its first byte (at least 1): decided exactly when the window is full, stable after.
fn check_regex(source: &[u8], input: &[u8]) {
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let Ok(regex) = pattern::compile(source) else {
        return;
    };
    let Some((&window, input)) = input.split_first() else {
        return;
    };
    let window = usize::from(window).max(1);
    common::check_prefixes(input, |buf| {
        Ok::<_, std::convert::Infallible>(pattern::matches(&regex, window, buf))
    });
    match pattern::matches(&regex, window, input) {
        Parsed::Complete(found) => assert_eq!(found, regex.is_match(&input[..window])),
        Parsed::Partial => assert!(input.len() < window),
    }
}
