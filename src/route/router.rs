//! A listener's router: picks one of its routes from what the client sent first (TLS server
//! name and ALPN, HTTP Host, or the protocol its first bytes show), or its default route when it
//! reads nothing.
//!
//! The one precedence rule (docs/config.md, "Several protocols on one port"):
//! 1. A TLS ClientHello goes to its name route (`sni=`, `alpn=`: `route::names`), else to the
//!    `proto=tls` route; an HTTP/1.x head to its `host=` route, else to the `proto=http` route.
//!    These readers run only on a listener that has such routes.
//! 2. Bytes no route of step 1 took (not TLS or HTTP, or no name matched and there is no
//!    catch-all) go to the first `proto=ssh`, `prefix=` or `regex=` route, in the order written,
//!    that takes them: whose leading bytes they start with, or whose expression their first
//!    `min_bytes` bytes match.
//! 3. Then the default route; without one the client is refused.
//!
//! Apart from these, a `proto=silent` route takes a client that has sent nothing at all `wait=`
//! after it connected (a client of a protocol where the server speaks first).
//!
//! A step decides only once the bytes settle it: while a reader of an earlier step needs more
//! bytes, the later ones wait, so the answer never depends on how the bytes were split.

use std::time::Duration;

use crate::config::{Protocol, Route};
use crate::proto::tls::{self, ClientHello};
use crate::proto::{http, prefix, ssh, Parsed};

use super::names::{MatchKind, NameTable};

/// Picks a listener's route from what the client sent first.
#[derive(Debug, Clone)]
pub(crate) struct Router {
    /// Routes with `sni=` or `alpn=`, and the `proto=tls` route in the default's place, for TLS
    /// clients; `None` if there are none.
    tls: Option<NameTable<usize>>,
    /// Routes with `host=`, and the `proto=http` route in the default's place, for plain HTTP
    /// clients; `None` if there are none.
    http: Option<NameTable<usize>>,
    /// The `proto=tls` and `proto=http` routes, to tell their matches from a name's.
    catch_alls: Vec<usize>,
    /// The `proto=ssh`, `prefix=` and `regex=` routes, in the order written.
    by_bytes: Vec<(Protocol, usize)>,
    /// The `proto=silent` route, and how long a client may say nothing before it takes it.
    silent: Option<(usize, Duration)>,
    /// The route without any pattern.
    default: Option<usize>,
}

impl Router {
    /// The router of a listener with these routes (validated: at most one default, no two alike).
    pub(crate) fn new(routes: &[Route]) -> Router {
        let default = routes.iter().position(|r| !r.routes_by_name());
        let catch_all = |protocol: Protocol| {
            routes
                .iter()
                .position(|r| r.protocol.as_ref() == Some(&protocol))
        };
        let table = |select: &dyn Fn(&Route) -> bool, by_host: bool, any: Option<usize>| {
            if !routes.iter().any(select) && any.is_none() {
                return None;
            }
            let entries = routes.iter().enumerate().filter_map(|(i, r)| {
                if select(r) {
                    let pattern = if by_host { &r.host } else { &r.sni };
                    Some((pattern.clone(), r.alpn.clone(), i))
                } else if Some(i) == any {
                    Some((None, None, i))
                } else {
                    None
                }
            });
            Some(NameTable::new(entries))
        };
        let (tls_any, http_any) = (catch_all(Protocol::Tls), catch_all(Protocol::Http));
        let tls = table(
            &|r| r.host.is_none() && (r.sni.is_some() || r.alpn.is_some()),
            false,
            tls_any,
        );
        let http = table(&|r| r.host.is_some(), true, http_any);
        let by_bytes = (routes.iter().enumerate())
            .filter_map(|(i, r)| {
                let protocol = r.protocol.as_ref()?;
                protocol.by_first_bytes().then(|| (protocol.clone(), i))
            })
            .collect();
        let silent = routes
            .iter()
            .enumerate()
            .find_map(|(i, r)| match r.protocol {
                Some(Protocol::Silent { wait }) => Some((i, wait)),
                _ => None,
            });
        Router {
            tls,
            http,
            catch_alls: tls_any.into_iter().chain(http_any).collect(),
            by_bytes,
            silent,
            default,
        }
    }

