//! Allow/deny rules as written: rinetd's wildcard patterns and CIDR blocks, and what each matches.
//! The order in which rules are checked (rinetd's) is in `route::access`.
//!
//! rinetd matches a client by formatting its address as text and glob-matching that text
//! against each pattern (`*` = any run of characters, `?` = exactly one). We do the same
//! over the text std prints (IPv4 dotted quad; IPv6 in RFC 5952 compressed lowercase form,
//! the same form glibc's `getnameinfo` gives rinetd). On top of that we accept CIDR blocks
//! (`10.0.0.0/8`, `2001:db8::/32`), which rinetd does not have.
//!
//! Differences from rinetd, all on the side of rules matching what they visibly say:
//! - IPv4-mapped IPv6 clients (`::ffff:192.0.2.1`, seen on dual-stack `[::]` listeners)
//!   are matched as their IPv4 address, so `allow 192.0.2.*` works on such a listener.
//! - Patterns are matched case-insensitively (rinetd compares case-sensitively against
//!   lowercase text, so its `allow FE80:*` silently never matches).
//! - A pattern with no wildcard that is an IP address is compared as an address, so
//!   `2001:0db8::1` matches the client `2001:db8::1`.
//! - Brackets are accepted only around the whole pattern (`[fe80::*]`) and are ignored;
//!   rinetd accepts them anywhere and then never matches.
//! - Wildcard patterns that can never match are rejected instead of being silently dead:
//!   a literal group with a leading zero (`010.*`, `2001:0db8:*`), IPv4 notation with hex
//!   letters (`192.168.a.*`), or IPv4-mapped notation (`::ffff:192.0.2.*` or a CIDR block
//!   inside `::ffff:0:0/96`; write `192.0.2.*` or `192.0.2.0/24`); text with no `*` or `?`
//!   that is not a whole address (`1.2.3`, `10.0.0.300`); an IPv4 group above 255 or a fifth
//!   group; anything longer than [`MAX_PATTERN_LEN`].

use super::text::printable;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::addr::strip_brackets;

/// One allow/deny pattern as written in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// rinetd wildcard over the address text, kept exactly as written (case, brackets).
    Wildcard(String),
    /// A CIDR block; host bits are never set (the parser rejects them).
    Cidr {
        /// The network address (host bits zero).
        net: IpAddr,
        /// The prefix length: at most 32 for IPv4, 128 for IPv6.
        prefix: u8,
    },
}

/// Why a pattern was rejected; Display names the pattern and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Lowercase phrase saying what is wrong.
    pub reason: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address pattern '{}': {}",
            self.pattern,
            printable(&self.reason)
        )
    }
}

impl std::error::Error for PatternError {}

/// The longest pattern taken: room for any address text (an IPv6 address in full is 39
/// characters), brackets, a prefix and some `*`. Longer can never match, and a megabyte of
/// pattern would cost every client a megabyte of matching.
pub(crate) const MAX_PATTERN_LEN: usize = 64;

fn pattern_err(pattern: &str, reason: impl Into<String>) -> PatternError {
    PatternError {
        pattern: shown(pattern),
        reason: reason.into(),
    }
}

/// `pattern` as an error quotes it: whole, or its start and its length when it is too long to
/// be one line of an error.
fn shown(pattern: &str) -> String {
    if pattern.len() <= MAX_PATTERN_LEN {
        return printable(pattern).into_owned();
    }
    let cut = (0..=40)
        .rev()
        .find(|&i| pattern.is_char_boundary(i))
        .unwrap_or(0);
    format!(
        "{}... ({} bytes)",
        printable(&pattern[..cut]),
        pattern.len()
    )
}

impl FromStr for Pattern {
    type Err = PatternError;

    /// Parses a rinetd wildcard (digits, hex letters, `.`, `:`, `*`, `?`, optionally inside
    /// one pair of brackets) or a CIDR block `ADDR/PREFIX` with no host bits set.
    fn from_str(s: &str) -> Result<Self, PatternError> {
        if s.is_empty() {
            return Err(pattern_err(s, "empty pattern"));
        }
        if s.len() > MAX_PATTERN_LEN {
            return Err(pattern_err(
                s,
                format!("longer than any address pattern (at most {MAX_PATTERN_LEN} characters)"),
            ));
        }
        match s.split_once('/') {
            Some((addr, prefix)) => parse_cidr(s, addr, prefix),
            None => parse_wildcard(s),
        }
    }
}

