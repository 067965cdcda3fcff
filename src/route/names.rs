//! Name-routing table: picks a route by TLS SNI or HTTP Host name, and TLS ALPN.
//!
//! Precedence: the most specific name wins (an exact name, then the longest wildcard
//! suffix, then the default route). ALPN only decides among entries that carry the same
//! name pattern: an entry with `alpn=X` is eligible only when the client offered `X`, and
//! an eligible ALPN entry beats the entry without ALPN. When several ALPN entries with the
//! same name pattern are eligible, the one listed first wins (operator's order, not the
//! client's). If no entry of the most specific matching name is eligible (they all want
//! an ALPN the client did not offer), the next less specific name is tried.

use std::fmt;

use crate::config::names::{normalize_name, NamePattern};

/// Why a lookup picked its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MatchKind {
    /// The name matched an exact pattern.
    Exact,
    /// The name matched this wildcard pattern (printed form, e.g. `*.example.com`).
    Wildcard(String),
    /// No name pattern matched (or no name was given); the default route was used.
    Default,
    /// A protocol route took the client (`proto=`, `prefix=`): the router's answer, never the
    /// name table's.
    Protocol,
}

impl fmt::Display for MatchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchKind::Exact => f.write_str("exact name"),
            MatchKind::Wildcard(p) => write!(f, "wildcard {p}"),
            MatchKind::Default => f.write_str("default route"),
            MatchKind::Protocol => f.write_str("protocol route"),
        }
    }
}

/// One entry of a [`NameTable`]: a name pattern (`None` for the default route), an ALPN value,
/// and what they lead to.
#[derive(Debug, Clone)]
struct NameEntry<T> {
    pattern: Option<NamePattern>,
    alpn: Option<String>,
    value: T,
}

/// The routing table for one listener: `(name pattern, alpn, value)` entries, where a
/// `None` pattern is the default route (at most one per ALPN value).
#[derive(Debug, Clone)]
pub(crate) struct NameTable<T> {
    entries: Vec<NameEntry<T>>,
}

impl<T> NameTable<T> {
    /// Builds a table; entry order matters only to break ties between several ALPN entries the
    /// client offered. Entries are expected to be distinct in (pattern, ALPN): the configuration
    /// refuses duplicates (`config::validate`), and here the first of two would win.
    pub(crate) fn new(
        entries: impl IntoIterator<Item = (Option<NamePattern>, Option<String>, T)>,
    ) -> Self {
        NameTable {
            entries: entries
                .into_iter()
                .map(|(pattern, alpn, value)| NameEntry {
                    pattern,
                    alpn,
                    value,
                })
                .collect(),
        }
    }

    /// Picks the entry for a client that sent `name` (SNI or Host, without port; `None`
    /// when it sent none) and offered `alpn_offered`. See the module docs for precedence.
    pub(crate) fn lookup(
        &self,
        name: Option<&str>,
        alpn_offered: &[String],
    ) -> Option<(&T, MatchKind)> {
        self.pick(name, alpn_offered)
            .map(|(i, kind)| (&self.entries[i].value, kind))
    }

    /// Index and kind of the winning entry.
    fn pick(&self, name: Option<&str>, alpn: &[String]) -> Option<(usize, MatchKind)> {
        let name = name.map(normalize_name);
        for (pattern, kind) in self.candidate_patterns(name.as_deref()) {
            if let Some(i) = self.best_for_pattern(pattern.as_ref(), alpn) {
                return Some((i, kind));
            }
        }
        None
    }

    /// Distinct name patterns matching `name`, most specific first, ending with the
    /// default (`None`).
    fn candidate_patterns(&self, name: Option<&str>) -> Vec<(Option<NamePattern>, MatchKind)> {
        let mut out: Vec<(Option<NamePattern>, MatchKind)> = Vec::new();
        if let Some(name) = name {
            let mut wild: Vec<&NamePattern> = Vec::new();
            for p in self.entries.iter().filter_map(|e| e.pattern.as_ref()) {
                if !p.matches_normalized(name) {
                    continue;
                }
                match p {
                    NamePattern::Exact(_) => {
                        if out.is_empty() {
                            out.push((Some(p.clone()), MatchKind::Exact));
                        }
                    }
                    NamePattern::Wildcard(_) if !wild.contains(&p) => wild.push(p),
                    NamePattern::Wildcard(_) => {}
                }
            }
            // Longest suffix first: `*.a.example.com` beats `*.example.com`.
            wild.sort_by_key(|p| std::cmp::Reverse(p.to_string().len()));
            out.extend(
                wild.into_iter()
                    .map(|p| (Some(p.clone()), MatchKind::Wildcard(p.to_string()))),
            );
        }
        out.push((None, MatchKind::Default));
        out
    }

