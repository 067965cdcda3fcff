//! The architecture rules of docs/design.md, checked against the source: which part of the
//! library may import which (read from the page's own table, so the page and the check cannot
//! disagree), no import loops, a folder's `mod.rs` that only declares and re-exports, no I/O in
//! the configuration and routing, no environment variable read by the library, and no
//! process-wide state touched outside the opt-in calls.
//!
//! It reads every path into the crate in `src/` (comments and the `mod tests` at the end of a
//! file left out: test code may reach anywhere): `crate::…`, `super::…`, `self::…`, a child
//! module's name in a `mod.rs`, and the names `use` brings in. Each path is followed through the
//! `use` re-exports on its way (`crate::Handle` is `serve::server`'s, by way of `lib.rs` and
//! `serve/mod.rs`) to the file that defines it, and the rules are checked on that graph. A rule
//! broken shows as the file, the path and the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The heading of the table the import rules are read from.
const TABLE_HEADING: &str = "The allowed imports, part by part:";

/// What the table says for a part that may import nothing of the crate.
const NOTHING: &str = "nothing of the crate";

/// The invariants on the page, by their bold titles, each checked by a test below.
const CHECKED: &[&str] = &[
    "Configuration is pure data.",
    "The readers import nothing outside `proto/`.",
    "Routing decides, it does not act.",
    "The relay knows sockets and plain values.",
    "`sys` imports nothing of the crate.",
    "`serve` is the only part that imports (almost) all the others",
    "No import loops",
    "The library touches no process-wide state",
    "The library reads no environment variable.",
    "The binary is safe code too, and changes its environment once.",
    "One name for one thing.",
];

/// A source file as a module path: `src/config/file.rs` is `["config", "file"]`, a folder's
/// `mod.rs` is the folder, `lib.rs` is `[]`.
type Module = Vec<String>;