    /// True if clients must be read before a route can be chosen.
    pub(crate) fn reads_first(&self) -> bool {
        self.tls.is_some()
            || self.http.is_some()
            || !self.by_bytes.is_empty()
            || self.silent.is_some()
    }

    /// The `proto=silent` route and its wait: a client that has sent nothing that long after it
    /// connected takes it at once. `None` without one: silent clients wait for the peek deadline.
    pub(crate) fn silent(&self) -> Option<(usize, Duration)> {
        self.silent
    }

    /// True if TLS clients are routed by name or as TLS.
    pub(crate) fn routes_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True if HTTP clients are routed by Host or as HTTP.
    pub(crate) fn routes_http(&self) -> bool {
        self.http.is_some()
    }

    /// Step 1 for a TLS client that sent `name` and offered `alpn`: its name route, else the
    /// `proto=tls` route; `None` if neither takes it.
    pub(crate) fn tls_route(
        &self,
        name: Option<&str>,
        alpn: &[String],
    ) -> Option<(usize, MatchKind)> {
        self.look_up(self.tls.as_ref()?, name, alpn)
    }

    /// Step 1 for an HTTP client that sent Host `name`: its `host=` route, else the `proto=http`
    /// route; `None` if neither takes it.
    pub(crate) fn http_route(&self, name: Option<&str>) -> Option<(usize, MatchKind)> {
        self.look_up(self.http.as_ref()?, name, &[])
    }

    fn look_up(
        &self,
        table: &NameTable<usize>,
        name: Option<&str>,
        alpn: &[String],
    ) -> Option<(usize, MatchKind)> {
        let (&i, kind) = table.lookup(name, alpn)?;
        let kind = if self.catch_alls.contains(&i) {
            MatchKind::Protocol
        } else {
            kind
        };
        Some((i, kind))
    }

    /// Step 2: the first `proto=ssh`, `prefix=` or `regex=` route that takes `buf`; `Partial`
    /// while an earlier one needs more bytes to say.
    pub(crate) fn by_leading_bytes(&self, buf: &[u8]) -> Parsed<Option<usize>> {
        match self.step_two(buf) {
            Ok(found) => Parsed::Complete(found),
            Err(_waiting) => Parsed::Partial,
        }
    }

    /// The step 2 route that needs more bytes than `buf` to say whether it takes them, if one
    /// does, for `--explain-bytes`.
    pub(crate) fn waiting_route(&self, buf: &[u8]) -> Option<usize> {
        self.step_two(buf).err()
    }

    /// Step 2, tried in the order written: `Ok` with the route that takes `buf` (`None`: none
    /// does), or `Err` with the first route that needs more bytes to say.
    fn step_two(&self, buf: &[u8]) -> Result<Option<usize>, usize> {
        for (protocol, i) in &self.by_bytes {
            let matched = match protocol {
                Protocol::Ssh => match ssh::parse_identification(buf) {
                    Ok(Parsed::Complete(())) => Parsed::Complete(true),
                    Ok(Parsed::Partial) => Parsed::Partial,
                    Err(ssh::NotSsh) => Parsed::Complete(false),
                },
                Protocol::Prefix(pattern) => prefix::matches(pattern, buf),
                Protocol::Regex(pattern) => pattern.matches(buf),
                Protocol::Tls | Protocol::Http | Protocol::Silent { .. } => Parsed::Complete(false),
            };
            match matched {
                Parsed::Complete(true) => return Ok(Some(*i)),
                Parsed::Partial => return Err(*i),
                Parsed::Complete(false) => {}
            }
        }
        Ok(None)
    }

    /// The route for a TLS client that sent `name` and offered `alpn`, by name alone (steps 1
    /// and 3).
    pub(crate) fn for_tls(
        &self,
        name: Option<&str>,
        alpn: &[String],
    ) -> Option<(usize, MatchKind)> {
        self.tls_route(name, alpn).or_else(|| self.fallback())
    }

    /// The route for an HTTP client that sent Host `name` (steps 1 and 3).
    pub(crate) fn for_http(&self, name: Option<&str>) -> Option<(usize, MatchKind)> {
        self.http_route(name).or_else(|| self.fallback())
    }

