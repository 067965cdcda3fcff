//! Fuzzes the address parsers: `HostPort` (`host:port`), allow/deny `Pattern`s and `sni=`/`host=`
//! `NamePattern`s. No panics; what parses prints as text that parses back to the same value, and
//! matches what it names.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use tcp_router::config::{HostPort, NamePattern, Pattern};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(address) = text.parse::<HostPort>() {
        let shown = address.to_string();
        assert_eq!(
            shown.parse::<HostPort>(),
            Ok(address),
            "{text:?} shown as {shown:?}"
        );
    }
    if let Ok(pattern) = text.parse::<Pattern>() {
        let shown = pattern.to_string();
        assert_eq!(
            shown.parse::<Pattern>().as_ref(),
            Ok(&pattern),
            "{text:?} shown as {shown:?}"
        );
        // A block matches its own network; a pattern that is an address matches it.
        let inner = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        let named = match &pattern {
            Pattern::Cidr { net, .. } => Some(*net),
            Pattern::Wildcard(_) => inner.parse::<IpAddr>().ok(),
        };
        if let Some(ip) = named {
            assert!(pattern.matches(ip), "{text:?} does not match {ip}");
        }
    }
    if let Ok(name) = text.parse::<NamePattern>() {
        let shown = name.to_string();
        assert_eq!(
            shown.parse::<NamePattern>().as_ref(),
            Ok(&name),
            "{text:?} shown as {shown:?}"
        );
        // An exact pattern matches its name; `*.suffix` one label more, not the suffix itself.
        match &name {
            NamePattern::Exact(exact) => assert!(name.matches(exact)),
            NamePattern::Wildcard(suffix) => {
                assert!(name.matches(&format!("a{suffix}")));
                assert!(!name.matches(&suffix[1..]));
            }
        }
    }
});