struct Source {
    module: Module,
    /// The path under `src/`, for messages: `config/file.rs`.
    name: String,
    /// The file without comments and without its trailing `mod tests`.
    code: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// The library's sources (the binary's are its own).
fn sources() -> Vec<Source> {
    let src = root().join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    files
        .into_iter()
        .filter(|path| !path.starts_with(src.join("bin")))
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap();
            let mut module: Module = relative
                .with_extension("")
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            if module
                .last()
                .is_some_and(|last| last == "mod" || last == "lib")
            {
                module.pop();
            }
            Source {
                module,
                name: relative.to_string_lossy().into_owned(),
                code: code_of(&fs::read_to_string(&path).unwrap()),
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
        out.push_str(without_comment(line));
        out.push('\n');
    }
    out
}

/// A line without its `//` comment (a `//` inside a string literal ends the line too: the code
/// here has none that matter).
fn without_comment(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

// ---------------------------------------------------------------------------------------------
// The page's table
// ---------------------------------------------------------------------------------------------

fn design_page() -> String {
    fs::read_to_string(root().join("docs/design.md")).expect("docs/design.md")
}

/// The table under [`TABLE_HEADING`]: for each part, the parts it may import. A row names one
/// part or several (backquoted, comma separated); its second cell names the parts they may
/// import the same way, or says [`NOTHING`].
fn allowed_imports(page: &str) -> BTreeMap<String, BTreeSet<String>> {
    let at = page
        .find(TABLE_HEADING)
        .unwrap_or_else(|| panic!("docs/design.md has no '{TABLE_HEADING}' table"));
    let rows = page[at..]
        .lines()
        .skip(1)
        .skip_while(|line| line.trim().is_empty())
        .take_while(|line| line.starts_with('|'))
        .skip(2);
    let mut allowed = BTreeMap::new();
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let [_, parts, imports, ..] = cells[..] else {
            panic!("docs/design.md: a row of the imports table without two cells: {row}");
        };
        let imports = if imports == NOTHING {
            BTreeSet::new()
        } else {
            let names = backquoted(imports);
            assert!(
                !names.is_empty(),
                "docs/design.md: '{imports}' names no part (backquote them, or say '{NOTHING}')"
            );
            names
        };
        for part in backquoted(parts) {
            let previous = allowed.insert(part.clone(), imports.clone());
            assert!(previous.is_none(), "docs/design.md: `{part}` has two rows");
        }
    }
    assert!(
        !allowed.is_empty(),
        "docs/design.md: the imports table is empty"
    );
    allowed
}

/// The backquoted names of a cell: "`config`, `error`" is `config` and `error`.
fn backquoted(cell: &str) -> BTreeSet<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The bold titles of the invariants on the page.
fn invariant_titles(page: &str) -> Vec<String> {
    let section = page
        .split("\n## ")
        .find(|s| s.starts_with("Architecture invariants"))
        .expect("docs/design.md has an 'Architecture invariants' section");
    section
        .lines()
        .filter_map(|line| line.strip_prefix("- **"))
        .filter_map(|line| line.split_once("**"))
        .map(|(title, _)| title.to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Paths and what they name
// ---------------------------------------------------------------------------------------------

/// Everything known about the crate's modules: which exist, and what each one's `use`
/// statements bring in (a re-export is one of them).
struct Crate {
    modules: BTreeSet<Module>,
    /// (module, name) → the path the name stands for, from the crate root.
    uses: BTreeMap<(Module, String), Vec<String>>,
}

impl Crate {
    fn new(sources: &[Source]) -> Crate {
        let modules: BTreeSet<Module> = sources.iter().map(|s| s.module.clone()).collect();
        let mut krate = Crate {
            modules,
            uses: BTreeMap::new(),
        };
        for source in sources {
            for statement in use_statements(&source.code) {
                for (path, name) in use_leaves(&statement) {
                    let Some(full) = krate.absolute(&source.module, &path) else {
                        continue;
                    };
                    if let Some(name) = name {
                        krate.uses.insert((source.module.clone(), name), full);
                    }
                }
            }
        }
        krate
    }

    /// `path` as written in `module`, from the crate root; `None` if it starts outside the crate
    /// (`std::…`, another crate).
    fn absolute(&self, module: &Module, path: &[String]) -> Option<Vec<String>> {
        let (first, rest) = path.split_first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => module.clone(),
            "super" => {
                let mut parent = module.clone();
                parent.pop()?;
                parent
            }
            child => {
                let mut base = module.clone();
                base.push(child.to_string());
                if !self.modules.contains(&base) {
                    return None;
                }
                return Some(base.into_iter().chain(rest.iter().cloned()).collect());
            }
        };
        let mut rest = rest;
        while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
            base.pop()?;
            rest = tail;
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The file that defines what `path` (from the crate root) names: the longest prefix that
    /// is a module, then, if the next name is one that module's `use` brings in, where that
    /// name comes from, and so on.
    fn file_of(&self, path: &[String]) -> Module {
        let mut path = path.to_vec();
        for _ in 0..16 {
            let n = (0..=path.len())
                .rev()
                .find(|n| self.modules.contains(&path[..*n]))
                .unwrap_or(0);
            let module = path[..n].to_vec();
            let Some(next) = path.get(n) else {
                return module;
            };
            match self.uses.get(&(module.clone(), next.clone())) {
                Some(target) if target[..] != path[..n + 1] => {
                    let mut followed = target.clone();
                    followed.extend(path[n + 1..].iter().cloned());
                    path = followed;
                }
                _ => return module,
            }
        }
        panic!("re-exports in a loop at {}", path.join("::"));
    }

    /// Every path in `source` into the crate, as written and as the file it names.
    fn imports(&self, source: &Source) -> Vec<(String, Module)> {
        let mut written: Vec<Vec<String>> = Vec::new();
        for statement in use_statements(&source.code) {
            written.extend(use_leaves(&statement).into_iter().map(|(path, _)| path));
        }
        let local: BTreeSet<String> = self
            .uses
            .keys()
            .filter(|(module, _)| *module == source.module)
            .map(|(_, name)| name.clone())
            .collect();
        let code = without_use_statements(&source.code);
        for start in inline_paths(&code) {
            let first = &start[0];
            if local.contains(first) {
                let mut full = self.uses[&(source.module.clone(), first.clone())].clone();
                full.extend(start[1..].iter().cloned());
                full.insert(0, "crate".into());
                written.push(full);
            } else {
                written.push(start);
            }
        }
        written
            .into_iter()
            .filter_map(|path| {
                let full = self.absolute(&source.module, &path)?;
                Some((path.join("::"), self.file_of(&full)))
            })
            .filter(|(_, target)| *target != source.module)
            .collect()
    }
}

/// The `use` statements of `code`, each as one line of text without `use` and `;`.
fn use_statements(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = use_start(line) else {
            continue;
        };
        let mut statement = rest.to_string();
        while !statement.contains(';') {
            let Some(next) = lines.next() else { break };
            statement.push(' ');
            statement.push_str(next.trim());
        }
        let statement = statement.split(';').next().unwrap_or_default();
        out.push(statement.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    out
}

/// What follows `use` on a line that starts a `use` statement (with any visibility).
fn use_start(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    if let Some(after) = rest.strip_prefix("pub") {
        rest = after.trim_start();
        if rest.starts_with('(') {
            rest = rest[rest.find(')')? + 1..].trim_start();
        }
    }
    rest.strip_prefix("use ")
}

/// The code without its `use` statements.
fn without_use_statements(code: &str) -> String {
    let mut out = String::new();
    let mut in_use = false;
    for line in code.lines() {
        if use_start(line).is_some() {
            in_use = true;
        }
        if !in_use {
            out.push_str(line);
        }
        out.push('\n');
        if in_use && line.contains(';') {
            in_use = false;
        }
    }
    out
}

/// The leaves of a use tree (`a::{b, c::{d as e, self}, f::*}`): each full path and the name it
/// brings in (none for a glob, which imports the module itself here).
fn use_leaves(tree: &str) -> Vec<(Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    leaves(Vec::new(), tree, &mut out);
    out
}

fn leaves(prefix: Vec<String>, tree: &str, out: &mut Vec<(Vec<String>, Option<String>)>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let mut base = prefix;
        base.extend(split_path(&tree[..open]));
        let close = tree.rfind('}').unwrap_or(tree.len());
        for item in split_top_level(&tree[open + 1..close]) {
            leaves(base.clone(), item, out);
        }
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((path, alias)) => (path, Some(alias.trim().to_string())),
        None => (tree, None),
    };
    let mut full = prefix;
    full.extend(split_path(path));
    match full.last().map(String::as_str) {
        Some("*") => {
            full.pop();
            out.push((full, None));
        }
        Some("self") => {
            full.pop();
            let name = alias.or_else(|| full.last().cloned());
            out.push((full, name));
        }
        _ => {
            let name = alias.or_else(|| full.last().cloned());
            out.push((full, name));
        }
    }
}

fn split_path(text: &str) -> Vec<String> {
    text.split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The comma-separated items of a group, leaving nested groups whole.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// Every `name::…` path in `code` that does not continue another (`a::b` in `x::a::b` is
/// part of `x::…`), as its segments.
fn inline_paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut at = 0;
    while let Some(offset) = code[at..].find("::") {
        let colons = at + offset;
        at = colons + 2;
        let start = code[..colons]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        if start == colons {
            continue;
        }
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c == ':' || c == '$') {
            continue;
        }
        let end = code[start..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .map_or(code.len(), |i| start + i);
        found.push(split_path(&code[start..end]));
        at = end.max(at);
    }
    found
}

// ---------------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------------

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

/// Every import edge: (importing file, imported file, the path as written).
fn edges(sources: &[Source]) -> Vec<(Module, Module, String)> {
    let krate = Crate::new(sources);
    let mut out = Vec::new();
    for source in sources {
        for (written, target) in krate.imports(source) {
            out.push((source.module.clone(), target, written));
        }
    }
    out
}

/// Each part imports only the parts the page's table allows, and every part it allows (the table
/// says what is, not what could be); every part has a row.
#[test]
fn parts_import_only_what_the_design_page_allows() {
    let sources = sources();
    let allowed = allowed_imports(&design_page());
    let parts: BTreeSet<&str> = sources.iter().map(|s| part(&s.module)).collect();
    for from in &parts {
        assert!(
            *from == "lib" || allowed.contains_key(*from),
            "src/{from} is a part without a row in docs/design.md's imports table"
        );
    }
    for listed in allowed.keys() {
        assert!(
            parts.contains(listed.as_str()),
            "docs/design.md's imports table has a row for `{listed}`, which is no part of src/"
        );
    }
    let mut broken = BTreeSet::new();
    let mut used: BTreeSet<(&str, &str)> = BTreeSet::new();
    let edges = edges(&sources);
    for (from, to, path) in &edges {
        let (a, b) = (part(from), part(to));
        if a == "lib" || a == b {
            continue;
        }
        if allowed[a].contains(b) {
            used.insert((a, b));
            continue;
        }
        broken.insert(format!(
            "{} uses {path} ({}): docs/design.md lets {a} import only {:?}",
            display(from),
            display(to),
            allowed[a]
        ));
    }
    for (a, imports) in &allowed {
        for b in imports {
            if !used.contains(&(a.as_str(), b.as_str())) {
                broken.insert(format!(
                    "docs/design.md lets {a} import {b}, which it does not: remove it from the table"
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "import rules broken:\n{}",
        broken.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// No loops: not between parts, and not between files, a folder's `mod.rs` included (it
/// declares and re-exports; a path through a re-export goes to the file that defines the name).
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
    let file_edges: BTreeSet<(String, String)> = edges
        .iter()
        .filter(|(a, _, _)| !a.is_empty())
        .map(|(a, b, _)| (display(a), display(b)))
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

/// A folder's `mod.rs` holds only `mod` declarations, `use` re-exports, attributes and
/// comments: its code lives in a file of its own, named for what it does.
#[test]
fn a_folders_mod_rs_only_declares_and_re_exports() {
    let src = root().join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut broken = Vec::new();
    for path in files.iter().filter(|p| p.ends_with("mod.rs")) {
        let name = path
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if let Some(item) = first_item_not_a_declaration(&fs::read_to_string(path).unwrap()) {
            broken.push(format!("src/{name} holds `{item}`"));
        }
    }
    assert!(
        broken.is_empty(),
        "a folder's mod.rs only declares and re-exports (docs/design.md); move the code into a \
         file of its own:\n{}",
        broken.join("\n")
    );
}

/// The first item of a `mod.rs` that is neither a `mod` declaration nor a `use`, shortened.
fn first_item_not_a_declaration(text: &str) -> Option<String> {
    let code: String = text
        .lines()
        .map(without_comment)
        .collect::<Vec<_>>()
        .join(" ");
    let mut rest = code.trim();
    while !rest.is_empty() {
        rest = skip_attributes(rest);
        if rest.is_empty() {
            break;
        }
        let item = rest.split_once(';').map_or(rest, |(item, _)| item);
        let words = item
            .trim_start_matches("pub(crate)")
            .trim_start_matches("pub(super)");
        let words = words.trim_start_matches("pub").trim_start();
        let declaration = words
            .strip_prefix("mod ")
            .is_some_and(|name| name.trim().chars().all(|c| c.is_alphanumeric() || c == '_'))
            || words.starts_with("use ");
        if !declaration || !rest.contains(';') {
            return Some(item.chars().take(60).collect::<String>().trim().to_string());
        }
        rest = rest[item.len() + 1..].trim_start();
    }
    None
}

/// `text` without the attributes at its start (`#[…]`, `#![…]`).
fn skip_attributes(text: &str) -> &str {
    let mut rest = text.trim_start();
    while let Some(after) = rest
        .strip_prefix("#!")
        .or_else(|| rest.strip_prefix('#'))
        .filter(|after| after.starts_with('['))
    {
        let mut depth = 0;
        let end = after
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '[' => depth += 1,
                    ']' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map_or(after.len(), |(i, _)| i + 1);
        rest = after[end..].trim_start();
    }
    rest
}

/// The configuration and routing do no I/O: no file, socket, thread, process, environment or
/// name lookup. The configuration's parsers are given the text and the service-name lookup.
#[test]
fn configuration_and_routing_do_no_io() {
    let io = [
        "fs::",
        "File",
        "OpenOptions",
        "read_to_string",
        "env::",
        "TcpStream",
        "TcpListener",
        "UdpSocket",
        "UnixStream",
        "UnixListener",
        "UnixDatagram",
        "ToSocketAddrs",
        "to_socket_addrs",
        "thread::",
        "process::",
        "rustix",
        "socket2",
        "nix",
        "libc",
        "\"/etc/services\"",
        "\"/proc",
    ];
    let broken = uses(|part| matches!(part, "config" | "route"), &io);
    assert!(
        broken.is_empty(),
        "configuration and routing do no I/O (docs/design.md); do it in `sys` or `serve`:\n{}",
        broken.join("\n")
    );
}

/// Where the files of the parts `within` takes use one of `needles`: `src/FILE uses NEEDLE`.
fn uses(within: impl Fn(&str) -> bool, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for source in sources().iter().filter(|s| within(part(&s.module))) {
        for needle in needles {
            if contains_word(&source.code, needle) {
                found.push(format!("src/{} uses {needle}", source.name));
            }
        }
    }
    found
}

/// Whether `needle` occurs in `text` as a whole word: not inside a longer name.
fn contains_word(text: &str, needle: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        let starts_a_word = !before.is_some_and(is_word);
        let ends_a_word = !(needle.ends_with(is_word) && after.is_some_and(is_word));
        starts_a_word && ends_a_word
    })
}

/// The library reads no environment variable: an embedding program never set them. What they
/// switch is configuration or an argument, which the binary maps them to.
#[test]
fn the_library_reads_no_environment_variable() {
    let reads = [
        "env::var",
        "env::var_os",
        "env::vars",
        "env::vars_os",
        "env::remove_var",
        "env::set_var",
        "env::temp_dir",
        "env::{",
    ];
    let broken = uses(|part| part != "test_support", &reads);
    assert!(
        broken.is_empty(),
        "the library reads no environment variable (docs/design.md); take it as a `Config` field \
         or an argument, and let the binary read the variable:\n{}",
        broken.join("\n")
    );
}

/// No two types share a name anywhere in `src/` (the library and the binary, private types and
/// those of unit tests included): a reader who meets a name knows which type it is.
#[test]
fn no_two_types_share_a_name() {
    let mut files = Vec::new();
    collect(&root().join("src"), &mut files);
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in &files {
        let name = path
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for line in fs::read_to_string(path).unwrap().lines() {
            if let Some(declared) = type_declared(line) {
                seen.entry(declared).or_default().push(name.clone());
            }
        }
    }
    let shared: Vec<String> = seen
        .into_iter()
        .filter(|(_, files)| files.len() > 1)
        .map(|(name, files)| format!("{name}: {}", files.join(", ")))
        .collect();
    assert!(
        shared.is_empty(),
        "one name for one thing (docs/design.md); these types share a name:\n{}",
        shared.join("\n")
    );
}

/// The name of the type a line declares (`struct`, `enum`, `union`, `trait`, or a `type` alias
/// that is not a trait's associated type), if it declares one.
fn type_declared(line: &str) -> Option<String> {
    const ASSOCIATED: &[&str] = &["Err", "Error", "Output", "Item", "Target", "IntoIter"];
    let mut rest = without_comment(line).trim_start();
    if let Some(after) = rest.strip_prefix("pub") {
        rest = match after.strip_prefix('(') {
            Some(scoped) => scoped.split_once(')')?.1,
            None => after,
        }
        .trim_start();
    }
    let (keyword, rest) = rest.split_once(' ')?;
    if !["struct", "enum", "union", "trait", "type"].contains(&keyword) {
        return None;
    }
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let name = &rest[..end];
    let is_type_name = name.starts_with(|c: char| c.is_ascii_uppercase());
    (is_type_name && !(keyword == "type" && ASSOCIATED.contains(&name))).then(|| name.to_string())
}

/// The binary forbids unsafe code, and changes its environment in one function only, the one it
/// calls at start before any thread (`remove_var` is unsafe from Rust 2024 on for that reason).
#[test]
fn the_binary_is_safe_code_and_changes_its_environment_once() {
    let bin = root().join("src/bin/tcp-router");
    let main = fs::read_to_string(bin.join("main.rs")).unwrap();
    assert!(
        main.lines()
            .any(|line| line.trim() == "#![forbid(unsafe_code)]"),
        "src/bin/tcp-router/main.rs lacks #![forbid(unsafe_code)]"
    );
    let changes = ["env::remove_var", "env::set_var", "ListenFd::from_env"];
    let mut places = BTreeSet::new();
    let mut files = Vec::new();
    collect(&bin, &mut files);
    for path in files {
        let code = code_of(&fs::read_to_string(&path).unwrap());
        let mut function = String::from("(outside any function)");
        for line in code.lines() {
            if let Some(name) = function_name(line) {
                function = name;
            }
            if changes.iter().any(|needle| line.contains(needle)) {
                let file = path.file_name().unwrap().to_string_lossy();
                places.insert(format!("{file}: fn {function}"));
            }
        }
    }
    assert!(
        places.len() <= 1,
        "the binary changes its environment in more than one function (docs/design.md); do it \
         all in the start-up one:\n{}",
        places.into_iter().collect::<Vec<_>>().join("\n")
    );
}

/// The name of the function a line starts, if it starts one.
fn function_name(line: &str) -> Option<String> {
    let (_, after) = line.split_once("fn ")?;
    let before = &line[..line.len() - after.len() - 3];
    let before = before.trim();
    if !(before.is_empty() || before.starts_with("pub") || before.ends_with("const")) {
        return None;
    }
    let name: String = after
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
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

/// Every invariant the page states is one a test here checks, and the other way round: a rule
/// added to the page without a check, or a check whose rule left the page, fails here.
#[test]
fn the_page_states_exactly_the_rules_checked_here() {
    let titles = invariant_titles(&design_page());
    let on_page: BTreeSet<&str> = titles.iter().map(String::as_str).collect();
    let checked: BTreeSet<&str> = CHECKED.iter().copied().collect();
    let unchecked: Vec<&&str> = on_page.difference(&checked).collect();
    let missing: Vec<&&str> = checked.difference(&on_page).collect();
    assert!(
        unchecked.is_empty() && missing.is_empty(),
        "docs/design.md's invariants and tests/architecture.rs disagree: on the page but not \
         checked {unchecked:?}; checked but not on the page {missing:?}"
    );
}

/// The checker itself: use trees, inline paths, comments, re-exports and the table are read as
/// intended, and a loop is found.
#[test]
fn the_checker_reads_paths_re_exports_tables_and_loops() {
    let code = code_of(
        "use crate::{config::{Config, acl::Rule as R}, proto};\n// crate::serve in a comment\nlet x = super::copy::f();\npub(crate) use pump::{relay, Carried};\n#[cfg(test)]\nmod tests { use crate::serve; }\n",
    );
    let statements = use_statements(&code);
    assert_eq!(
        statements,
        [
            "crate::{config::{Config, acl::Rule as R}, proto}",
            "pump::{relay, Carried}"
        ]
    );
    let path = |p: &str| split_path(p);
    assert_eq!(
        use_leaves(&statements[0]),
        [
            (path("crate::config::Config"), Some("Config".to_string())),
            (path("crate::config::acl::Rule"), Some("R".to_string())),
            (path("crate::proto"), Some("proto".to_string())),
        ]
    );
    assert_eq!(
        inline_paths(&without_use_statements(&code)),
        [path("super::copy::f")]
    );
    let module = |p: &str| split_path(p);
    let sources = [
        ("", "pub use serve::Handle;"),
        ("serve", "mod server;\npub use server::Handle;"),
        ("serve::server", "pub struct Handle;"),
        ("admin", "use crate::Handle;"),
    ]
    .map(|(name, text)| Source {
        module: module(name),
        name: name.to_string(),
        code: code_of(text),
    });
    let krate = Crate::new(&sources);
    assert_eq!(
        krate.imports(&sources[3]),
        [("crate::Handle".to_string(), module("serve::server"))]
    );
    assert_eq!(
        allowed_imports(&format!(
            "{TABLE_HEADING}\n\n| part | may import |\n|---|---|\n| `a`, `b` | {NOTHING} |\n| `c` | `a`, `b` |\n\nAfter."
        )),
        BTreeMap::from([
            ("a".to_string(), BTreeSet::new()),
            ("b".to_string(), BTreeSet::new()),
            ("c".to_string(), BTreeSet::from(["a".to_string(), "b".into()])),
        ])
    );
    assert_eq!(
        first_item_not_a_declaration(
            "//! Doc.\n#[cfg(x)]\npub(crate) mod a;\npub use a::{b,\n c};\n"
        ),
        None
    );
    assert_eq!(
        first_item_not_a_declaration("mod a;\npub fn f() {}\n").as_deref(),
        Some("pub fn f() {}")
    );
    assert!(contains_word("use std::fs::File;", "fs::"));
    assert_eq!(
        type_declared("pub(crate) struct Record {").as_deref(),
        Some("Record")
    );
    assert_eq!(type_declared("    enum Spot {").as_deref(), Some("Spot"));
    assert_eq!(
        type_declared("pub type Relayed = Result<(), ()>;").as_deref(),
        Some("Relayed")
    );
    assert_eq!(type_declared("    type Err = AddrError;"), None);
    assert_eq!(type_declared("    let struct_name = 1;"), None);
    assert!(!contains_word("pub logfile: Option<LogFile>", "File"));
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
