//! Fuzzes the first-bytes matchers with no reader of their own: the SSH identification and a
//! literal prefix (the input's first byte says how many of the following bytes are the pattern).
//! No panics, stable answers for prefixes.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use tcp_router::proto::{prefix, ssh, Parsed};

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
});