    /// Step 3: the route for a client no other step took.
    pub(crate) fn fallback(&self) -> Option<(usize, MatchKind)> {
        self.default.map(|i| (i, MatchKind::Default))
    }

    /// Which route `name` takes, for TLS clients (without ALPN, then offering each ALPN a route
    /// of `routes` names) and for HTTP clients, in words. A name no client could send (not a
    /// host name) is said to be one, with where a client sending no name goes.
    pub(crate) fn explain(&self, name: &str, routes: &[Route]) -> Vec<String> {
        let describe = |found: Option<(usize, MatchKind)>| match found {
            Some((i, kind)) => format!("route {} ({kind})", routes[i].label()),
            None => "no route: the client is refused".to_string(),
        };
        let mut lines = Vec::new();
        let sent = match crate::proto::name::canonical(name) {
            Ok(canonical) => Some(canonical),
            Err(why) => {
                lines.push(format!(
                    "'{name}' is not a name a client could send ({why}); a client sending no name takes:"
                ));
                None
            }
        };
        let shown = sent
            .as_deref()
            .map_or("no name".to_string(), |n| format!("'{n}'"));
        if self.tls.is_some() {
            lines.push(format!(
                "TLS with SNI {shown}: {}",
                describe(self.for_tls(sent.as_deref(), &[]))
            ));
            let mut alpns: Vec<&String> = routes.iter().filter_map(|r| r.alpn.as_ref()).collect();
            alpns.sort_unstable();
            alpns.dedup();
            for alpn in alpns {
                lines.push(format!(
                    "TLS with SNI {shown} offering ALPN '{alpn}': {}",
                    describe(self.for_tls(sent.as_deref(), std::slice::from_ref(alpn)))
                ));
            }
        }
        if self.http.is_some() {
            lines.push(format!(
                "HTTP with Host {shown}: {}",
                describe(self.for_http(sent.as_deref()))
            ));
        }
        lines
    }
}

/// What the client sent first, as far as routing reads it.
#[derive(Debug)]
pub(crate) enum FirstBytes {
    /// A ClientHello.
    Tls(ClientHello),
    /// An HTTP/1.x request head, with its Host.
    Http(Option<String>),
    /// What a `proto=ssh`, `prefix=` or `regex=` route takes (which one is the route's).
    Leading,
    /// Nothing, for as long as the `proto=silent` route waits.
    Silent,
    /// Anything else, and why (`not-tls-or-http`, `malformed-tls`, ...).
    Other(&'static str),
}

/// What the client sent first, and the route it takes by the router's precedence rule.
#[derive(Debug)]
pub(crate) struct Choice {
    /// What the bytes were.
    pub(crate) first: FirstBytes,
    /// The route they take, and how it matched; `None`: no route, the client is refused.
    pub(crate) found: Option<(usize, MatchKind)>,
}

impl Choice {
    /// The protocol the first bytes showed, as logs and metrics name it: `tls`, `http`, the
    /// name of the `proto=ssh`, `prefix=` or `regex=` route that took them, `silent`, or `other`.
    /// `protocol_of` gives a route's protocol by its index.
    pub(crate) fn protocol<'a>(
        &self,
        protocol_of: impl Fn(usize) -> Option<&'a Protocol>,
    ) -> &'static str {
        match &self.first {
            FirstBytes::Tls(_) => "tls",
            FirstBytes::Http(_) => "http",
            FirstBytes::Leading => (self.found.as_ref())
                .and_then(|(i, _)| protocol_of(*i))
                .map_or("other", Protocol::name),
            FirstBytes::Silent => "silent",
            FirstBytes::Other(_) => "other",
        }
    }
}

