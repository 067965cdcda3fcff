//! The manual pages document what the binary takes: every option `--help` lists has its entry in
//! man/tcp-router.8, and every `route` key the parser knows has its entry in
//! man/tcp-router.conf.5 (and neither page has an entry for something that no longer exists).
//!
//! The pages are mdoc: an option's entry is an `.It Fl \-name ...` line, a key's an
//! `.It Cm name ...` line in the ROUTE KEYS section. `mandoc -Tlint` (`make check-packaging`)
//! checks the markup itself.

use std::collections::BTreeSet;

use crate::util::{fenced_block, repo_file, run_bin, temp_dir};

/// The manual page `name` in man/.
fn page(name: &str) -> String {
    repo_file(&format!("man/{name}"))
}

/// Every `--name` in `text`, without its leading dashes: `--config` is `config`.
fn long_options(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("--") {
        let name: String = text[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
            .collect();
        let name = name.trim_end_matches('-');
        if name.starts_with(|c: char| c.is_ascii_lowercase()) {
            found.insert(name.to_string());
        }
    }
    found
}

/// The words after each `Fl` on the `.It` lines of `source`, escaped dashes read as dashes:
/// `.It Fl c Ar file , Fl \-config Ar file` gives `c` and `-config`.
fn flag_items(source: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines().filter(|l| l.starts_with(".It ")) {
        let line = line.replace("\\-", "-");
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[0] == "Fl" {
                found.insert(pair[1].to_string());
            }
        }
    }
    found
}

/// The word each `.It Cm WORD ...` line of `source` starts its entry with.
fn command_items(source: &str) -> BTreeSet<String> {
    source
        .lines()
        .filter_map(|l| l.strip_prefix(".It Cm "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The lines of the section `.Sh title`, up to the next `.Sh`.
fn section<'a>(source: &'a str, title: &str) -> String {
    let heading = format!(".Sh {title}");
    let mut lines = source.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no section '{heading}'");
    let body: Vec<&'a str> = lines.take_while(|l| !l.starts_with(".Sh ")).collect();
    body.join("\n")
}

#[test]
fn every_option_of_help_is_in_the_manual_page() {
    let (code, help, stderr) = run_bin(&["--help"]);
    assert_eq!(code, 0, "--help failed: {stderr}");
    let listed = long_options(&help);
    assert!(
        listed.contains("config") && listed.contains("help"),
        "no options read from --help:\n{help}"
    );
    // `.It Fl \-config` renders as `--config`: Fl adds one dash to the word `-config`.
    let documented: BTreeSet<String> = flag_items(&page("tcp-router.8"))
        .into_iter()
        .filter_map(|word| word.strip_prefix('-').map(str::to_string))
        .collect();
    let missing: Vec<String> = listed
        .difference(&documented)
        .map(|o| format!("--{o}"))
        .collect();
    assert!(
        missing.is_empty(),
        "options in --help without an `.It Fl` entry in man/tcp-router.8: {}",
        missing.join(", ")
    );
    let stale: Vec<String> = documented
        .difference(&listed)
        .map(|o| format!("--{o}"))
        .collect();
    assert!(
        stale.is_empty(),
        "man/tcp-router.8 documents options that --help does not list: {}",
        stale.join(", ")
    );
}

#[test]
fn every_route_key_is_in_the_config_manual_page() {
    // The parser names every key it knows when it meets one it does not.
    let dir = temp_dir("manpages");
    let file = dir.write("keys.conf", "route 127.0.0.1:1 127.0.0.1:2 colour=x\n");
    let (code, _, stderr) = run_bin(&["--check", "-c", &file]);
    assert_eq!(code, 2, "{stderr}");
    let known = stderr
        .split_once("unknown key 'colour' (known: ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(list, _)| list)
        .unwrap_or_else(|| panic!("no list of known keys in: {stderr}"));
    let keys: BTreeSet<String> = known.split(", ").map(str::to_string).collect();
    for key in ["connect_timeout", "src", "sni", "host", "alpn"] {
        assert!(
            keys.contains(key),
            "'{key}' not among the known keys: {known}"
        );
    }
    let documented = command_items(&section(&page("tcp-router.conf.5"), "ROUTE KEYS"));
    let missing: Vec<&String> = keys.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "route keys without an `.It Cm` entry in ROUTE KEYS of man/tcp-router.conf.5: {missing:?}"
    );
    let stale: Vec<&String> = documented.difference(&keys).collect();
    assert!(
        stale.is_empty(),
        "man/tcp-router.conf.5 documents route keys the parser does not know: {stale:?}"
    );
}

/// docs/operations.md quotes `--help` whole: the quote is the program's output, byte for byte.
#[test]
fn the_help_quoted_in_the_docs_is_the_programs() {
    let docs = repo_file("docs/operations.md");
    let marker = "The complete command line, as `tcp-router --help` prints it:";
    let quoted = fenced_block(&docs, marker, "text");
    let (code, help, _) = run_bin(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        quoted == help,
        "docs/operations.md's --help quote differs from the program's; replace it with the \
         output of `tcp-router --help`:\n{help}"
    );
}