fn parse_cidr(whole: &str, addr: &str, prefix: &str) -> Result<Pattern, PatternError> {
    let addr = strip_brackets(addr);
    if addr.contains(['*', '?']) {
        return Err(pattern_err(
            whole,
            "wildcards cannot be combined with a cidr prefix",
        ));
    }
    let net: IpAddr = addr
        .parse()
        .map_err(|_| pattern_err(whole, format!("'{addr}' is not an ip address")))?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    // Digits only: u8::from_str would also take a leading `+`.
    let prefix =
        if !prefix.is_empty() && prefix.len() <= 3 && prefix.bytes().all(|b| b.is_ascii_digit()) {
            prefix.parse::<u8>().ok().filter(|p| *p <= max)
        } else {
            None
        };
    let Some(prefix) = prefix else {
        return Err(pattern_err(
            whole,
            format!("cidr prefix must be a number from 0 to {max}"),
        ));
    };
    // Host bits set usually means a typo (a host address where a network was meant), so
    // we refuse it and say which network the rule would have covered.
    let masked = mask(net, prefix);
    if masked != net {
        return Err(pattern_err(
            whole,
            format!("host bits are set (the network is '{masked}/{prefix}')"),
        ));
    }
    // Mapped clients are matched as IPv4, so a block inside ::ffff:0:0/96 never matches.
    if let (IpAddr::V6(v6), true) = (net, prefix >= 96) {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Err(pattern_err(
                whole,
                format!(
                    "can never match: ipv4-mapped ipv6 clients are matched as their ipv4 address; write '{v4}/{}'",
                    prefix - 96
                ),
            ));
        }
    }
    Ok(Pattern::Cidr { net, prefix })
}

fn parse_wildcard(s: &str) -> Result<Pattern, PatternError> {
    let inner = strip_brackets(s);
    if inner.is_empty() {
        return Err(pattern_err(s, "empty pattern"));
    }
    if let Some(c) = inner.chars().find(|c| !is_wildcard_char(*c)) {
        let reason = if c == '[' || c == ']' {
            "brackets may only enclose the whole pattern".to_string()
        } else {
            format!(
                "illegal character '{}' (allowed: digits, hex letters, '.', ':', '*', '?', or a cidr block)",
                c.escape_default()
            )
        };
        return Err(pattern_err(s, reason));
    }
    if let Some(why) = never_matches(inner) {
        return Err(pattern_err(s, format!("can never match: {why}")));
    }
    Ok(Pattern::Wildcard(s.to_string()))
}

/// The characters rinetd 0.73 accepts in a pattern (its grammar also allows brackets,
/// which we only accept around the whole pattern).
fn is_wildcard_char(c: char) -> bool {
    c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '*' | '?')
}

/// Says why a wildcard pattern can never match any client's address text, if it can't.
/// A pattern that parses as an address is exempt: it is compared as an address instead.
fn never_matches(inner: &str) -> Option<String> {
    if inner.parse::<IpAddr>().is_ok() {
        return None;
    }
    // Mapped clients are printed as plain IPv4, so no address text has both `.` and `:`.
    if inner.contains('.') && inner.contains(':') {
        return Some(
            "ipv4-mapped ipv6 clients are matched as their ipv4 address; write the ipv4 part alone"
                .into(),
        );
    }
    if inner.contains('.') && inner.contains(|c: char| c.is_ascii_alphabetic()) {
        return Some("ipv4 addresses have no hex letters".into());
    }
    // Without `*` or `?` the pattern is compared as text, and it is no address's text.
    if !inner.contains(['*', '?']) {
        return Some(
            "it is not a whole address and has no '*' or '?' to stand for the rest \
             (e.g. '1.2.3.*', or a cidr block such as '1.2.3.0/24')"
                .into(),
        );
    }
    if inner.contains('.') {
        // Every `.` of the pattern must meet one of the three of an IPv4 address.
        if inner.matches('.').count() > 3 {
            return Some("an ipv4 address has four groups".into());
        }
        if let Some(g) = inner.split('.').find(|g| {
            g.bytes().all(|b| b.is_ascii_digit()) && g.parse::<u16>().map_or(true, |n| n > 255)
        }) {
            return Some(format!("'{g}' is above 255"));
        }
    }
    // Canonical text drops leading zeros, so a literal group like `010` or `0db8` never appears.
    inner
        .split(['.', ':'])
        .find(|g| g.len() > 1 && g.starts_with('0') && g.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|g| {
            format!(
                "'{g}' has a leading zero, but addresses are compared in their canonical text form"
            )
        })
}