/// Decides what the first bytes are and which route they take, by the router's precedence rule
/// (see the module docs): the TLS and HTTP readers the listener needs first, then its `proto=ssh`,
/// `prefix=` and `regex=` routes, then the default. `Partial` while an earlier step needs more bytes.
pub(crate) fn classify(
    buf: &[u8],
    router: &Router,
) -> Result<Parsed<Choice>, std::convert::Infallible> {
    let mut undecided = false;
    // A hello or head that no route of its protocol took: later steps may still take it.
    let mut seen = None;
    let mut other = "not-tls-or-http";
    if router.routes_tls() {
        match tls::parse_client_hello(buf) {
            Ok(Parsed::Complete(hello)) => {
                match router.tls_route(hello.server_name.as_deref(), &hello.alpn) {
                    Some(found) => return Ok(chosen(FirstBytes::Tls(hello), Some(found))),
                    None => seen = Some(FirstBytes::Tls(hello)),
                }
            }
            Ok(Parsed::Partial) => undecided = true,
            Err(tls::TlsError::NotTls) => {}
            Err(_) => other = "malformed-tls",
        }
    }
    if router.routes_http() && seen.is_none() {
        match http::parse_host(buf) {
            Ok(Parsed::Complete(host)) => match router.http_route(host.as_deref()) {
                Some(found) => return Ok(chosen(FirstBytes::Http(host), Some(found))),
                None => seen = Some(FirstBytes::Http(host)),
            },
            Ok(Parsed::Partial) => undecided = true,
            Err(http::HttpError::NotHttp) => {}
            Err(_) => other = "malformed-http",
        }
    }
    if undecided {
        return Ok(Parsed::Partial);
    }
    Ok(match router.by_leading_bytes(buf) {
        Parsed::Partial => Parsed::Partial,
        Parsed::Complete(Some(i)) => chosen(FirstBytes::Leading, Some((i, MatchKind::Protocol))),
        Parsed::Complete(None) => {
            chosen(seen.unwrap_or(FirstBytes::Other(other)), router.fallback())
        }
    })
}

/// [`classify`] for bytes that are all there is: `None` when they are not enough to decide.
pub(crate) fn decided(buf: &[u8], router: &Router) -> Option<Choice> {
    match classify(buf, router) {
        Ok(Parsed::Complete(choice)) => Some(choice),
        Ok(Parsed::Partial) => None,
        Err(never) => match never {},
    }
}

