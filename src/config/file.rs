//! The config file parser: rinetd.conf syntax plus tcp-router's `route` rule, text in, AST out.
//!
//! Pure: no DNS, no sockets, no file reads (a port's service name is looked up by the function
//! it is given). Every error in the file is collected, each
//! with its line number. See docs/config.md for the format reference.
//!
//! rinetd syntax, as rinetd(8) and rinetd 0.73's grammar (parse.peg) define it:
//! - one directive per line; `#` starts a comment; blank lines are ignored; fields are
//!   separated by spaces or tabs;
//! - `bindaddress bindport connectaddress connectport [options]`, addresses IPv4, IPv6
//!   (brackets optional), `0` (= 0.0.0.0) or host names; ports numbers or service names
//!   with an optional `/tcp` or `/udp`; options `[src=ADDR]` and, on a UDP rule,
//!   `[timeout=SECONDS]` (the flow's idle timeout, 72 seconds unless given or given as 0);
//! - `allow PATTERN` / `deny PATTERN`: global before the first forwarding rule, else
//!   attached to the most recent forwarding rule;
//! - `logfile PATH`, `pidlogfile PATH` (optionally in double quotes), `logcommon`.
//!
//! Where we refuse what rinetd accepts (all reported as errors, never ignored):
//! - a rule mixing `/udp` and `/tcp` (rinetd translates between them; tcp-router forwards UDP to
//!   UDP and TCP to TCP);
//! - `[timeout=N]` on a TCP rule: rinetd reads it for UDP sockets only, so there it could only
//!   mislead;
//! - `[src=NAME]`: `src` must be an IP address, as the parser does no DNS;
//! - port 0 (except to listen on, where it means any free port), and rules whose listen address is already used by a rinetd-style rule;
//! - port ranges (`9000-9099`): rinetd has none, so a rinetd line takes one port; ranges are
//!   written on `route` lines;
//! - a second `logfile`/`pidlogfile` line (rinetd silently keeps the last).
//!
//! Also different: `#` starts a comment even inside an unquoted path (rinetd would make
//! it part of the path; quote the path to keep a `#`), and quotes around a path are
//! removed (rinetd 0.73 keeps them as part of the file name).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::acl::{self, Action, Pattern};
use super::addr::{
    parse_host, parse_ip, parse_port, split_weight, Host, HostPort, Services, UNIX_PREFIX,
};
use super::model::Transport;
use super::names::NamePattern;
use super::protocol::Protocol;
use super::range::{rinetd_range, HostPorts};
use super::settings::{positive_duration, Overrides};
use super::text::printable;

/// One forwarding rule: a rinetd line or a `route` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleDef {
    /// 1-based line number in the file.
    pub line: usize,
    /// Where to listen: one port, or a range on a `route` line.
    pub listen: HostPorts,
    /// Where to forward, in failover order (a rinetd line has exactly one); each a range of the
    /// listen range's length, or one port.
    pub upstreams: Vec<HostPorts>,
    /// `backup=UPSTREAM[,UPSTREAM...]`: tried only when no primary accepts.
    pub backups: Vec<HostPorts>,
    /// The weight of each upstream (`*W`, 1 without), one per entry of `upstreams`.
    pub weights: Vec<u32>,
    /// The weight of each backup, one per entry of `backups`.
    pub backup_weights: Vec<u32>,
    /// `allow`/`deny` lines written after this rule (and before the next one).
    pub acl: Vec<acl::Rule>,
    /// The settings the rule gives (`key=value` on a route line, `[src=]` on a rinetd line).
    pub settings: Overrides,
    /// `sni=PATTERN`: route TLS clients by server name.
    pub sni: Option<NamePattern>,
    /// `host=PATTERN`: route HTTP clients by Host header.
    pub host: Option<NamePattern>,
    /// `alpn=PROTO`: route only TLS clients offering this ALPN protocol.
    pub alpn: Option<String>,
    /// `proto=ssh|tls|http` or `prefix=TEXT`: route a whole protocol, or clients by first bytes.
    pub protocol: Option<Protocol>,
    /// `wait=DURATION`: how long the `proto=silent` route lets a client say nothing.
    pub wait: Option<Duration>,
    /// `min_bytes=N`: how many first bytes the `regex=` route's expression sees.
    pub min_bytes: Option<String>,
    /// True when written in rinetd syntax (`bindaddress bindport connectaddress connectport`).
    pub rinetd: bool,
    /// TCP, or UDP when the listen port is written with `/udp`.
    pub transport: Transport,
    /// `max_flows=N` (UDP only): the listener's cap on flows at once.
    pub max_flows: Option<usize>,
}

/// A parsed config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConfigFile {
    /// `allow`/`deny` lines written before the first rule.
    pub global_acl: Vec<acl::Rule>,
    /// The forwarding rules, in file order.
    pub rules: Vec<RuleDef>,
    /// `logfile PATH`.
    pub logfile: Option<PathBuf>,
    /// `logcommon`: write the Apache-like log format instead of the tab-separated one.
    pub logcommon: bool,
    /// `pidlogfile PATH`.
    pub pidlogfile: Option<PathBuf>,
    /// `admin ADDR PORT`: the admin endpoint, with the line it is on.
    pub admin: Option<(HostPort, usize)>,
    /// `admin_allow PATTERN` lines: who may ask the admin endpoint.
    pub admin_allow: Vec<Pattern>,
}

/// One problem in the file; Display is `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// The file, as given to [`parse`].
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// Lowercase description naming the offending value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Parses config file text (`path` is only used in error messages), looking ports given by name
/// up in `services`. Returns every error in the file, sorted by line, or the parsed file when
/// there are none.
pub(crate) fn parse(
    path: &Path,
    text: &str,
    services: Services,
) -> Result<ConfigFile, Vec<ConfigError>> {
    let mut p = Parser {
        path,
        services,
        cfg: ConfigFile::default(),
        errors: Vec::new(),
        acl_target: AclTarget::Global,
        logfile_line: None,
        pidlogfile_line: None,
        admin_allow_line: None,
    };
    // A byte-order mark some editors write is not part of the first directive.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        p.line(i + 1, raw);
    }
    p.check_listeners();
    p.check_admin();
    if p.errors.is_empty() {
        Ok(p.cfg)
    } else {
        // Stable sort: errors of one line stay in the order they were found.
        p.errors.sort_by_key(|e| e.line);
        Err(p.errors)
    }
}

/// Where the next `allow`/`deny` line goes.
enum AclTarget {
    /// Before any rule.
    Global,
    /// After a rule that parsed: to `cfg.rules.last()`.
    LastRule,
    /// After a rule that failed: checked, then dropped (it must not land on another rule).
    Discard,
}

struct Parser<'a> {
    path: &'a Path,
    services: Services,
    cfg: ConfigFile,
    errors: Vec<ConfigError>,
    acl_target: AclTarget,
    logfile_line: Option<usize>,
    pidlogfile_line: Option<usize>,
    /// The first `admin_allow` line, for the message when there is no `admin` line.
    admin_allow_line: Option<usize>,
}

/// A field of a line; `start`/`end` are byte offsets in the comment-free line.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    text: &'a str,
    start: usize,
    end: usize,
    quoted: bool,
}

/// The line without its comment: `#` outside double quotes starts a comment.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// Splits on spaces and tabs; a field starting with `"` runs to the next `"`.
fn tokenize(line: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = line.char_indices().peekable();
    while let Some(&(start, c)) = rest.peek() {
        if is_blank(c) {
            rest.next();
            continue;
        }
        let tok = if c == '"' {
            let close = line[start + 1..]
                .find('"')
                .ok_or_else(|| format!("unterminated quote in '{}'", line[start..].trim_end()))?;
            let end = start + 1 + close + 1;
            if line[end..].chars().next().is_some_and(|c| !is_blank(c)) {
                return Err(format!(
                    "text after closing quote in '{}'",
                    line[start..].trim_end()
                ));
            }
            Token {
                text: &line[start + 1..end - 1],
                start,
                end,
                quoted: true,
            }
        } else {
            let end = line[start..]
                .find(is_blank)
                .map_or(line.len(), |n| start + n);
            let text = &line[start..end];
            if text.contains('"') {
                return Err(format!("unexpected quote in '{text}'"));
            }
            Token {
                text,
                start,
                end,
                quoted: false,
            }
        };
        while rest.peek().is_some_and(|&(i, _)| i < tok.end) {
            rest.next();
        }
        out.push(tok);
    }
    Ok(out)
}

const USAGE_RINETD: &str = "bindaddress bindport connectaddress connectport [src=ADDR]";
const USAGE_ROUTE: &str = "route LISTEN UPSTREAM[,UPSTREAM...] [key=value ...]";

