//! User text as errors quote it: control characters escaped (`\n`, `\u{1b}`), so an error about
//! any value stays one line, whatever the value (a command-line argument, a builder's string).

use std::borrow::Cow;

/// `text` with its control characters escaped; borrowed when there are none.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.contains(char::is_control) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("127.0.0.1:80"), "127.0.0.1:80");
        assert_eq!(printable("a\nb\u{1b}[1m\t'é"), "a\\nb\\u{1b}[1m\\t'é");
    }
}
