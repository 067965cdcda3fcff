//! Name patterns as written in `sni=` and `host=`: an exact name or `*.suffix`, and which names
//! each matches. How a listener picks among several (the precedence rules) is in `route::names`.

use super::text::printable;
use std::fmt;
use std::str::FromStr;

use crate::proto::name;

/// A name pattern from `sni=` or `host=`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NamePattern {
    /// One name, stored lowercase without a trailing dot.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com` (lowercase): matches any name
    /// ending in it, at any depth, but not `example.com` itself.
    Wildcard(String),
}

/// A rejected name pattern; Display names the value and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Lowercase phrase saying what is wrong.
    pub reason: String,
}

impl fmt::Display for NamePatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid name pattern '{}': {}",
            printable(&self.pattern),
            printable(&self.reason)
        )
    }
}

impl std::error::Error for NamePatternError {}

/// Lowercases a name and drops one trailing dot, the way patterns and lookups agree on.
pub(crate) fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

impl FromStr for NamePattern {
    type Err = NamePatternError;

    /// Parses `name.example.com` (case-insensitive, trailing dot ignored) or
    /// `*.example.com`; the name follows the host-name rule of `proto::name`.
    fn from_str(s: &str) -> Result<Self, NamePatternError> {
        let err = |reason: &str| NamePatternError {
            pattern: s.to_string(),
            reason: reason.to_string(),
        };
        let norm = normalize_name(s);
        if norm == "*" {
            return Err(err(
                "a lone '*' would match every name; leave out sni=/host= for the default route",
            ));
        }
        let (wild, name) = match norm.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, norm.as_str()),
        };
        check_name(name).map_err(|reason| err(&reason))?;
        Ok(if wild {
            NamePattern::Wildcard(format!(".{name}"))
        } else {
            NamePattern::Exact(name.to_string())
        })
    }
}

/// Checks a normalised name (no wildcard part) against the host-name rule; a `*` inside gets
/// its own reason, since it is the usual mistake.
fn check_name(text: &str) -> Result<(), String> {
    if text.split('.').any(|label| label.contains('*')) {
        return Err(
            "'*' is only allowed as the whole leftmost label, as in '*.example.com'".into(),
        );
    }
    name::check(text).map_err(|e| e.to_string())
}

impl NamePattern {
    /// True when the (already normalised) `name` matches.
    pub(crate) fn matches_normalized(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Wildcard(suffix) => {
                name.len() > suffix.len() && name.ends_with(suffix.as_str())
            }
        }
    }

    /// True when `name` matches; `name` is normalised first (lowercase, trailing dot).
    ///
    /// ```
    /// use tcp_router::config::NamePattern;
    ///
    /// let any: NamePattern = "*.example.com".parse().unwrap();
    /// assert!(any.matches("A.B.Example.COM."));
    /// assert!(!any.matches("example.com"));
    /// ```
    pub fn matches(&self, name: &str) -> bool {
        self.matches_normalized(&normalize_name(name))
    }
}

impl fmt::Display for NamePattern {
    /// Prints the normalised pattern: `a.example.com` or `*.example.com`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NamePattern::Exact(n) => f.write_str(n),
            NamePattern::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(s: &str) -> NamePattern {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn patterns_parse_and_normalise() {
        assert_eq!(np("Example.COM."), NamePattern::Exact("example.com".into()));
        assert_eq!(
            np("*.Example.com"),
            NamePattern::Wildcard(".example.com".into())
        );
        assert_eq!(np("*.example.com.").to_string(), "*.example.com");
        assert_eq!(np("_acme.x-1.example").to_string(), "_acme.x-1.example");
        assert_eq!(np("localhost"), NamePattern::Exact("localhost".into()));
        assert_eq!(np("*.com"), NamePattern::Wildcard(".com".into()));
    }

    #[test]
    fn bad_patterns_are_rejected_with_the_value() {
        let e = |s: &str| s.parse::<NamePattern>().unwrap_err().to_string();
        assert!(e("*").starts_with("invalid name pattern '*': a lone '*'"));
        assert!(e("*.").contains("lone"));
        assert!(e("a.*.com").contains("leftmost label"));
        assert!(e("*a.example.com").contains("leftmost label"));
        assert!(e("**.example.com").contains("leftmost label"));
        assert!(e("*.*.example.com").contains("leftmost label"));
        assert!(e("").contains("empty name"));
        assert!(e(".").contains("empty name"));
        assert!(e("a..b").contains("empty label"));
        assert!(e(".example.com").contains("empty label"));
        assert!(e("example.com..").contains("empty label"));
        assert!(e("exa mple.com").contains("illegal character ' '"));
        assert!(e("ex@mple.com").contains("illegal character '@'"));
        assert!(e("ünï.example").contains("illegal character"));
        assert!(e("-a.example").contains("starts or ends with '-'"));
        assert!(e(&format!("{}.com", "a".repeat(64))).contains("longer than 63"));
        assert!(e(&["a"; 130].join(".")).contains("253"));
        assert_eq!(
            e("a.*.com"),
            "invalid name pattern 'a.*.com': '*' is only allowed as the whole leftmost label, as in '*.example.com'"
        );
    }

    #[test]
    fn wildcard_matches_any_depth_but_not_the_bare_suffix() {
        let w = np("*.example.com");
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.c.example.com"));
        assert!(w.matches("A.EXAMPLE.COM."));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("badexample.com"));
        assert!(!w.matches(".example.com"));
    }
}