impl Parser<'_> {
    fn err(&mut self, line: usize, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line,
            message: message.into(),
        });
    }

    /// Handles one physical line.
    fn line(&mut self, n: usize, raw: &str) {
        let content = strip_comment(raw);
        let toks = match tokenize(content) {
            Ok(t) => t,
            Err(m) => return self.err(n, m),
        };
        let Some(first) = toks.first() else { return };
        let is_path_line = matches!(first.text, "logfile" | "pidlogfile") && !first.quoted;
        if !is_path_line && toks.iter().any(|t| t.quoted) {
            return self.err(
                n,
                "quotes are only allowed around logfile and pidlogfile paths",
            );
        }
        match first.text {
            "allow" | "deny" => self.acl_line(n, &toks),
            "logfile" | "pidlogfile" => self.path_line(n, &toks),
            "logcommon" if toks.len() == 1 => self.cfg.logcommon = true,
            "logcommon" => self.err(n, "'logcommon' takes no value"),
            "route" => self.rule_result(n, route_rule(n, &toks, self.services)),
            // Three fields: rinetd's forwarding rules have four or more, so a bind host named
            // `admin` still reads as one.
            "admin" if toks.len() <= 3 => self.admin_line(n, &toks),
            "admin_allow" => self.admin_allow_line(n, &toks),
            _ if toks.len() < 4 && looks_like_a_rule(&toks) => self.err(
                n,
                format!(
                    "a forwarding rule needs 4 fields, '{USAGE_RINETD}'; this line has {}",
                    toks.len()
                ),
            ),
            _ if toks.len() < 4 => self.err(
                n,
                format!(
                    "unknown directive '{}' (expected '{USAGE_RINETD}', 'route', 'allow', 'deny', \
                     'logfile', 'pidlogfile', 'logcommon', 'admin' or 'admin_allow')",
                    first.text
                ),
            ),
            _ => self.rule_result(n, rinetd_rule(n, content, &toks, self.services)),
        }
    }

    /// Records a parsed rule (later allow/deny lines attach to it) or its errors.
    fn rule_result(&mut self, n: usize, result: Result<RuleDef, Vec<String>>) {
        match result {
            Ok(rule) => {
                self.cfg.rules.push(rule);
                self.acl_target = AclTarget::LastRule;
            }
            Err(messages) => {
                for m in messages {
                    self.err(n, m);
                }
                self.acl_target = AclTarget::Discard;
            }
        }
    }

    fn acl_line(&mut self, n: usize, toks: &[Token]) {
        let action = if toks[0].text == "allow" {
            Action::Allow
        } else {
            Action::Deny
        };
        if toks.len() != 2 {
            return self.err(
                n,
                format!("'{action}' takes exactly one pattern: {action} PATTERN"),
            );
        }
        let pattern: Pattern = match toks[1].text.parse() {
            Ok(p) => p,
            Err(e) => return self.err(n, format!("{e}")),
        };
        let rule = acl::Rule { action, pattern };
        match self.acl_target {
            AclTarget::Global => self.cfg.global_acl.push(rule),
            AclTarget::LastRule => {
                if let Some(last) = self.cfg.rules.last_mut() {
                    last.acl.push(rule);
                }
            }
            AclTarget::Discard => {}
        }
    }

    /// `admin ADDR PORT`, in rinetd's two fields for an address.
    fn admin_line(&mut self, n: usize, toks: &[Token]) {
        if toks.len() != 3 {
            return self.err(
                n,
                "'admin' takes an address and a port: admin 127.0.0.1 9901",
            );
        }
        if let Some((_, first)) = &self.cfg.admin {
            let first = *first;
            return self.err(n, format!("'admin' given twice (first on line {first})"));
        }
        let host = rinetd_host("admin address", toks[1].text);
        let port = parse_port(toks[2].text, self.services).map_err(|e| format!("admin port: {e}"));
        match (host, port) {
            (Ok(host), Ok(port)) => self.cfg.admin = Some((HostPort { host, port }, n)),
            (host, port) => {
                for e in [host.err(), port.err()].into_iter().flatten() {
                    self.err(n, e);
                }
            }
        }
    }

    /// An allow list without an endpoint would silently guard nothing.
    fn check_admin(&mut self) {
        if self.cfg.admin.is_none() && !self.cfg.admin_allow.is_empty() {
            let line = self.admin_allow_line.unwrap_or(1);
            self.err(
                line,
                "'admin_allow' without an 'admin ADDR PORT' line: it would restrict nothing",
            );
        }
    }

    /// `admin_allow PATTERN`.
    fn admin_allow_line(&mut self, n: usize, toks: &[Token]) {
        if toks.len() != 2 {
            return self.err(
                n,
                "'admin_allow' takes exactly one pattern: admin_allow PATTERN",
            );
        }
        self.admin_allow_line.get_or_insert(n);
        match toks[1].text.parse::<Pattern>() {
            Ok(pattern) => self.cfg.admin_allow.push(pattern),
            Err(e) => self.err(n, e.to_string()),
        }
    }

    fn path_line(&mut self, n: usize, toks: &[Token]) {
        let key = toks[0].text;
        if toks.len() != 2 {
            return self.err(
                n,
                format!("'{key}' takes exactly one path (quote it if it has spaces)"),
            );
        }
        if toks[1].text.is_empty() {
            return self.err(n, format!("'{key}' path is empty"));
        }
        let (slot, seen) = if key == "logfile" {
            (&mut self.cfg.logfile, &mut self.logfile_line)
        } else {
            (&mut self.cfg.pidlogfile, &mut self.pidlogfile_line)
        };
        if let Some(first) = *seen {
            return self.err(n, format!("'{key}' given twice (first on line {first})"));
        }
        *slot = Some(PathBuf::from(toks[1].text));
        *seen = Some(n);
    }
}

/// A short line that reads as a forwarding rule missing a field: it starts with an address
/// (an IP literal, rinetd's `0`, a dotted name) or its second field is a port number.
fn looks_like_a_rule(toks: &[Token]) -> bool {
    let first = toks[0].text;
    let second_is_port = toks
        .get(1)
        .is_some_and(|t| !t.text.is_empty() && t.text.bytes().all(|b| b.is_ascii_digit()));
    first == "0" || first.contains(['.', ':']) || second_is_port
}

/// Port 0 cannot be listened on predictably nor connected to; rinetd refuses it too.
fn nonzero_port(what: &str, text: &str, port: u16) -> Result<u16, String> {
    if port == 0 {
        Err(format!("invalid {what} '{text}': port 0 is not allowed"))
    } else {
        Ok(port)
    }
}

/// A rinetd host field: rinetd's grammar also takes a bare `0` for 0.0.0.0.
fn rinetd_host(what: &str, text: &str) -> Result<Host, String> {
    if text == "0" {
        return Ok(Host::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    }
    if text.starts_with(UNIX_PREFIX) {
        return Err(format!(
            "{what} '{}': a rinetd rule has a host and a port; write a Unix socket in a route line \
             (route LISTEN UPSTREAM, as in 'route 127.0.0.1:8080 unix:/run/app.sock')",
            printable(text)
        ));
    }
    parse_host(text).map_err(|e| format!("{what}: {e}"))
}

/// A rinetd port field: number or service name, optional `/tcp` or `/udp` (which says the
/// transport; none is TCP, as in rinetd).
fn rinetd_port(what: &str, text: &str, services: Services) -> Result<(u16, Transport), String> {
    if text.is_empty() {
        return Err(format!("{what} is missing (expected {USAGE_RINETD})"));
    }
    let (port_text, transport) = split_transport(text);
    if let Some(why) = rinetd_range(port_text) {
        return Err(format!("{what}: {why}"));
    }
    let port = parse_port(port_text, services).map_err(|e| format!("{what}: {e}"))?;
    if what == "bind port" {
        // As on `route` lines, port 0 to listen on means any free port (logged at start).
        return Ok((port, transport));
    }
    Ok((nonzero_port(what, text, port)?, transport))
}

/// `TEXT/udp` is `TEXT` for UDP; anything else is TCP, as written (`/tcp` is the port parser's).
fn split_transport(text: &str) -> (&str, Transport) {
    match text.strip_suffix("/udp") {
        Some(rest) => (rest, Transport::Udp),
        None => (text, Transport::Tcp),
    }
}

/// rinetd's name of a transport, in messages.
fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "udp",
        _ => "tcp",
    }
}

/// The value, or `None` after recording the error.
fn take<T>(r: Result<T, String>, errors: &mut Vec<String>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

/// Parses `bindaddress bindport connectaddress connectport [options]`.
fn rinetd_rule(
    n: usize,
    content: &str,
    toks: &[Token],
    services: Services,
) -> Result<RuleDef, Vec<String>> {
    // rinetd allows the options right after the port (`80[src=...]`), so split there.
    let port_tok = toks[3];
    let (connect_port, options_text) = match port_tok.text.find('[') {
        Some(k) => (&port_tok.text[..k], &content[port_tok.start + k..]),
        None => (port_tok.text, &content[port_tok.end..]),
    };
    let mut errors = Vec::new();
    let bind_host = take(rinetd_host("bind address", toks[0].text), &mut errors);
    let bind_port = take(
        rinetd_port("bind port", toks[1].text, services),
        &mut errors,
    );
    let connect_host = take(rinetd_host("connect address", toks[2].text), &mut errors);
    let connect_text = connect_port;
    let connect_port = take(
        rinetd_port("connect port", connect_port, services),
        &mut errors,
    );
    if let (Some((_, bind)), Some((_, connect))) = (bind_port, connect_port) {
        if bind != connect {
            errors.push(format!(
                "invalid connect port '{connect_text}': the bind port is {}, the connect port \
                 {}; rinetd translates between UDP and TCP, tcp-router forwards each to its own \
                 kind (write /{} on both ports)",
                transport_name(bind),
                transport_name(connect),
                transport_name(bind)
            ));
        }
    }
    let transport = bind_port.map_or(Transport::Tcp, |(_, t)| t);
    let options = rinetd_options(options_text.trim(), transport, &mut errors);
    match (bind_host, bind_port, connect_host, connect_port) {
        (Some(bh), Some((bp, _)), Some(ch), Some((cp, _))) if errors.is_empty() => Ok(RuleDef {
            line: n,
            listen: HostPorts::single(HostPort { host: bh, port: bp }),
            upstreams: vec![HostPorts::single(HostPort { host: ch, port: cp })],
            backups: Vec::new(),
            weights: vec![1],
            backup_weights: Vec::new(),
            acl: Vec::new(),
            settings: Overrides {
                src: options.src,
                idle_timeout: options.timeout.map(Some),
                ..Overrides::default()
            },
            sni: None,
            host: None,
            alpn: None,
            protocol: None,
            wait: None,
            min_bytes: None,
            rinetd: true,
            transport,
            max_flows: None,
        }),
        _ => Err(errors),
    }
}

/// What a rinetd rule's options say.
#[derive(Debug, Default)]
struct RinetdOptions {
    /// `src=ADDR`.
    src: Option<IpAddr>,
    /// `timeout=N`, in seconds (UDP rules only); 0 is rinetd's default, so `None`.
    timeout: Option<std::time::Duration>,
}

/// Parses rinetd's `[key=value, ...]` (spaces allowed around `=` and `,`) on a rule of
/// `transport`.
fn rinetd_options(text: &str, transport: Transport, errors: &mut Vec<String>) -> RinetdOptions {
    let mut options = RinetdOptions::default();
    if text.is_empty() {
        return options;
    }
    let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) else {
        let msg = if text.starts_with('[') {
            format!("invalid options '{text}': missing ']' at the end of the line")
        } else {
            format!(
                "unexpected '{text}' after the connect port (options go in brackets: [src=ADDR])"
            )
        };
        errors.push(msg);
        return options;
    };
    let mut seen = HashSet::new();
    for item in inner.split(',').map(str::trim) {
        let Some((key, value)) = item.split_once('=').map(|(k, v)| (k.trim(), v.trim())) else {
            errors.push(format!(
                "invalid option '{item}': expected key=value, as in [src=ADDR]"
            ));
            continue;
        };
        if !seen.insert(key) {
            errors.push(format!("option '{key}' given twice"));
            continue;
        }
        match key {
            "src" => match parse_ip(value) {
                Ok(ip) => options.src = Some(ip),
                Err(why) => errors.push(format!("invalid src '{value}': {why}")),
            },
            "timeout" if transport != Transport::Udp => errors.push(format!(
                "invalid option 'timeout={value}': rinetd applies timeout only to UDP rules \
                 (ports written /udp); a TCP route takes idle_timeout="
            )),
            "timeout" => match rinetd_timeout(value) {
                Ok(timeout) => options.timeout = timeout,
                Err(why) => errors.push(format!("invalid timeout '{value}': {why}")),
            },
            _ => errors.push(format!(
                "unknown option '{key}' (the options are src=ADDR and, on a UDP rule, timeout=SECONDS)"
            )),
        }
    }
    options
}