/// Zeroes the host bits of `ip` beyond `prefix`.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl Pattern {
    /// True when the client address `ip` matches this pattern. IPv4-mapped IPv6
    /// addresses are matched as their IPv4 address.
    ///
    /// ```
    /// use tcp_router::config::Pattern;
    ///
    /// let lan: Pattern = "192.168.2.*".parse().unwrap();
    /// assert!(lan.matches("192.168.2.40".parse().unwrap()));
    /// assert!(lan.matches("::ffff:192.168.2.40".parse().unwrap()));
    /// let block: Pattern = "2001:db8::/32".parse().unwrap();
    /// assert!(!block.matches("2001:db9::1".parse().unwrap()));
    /// ```
    pub fn matches(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self {
            Pattern::Cidr { net, prefix } => {
                net.is_ipv4() == ip.is_ipv4() && mask(ip, *prefix) == *net
            }
            Pattern::Wildcard(text) => {
                let inner = strip_brackets(text);
                if !inner.contains(['*', '?']) {
                    if let Ok(lit) = inner.parse::<IpAddr>() {
                        return lit.to_canonical() == ip;
                    }
                }
                glob_match(inner.as_bytes(), ip.to_string().as_bytes())
            }
        }
    }
}

/// Parses comma-separated allow/deny patterns (`--accept-proxy-from A,B`, `accept_proxy_from=A,B`):
/// every one must parse. The error is the first pattern's reason.
///
/// ```
/// use tcp_router::config::parse_patterns;
///
/// assert_eq!(parse_patterns("10.0.0.0/8,192.0.2.*").unwrap().len(), 2);
/// assert!(parse_patterns("10.0.0.300").is_err());
/// ```
pub fn parse_patterns(text: &str) -> Result<Vec<Pattern>, String> {
    text.split(',')
        .map(|one| one.parse::<Pattern>().map_err(|e| e.to_string()))
        .collect()
}

/// Whether `ip` is on `list`, a list of who may do something where empty means everyone (the
/// admin endpoint's allow list, a listener's trusted PROXY senders).
pub(crate) fn listed(list: &[Pattern], ip: IpAddr) -> bool {
    list.is_empty() || list.iter().any(|pattern| pattern.matches(ip))
}

/// Case-insensitive glob match: `*` matches any run (including none), `?` exactly one byte.
/// Iterative with single-star backtracking, so it is linear-ish and cannot recurse deeply.
fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(c) if *c == b'?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more byte and retry after it.
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..].iter().all(|c| *c == b'*')
}

impl fmt::Display for Pattern {
    /// Wildcards print as written; CIDR blocks as `net/prefix`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Wildcard(s) => f.write_str(s),
            Pattern::Cidr { net, prefix } => write!(f, "{net}/{prefix}"),
        }
    }
}

/// What a rule does to a client it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `allow PATTERN`.
    Allow,
    /// `deny PATTERN`.
    Deny,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
        })
    }
}

/// One `allow`/`deny` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Allow or deny.
    pub action: Action,
    /// Which clients it is about.
    pub pattern: Pattern,
}

impl fmt::Display for Rule {
    /// Prints the rule as it would be written in the config file, e.g. `deny 10.0.0.0/8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.action, self.pattern)
    }
}

/// `allow PATTERN`, for tests here and in `route::access`.
#[cfg(test)]
pub(crate) fn allow(pattern: &str) -> Rule {
    test_rule(Action::Allow, pattern)
}

/// `deny PATTERN`, for tests here and in `route::access`.
#[cfg(test)]
pub(crate) fn deny(pattern: &str) -> Rule {
    test_rule(Action::Deny, pattern)
}

