//! Host names: the one rule for what a valid name is. The TLS and HTTP readers apply it to the
//! names clients send, and the configuration to the names operators write (addresses, `sni=` and
//! `host=` patterns), so a name that routes is a name that can be configured, and back.
//!
//! The rule: one trailing dot is dropped; the name is 1–253 bytes of dot-separated labels; each
//! label is 1–63 bytes of ASCII letters, digits, `-` and `_` (underscores occur in real names
//! even though LDH host names do not allow them) and neither starts nor ends with `-`
//! (RFC 1123 section 2.1). IPv4 literals pass as ordinary names. Names compare case-insensitively,
//! so the canonical form is lowercase.

use std::fmt;

/// Longest name accepted, in bytes, without the optional trailing dot (the DNS limit of 255
/// octets on the wire leaves 253 in text form).
pub(crate) const MAX_NAME_LEN: usize = 253;

/// Longest label accepted (RFC 1035 section 2.3.4).
pub(crate) const MAX_LABEL_LEN: usize = 63;

/// Why a name breaks the rule; Display is a lowercase phrase naming the offending part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameError {
    /// Nothing left once the trailing dot is dropped.
    Empty,
    /// Over [`MAX_NAME_LEN`] bytes.
    TooLong,
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    /// A label over [`MAX_LABEL_LEN`] bytes.
    LongLabel(String),
    /// A character outside letters, digits, `-`, `_` and `.`.
    Character(char),
    /// A label that starts or ends with `-`.
    Hyphen(String),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("empty name"),
            NameError::TooLong => write!(f, "name longer than {MAX_NAME_LEN} characters"),
            NameError::EmptyLabel => f.write_str("empty label"),
            NameError::LongLabel(label) => {
                write!(
                    f,
                    "label '{label}' is longer than {MAX_LABEL_LEN} characters"
                )
            }
            NameError::Character(c) => write!(
                f,
                "illegal character '{}' (allowed: letters, digits, '-', '_', '.')",
                c.escape_default()
            ),
            NameError::Hyphen(label) => write!(f, "label '{label}' starts or ends with '-'"),
        }
    }
}

/// Checks `name`, its trailing dot already dropped, against the rule.
pub(crate) fn check(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    name.split('.').try_for_each(check_label)
}

fn check_label(label: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::EmptyLabel);
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError::Character(c));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(NameError::LongLabel(label.to_string()));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(NameError::Hyphen(label.to_string()));
    }
    Ok(())
}

/// The canonical form of a valid name: lowercase, without the trailing dot.
pub(crate) fn canonical(name: &str) -> Result<String, NameError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    check(name)?;
    Ok(name.to_ascii_lowercase())
}

/// [`canonical`] for the bytes a client sent; `None` if they are not a valid name (non-ASCII
/// bytes included).
pub(crate) fn canonical_bytes(raw: &[u8]) -> Option<String> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|name| canonical(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_names_are_lowercase_without_the_trailing_dot() {
        assert_eq!(canonical_bytes(b"Example.COM."), Some("example.com".into()));
        assert_eq!(
            canonical_bytes(b"_dmarc.x-y.z9"),
            Some("_dmarc.x-y.z9".into())
        );
        assert_eq!(canonical_bytes(b"10.0.0.1"), Some("10.0.0.1".into()));
    }

    #[test]
    fn malformed_names_are_refused() {
        for bad in [
            &b""[..],
            b".",
            b"a..b",
            b".a",
            b"a..",
            b"a b",
            b"a:80",
            b"caf\xc3\xa9",
            b"a\0",
            b"-a.example",
            b"a-.example",
        ] {
            assert_eq!(canonical_bytes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lengths_are_bounded() {
        let label = "a".repeat(63);
        assert!(check(&label).is_ok());
        assert_eq!(
            check(&format!("{label}a")),
            Err(NameError::LongLabel(format!("{label}a")))
        );
        let long = [label.as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert_eq!(check(&long), Err(NameError::TooLong));
        assert!(check(&long[2..]).is_ok(), "253 bytes");
    }

    #[test]
    fn errors_name_the_offending_part() {
        assert!(check("a.-b.c").unwrap_err().to_string().contains("'-b'"));
        assert!(check("a/b").unwrap_err().to_string().contains("'/'"));
    }
}