/// rinetd's `timeout=N`: whole seconds; 0 is rinetd's default (72 seconds), so `None`.
fn rinetd_timeout(value: &str) -> Result<Option<std::time::Duration>, String> {
    let seconds: u64 = value
        .parse()
        .map_err(|_| "expected a whole number of seconds".to_string())?;
    let timeout = std::time::Duration::from_secs(seconds);
    if seconds == 0 {
        return Ok(None);
    }
    super::duration::check_duration(timeout, false).map_err(|e| e.to_string())?;
    Ok(Some(timeout))
}

/// Parses `route LISTEN UPSTREAM[,UPSTREAM...] [key=value ...]`.
fn route_rule(n: usize, toks: &[Token], services: Services) -> Result<RuleDef, Vec<String>> {
    if toks.len() < 3 {
        return Err(vec![format!(
            "'route' needs a listen address and an upstream: {USAGE_ROUTE}"
        )]);
    }
    let mut errors = Vec::new();
    // Port 0 on a listen address means "any free port" (logged at start), handy for tests and
    // ad-hoc use; rinetd-style bind ports take it too (rinetd refuses it).
    let (listen_text, transport) = split_transport(toks[1].text);
    let listen = take(
        HostPorts::parse_with(listen_text, services).map_err(|e| format!("listen address: {e}")),
        &mut errors,
    );
    let (upstreams, weights) = match udp_upstreams(toks[2].text, transport, &mut errors) {
        Some(text) => upstream_list("upstream", &text, services, &mut errors),
        None => (Vec::new(), Vec::new()),
    };
    let mut rule = RuleDef {
        line: n,
        listen: HostPorts::single(HostPort::from(std::net::SocketAddr::from((
            [0, 0, 0, 0],
            0,
        )))),
        upstreams,
        backups: Vec::new(),
        weights,
        backup_weights: Vec::new(),
        acl: Vec::new(),
        settings: Overrides::default(),
        sni: None,
        host: None,
        alpn: None,
        protocol: None,
        wait: None,
        min_bytes: None,
        rinetd: false,
        transport,
        max_flows: None,
    };
    let file_listener = toks[1].text.starts_with("unix:/");
    let mut seen = HashSet::new();
    for tok in &toks[3..] {
        let result = match tok.text.split_once('=') {
            None => Err(format!("expected key=value, found '{}'", tok.text)),
            Some((key, _)) if !is_key(key) => Err(format!(
                "unknown key '{key}' (known: {}, {}, {}, {})",
                Overrides::KEYS.join(", "),
                UPSTREAM_KEYS.join(", "),
                NAME_KEYS.join(", "),
                UDP_ONLY_KEYS.join(", ")
            )),
            Some((key, _)) if transport == Transport::Udp && !UDP_KEYS.contains(&key) => {
                Err(format!(
                    "'{key}=' is a TCP setting; a UDP route (/udp) takes {}",
                    UDP_KEYS.join("=, ")
                ) + "=")
            }
            Some((key, _)) if transport == Transport::Tcp && UDP_ONLY_KEYS.contains(&key) => Err(
                format!("'{key}=' is a UDP setting: write the listen address with /udp"),
            ),
            Some((key, _)) if SOCKET_FILE_KEYS.contains(&key) && !file_listener => Err(format!(
                "'{key}=' sets a Unix socket file's access: the listen address is no unix:/PATH"
            )),
            Some((key, _)) if !seen.insert(key) => Err(format!("key '{key}' given twice")),
            Some((key, "")) => Err(format!("key '{key}' needs a value")),
            Some((key, value)) => rule.set(key, value, services),
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
    rule.check_name_keys(&mut errors);
    if let Some(listen) = &listen {
        let members = rule.upstreams.iter().chain(&rule.backups);
        errors.extend(members.filter_map(|m| m.fits(listen).err()));
        if transport == Transport::Udp && listen.range.is_some() {
            errors.push(format!(
                "listen address {}/udp: port ranges are for TCP listeners; write one UDP rule per port",
                toks[1].text.trim_end_matches("/udp")
            ));
        }
    }
    if transport == Transport::Udp && rule.settings.idle_timeout == Some(None) {
        errors.push(
            "idle_timeout=off: a UDP flow ends only by its idle timeout, so it needs one".into(),
        );
    }
    match listen {
        Some(listen) if errors.is_empty() => Ok(RuleDef { listen, ..rule }),
        _ => Err(errors),
    }
}

/// The keys of a route line that choose the route rather than set it up.
const NAME_KEYS: [&str; 8] = [
    "sni",
    "host",
    "alpn",
    "proto",
    "prefix",
    "regex",
    "min_bytes",
    "wait",
];

/// The keys of a route line that add upstreams to it.
const UPSTREAM_KEYS: [&str; 1] = ["backup"];

/// The keys a UDP route takes; every other key is about TCP connections.
const UDP_KEYS: [&str; 4] = ["idle_timeout", "src", "reuse_port", "max_flows"];

/// The keys of a Unix socket listener's file.
const SOCKET_FILE_KEYS: [&str; 3] = ["socket_mode", "socket_owner", "socket_group"];

/// The keys only a UDP route takes.
const UDP_ONLY_KEYS: [&str; 1] = ["max_flows"];

fn is_key(key: &str) -> bool {
    Overrides::KEYS.contains(&key)
        || UPSTREAM_KEYS.contains(&key)
        || NAME_KEYS.contains(&key)
        || UDP_ONLY_KEYS.contains(&key)
}

/// A route line's upstream list as the address parser reads it: on a UDP route each upstream may
/// be written with `/udp` (removed here); on a TCP route a `/udp` upstream is an error (`None`).
fn udp_upstreams(text: &str, transport: Transport, errors: &mut Vec<String>) -> Option<String> {
    if transport == Transport::Udp {
        if let Some(item) = text.split(',').find(|item| item.starts_with(UNIX_PREFIX)) {
            errors.push(format!(
                "upstream '{item}' is a Unix stream socket; a UDP route forwards datagrams to \
                 UDP upstreams"
            ));
            return None;
        }
        let items: Vec<String> = text.split(',').map(|i| i.replacen("/udp", "", 1)).collect();
        return Some(items.join(","));
    }
    if let Some(item) = text.split(',').find(|item| item.contains("/udp")) {
        errors.push(format!(
            "upstream '{item}' is UDP, the listen address TCP; tcp-router forwards each to its \
             own kind (write the listen address with /udp too)"
        ));
        return None;
    }
    Some(text.to_string())
}

impl RuleDef {
    /// Sets one known `key=value` (not seen before on this route, value not empty).
    fn set(&mut self, key: &str, value: &str, services: Services) -> Result<(), String> {
        let pattern = || {
            value
                .parse::<NamePattern>()
                .map_err(|e| format!("{key}: {e}"))
        };
        match key {
            "backup" => {
                let mut errors = Vec::new();
                (self.backups, self.backup_weights) =
                    upstream_list("backup", value, services, &mut errors);
                if !errors.is_empty() {
                    return Err(errors.join("; "));
                }
            }
            "sni" => self.sni = Some(pattern()?),
            "host" => self.host = Some(pattern()?),
            "alpn" => {
                let alpn = alpn(value).map_err(|why| format!("invalid alpn '{value}': {why}"))?;
                self.alpn = Some(alpn)
            }
            "max_flows" => {
                let max = super::settings::parse_count(value)
                    .map_err(|why| format!("invalid max_flows '{value}': {why}"))?;
                self.max_flows = Some(max)
            }
            "proto" | "prefix" | "regex" if self.protocol.is_some() => {
                return Err("only one of proto=, prefix= and regex= can be set on one route".into())
            }
            "proto" | "prefix" | "regex" => self.protocol = Some(Protocol::parse(key, value)?),
            "min_bytes" => self.min_bytes = Some(value.to_string()),
            "wait" => self.wait = Some(positive_duration(key, value)?),
            _ => self.settings.set(key, value)?,
        }
        Ok(())
    }

    /// Combinations of name keys that make no sense on one route; `wait=` goes into the
    /// `proto=silent` route it belongs to.
    fn check_name_keys(&mut self, errors: &mut Vec<String>) {
        match (&mut self.protocol, self.wait) {
            (Some(Protocol::Silent { wait }), Some(given)) => *wait = given,
            (_, Some(_)) => errors.push("wait= is the proto=silent route's, and only its".into()),
            _ => {}
        }
        match (&mut self.protocol, &self.min_bytes) {
            (Some(Protocol::Regex(pattern)), Some(n)) => match pattern.with_min_bytes(n) {
                Ok(seeing) => *pattern = seeing,
                Err(why) => errors.push(why),
            },
            (Some(Protocol::Regex(_)), None) => errors.push(format!(
                "regex= needs min_bytes=N: how many first bytes the expression sees (1 to {})",
                crate::proto::pattern::MAX_WINDOW_BYTES
            )),
            // A regex that did not compile has said what is wrong already.
            (None, Some(_)) if errors.iter().any(|e| e.starts_with("invalid regex")) => {}
            (_, Some(_)) => errors.push("min_bytes= is the regex= route's, and only its".into()),
            _ => {}
        }
        if self.sni.is_some() && self.host.is_some() {
            errors.push(
                "sni= and host= cannot both be set on one route (tls or http, not both)".into(),
            );
        }
        if self.alpn.is_some() && self.host.is_some() {
            errors.push("alpn= is a tls setting and cannot be combined with host=".into());
        }
        if let Some(protocol) = &self.protocol {
            if self.sni.is_some() || self.host.is_some() || self.alpn.is_some() {
                errors.push(format!(
                    "{}= cannot be combined with sni=, host= or alpn= (a name route already says its protocol)",
                    protocol.key()
                ));
            }
        }
    }
}

/// An upstream or a backup: one port, or a range, or a Unix socket; port 0 is refused (a range
/// never has it).
fn host_port(what: &str, text: &str, services: Services) -> Result<HostPorts, String> {
    let hp = HostPorts::parse_with(text, services).map_err(|e| format!("{what}: {e}"))?;
    if hp.first.lacks_port() {
        nonzero_port(what, text, hp.first.port)?;
    }
    Ok(hp)
}

/// `UPSTREAM[*W][,UPSTREAM[*W]...]`: the upstreams, and the weight of each (1 without `*W`).
fn upstream_list(
    what: &str,
    text: &str,
    services: Services,
    errors: &mut Vec<String>,
) -> (Vec<HostPorts>, Vec<u32>) {
    let mut out: Vec<HostPorts> = Vec::new();
    let mut weights = Vec::new();
    for item in text.split(',') {
        if item.is_empty() {
            errors.push(format!("invalid {what} list '{text}': empty entry"));
            continue;
        }
        let parsed = split_weight(item)
            .and_then(|(address, weight)| Ok((host_port(what, address, services)?, weight)));
        match parsed {
            Ok((hp, _)) if out.contains(&hp) => {
                errors.push(format!("{what} '{item}' is listed twice"))
            }
            Ok((hp, weight)) => {
                out.push(hp);
                weights.push(weight);
            }
            Err(e) => errors.push(e),
        }
    }
    (out, weights)
}

/// ALPN protocol ids are 1–255 bytes; in a config file we take visible ASCII only.
fn alpn(value: &str) -> Result<String, String> {
    if value.len() > 255 {
        return Err("alpn protocol ids are at most 255 bytes".into());
    }
    if let Some(c) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("illegal character '{}'", c.escape_default()));
    }
    Ok(value.to_string())
}