fn chosen(first: FirstBytes, found: Option<(usize, MatchKind)>) -> Parsed<Choice> {
    Parsed::Complete(Choice { first, found })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(sni: Option<&str>, host: Option<&str>, alpn: Option<&str>) -> Route {
        let mut r = Route::new(vec!["127.0.0.1:1".parse().unwrap()]);
        r.sni = sni.map(|p| p.parse().unwrap());
        r.host = host.map(|p| p.parse().unwrap());
        r.alpn = alpn.map(String::from);
        r
    }

    #[test]
    fn tls_and_http_share_the_default() {
        let router = Router::new(&[
            route(None, None, None),
            route(Some("a.example.com"), None, None),
            route(None, Some("b.example.com"), None),
            route(Some("a.example.com"), None, Some("acme-tls/1")),
        ]);
        assert!(router.reads_first());
        assert_eq!(router.for_tls(Some("A.example.com."), &[]).unwrap().0, 1);
        let acme = ["acme-tls/1".to_string()];
        assert_eq!(router.for_tls(Some("a.example.com"), &acme).unwrap().0, 3);
        assert_eq!(router.for_tls(Some("b.example.com"), &[]).unwrap().0, 0);
        assert_eq!(router.for_http(Some("b.example.com")).unwrap().0, 2);
        assert_eq!(router.for_http(None).unwrap().0, 0);
        assert_eq!(router.fallback().unwrap().0, 0);
    }

    #[test]
    fn no_default_means_no_route() {
        let router = Router::new(&[route(Some("*.example.com"), None, None)]);
        assert!(router.for_tls(Some("example.com"), &[]).is_none());
        assert!(router.for_tls(Some("x.example.com"), &[]).is_some());
        assert!(router.fallback().is_none());
    }

    fn protocol(key: &str, value: &str) -> Route {
        let mut r = route(None, None, None);
        r.protocol = Some(Protocol::parse(key, value).unwrap());
        r
    }

    #[test]
    fn names_come_first_then_the_protocol_catch_all_then_the_default() {
        let router = Router::new(&[
            route(None, None, None),
            protocol("proto", "tls"),
            route(Some("a.example"), None, None),
            protocol("proto", "http"),
            route(None, Some("b.example"), None),
        ]);
        assert_eq!(
            router.tls_route(Some("a.example"), &[]),
            Some((2, MatchKind::Exact))
        );
        assert_eq!(
            router.tls_route(Some("x.example"), &[]),
            Some((1, MatchKind::Protocol))
        );
        assert_eq!(router.tls_route(None, &[]), Some((1, MatchKind::Protocol)));
        assert_eq!(
            router.http_route(Some("b.example")),
            Some((4, MatchKind::Exact))
        );
        assert_eq!(router.http_route(None), Some((3, MatchKind::Protocol)));
        assert_eq!(
            router.by_leading_bytes(b"SSH-2.0-x\r\n"),
            Parsed::Complete(None)
        );
        assert_eq!(router.fallback(), Some((0, MatchKind::Default)));
    }

    #[test]
    fn a_tls_catch_all_alone_makes_the_listener_read_tls() {
        let router = Router::new(&[protocol("proto", "tls"), route(None, None, None)]);
        assert!(router.reads_first() && router.routes_tls() && !router.routes_http());
        assert_eq!(
            router.tls_route(Some("any.example"), &[]),
            Some((0, MatchKind::Protocol))
        );
        assert_eq!(
            router.for_http(Some("any.example")),
            Some((1, MatchKind::Default))
        );
    }

    #[test]
    fn leading_byte_routes_are_tried_in_the_order_written_and_wait_for_enough_bytes() {
        let router = Router::new(&[
            protocol("prefix", r"\x05\x01"),
            protocol("proto", "ssh"),
            protocol("prefix", "SSH-2.0-Go"),
        ]);
        assert!(router.reads_first() && !router.routes_tls());
        assert_eq!(router.by_leading_bytes(b""), Parsed::Partial);
        assert_eq!(router.by_leading_bytes(b"\x05"), Parsed::Partial);
        assert_eq!(
            router.by_leading_bytes(b"\x05\x01\x00"),
            Parsed::Complete(Some(0))
        );
        assert_eq!(router.by_leading_bytes(b"SS"), Parsed::Partial);
        assert_eq!(router.by_leading_bytes(b"SSH-"), Parsed::Complete(Some(1)));
        assert_eq!(router.by_leading_bytes(b"\x16\x03"), Parsed::Complete(None));
        assert!(router.fallback().is_none());
    }

    #[test]
    fn a_silent_route_alone_makes_the_listener_wait_for_first_bytes() {
        let mut silent = protocol("proto", "silent");
        silent.protocol = Some(Protocol::Silent {
            wait: Duration::from_millis(500),
        });
        let router = Router::new(&[route(None, None, None), silent]);
        assert!(router.reads_first());
        assert_eq!(router.silent(), Some((1, Duration::from_millis(500))));
        assert_eq!(router.by_leading_bytes(b""), Parsed::Complete(None));
        assert_eq!(Router::new(&[route(None, None, None)]).silent(), None);
    }

    #[test]
    fn a_plain_listener_reads_nothing_first() {
        let router = Router::new(&[route(None, None, None)]);
        assert!(!router.reads_first());
        assert!(!router.routes_tls() && !router.routes_http());
    }

    #[test]
    fn explain_names_the_route_for_each_kind_of_client() {
        let routes = [
            route(None, None, None),
            route(Some("a.example"), None, None),
        ];
        assert_eq!(
            Router::new(&routes).explain("A.example.", &routes),
            ["TLS with SNI 'a.example': route sni=a.example (exact name)"]
        );
    }

    #[test]
    fn explain_covers_alpn_routes_and_names_no_client_could_send() {
        let routes = [
            route(None, None, None),
            route(Some("a.example"), None, None),
            route(Some("a.example"), None, Some("h2")),
            route(None, None, Some("acme-tls/1")),
        ];
        let router = Router::new(&routes);
        assert_eq!(
            router.explain("a.example", &routes),
            [
                "TLS with SNI 'a.example': route sni=a.example (exact name)",
                "TLS with SNI 'a.example' offering ALPN 'acme-tls/1': route sni=a.example (exact name)",
                "TLS with SNI 'a.example' offering ALPN 'h2': route sni=a.example,alpn=h2 (exact name)",
            ]
        );
        let lines = router.explain("a b", &routes);
        assert_eq!(
            lines[0],
            "'a b' is not a name a client could send (illegal character ' ' (allowed: letters, digits, '-', '_', '.')); a client sending no name takes:"
        );
        assert_eq!(
            lines[1],
            "TLS with SNI no name: route default (default route)"
        );
        assert_eq!(
            router.explain("b.example", &routes)[1],
            "TLS with SNI 'b.example' offering ALPN 'acme-tls/1': route alpn=acme-tls/1 (default route)"
        );
    }
}

