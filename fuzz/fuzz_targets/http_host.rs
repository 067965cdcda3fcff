//! Fuzzes the HTTP Host reader: no panics, stable answers for prefixes.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use tcp_router::proto::http::{parse_host, MAX_HEAD_BYTES};
use tcp_router::proto::Parsed;

fuzz_target!(|data: &[u8]| {
    common::check_prefixes(data, parse_host);
    match parse_host(data) {
        Ok(Parsed::Complete(Some(host))) => {
            assert!(!host.is_empty() && !host.ends_with('.'));
            assert_eq!(host, host.to_ascii_lowercase());
        }
        // The read cap guarantees an answer once it is reached.
        Ok(Parsed::Partial) => assert!(data.len() < MAX_HEAD_BYTES),
        _ => {}
    }
});
