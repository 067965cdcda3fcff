//! Fuzzes the PROXY protocol reader: no panics, stable answers for prefixes,
//! consumed length within the input, and encode/parse round trips.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use tcp_router::proto::Parsed;
use tcp_router::proto::proxy::{encode, parse, ProxyHeader, Version};

fuzz_target!(|data: &[u8]| {
    common::check_prefixes(data, parse);
    if let Ok(Parsed::Complete((header, used))) = parse(data) {
        assert!(used <= data.len());
        // A header we read, written back out, reads the same.
        if let ProxyHeader::Tcp { src, dst } = header {
            for version in [Version::V1, Version::V2] {
                let bytes = encode(version, src, dst);
                let again = parse(&bytes);
                assert_eq!(again, Ok(Parsed::Complete((header, bytes.len()))));
            }
        }
    }
});