/// [`classify`] on bytes, for listeners with the routes given as `key=value`.
#[cfg(test)]
mod first_bytes_tests {
    use super::*;
    use crate::config::Route;

    /// A route chosen by `key=value` (`sni`, `host`, `proto`, `prefix`, `regex` written
    /// `regex=N:PATTERN` for `min_bytes=N`), or the default (`""`).
    fn route(key_value: &str) -> Route {
        let mut route = Route::new(vec!["127.0.0.1:1".parse().unwrap()]);
        match key_value.split_once('=') {
            Some(("sni", name)) => route.sni = Some(name.parse().unwrap()),
            Some(("host", name)) => route.host = Some(name.parse().unwrap()),
            Some(("regex", value)) => {
                let (n, source) = value.split_once(':').unwrap();
                let Ok(Protocol::Regex(pattern)) = Protocol::parse("regex", source) else {
                    panic!("{source}: not a regex");
                };
                route.protocol = Some(Protocol::Regex(pattern.with_min_bytes(n).unwrap()));
            }
            Some((key, value)) => route.protocol = Some(Protocol::parse(key, value).unwrap()),
            None => {}
        }
        route
    }

    /// What `buf` is and the index of the route it takes, once decided.
    fn decided(buf: &[u8], routes: &[&str]) -> Option<String> {
        let routes: Vec<Route> = routes.iter().map(|r| route(r)).collect();
        let choice = match classify(buf, &Router::new(&routes)) {
            Ok(Parsed::Complete(choice)) => choice,
            Ok(Parsed::Partial) => return None,
            Err(never) => match never {},
        };
        let protocol = choice.protocol(|i| routes[i].protocol.as_ref());
        let shown = ["tls", "http", "ssh", "prefix", "regex", "other"];
        assert!(shown.contains(&protocol), "{protocol}");
        let first = match choice.first {
            FirstBytes::Tls(hello) => format!("tls {:?}", hello.server_name),
            FirstBytes::Http(host) => format!("http {host:?}"),
            FirstBytes::Leading => "leading".to_string(),
            FirstBytes::Silent => "silent".to_string(),
            FirstBytes::Other(what) => what.to_string(),
        };
        Some(format!("{first} -> {:?}", choice.found.map(|(i, _)| i)))
    }