#[cfg(test)]
fn test_rule(action: Action, pattern: &str) -> Rule {
    Rule {
        action,
        pattern: pattern.parse().unwrap_or_else(|e| panic!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn m(pat: &str, addr: &str) -> bool {
        p(pat).matches(ip(addr))
    }

    #[test]
    fn ipv4_wildcards() {
        assert!(m("192.168.2.*", "192.168.2.1"));
        assert!(m("192.168.2.*", "192.168.2.254"));
        assert!(!m("192.168.2.*", "192.168.3.1"));
        // `*` runs over dots too, as in rinetd: it is plain text matching.
        assert!(m("192.*", "192.0.2.1"));
        assert!(m("*.1", "10.0.0.1"));
        assert!(!m("*.1", "10.0.0.11"));
        assert!(m("*", "203.0.113.9"));
        assert!(m("*", "2001:db8::1"));
        assert!(m("1*1", "10.0.0.1"));
        assert!(m("**.*.*", "1.2.3.4"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(m("192.168.2.1?", "192.168.2.10"));
        assert!(m("192.168.2.1?", "192.168.2.19"));
        assert!(!m("192.168.2.1?", "192.168.2.1"));
        assert!(!m("192.168.2.1?", "192.168.2.100"));
        assert!(m("?.?.?.?", "1.2.3.4"));
        assert!(!m("?.?.?.?", "1.2.3.45"));
    }

    #[test]
    fn ipv6_wildcards_use_canonical_text() {
        assert!(m("fe80:*", "fe80::1"));
        assert!(m("FE80:*", "fe80::abcd"));
        assert!(m("2001:618:*:e43f", "2001:618::e43f"));
        assert!(m("2001:618:*:e43f", "2001:618:1:2:3:4:5:e43f"));
        assert!(!m("2001:618:*:e43f", "2001:618::e43e"));
        assert!(m("2001:db8::?", "2001:db8::a"));
        assert!(m("[fe80::*]", "fe80::1"));
        assert!(!m("fe80:*", "fe81::1"));
    }

    #[test]
    fn literal_addresses_compare_as_addresses() {
        assert!(m("2001:0db8::1", "2001:db8::1"));
        assert!(m("2001:DB8:0:0:0:0:0:1", "2001:db8::1"));
        assert!(m("192.0.2.1", "192.0.2.1"));
        assert!(!m("192.0.2.1", "192.0.2.10"));
        assert!(m("::ffff:192.0.2.1", "192.0.2.1"));
    }

    #[test]
    fn cidr_v4() {
        assert!(m("10.0.0.0/8", "10.255.1.2"));
        assert!(!m("10.0.0.0/8", "11.0.0.1"));
        assert!(m("0.0.0.0/0", "203.0.113.1"));
        assert!(!m("0.0.0.0/0", "2001:db8::1"));
        assert!(m("192.0.2.7/32", "192.0.2.7"));
        assert!(!m("192.0.2.7/32", "192.0.2.8"));
        assert!(m("192.0.2.128/25", "192.0.2.200"));
        assert!(!m("192.0.2.128/25", "192.0.2.100"));
    }

    #[test]
    fn cidr_v6() {
        assert!(m("2001:db8::/32", "2001:db8:1::5"));
        assert!(!m("2001:db8::/32", "2001:db9::5"));
        assert!(m("::/0", "2001:db8::1"));
        assert!(!m("::/0", "192.0.2.1"));
        assert!(m("2001:db8::1/128", "2001:db8::1"));
        assert!(!m("2001:db8::1/128", "2001:db8::2"));
        assert!(m("[2001:db8::]/48", "2001:db8:0:1::1"));
    }

    #[test]
    fn mapped_clients_match_as_ipv4() {
        let mapped = ip("::ffff:192.0.2.33");
        assert!(p("192.0.2.*").matches(mapped));
        assert!(p("192.0.2.0/24").matches(mapped));
        assert!(!p("::ffff:*").matches(mapped));
    }

    #[test]
    fn display_is_as_written() {
        for s in [
            "192.168.2.*",
            "FE80:*",
            "[fe80::*]",
            "10.0.0.0/8",
            "2001:db8::/32",
        ] {
            assert_eq!(p(s).to_string(), s);
        }
        assert_eq!(deny("10.0.0.0/8").to_string(), "deny 10.0.0.0/8");
        assert_eq!(allow("192.0.2.?").to_string(), "allow 192.0.2.?");
    }

    #[test]
    fn bad_patterns_name_the_value_and_the_reason() {
        let e = |s: &str| s.parse::<Pattern>().unwrap_err().to_string();
        assert_eq!(
            e("10.0.0.1/8"),
            "invalid address pattern '10.0.0.1/8': host bits are set (the network is '10.0.0.0/8')"
        );
        assert!(e("10.0.0.0/33").contains("from 0 to 32"));
        assert!(e("2001:db8::/129").contains("from 0 to 128"));
        assert!(e("10.0.0.0/").contains("cidr prefix"));
        assert!(e("10.0.0.0/+8").contains("cidr prefix"));
        assert!(e("10.0.0.0/8/8").contains("cidr prefix"));
        assert!(e("10.*/8").contains("wildcards cannot"));
        assert!(e("host.example/8").contains("not an ip address"));
        assert_eq!(
            e("g*"),
            "invalid address pattern 'g*': illegal character 'g' (allowed: digits, hex letters, '.', ':', '*', '?', or a cidr block)"
        );
        assert!(e("a-b").contains("illegal character '-'"));
        assert!(e("[*").contains("brackets"));
        assert!(e("1.2[3").contains("brackets"));
        assert!(e("").contains("empty"));
        assert!(e("[]").contains("empty"));
        assert!(e("010.*").contains("leading zero"));
        assert_eq!(
            e("::ffff:192.0.2.*"),
            "invalid address pattern '::ffff:192.0.2.*': can never match: ipv4-mapped ipv6 clients are \
             matched as their ipv4 address; write the ipv4 part alone"
        );
        assert!(e("192.168.a.*").contains("ipv4 addresses have no hex letters"));
        assert!(e("::ffff:0:0/96").ends_with("write '0.0.0.0/0'"));
        assert!(e("::ffff:192.0.2.0/120").ends_with("write '192.0.2.0/24'"));
        assert!("::/0".parse::<Pattern>().is_ok());
        assert!(e("abc").contains("not a whole address"));
        assert!("ab?".parse::<Pattern>().is_ok());
        assert!(e("2001:0db8:*").contains("'0db8'"));
        // Leading zero in a parseable literal is fine: compared as an address.
        assert!("2001:0db8::1".parse::<Pattern>().is_ok());
        assert!("0.0.0.*".parse::<Pattern>().is_ok());
    }

    #[test]
    fn patterns_that_can_never_match_a_client_are_refused() {
        let e = |s: &str| s.parse::<Pattern>().unwrap_err().to_string();
        assert_eq!(
            e("10.0.0.300"),
            "invalid address pattern '10.0.0.300': can never match: it is not a whole address and \
             has no '*' or '?' to stand for the rest (e.g. '1.2.3.*', or a cidr block such as '1.2.3.0/24')"
        );
        assert!(e("1.2.3").contains("not a whole address"));
        assert!(e("10.0.300.*").ends_with("can never match: '300' is above 255"));
        assert!(e("1.2.3.4.*").ends_with("an ipv4 address has four groups"));
        assert!("1.2.3.*".parse::<Pattern>().is_ok());
        assert!("1.2.*.2?".parse::<Pattern>().is_ok());
        assert!("*".parse::<Pattern>().is_ok());
        // A megabyte of digits is refused in one short line.
        let huge = "1".repeat(1 << 20);
        let err = e(&huge);
        assert!(err.len() < 200, "{}", err.len());
        assert!(err.contains("(1048576 bytes)"), "{err}");
        assert!(err.ends_with("longer than any address pattern (at most 64 characters)"));
    }

    #[test]
    fn glob_edge_cases() {
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"?", b""));
        assert!(glob_match(b"a*b*c", b"axxbyyc"));
        assert!(!glob_match(b"a*b*c", b"axxbyy"));
        assert!(glob_match(
            b"*a*a*a*a*a*b",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaab"
        ));
        assert!(!glob_match(
            b"*a*a*a*a*a*b",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
    }
}