impl Parser<'_> {
    /// rinetd's own rule for rules sharing a listen address (compared as written): a rinetd-style
    /// rule has its listener to itself. Which `route` rules may share one is the configuration's
    /// check (`config::validate`), since the command line adds routes too.
    fn check_listeners(&mut self) {
        // Per listen address: the first rule's line and the first rinetd rule's line. One pass,
        // n log n in rules.
        let mut seen: BTreeMap<String, (usize, Option<usize>)> = BTreeMap::new();
        let mut found = Vec::new();
        for b in &self.cfg.rules {
            let entry = seen.entry(format!("{}{}", b.listen, b.transport.suffix()));
            let (first, first_rinetd) = match entry {
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert((b.line, b.rinetd.then_some(b.line)));
                    continue;
                }
                std::collections::btree_map::Entry::Occupied(slot) => slot.into_mut(),
            };
            let clash = first_rinetd.or(b.rinetd.then_some(*first));
            if let Some(line) = clash {
                found.push((b.line, format!(
                    "listen address {}{} is already used by line {line}; a rinetd-style rule cannot share its listener",
                    b.listen, b.transport.suffix()
                )));
            }
            if b.rinetd && first_rinetd.is_none() {
                *first_rinetd = Some(b.line);
            }
        }
        for (line, message) in found {
            self.err(line, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::acl::Rule;
    use crate::proto::proxy::Version;
    use std::time::Duration;

    /// The services the tests name, as /etc/services lists them.
    fn services(name: &str) -> Option<u16> {
        match name {
            "http" => Some(80),
            "https" => Some(443),
            "ssh" => Some(22),
            _ => None,
        }
    }

    fn parse_text(text: &str) -> Result<ConfigFile, Vec<ConfigError>> {
        parse(Path::new("t.conf"), text, services)
    }

    fn ok(text: &str) -> ConfigFile {
        parse_text(text).unwrap_or_else(|errs| {
            let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            panic!("unexpected errors:\n{}", all.join("\n"))
        })
    }

    /// Every error as `LINE: message`.
    fn errs(text: &str) -> Vec<String> {
        match parse_text(text) {
            Ok(cfg) => panic!("expected errors, parsed {cfg:?}"),
            Err(errs) => errs
                .iter()
                .map(|e| format!("{}: {}", e.line, e.message))
                .collect(),
        }
    }

    /// The single error of a one-error text, as `LINE: message`.
    fn err1(text: &str) -> String {
        let all = errs(text);
        assert_eq!(all.len(), 1, "{all:#?}");
        all[0].clone()
    }

    fn hp(s: &str) -> HostPorts {
        s.parse().unwrap()
    }

    fn rule(action: Action, p: &str) -> Rule {
        Rule {
            action,
            pattern: p.parse().unwrap(),
        }
    }

    fn one_rule(text: &str) -> RuleDef {
        let cfg = ok(text);
        assert_eq!(cfg.rules.len(), 1);
        cfg.rules[0].clone()
    }

    fn rinetd(listen: &str, upstream: &str) -> RuleDef {
        RuleDef {
            line: 1,
            listen: hp(listen),
            upstreams: vec![hp(upstream)],
            backups: Vec::new(),
            weights: vec![1],
            backup_weights: Vec::new(),
            acl: Vec::new(),
            settings: Overrides::default(),
            sni: None,
            host: None,
            alpn: None,
            protocol: None,
            wait: None,
            min_bytes: None,
            rinetd: true,
            transport: Transport::Tcp,
            max_flows: None,
        }
    }

    /// A rinetd UDP rule, as `rinetd` builds a TCP one.
    fn rinetd_udp(listen: &str, upstream: &str) -> RuleDef {
        RuleDef {
            transport: Transport::Udp,
            ..rinetd(listen, upstream)
        }
    }

    #[test]
    fn debian_example_forwarding_lines() {
        let cases = [
            (
                "0.0.0.0     80        192.168.1.2     80",
                "0.0.0.0:80",
                "192.168.1.2:80",
            ),
            (
                "::1         80        192.168.1.2     80",
                "[::1]:80",
                "192.168.1.2:80",
            ),
            (
                "0.0.0.0     80        fe80::1         80",
                "0.0.0.0:80",
                "[fe80::1]:80",
            ),
            (
                "127.0.0.1   4000      127.0.0.1       3000",
                "127.0.0.1:4000",
                "127.0.0.1:3000",
            ),
        ];
        for (line, listen, upstream) in cases {
            assert_eq!(one_rule(line), rinetd(listen, upstream), "{line}");
        }
    }

    #[test]
    fn debian_example_udp_lines_read_as_rinetd_means_them_but_udp_to_tcp() {
        assert_eq!(
            errs("127.0.0.1   4000/udp  127.0.0.1       22           [timeout=1200]"),
            [MIXED_UDP_TCP]
        );
        let mut expected = rinetd_udp("127.0.0.1:8000", "192.168.1.2:8000");
        expected.settings.src = Some("192.168.1.2".parse().unwrap());
        expected.settings.idle_timeout = Some(Some(std::time::Duration::from_secs(1200)));
        assert_eq!(
            one_rule(
                "127.0.0.1   8000/udp  192.168.1.2     8000/udp     [src=192.168.1.2,timeout=1200]"
            ),
            expected
        );
    }

    /// The error of Debian's example `4000/udp ... 22`, UDP to TCP.
    const MIXED_UDP_TCP: &str = "1: invalid connect port '22': the bind port is udp, the connect \
        port tcp; rinetd translates between UDP and TCP, tcp-router forwards each to its own kind \
        (write /udp on both ports)";

    #[test]
    fn a_udp_rule_without_timeout_takes_rinetds_default_and_timeout_0_means_it_too() {
        for line in [
            "0.0.0.0 5353/udp 127.0.0.1 53/udp",
            "0.0.0.0 5353/udp 127.0.0.1 53/udp [timeout=0]",
        ] {
            assert_eq!(
                one_rule(line),
                rinetd_udp("0.0.0.0:5353", "127.0.0.1:53"),
                "{line}"
            );
        }
        assert_eq!(
            err1("0.0.0.0 5353/udp 127.0.0.1 53/udp [timeout=soon]"),
            "1: invalid timeout 'soon': expected a whole number of seconds"
        );
        assert_eq!(
            err1("0.0.0.0 80 127.0.0.1 80 [timeout=60]"),
            "1: invalid option 'timeout=60': rinetd applies timeout only to UDP rules (ports \
             written /udp); a TCP route takes idle_timeout="
        );
    }

    #[test]
    fn a_udp_and_a_tcp_rule_on_one_port_are_two_listeners() {
        let cfg = ok("0.0.0.0 53 127.0.0.1 5353
0.0.0.0 53/udp 127.0.0.1 5353/udp
");
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(
            err1(
                "0.0.0.0 53/udp 127.0.0.1 53/udp
0.0.0.0 53/udp 127.0.0.2 53/udp
"
            ),
            "2: listen address 0.0.0.0:53/udp is already used by line 1; a rinetd-style rule \
             cannot share its listener"
        );
    }

    #[test]
    fn a_udp_route_line_takes_only_udp_keys() {
        let rule = one_rule("route 0.0.0.0:53/udp 10.0.0.1:53/udp,10.0.0.2:53 idle_timeout=30s max_flows=100 src=10.0.0.9");
        assert_eq!(rule.transport, Transport::Udp);
        assert_eq!(rule.upstreams, [hp("10.0.0.1:53"), hp("10.0.0.2:53")]);
        assert_eq!(rule.max_flows, Some(100));
        assert_eq!(
            err1("route 0.0.0.0:53/udp 10.0.0.1:53 sni=a.example"),
            "1: 'sni=' is a TCP setting; a UDP route (/udp) takes idle_timeout=, src=, \
             reuse_port=, max_flows="
        );
        for key in [
            "proxy_protocol=v2",
            "accept_proxy=true",
            "check=connect",
            "host=a",
            "alpn=h2",
        ] {
            let line = format!("route 0.0.0.0:53/udp 10.0.0.1:53 {key}");
            assert!(err1(&line).contains("is a TCP setting"), "{key}");
        }
        assert_eq!(
            err1("route 0.0.0.0:53 10.0.0.1:53 max_flows=10"),
            "1: 'max_flows=' is a UDP setting: write the listen address with /udp"
        );
        assert_eq!(
            err1("route 0.0.0.0:53/udp 10.0.0.1:53 idle_timeout=off"),
            "1: idle_timeout=off: a UDP flow ends only by its idle timeout, so it needs one"
        );
        assert_eq!(
            err1("route 0.0.0.0:53/udp 10.0.0.1:53 max_flows=0"),
            "1: invalid max_flows '0': must be at least 1"
        );
    }

    #[test]
    fn debian_example_acl_and_log_lines() {
        let cfg = ok(
            "allow 192.168.2.*\ndeny 192.168.2.1?\nallow fe80:*\ndeny 2001:618:*:e43f\n\
                      logfile /var/log/rinetd.log\nlogcommon\n",
        );
        assert_eq!(
            cfg.global_acl,
            [
                rule(Action::Allow, "192.168.2.*"),
                rule(Action::Deny, "192.168.2.1?"),
                rule(Action::Allow, "fe80:*"),
                rule(Action::Deny, "2001:618:*:e43f"),
            ]
        );
        assert_eq!(cfg.logfile, Some(PathBuf::from("/var/log/rinetd.log")));
        assert!(cfg.logcommon);
        assert_eq!(cfg.pidlogfile, None);
    }

    /// Debian's /etc/rinetd.conf (rinetd 0.73-1) with every example uncommented.
    const DEBIAN_UNCOMMENTED: &str = "\
#
# this is the configuration file for rinetd, the internet redirection server
#
# you may specify global allow and deny rules here
# only ip addresses are matched, hostnames cannot be specified here
# the wildcards you may use are * and ?
#
allow 192.168.2.*
deny 192.168.2.1?
allow fe80:*
deny 2001:618:*:e43f


#
# forwarding rules come here
#
# you may specify allow and deny rules after a specific forwarding rule
# to apply to only that forwarding rule
#
# bindadress  bindport  connectaddress  connectport  options...
0.0.0.0     80        192.168.1.2     80
::1         80        192.168.1.2     80
0.0.0.0     80        fe80::1         80
127.0.0.1   4000      127.0.0.1       3000
127.0.0.1   4000/udp  127.0.0.1       22           [timeout=1200]
127.0.0.1   8000/udp  192.168.1.2     8000/udp     [src=192.168.1.2,timeout=1200]

# logging information
logfile /var/log/rinetd.log

# uncomment the following line if you want web-server style logfile format
logcommon
";

    #[test]
    fn debian_file_uncommented_reports_every_error_with_its_line() {
        assert_eq!(
            errs(DEBIAN_UNCOMMENTED),
            [
                "23: listen address 0.0.0.0:80 is already used by line 21; a rinetd-style rule cannot share its listener",
                MIXED_UDP_TCP.replacen("1:", "25:", 1).as_str(),
            ]
        );
    }

    #[test]
    fn man_page_examples() {
        assert_eq!(
            one_rule("206.125.69.81 80  10.1.1.2 80"),
            rinetd("206.125.69.81:80", "10.1.1.2:80")
        );
        assert_eq!(
            one_rule("0.0.0.0 23  10.1.1.2 23"),
            rinetd("0.0.0.0:23", "10.1.1.2:23")
        );
        let mut with_src = rinetd("192.168.1.1:80", "10.1.1.127:80");
        with_src.settings.src = Some("10.1.1.2".parse().unwrap());
        assert_eq!(
            one_rule("192.168.1.1 80  10.1.1.127 80  [src=10.1.1.2]"),
            with_src
        );
        assert_eq!(
            err1("206.125.69.81 80/tcp  10.1.1.2 8000/udp"),
            "1: invalid connect port '8000/udp': the bind port is tcp, the connect port udp; \
             rinetd translates between UDP and TCP, tcp-router forwards each to its own kind \
             (write /tcp on both ports)"
        );
        assert_eq!(
            errs("0.0.0.0 8000/udp  10.1.1.2 80  [timeout=3600]").len(),
            1
        );
        let cfg = ok("allow 206.125.69.*\nlogfile /var/log/rinetd.log\nlogcommon\n");
        assert_eq!(cfg.global_acl, [rule(Action::Allow, "206.125.69.*")]);
        assert_eq!(
            one_rule("206.125.69.81 80/tcp 10.1.1.2 8000/tcp"),
            rinetd("206.125.69.81:80", "10.1.1.2:8000")
        );
    }

    #[test]
    fn rinetd_address_forms() {
        assert_eq!(
            one_rule("[::1] 80 [fe80::1] 80"),
            rinetd("[::1]:80", "[fe80::1]:80")
        );
        assert_eq!(one_rule(":: 80 ::1 8080"), rinetd("[::]:80", "[::1]:8080"));
        assert_eq!(
            one_rule("0 80 127.0.0.1 8080"),
            rinetd("0.0.0.0:80", "127.0.0.1:8080")
        );
        assert_eq!(
            one_rule("localhost 80 backend.example. 8080"),
            rinetd("localhost:80", "backend.example.:8080")
        );
        assert_eq!(
            one_rule("\t0.0.0.0\t80\t127.0.0.1\t8080\t"),
            rinetd("0.0.0.0:80", "127.0.0.1:8080")
        );
    }

    #[test]
    fn rinetd_option_forms() {
        let src = |text: &str| one_rule(text).settings.src.map(|ip| ip.to_string());
        assert_eq!(
            src("0.0.0.0 80 192.0.2.1 80 [ src = 192.0.2.9 ]").as_deref(),
            Some("192.0.2.9")
        );
        assert_eq!(
            src("0.0.0.0 80 192.0.2.1 80[src=192.0.2.9]").as_deref(),
            Some("192.0.2.9")
        );
        assert_eq!(
            src("0.0.0.0 80 2001:db8::1 80 [src=2001:db8::9]").as_deref(),
            Some("2001:db8::9")
        );
        assert_eq!(
            src("0.0.0.0 80 2001:db8::1 80 [src=[2001:db8::9]]").as_deref(),
            Some("2001:db8::9")
        );
        assert_eq!(src("0.0.0.0 80 192.0.2.1 80 # [src=192.0.2.9]"), None);
    }

    #[test]
    fn rinetd_option_errors() {
        let e = |opts: &str| err1(&format!("0.0.0.0 80 192.0.2.1 80 {opts}"));
        assert_eq!(
            e("[foo=1]"),
            "1: unknown option 'foo' (the options are src=ADDR and, on a UDP rule, timeout=SECONDS)"
        );
        assert_eq!(
            e("[src]"),
            "1: invalid option 'src': expected key=value, as in [src=ADDR]"
        );
        assert_eq!(
            e("[src=gw.example]"),
            "1: invalid src 'gw.example': not an ip address (host names are not allowed here)"
        );
        assert_eq!(
            e("[src=192.0.2.9,src=192.0.2.8]"),
            "1: option 'src' given twice"
        );
        assert_eq!(
            e("[src=192.0.2.9"),
            "1: invalid options '[src=192.0.2.9': missing ']' at the end of the line"
        );
        assert_eq!(
            e("[src=192.0.2.9] x"),
            "1: invalid options '[src=192.0.2.9] x': missing ']' at the end of the line"
        );
        assert_eq!(
            e("extra"),
            "1: unexpected 'extra' after the connect port (options go in brackets: [src=ADDR])"
        );
        assert_eq!(
            err1("0.0.0.0 80 192.0.2.1 [src=192.0.2.9]"),
            "1: connect port is missing (expected bindaddress bindport connectaddress connectport [src=ADDR])"
        );
    }

    #[test]
    fn rinetd_field_errors() {
        assert!(parse(Path::new("t"), "0.0.0.0 0 192.0.2.1 80", services).is_ok());
        assert_eq!(
            err1("0.0.0.0 80 192.0.2.1 0"),
            "1: invalid connect port '0': port 0 is not allowed"
        );
        assert_eq!(
            err1("0.0.0.0 99999 192.0.2.1 80"),
            "1: bind port: invalid address '99999': port out of range (0-65535)"
        );
        assert_eq!(
            err1("300.0.0.1 80 192.0.2.1 80"),
            "1: bind address: invalid address '300.0.0.1': not a valid IPv4 address"
        );
        assert_eq!(
            err1("0.0.0.0 80 fe80::zz 80"),
            "1: connect address: invalid address 'fe80::zz': not a valid IPv6 address"
        );
        assert!(err1("0.0.0.0 nosuchservice 192.0.2.1 80")
            .starts_with("1: bind port: invalid address 'nosuchservice'"));
        assert_eq!(errs("bad_host! nope 300.1.1.1 0").len(), 4);
    }

    #[test]
    fn service_names() {
        assert_eq!(
            one_rule("0.0.0.0 http 127.0.0.1 8080/tcp"),
            rinetd("0.0.0.0:80", "127.0.0.1:8080")
        );
        assert_eq!(
            one_rule("0.0.0.0 https/tcp 127.0.0.1 ssh"),
            rinetd("0.0.0.0:443", "127.0.0.1:22")
        );
        let r = one_rule("route 127.0.0.1:http 192.0.2.1:https");
        assert_eq!(r.listen, hp("127.0.0.1:80"));
        assert_eq!(r.upstreams, [hp("192.0.2.1:443")]);
    }

    #[test]
    fn acl_attaches_to_global_or_the_most_recent_rule() {
        let cfg = ok("\
allow 192.0.2.*
deny 192.0.2.13
0.0.0.0 80 127.0.0.1 8080
allow 198.51.100.*
route 127.0.0.1:81 127.0.0.1:8081
deny 198.51.100.7
allow 203.0.113.0/24
0.0.0.0 82 127.0.0.1 8082
");
        assert_eq!(
            cfg.global_acl,
            [
                rule(Action::Allow, "192.0.2.*"),
                rule(Action::Deny, "192.0.2.13")
            ]
        );
        assert_eq!(cfg.rules[0].acl, [rule(Action::Allow, "198.51.100.*")]);
        assert_eq!(
            cfg.rules[1].acl,
            [
                rule(Action::Deny, "198.51.100.7"),
                rule(Action::Allow, "203.0.113.0/24")
            ]
        );
        assert!(cfg.rules[2].acl.is_empty());
        assert_eq!(
            cfg.rules.iter().map(|r| r.line).collect::<Vec<_>>(),
            [3, 5, 8]
        );
    }

    #[test]
    fn acl_errors() {
        assert_eq!(
            err1("allow 10.0.0.1/8"),
            "1: invalid address pattern '10.0.0.1/8': host bits are set (the network is '10.0.0.0/8')"
        );
        assert!(err1("deny host.example.com")
            .starts_with("1: invalid address pattern 'host.example.com': illegal character 'h'"));
        assert_eq!(
            err1("allow"),
            "1: 'allow' takes exactly one pattern: allow PATTERN"
        );
        assert_eq!(
            err1("deny 1.2.3.4 5.6.7.8"),
            "1: 'deny' takes exactly one pattern: deny PATTERN"
        );
        // An ACL line after a broken rule is still checked.
        assert_eq!(errs("0.0.0.0 80 192.0.2.1 0\nallow 1.2.3.4/99").len(), 2);
    }

    #[test]
    fn comments_and_blank_lines() {
        let cfg = ok("\
# full line comment
   # indented comment

\t
allow 192.0.2.*# glued comment
0.0.0.0 80 127.0.0.1 8080 # trailing comment
deny 192.0.2.1 #trailing
logfile /var/log/tcp-router.log # comment after a path
logcommon#
route 127.0.0.1:81 127.0.0.1:8081 connect_timeout=2s # done
");
        assert_eq!(cfg.global_acl, [rule(Action::Allow, "192.0.2.*")]);
        assert_eq!(cfg.rules.len(), 2);
        assert_eq!(cfg.rules[0].acl, [rule(Action::Deny, "192.0.2.1")]);
        assert_eq!(cfg.logfile, Some(PathBuf::from("/var/log/tcp-router.log")));
        assert!(cfg.logcommon);
        assert_eq!(
            cfg.rules[1].settings.connect_timeout,
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn crlf_line_endings() {
        let cfg = ok("allow 192.0.2.*\r\n0.0.0.0 80 127.0.0.1 8080\r\nlogcommon\r\n");
        assert_eq!(cfg.rules.len(), 1);
        assert!(cfg.logcommon);
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        assert_eq!(ok("\u{feff}allow 192.0.2.1\n").global_acl.len(), 1);
    }

    #[test]
    fn empty_file_is_valid() {
        assert_eq!(ok(""), ConfigFile::default());
        assert_eq!(ok("# nothing\n\n"), ConfigFile::default());
    }

    #[test]
    fn paths() {
        let cfg = ok("logfile \"/var/log/my logs/#1.log\"\npidlogfile /run/tcp-router.pid\n");
        assert_eq!(cfg.logfile, Some(PathBuf::from("/var/log/my logs/#1.log")));
        assert_eq!(cfg.pidlogfile, Some(PathBuf::from("/run/tcp-router.pid")));
        assert_eq!(
            err1("logfile"),
            "1: 'logfile' takes exactly one path (quote it if it has spaces)"
        );
        assert_eq!(
            err1("logfile a b"),
            "1: 'logfile' takes exactly one path (quote it if it has spaces)"
        );
        assert_eq!(err1("pidlogfile \"\""), "1: 'pidlogfile' path is empty");
        assert_eq!(
            err1("logfile \"/tmp/x"),
            "1: unterminated quote in '\"/tmp/x'"
        );
        assert_eq!(
            err1("logfile \"/tmp/x\"y"),
            "1: text after closing quote in '\"/tmp/x\"y'"
        );
        assert_eq!(
            err1("logfile /tmp/a\"b"),
            "1: unexpected quote in '/tmp/a\"b'"
        );
        assert_eq!(
            err1("logfile /a\nlogfile /b"),
            "2: 'logfile' given twice (first on line 1)"
        );
        assert_eq!(
            err1("pidlogfile /a\n\npidlogfile /b"),
            "3: 'pidlogfile' given twice (first on line 1)"
        );
        assert_eq!(
            err1("allow \"1.2.3.4\""),
            "1: quotes are only allowed around logfile and pidlogfile paths"
        );
        assert_eq!(err1("logcommon yes"), "1: 'logcommon' takes no value");
        assert!(ok("logcommon\nlogcommon").logcommon);
    }

    #[test]
    fn admin_lines() {
        let cfg = ok("admin 127.0.0.1 9901\nadmin_allow 10.0.0.0/8\nadmin_allow 127.0.0.1\n");
        assert_eq!(cfg.admin, Some((hp("127.0.0.1:9901").first, 1)));
        assert_eq!(cfg.admin_allow.len(), 2);
        // Four fields: a rinetd rule whose bind host is named `admin`.
        assert_eq!(ok("admin 80 127.0.0.1 8080").rules.len(), 1);
        assert_eq!(
            errs("admin 127.0.0.1 9901\nadmin ::1 9902"),
            ["2: 'admin' given twice (first on line 1)"]
        );
        assert_eq!(
            errs("admin 127.0.0.1"),
            ["1: 'admin' takes an address and a port: admin 127.0.0.1 9901"]
        );
        assert!(errs("admin 127.0.0.1 1\nadmin_allow 10.0.0.0/33")[0].contains("10.0.0.0/33"));
        assert_eq!(
            errs("route 127.0.0.1:1 127.0.0.1:2\nadmin_allow 10.0.0.0/8"),
            ["2: 'admin_allow' without an 'admin ADDR PORT' line: it would restrict nothing"]
        );
    }

    #[test]
    fn unknown_directives() {
        assert_eq!(
            err1("alow 1.2.3.4"),
            "1: unknown directive 'alow' (expected 'bindaddress bindport connectaddress connectport [src=ADDR]', \
             'route', 'allow', 'deny', 'logfile', 'pidlogfile', 'logcommon', 'admin' or 'admin_allow')"
        );
        assert!(err1("ALLOW 1.2.3.4").starts_with("1: unknown directive 'ALLOW'"));
        assert_eq!(
            err1("0.0.0.0 80 127.0.0.1"),
            "1: a forwarding rule needs 4 fields, 'bindaddress bindport connectaddress connectport [src=ADDR]'; this line has 3"
        );
        assert!(err1("myhost 80 6379").contains("needs 4 fields"));
        assert!(err1("alow 10.0.0.1").starts_with("1: unknown directive 'alow'"));
    }

    #[test]
    fn route_with_every_key() {
        let r = one_rule(
            "route [::]:443 [2001:db8::1]:443,192.0.2.10:443,backend.example:8443 \
             connect_timeout=250ms idle_timeout=10m fin_timeout=off peek_timeout=3s \
             max_connections=100 src=2001:db8::5 sni=*.Example.COM alpn=h2 \
             proxy_protocol=v2 accept_proxy=true",
        );
        assert!(!r.rinetd);
        assert_eq!(r.listen, hp("[::]:443"));
        assert_eq!(
            r.upstreams,
            [
                hp("[2001:db8::1]:443"),
                hp("192.0.2.10:443"),
                hp("backend.example:8443")
            ]
        );
        let o = &r.settings;
        assert_eq!(o.connect_timeout, Some(Duration::from_millis(250)));
        assert_eq!(o.idle_timeout, Some(Some(Duration::from_secs(600))));
        assert_eq!(o.fin_timeout, Some(None));
        assert_eq!(o.peek_timeout, Some(Duration::from_secs(3)));
        assert_eq!(o.max_connections, Some(100));
        assert_eq!(o.src, Some("2001:db8::5".parse().unwrap()));
        assert_eq!(r.sni, Some("*.example.com".parse().unwrap()));
        assert_eq!(r.host, None);
        assert_eq!(r.alpn.as_deref(), Some("h2"));
        assert_eq!(o.proxy_protocol, Some(Version::V2));
        assert_eq!(o.accept_proxy, Some(true));
    }

    #[test]
    fn upstreams_and_backups_take_weights() {
        let r = one_rule(
            "route 0.0.0.0:80 10.0.0.1:80*3,10.0.0.2:80 backup=10.0.0.9:80*2,[::1]:80*256 \
             check=send:PING\\r\\n,expect:+PONG rise=1",
        );
        assert_eq!(r.upstreams, [hp("10.0.0.1:80"), hp("10.0.0.2:80")]);
        assert_eq!(r.weights, [3, 1]);
        assert_eq!(r.backups, [hp("10.0.0.9:80"), hp("[::1]:80")]);
        assert_eq!(r.backup_weights, [2, 256]);
        assert_eq!(
            r.settings.check.map(|c| c.to_string()).as_deref(),
            Some("send:PING\\r\\n,expect:+PONG")
        );
        let weight = "expected a whole number from 1 to 256";
        assert_eq!(
            errs("route 0.0.0.0:80 10.0.0.1:80*0"),
            [format!(
                "1: invalid weight '*0' in '10.0.0.1:80*0': {weight}"
            )]
        );
        assert_eq!(
            errs("route 0.0.0.0:80 10.0.0.1:80 backup=10.0.0.2:80*257"),
            [format!(
                "1: invalid weight '*257' in '10.0.0.2:80*257': {weight}"
            )]
        );
        assert_eq!(
            errs("route 0.0.0.0:80 10.0.0.1:80*"),
            [format!("1: invalid weight '*' in '10.0.0.1:80*': {weight}")]
        );
        assert_eq!(
            errs("route 0.0.0.0:80 10.0.0.1:80*2,10.0.0.1:80"),
            ["1: upstream '10.0.0.1:80' is listed twice"]
        );
        assert!(err1("0.0.0.0 80 10.0.0.1 80*2").contains("connect port"));
    }

    #[test]
    fn route_defaults_are_none() {
        let r = one_rule("route 127.0.0.1:8080 127.0.0.1:9090");
        assert_eq!(r.settings, Overrides::default());
        assert_eq!(r.upstreams, [hp("127.0.0.1:9090")]);
        let r = one_rule("route 127.0.0.1:8080 127.0.0.1:9090 host=www.example.com idle_timeout=0 proxy_protocol=v1 accept_proxy=false");
        assert_eq!(r.host, Some("www.example.com".parse().unwrap()));
        assert_eq!(r.settings.idle_timeout, Some(None));
        assert_eq!(r.settings.proxy_protocol, Some(Version::V1));
        assert_eq!(r.settings.accept_proxy, Some(false));
    }

    #[test]
    fn route_key_errors() {
        let e = |keys: &str| errs(&format!("route 127.0.0.1:80 127.0.0.1:81 {keys}"));
        assert_eq!(
            e("colour=blue"),
            ["1: unknown key 'colour' (known: connect_timeout, idle_timeout, fin_timeout, peek_timeout, \
              max_connections, max_connections_per_client, src, proxy_protocol, accept_proxy, accept_proxy_from, reuse_port, \
              socket_mode, socket_owner, socket_group, balance, max_fails, fail_timeout, check, check_port, check_host, check_status, \
              check_interval, check_timeout, rise, fall, on_down, resolve_interval, backup, sni, host, alpn, \
              proto, prefix, regex, min_bytes, wait, max_flows)"]
        );
        assert_eq!(
            e("connect_timeout=1s connect_timeout=2s"),
            ["1: key 'connect_timeout' given twice"]
        );
        assert_eq!(
            e("connect_timeout="),
            ["1: key 'connect_timeout' needs a value"]
        );
        assert_eq!(e("fast"), ["1: expected key=value, found 'fast'"]);
        assert_eq!(
            e("connect_timeout=0"),
            ["1: invalid connect_timeout '0': must be greater than zero"]
        );
        assert_eq!(
            e("peek_timeout=0ms"),
            ["1: invalid peek_timeout '0ms': must be greater than zero"]
        );
        assert!(e("connect_timeout=5x")[0].starts_with("1: connect_timeout: invalid duration '5x'"));
        assert!(e("idle_timeout=never")[0].starts_with("1: idle_timeout: invalid duration 'never'"));
        assert!(e("idle_timeout=never")[0].ends_with(", or off"));
    }

    #[test]
    fn route_value_errors() {
        let e = |keys: &str| errs(&format!("route 127.0.0.1:80 127.0.0.1:81 {keys}"));
        assert_eq!(
            e("max_connections=0"),
            ["1: invalid max_connections '0': must be at least 1"]
        );
        assert_eq!(
            e("max_connections=-1"),
            ["1: invalid max_connections '-1': expected a whole number"]
        );
        assert_eq!(
            e("max_connections=99999999999999999999999"),
            ["1: invalid max_connections '99999999999999999999999': must be at most 1048576"]
        );
        assert_eq!(
            e("src=gw"),
            ["1: invalid src 'gw': not an ip address (host names are not allowed here)"]
        );
        assert_eq!(
            e("proxy_protocol=v3"),
            ["1: invalid proxy_protocol 'v3': expected v1 or v2"]
        );
        assert_eq!(
            e("accept_proxy=yes"),
            ["1: invalid accept_proxy 'yes': expected true or false"]
        );
        assert!(e("sni=a.*.com")[0].starts_with("1: sni: invalid name pattern 'a.*.com'"));
        assert!(e("host=*")[0].starts_with("1: host: invalid name pattern '*'"));
        assert_eq!(e(&format!("alpn={}", "x".repeat(256))).len(), 1);
        assert_eq!(
            e("alpn=h\u{e9}"),
            ["1: invalid alpn 'h\u{e9}': illegal character '\\u{e9}'"]
        );
        assert_eq!(
            e("sni=a.example host=a.example"),
            ["1: sni= and host= cannot both be set on one route (tls or http, not both)"]
        );
        assert_eq!(
            e("host=a.example alpn=h2"),
            ["1: alpn= is a tls setting and cannot be combined with host="]
        );
        // Every bad key on a line is reported.
        assert_eq!(e("a=1 b=2 connect_timeout=0 max_connections=x").len(), 4);
    }

    #[test]
    fn protocol_route_keys_parse_and_refuse_what_cannot_combine() {
        let cfg = ok("route 0.0.0.0:443 127.0.0.1:22 proto=ssh\nroute 0.0.0.0:443 127.0.0.1:1194 prefix=\\x00\\x0e\\x38\n");
        assert_eq!(cfg.rules[0].protocol, Some(Protocol::Ssh));
        assert_eq!(
            cfg.rules[1].protocol,
            Some(Protocol::Prefix(vec![0, 0x0e, 0x38]))
        );
        let e = |keys: &str| err1(&format!("route 0.0.0.0:443 127.0.0.1:22 {keys}"));
        assert_eq!(
            e("proto=ssh prefix=SSH-"),
            "1: only one of proto=, prefix= and regex= can be set on one route"
        );
        assert_eq!(
            e(r"regex=^\x05"),
            "1: regex= needs min_bytes=N: how many first bytes the expression sees (1 to 20480)"
        );
        assert_eq!(
            e("regex=( min_bytes=2"),
            "1: invalid regex '(': unclosed group"
        );
        assert_eq!(
            e("proto=ssh min_bytes=2"),
            "1: min_bytes= is the regex= route's, and only its"
        );
        let regex = ok("route 0.0.0.0:443 127.0.0.1:1080 min_bytes=2 regex=^\\x05[\\x01-\\x09]\n");
        assert_eq!(
            regex.rules[0].protocol.as_ref().unwrap().to_string(),
            r"regex=^\x05[\x01-\x09],min_bytes=2"
        );
        assert_eq!(
            e("proto=tls sni=a.example"),
            "1: proto= cannot be combined with sni=, host= or alpn= (a name route already says its protocol)"
        );
        assert_eq!(
            e("prefix=GET host=a.example"),
            "1: prefix= cannot be combined with sni=, host= or alpn= (a name route already says its protocol)"
        );
        assert_eq!(
            e("proto=smtp"),
            "1: invalid proto 'smtp' (expected ssh, tls, http or silent)"
        );
        assert_eq!(
            e("proto=ssh wait=1s"),
            "1: wait= is the proto=silent route's, and only its"
        );
        assert_eq!(
            e("proto=silent wait=0"),
            "1: invalid wait '0': must be greater than zero"
        );
        let silent = ok("route 0.0.0.0:25 127.0.0.1:2525 wait=500ms proto=silent\n");
        assert_eq!(
            silent.rules[0].protocol,
            Some(Protocol::Silent {
                wait: Duration::from_millis(500)
            })
        );
        assert_eq!(
            e(r"prefix=\x4"),
            r"1: invalid prefix: incomplete escape \x4 (\xHH takes two hex digits)"
        );
    }

    #[test]
    fn route_address_errors() {
        assert_eq!(
            err1("route 127.0.0.1:80"),
            "1: 'route' needs a listen address and an upstream: route LISTEN UPSTREAM[,UPSTREAM...] [key=value ...]"
        );
        assert_eq!(
            err1("route ::1:80 127.0.0.1:81"),
            "1: listen address: invalid address '::1:80': an IPv6 address needs brackets, as in [::1]:80"
        );
        assert!(parse(Path::new("t"), "route 127.0.0.1:0 127.0.0.1:81", services).is_ok());
        assert_eq!(
            err1("route 127.0.0.1:80 127.0.0.1:0"),
            "1: invalid upstream '127.0.0.1:0': port 0 is not allowed"
        );
        assert_eq!(
            err1("route 127.0.0.1:80 127.0.0.1:81,,127.0.0.1:82"),
            "1: invalid upstream list '127.0.0.1:81,,127.0.0.1:82': empty entry"
        );
        assert_eq!(
            err1("route 127.0.0.1:80 127.0.0.1:81,127.0.0.1:81"),
            "1: upstream '127.0.0.1:81' is listed twice"
        );
        assert_eq!(
            err1("route 127.0.0.1:80 127.0.0.1:81/udp"),
            "1: upstream '127.0.0.1:81/udp' is UDP, the listen address TCP; tcp-router forwards \
             each to its own kind (write the listen address with /udp too)"
        );
        assert_eq!(errs("route nope 127.0.0.1 x").len(), 3);
    }

    #[test]
    fn a_route_line_takes_port_ranges_and_refuses_bad_ones_in_one_line() {
        let r = one_rule(
            "route 0.0.0.0:9000-9099 10.0.0.1:7000-7099,10.0.0.2:8080 backup=[::1]:9000-9099*2",
        );
        assert_eq!(r.listen.to_string(), "0.0.0.0:9000-9099");
        assert_eq!(r.upstreams, [hp("10.0.0.1:7000-7099"), hp("10.0.0.2:8080")]);
        assert_eq!(r.backups, [hp("[::1]:9000-9099")]);
        assert_eq!(r.backup_weights, [2]);
        assert_eq!(
            err1("route 0.0.0.0:9000-9099 10.0.0.1:7000-7009"),
            "1: upstream range 10.0.0.1:7000-7009 has 10 ports but the listen range 0.0.0.0:9000-9099 has 100: give a range of the same length, or one port for all"
        );
        assert_eq!(
            err1("route 0.0.0.0:9000 10.0.0.1:7000-7009"),
            "1: upstream range 10.0.0.1:7000-7009 needs a listen range of 10 ports (the listen address 0.0.0.0:9000 is one port)"
        );
        assert_eq!(
            err1("route 0.0.0.0:65500-65600 10.0.0.1:80"),
            "1: listen address: invalid address '0.0.0.0:65500-65600': the range 65500-65600 goes past port 65535"
        );
        assert_eq!(
            err1("route 0.0.0.0:9100-9000 10.0.0.1:80"),
            "1: listen address: invalid address '0.0.0.0:9100-9000': the range 9100-9000 is reversed: write the lower port first"
        );
        assert_eq!(
            err1("route 0.0.0.0:1-2 10.0.0.1:0-1"),
            "1: upstream: invalid address '10.0.0.1:0-1': port 0 cannot be part of a range"
        );
        assert_eq!(
            err1("0.0.0.0 9000-9099 10.0.0.1 9000"),
            "1: bind port: invalid port '9000-9099': rinetd lines take one port; write a range on a route line, as in 'route 0.0.0.0:9000-9099 10.0.0.1:9000-9099'"
        );
        assert_eq!(
            err1("route 0.0.0.0:9000-9099 10.0.0.1:1-100 backup=10.0.0.2:1-100,10.0.0.2:1-100"),
            "1: backup '10.0.0.2:1-100' is listed twice"
        );
        // Name routing on a range: each port routes by name alike.
        let cfg = ok("route 0.0.0.0:8443-8444 10.0.0.1:443 sni=a.example\nroute 0.0.0.0:8443-8444 10.0.0.2:443\n");
        assert_eq!(cfg.rules.len(), 2);
    }

    /// Routes that differ by SNI, ALPN or Host, and one default per listener, may share a listen
    /// address: the file is accepted, and each line becomes its own route on that address with
    /// its own upstream, name pattern and ALPN, in file order.
    #[test]
    fn routes_may_share_a_listener_by_name_and_alpn() {
        let cfg = ok("\
route 0.0.0.0:443 192.0.2.1:443 sni=a.example.com
route 0.0.0.0:443 192.0.2.2:443 sni=*.example.com
route 0.0.0.0:443 192.0.2.3:443
route 0.0.0.0:443 127.0.0.1:8443 alpn=acme-tls/1
route 0.0.0.0:443 127.0.0.1:8444 sni=a.example.com alpn=acme-tls/1
route 0.0.0.0:80 192.0.2.1:80 host=a.example.com
route 0.0.0.0:80 192.0.2.2:80
");
        let route = |line, listen, upstream, sni: &str, host: &str, alpn: &str| RuleDef {
            line,
            listen: hp(listen),
            upstreams: vec![hp(upstream)],
            backups: Vec::new(),
            weights: vec![1],
            backup_weights: Vec::new(),
            acl: Vec::new(),
            settings: Overrides::default(),
            sni: (!sni.is_empty()).then(|| sni.parse().unwrap()),
            host: (!host.is_empty()).then(|| host.parse().unwrap()),
            alpn: (!alpn.is_empty()).then(|| alpn.to_string()),
            protocol: None,
            wait: None,
            min_bytes: None,
            rinetd: false,
            transport: Transport::Tcp,
            max_flows: None,
        };
        assert_eq!(
            cfg.rules,
            [
                route(1, "0.0.0.0:443", "192.0.2.1:443", "a.example.com", "", ""),
                route(2, "0.0.0.0:443", "192.0.2.2:443", "*.example.com", "", ""),
                route(3, "0.0.0.0:443", "192.0.2.3:443", "", "", ""),
                route(4, "0.0.0.0:443", "127.0.0.1:8443", "", "", "acme-tls/1"),
                route(
                    5,
                    "0.0.0.0:443",
                    "127.0.0.1:8444",
                    "a.example.com",
                    "",
                    "acme-tls/1"
                ),
                route(6, "0.0.0.0:80", "192.0.2.1:80", "", "a.example.com", ""),
                route(7, "0.0.0.0:80", "192.0.2.2:80", "", "", ""),
            ]
        );
        assert!(cfg.global_acl.is_empty());
    }

    #[test]
    fn rinetd_rules_cannot_share_a_listener() {
        assert_eq!(
            err1("0.0.0.0 80 192.0.2.1 80\nroute 0.0.0.0:80 192.0.2.2:80 sni=a.example"),
            "2: listen address 0.0.0.0:80 is already used by line 1; a rinetd-style rule cannot share its listener"
        );
        assert_eq!(
            err1("route 0.0.0.0:80 192.0.2.2:80 host=a.example\n0.0.0.0 80 192.0.2.1 80"),
            "2: listen address 0.0.0.0:80 is already used by line 1; a rinetd-style rule cannot share its listener"
        );
        assert_eq!(
            err1("0 80 192.0.2.1 80\n0.0.0.0 80/tcp 192.0.2.2 80"),
            "2: listen address 0.0.0.0:80 is already used by line 1; a rinetd-style rule cannot share its listener"
        );
    }

    #[test]
    fn every_error_is_collected_in_line_order() {
        let all = errs(
            "\
route 127.0.0.1:80 127.0.0.1:81 bogus=1
allow nope!
0.0.0.0 80/udp 127.0.0.1 80
logfile
route 127.0.0.1:80 127.0.0.1:82
",
        );
        let lines: Vec<&str> = all.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(lines, ["1", "2", "3", "4"], "{all:#?}");
        let with_path =
            parse(Path::new("/etc/tcp-router.conf"), "logcommon x", services).unwrap_err();
        assert_eq!(
            with_path[0].to_string(),
            "/etc/tcp-router.conf:1: 'logcommon' takes no value"
        );
    }

    #[test]
    fn hostile_input_does_not_panic() {
        let weird = [
            "\u{0}",
            "[",
            "]",
            "\"",
            "#\"",
            "\"#",
            "route",
            "route [",
            "route [::1]:80 [",
            "0 0 0 0",
            "0.0.0.0 80 1.1.1.1 80[",
            "0.0.0.0 80 1.1.1.1 [",
            "a b c d [,,,]",
            "a b c d [=]",
            "allow /",
            "allow [",
            "deny *//",
            "route a:1 b:2 =",
            "route a:1 b:2 ==",
            "\u{feff}allow 1",
            "0.0.0.0 80 1.1.1.1 80 [src=\u{e9}]",
            "route a:1 b:2 sni=\u{e9}.com",
            "logfile \"\u{e9}",
        ];
        for w in weird {
            let _ = parse_text(w);
        }
        let _ = parse_text(&"x ".repeat(10_000));
        let _ = parse_text(&"#".repeat(10_000));
        let _ = parse_text(&format!(
            "route 127.0.0.1:80 {}",
            "127.0.0.1:81,".repeat(1000)
        ));
    }

    #[test]
    fn random_lines_do_not_panic() {
        let mut rng = crate::test_support::XorShift::new(0x9E37_79B9_7F4A_7C15);
        let mut next = move || rng.next_u64();
        let alphabet: Vec<char> = " \t#\"[]:,=/.*?0123456789abcdefxyz-_\u{e9}\u{feff}"
            .chars()
            .collect();
        let heads = [
            "",
            "allow ",
            "deny ",
            "route ",
            "route [::1]:80 ",
            "logfile ",
            "0 80 ",
            "0 80 1.2.3.4 80 ",
        ];
        for _ in 0..20_000 {
            let mut line = heads[(next() % heads.len() as u64) as usize].to_string();
            for _ in 0..(next() % 40) {
                line.push(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            let _ = parse_text(&line);
        }
    }

    #[test]
    fn a_udp_route_is_one_port_not_a_range() {
        assert_eq!(
            err1("route 127.0.0.1:9000-9001/udp 127.0.0.1:53"),
            "1: listen address 127.0.0.1:9000-9001/udp: port ranges are for TCP listeners; write \
             one UDP rule per port"
        );
    }

    #[test]
    fn example_file_parses() {
        let cfg = parse(
            Path::new("examples/tcp-router.conf"),
            include_str!("../../examples/tcp-router.conf"),
            services,
        )
        .unwrap_or_else(|errs| {
            let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            panic!("{}", all.join("\n"))
        });
        assert!(!cfg.global_acl.is_empty());
        assert!(cfg.rules.iter().any(|r| r.rinetd && !r.acl.is_empty()));
        assert!(cfg.rules.iter().any(|r| !r.rinetd && r.upstreams.len() > 1));
        assert!(cfg.rules.iter().any(|r| r.sni.is_some()));
        assert!(cfg.rules.iter().any(|r| r.listen.range.is_some()));
        assert!(cfg
            .rules
            .iter()
            .any(|r| r.transport == Transport::Udp && r.rinetd));
        assert!(cfg
            .rules
            .iter()
            .any(|r| r.transport == Transport::Udp && !r.rinetd));
        assert!(cfg
            .rules
            .iter()
            .any(|r| r.alpn.as_deref() == Some("acme-tls/1")));
        assert!(cfg.logfile.is_some());
    }
}