    #[test]
    fn first_bytes_are_classified_for_the_tables_the_listener_has() {
        let get = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n";
        let both = ["", "sni=a.example", "host=a.example"];
        assert_eq!(
            decided(get, &both).as_deref(),
            Some("http Some(\"a.example\") -> Some(2)")
        );
        // A listener that routes TLS only does not read HTTP heads.
        assert_eq!(
            decided(get, &both[..2]).as_deref(),
            Some("not-tls-or-http -> Some(0)")
        );
        assert_eq!(decided(b"GE", &both), None, "more bytes could make it HTTP");
        assert_eq!(
            decided(b"\x16\x03\x01", &both),
            None,
            "a TLS record has begun"
        );
        assert_eq!(
            decided(b"SSH-2.0-x\r\n", &both).as_deref(),
            Some("not-tls-or-http -> Some(0)")
        );
        // A handshake record that holds a ServerHello, not a ClientHello.
        let server_hello = [0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
        assert_eq!(
            decided(&server_hello, &both[..2]).as_deref(),
            Some("malformed-tls -> Some(0)")
        );
    }

    #[test]
    fn ssh_and_prefix_routes_wait_for_the_readers_that_come_first() {
        let routes = ["", "host=a.example", "proto=ssh", r"prefix=\x05\x01"];
        assert_eq!(
            decided(b"SSH-2.0-Go\r\n", &routes).as_deref(),
            Some("leading -> Some(2)")
        );
        // `SSH-2.0-Go` could still be an HTTP method: the HTTP reader decides first.
        assert_eq!(decided(b"SSH-2.0-Go", &routes), None);
        assert_eq!(
            decided(b"\x05\x01\x00", &routes).as_deref(),
            Some("leading -> Some(3)")
        );
        assert_eq!(decided(b"\x05", &routes), None);
        assert_eq!(
            decided(b"\x04\x01", &routes).as_deref(),
            Some("not-tls-or-http -> Some(0)")
        );
        // Without an HTTP route, `SSH-` alone decides.
        assert_eq!(
            decided(b"SSH-", &routes[2..]).as_deref(),
            Some("leading -> Some(0)")
        );
        assert_eq!(decided(b"SSH", &routes[2..]), None);
        assert_eq!(
            decided(b"x", &routes[2..]).as_deref(),
            Some("not-tls-or-http -> None")
        );
    }

    #[test]
    fn a_choice_names_the_protocol_that_took_the_bytes() {
        let routes: Vec<Route> = ["", "proto=ssh", r"regex=2:^\x05", "host=a.example"]
            .iter()
            .map(|r| route(r))
            .collect();
        let router = Router::new(&routes);
        let protocol_of = |i: usize| routes[i].protocol.as_ref();
        let protocol = |buf: &[u8]| super::decided(buf, &router).unwrap().protocol(protocol_of);
        assert_eq!(protocol(b"SSH-2.0-x\r\n"), "ssh");
        assert_eq!(protocol(b"\x05\x01"), "regex");
        assert_eq!(protocol(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"), "http");
        assert_eq!(protocol(b"\x04\x01"), "other");
        let silent = Choice {
            first: FirstBytes::Silent,
            found: None,
        };
        assert_eq!(silent.protocol(protocol_of), "silent");
    }

    #[test]
    fn regex_routes_take_their_place_in_the_order_written_and_wait_for_their_window() {
        let routes = [
            "",
            r"prefix=\x05\x01",
            r"regex=3:^\x05[\x01-\x09]",
            "proto=ssh",
            r"regex=4:(?i)^ehlo",
        ];
        assert_eq!(
            decided(b"\x05\x01", &routes).as_deref(),
            Some("leading -> Some(1)")
        );
        // The prefix has said no, the regex waits for its three bytes.
        assert_eq!(decided(b"\x05\x02", &routes), None);
        assert_eq!(
            decided(b"\x05\x02\x00", &routes).as_deref(),
            Some("leading -> Some(2)")
        );
        assert_eq!(
            decided(b"SSH-2.0-x\r\n", &routes).as_deref(),
            Some("leading -> Some(3)")
        );
        // A regex before `proto=ssh` holds every client until its window is full.
        let first = [routes[4], routes[3], ""];
        assert_eq!(decided(b"SSH", &first), None);
        assert_eq!(
            decided(b"SSH-", &first).as_deref(),
            Some("leading -> Some(1)")
        );
        assert_eq!(
            decided(b"EHLO", &first).as_deref(),
            Some("leading -> Some(0)")
        );
        assert_eq!(
            decided(b"\x16\x03\x01\x00", &routes).as_deref(),
            Some("not-tls-or-http -> Some(0)")
        );
        // Every split of the same bytes takes the same route.
        let hello = b"ehlo there\r\n";
        for end in 4..=hello.len() {
            assert_eq!(
                decided(&hello[..end], &routes).as_deref(),
                Some("leading -> Some(4)")
            );
        }
    }

    #[test]
    fn a_head_no_name_route_takes_goes_to_the_catch_all_then_leading_bytes_then_the_default() {
        let head = b"GET / HTTP/1.1\r\nHost: b.example\r\n\r\n";
        let with_catch_all = ["", "host=a.example", "proto=http"];
        assert_eq!(
            decided(head, &with_catch_all).as_deref(),
            Some("http Some(\"b.example\") -> Some(2)")
        );
        assert_eq!(
            decided(head, &["", "host=a.example", "prefix=GET"]).as_deref(),
            Some("leading -> Some(2)")
        );
        assert_eq!(
            decided(head, &["host=a.example"]).as_deref(),
            Some("http Some(\"b.example\") -> None")
        );
    }
}
