//! The architecture rules of docs/design.md, checked against the source: which part of the
//! library may import which, no import loops between the files of a part, and no process-wide
//! state touched outside the opt-in calls.
//!
//! It reads every `crate::…` and `super::…` path in `src/` (comments and the `mod tests` at the
//! end of a file left out: test code may reach anywhere), maps each to the file it names, and
//! checks the graph. A rule broken shows as the file, the path and the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Which parts each part may import (besides itself). A part is a top-level folder or file of
/// `src/`; the crate root (`lib.rs`) may import everything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("proto", &[]),
    ("sys", &[]),
    ("error", &[]),
    ("test_support", &[]),
    ("config", &["proto", "error"]),
    ("route", &["config", "proto"]),
    ("relay", &["sys"]),
    ("handoff", &["error", "sys"]),
    ("log", &["config", "relay", "route"]),
    ("check", &["config", "route"]),
    (
        "serve",
        &[
            "config", "error", "handoff", "log", "proto", "relay", "route", "sys",
        ],
    ),
    (
        "admin",
        &["config", "error", "proto", "relay", "serve", "sys"],
    ),
    (
        "forwarder",
        &["admin", "config", "error", "handoff", "proto", "serve"],
    ),
];

/// A source file as a module path: `src/config/file.rs` is `["config", "file"]`, a folder's
/// `mod.rs` is the folder, `lib.rs` is `[]`.
type Module = Vec<String>;

struct Source {
    module: Module,
    path: PathBuf,
    /// The file without comments and without its trailing `mod tests`.
    code: String,
}

fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files
        .into_iter()
        .filter(|path| !path.starts_with(root.join("bin")))
        .map(|path| {
            let relative = path.strip_prefix(&root).unwrap().with_extension("");
            let mut module: Module = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                module.pop();
            }
            let text = fs::read_to_string(&path).unwrap();
            Source {
                module,
                path,
                code: code_of(&text),
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without `//` comments (doc comments included: intra-doc links are not imports) and
/// without the unit tests, which the project keeps in one `#[cfg(test)] mod tests` at the end.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod tests"))
        {
            break;
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every path that starts with `crate::` or `super::`, as its segments after that word, with
/// `crate::{a, b::c}` groups expanded to their first segments.
fn paths(code: &str, start: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(start) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + start.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let segments = segments(item.trim());
                if !segments.is_empty() {
                    found.push(segments);
                }
            }
        } else {
            found.push(segments(rest));
        }
    }
    found
}

/// `a::b::c…` up to the first character that cannot continue a path.
fn segments(text: &str) -> Vec<String> {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The file a path names: the longest prefix of it that is a module (`config::file::parse` names
/// `config::file`; `config::Config` names `config`, the folder's `mod.rs`).
fn resolve(path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|candidate| modules.contains(candidate))
}

/// Every import edge: (importing file, imported file, the path as written).
fn edges(sources: &[Source]) -> Vec<(Module, Module, String)> {
    let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
    let mut out = Vec::new();
    for source in sources {
        for path in paths(&source.code, "crate::") {
            if let Some(target) = resolve(&path, &modules) {
                out.push((
                    source.module.clone(),
                    target,
                    format!("crate::{}", path.join("::")),
                ));
            }
        }
        // `super::` is relative to the parent of the file's module (a `mod.rs` is its folder).
        let is_hub = source.path.ends_with("mod.rs");
        let mut parent = source.module.clone();
        if !is_hub || !parent.is_empty() {
            parent.pop();
        }
        for path in paths(&source.code, "super::") {
            let mut full = parent.clone();
            full.extend(path.iter().cloned());
            if let Some(target) = resolve(&full, &modules) {
                out.push((
                    source.module.clone(),
                    target,
                    format!("super::{}", path.join("::")),
                ));
            }
        }
    }
    out
}

fn part(module: &Module) -> &str {
    module.first().map_or("lib", String::as_str)
}

fn display(module: &Module) -> String {
    if module.is_empty() {
        "lib".into()
    } else {
        module.join("::")
    }
}

/// Each part imports only the parts the table allows.
#[test]
fn parts_import_only_what_the_rules_allow() {
    let sources = sources();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut broken = Vec::new();
    for source in &sources {
        let from = part(&source.module);
        assert!(
            from == "lib" || allowed.contains_key(from),
            "src/{from} is a part without a rule: add it to ALLOWED and to docs/design.md"
        );
    }
    for (from, to, path) in edges(&sources) {
        let (a, b) = (part(&from), part(&to));
        if a == "lib" || a == b {
            continue;
        }
        if !allowed[a].contains(&b) {
            broken.push(format!(
                "{} uses {path}: {a} may import only {:?}",
                display(&from),
                allowed[a]
            ));
        }
    }
    assert!(
        broken.is_empty(),
        "import rules broken:\n{}",
        broken.join("\n")
    );
}

/// No loops: not between parts, and not between the files of one part (a folder's `mod.rs`,
/// which only declares and re-exports, is left out of the second check).
#[test]
fn imports_have_no_loops() {
    let sources = sources();
    let edges = edges(&sources);
    let part_edges: BTreeSet<(String, String)> = edges
        .iter()
        .map(|(a, b, _)| (part(a).to_string(), part(b).to_string()))
        .filter(|(a, b)| a != b && a != "lib")
        .collect();
    if let Some(cycle) = find_cycle(&part_edges) {
        panic!("parts import each other in a loop: {}", cycle.join(" -> "));
    }
    let hubs: BTreeSet<String> = sources
        .iter()
        .filter(|s| s.path.ends_with("mod.rs") || s.module.is_empty())
        .map(|s| display(&s.module))
        .collect();
    let file_edges: BTreeSet<(String, String)> = edges
        .iter()
        .map(|(a, b, _)| (display(a), display(b)))
        .filter(|(a, b)| a != b && !hubs.contains(a) && !hubs.contains(b))
        .collect();
    if let Some(cycle) = find_cycle(&file_edges) {
        panic!("files import each other in a loop: {}", cycle.join(" -> "));
    }
}

/// A cycle in a directed graph, as the nodes along it, if there is one.
fn find_cycle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a).or_default().push(b);
    }
    let mut done = BTreeSet::new();
    let starts: Vec<&str> = next.keys().copied().collect();
    starts
        .into_iter()
        .find_map(|node| visit(node, &next, &mut Vec::new(), &mut done))
}