    /// Among entries with exactly this pattern: the first whose ALPN the client offered,
    /// else the one without ALPN.
    fn best_for_pattern(&self, pattern: Option<&NamePattern>, alpn: &[String]) -> Option<usize> {
        let same = || {
            self.entries
                .iter()
                .enumerate()
                .filter(move |(_, e)| e.pattern.as_ref() == pattern)
        };
        let offered = |e: &NameEntry<T>| e.alpn.as_ref().is_some_and(|a| alpn.contains(a));
        same()
            .find(|(_, e)| offered(e))
            .or_else(|| same().find(|(_, e)| e.alpn.is_none()))
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(s: &str) -> NamePattern {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn alpn(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn table(entries: &[(Option<&str>, Option<&str>, &'static str)]) -> NameTable<&'static str> {
        NameTable::new(
            entries
                .iter()
                .map(|(p, a, v)| (p.map(np), a.map(str::to_string), *v)),
        )
    }

    fn get(
        t: &NameTable<&'static str>,
        name: Option<&str>,
        offered: &[&str],
    ) -> Option<(&'static str, MatchKind)> {
        t.lookup(name, &alpn(offered)).map(|(v, k)| (*v, k))
    }

    #[test]
    fn exact_beats_wildcard_beats_default() {
        let t = table(&[
            (None, None, "default"),
            (Some("*.example.com"), None, "wild"),
            (Some("a.example.com"), None, "exact"),
        ]);
        assert_eq!(
            get(&t, Some("a.example.com"), &[]),
            Some(("exact", MatchKind::Exact))
        );
        assert_eq!(
            get(&t, Some("b.example.com"), &[]),
            Some(("wild", MatchKind::Wildcard("*.example.com".into())))
        );
        assert_eq!(
            get(&t, Some("example.com"), &[]),
            Some(("default", MatchKind::Default))
        );
        assert_eq!(get(&t, None, &[]), Some(("default", MatchKind::Default)));
        assert_eq!(
            get(&t, Some(""), &[]),
            Some(("default", MatchKind::Default))
        );
    }

    #[test]
    fn longest_wildcard_wins_regardless_of_order() {
        let t = table(&[
            (Some("*.example.com"), None, "short"),
            (Some("*.eu.example.com"), None, "long"),
        ]);
        assert_eq!(get(&t, Some("x.eu.example.com"), &[]).unwrap().0, "long");
        assert_eq!(get(&t, Some("x.us.example.com"), &[]).unwrap().0, "short");
        assert_eq!(get(&t, Some("eu.example.com"), &[]).unwrap().0, "short");
        assert_eq!(get(&t, Some("example.com"), &[]), None);
        let t = table(&[
            (Some("*.eu.example.com"), None, "long"),
            (Some("*.example.com"), None, "short"),
        ]);
        assert_eq!(get(&t, Some("x.eu.example.com"), &[]).unwrap().0, "long");
    }

    #[test]
    fn lookup_is_case_insensitive_and_ignores_a_trailing_dot() {
        let t = table(&[(Some("A.Example.com"), None, "a")]);
        assert_eq!(get(&t, Some("a.example.COM."), &[]).unwrap().0, "a");
        assert_eq!(get(&t, Some("a.example.com.."), &[]), None);
    }

    #[test]
    fn alpn_entry_wins_only_when_offered() {
        let t = table(&[
            (Some("a.example.com"), None, "site"),
            (Some("a.example.com"), Some("acme-tls/1"), "acme"),
        ]);
        assert_eq!(
            get(&t, Some("a.example.com"), &["acme-tls/1"]).unwrap().0,
            "acme"
        );
        assert_eq!(
            get(&t, Some("a.example.com"), &["h2", "http/1.1"])
                .unwrap()
                .0,
            "site"
        );
        assert_eq!(get(&t, Some("a.example.com"), &[]).unwrap().0, "site");
    }

    #[test]
    fn default_route_per_alpn() {
        let t = table(&[(None, None, "site"), (None, Some("acme-tls/1"), "acme")]);
        assert_eq!(
            get(&t, Some("x.example"), &["acme-tls/1"]),
            Some(("acme", MatchKind::Default))
        );
        assert_eq!(get(&t, None, &["acme-tls/1"]).unwrap().0, "acme");
        assert_eq!(get(&t, None, &["h2"]).unwrap().0, "site");
    }

    #[test]
    fn name_specificity_beats_alpn() {
        // The exact name has no alpn entry: it still wins over an alpn default.
        let t = table(&[
            (Some("a.example.com"), None, "site"),
            (None, Some("acme-tls/1"), "acme"),
        ]);
        assert_eq!(
            get(&t, Some("a.example.com"), &["acme-tls/1"]).unwrap().0,
            "site"
        );
        assert_eq!(
            get(&t, Some("b.example.com"), &["acme-tls/1"]).unwrap().0,
            "acme"
        );
    }

    #[test]
    fn unoffered_alpn_only_entries_fall_through_to_less_specific() {
        let t = table(&[
            (Some("a.example.com"), Some("acme-tls/1"), "acme"),
            (Some("*.example.com"), None, "wild"),
            (None, None, "default"),
        ]);
        assert_eq!(get(&t, Some("a.example.com"), &["h2"]).unwrap().0, "wild");
        assert_eq!(
            get(&t, Some("a.example.com"), &["acme-tls/1"]).unwrap().0,
            "acme"
        );
        let t = table(&[(None, Some("acme-tls/1"), "acme")]);
        assert_eq!(get(&t, None, &[]), None);
    }

    #[test]
    fn several_offered_alpn_entries_tie_break_by_table_order() {
        let t = table(&[
            (Some("a.example"), Some("http/1.1"), "h1"),
            (Some("a.example"), Some("h2"), "h2"),
        ]);
        assert_eq!(
            get(&t, Some("a.example"), &["h2", "http/1.1"]).unwrap().0,
            "h1"
        );
        assert_eq!(get(&t, Some("a.example"), &["h2"]).unwrap().0, "h2");
        assert_eq!(get(&t, Some("a.example"), &[]), None);
    }

    #[test]
    fn empty_table_matches_nothing() {
        let t: NameTable<u8> = NameTable::new(Vec::new());
        assert!(t.lookup(Some("a"), &[]).is_none());
        assert!(t.lookup(None, &[]).is_none());
    }
}