/// Depth-first search with the path kept: a node met again on the path closes a cycle.
fn visit<'a>(
    node: &'a str,
    next: &BTreeMap<&'a str, Vec<&'a str>>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|n| *n == node) {
        let mut cycle: Vec<String> = path[at..].iter().map(|n| n.to_string()).collect();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if !done.insert(node) {
        return None;
    }
    path.push(node);
    for to in next.get(node).into_iter().flatten() {
        if let Some(cycle) = visit(to, next, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    None
}

/// The library touches no process-wide state on its own: signal handlers, the panic hook and
/// `process::exit` are the binary's (except the live upgrade's wake-up signal, installed by
/// `sys::wake` only when a hand-off runs, which the caller opted into); rlimits and the
/// scheduling policy are set only in `sys`, and reached from the rest of the crate only through
/// the opt-in `process` module.
#[test]
fn the_library_leaves_process_wide_state_to_the_binary() {
    let forbidden = [
        ("process::exit", None),
        ("signal_hook", Some("sys::wake")),
        ("panic::set_hook", None),
        ("setrlimit", Some("sys::limits")),
        ("set_thread_priority_and_policy", Some("sys::sched")),
        ("raise_open_files_limit", Some("sys::limits")),
        ("sched::apply", Some("lib")),
    ];
    let mut broken = Vec::new();
    for source in sources() {
        let module = display(&source.module);
        for (needle, home) in forbidden {
            let allowed = home == Some(module.as_str()) || (module == "lib" && home.is_some());
            if source.code.contains(needle) && !allowed {
                broken.push(format!("{module} mentions {needle}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "process-wide state outside its place:\n{}",
        broken.join("\n")
    );
}

/// The checker itself: paths, groups and comments are read as intended, and a loop is found.
#[test]
fn the_checker_reads_paths_and_finds_loops() {
    let code = code_of(
        "use crate::{config::Config, proto};\n// crate::serve in a comment\nlet x = super::copy::f();\n#[cfg(test)]\nmod tests { use crate::serve; }\n",
    );
    assert_eq!(
        paths(&code, "crate::"),
        [
            vec!["config".to_string(), "Config".into()],
            vec!["proto".into()]
        ]
    );
    assert_eq!(
        paths(&code, "super::"),
        [vec!["copy".to_string(), "f".into()]]
    );
    let edges: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("c", "a")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert!(find_cycle(&edges).is_some());
    let acyclic: BTreeSet<(String, String)> = [("a", "b"), ("b", "c"), ("a", "c")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(find_cycle(&acyclic), None);
}
