//! A listener's router: picks one of its routes from what the client sent first (TLS server
//! name and ALPN, or HTTP Host), or its default route when it reads nothing.

use crate::config::Route;

use super::names::{MatchKind, NameTable};

/// Picks a listener's route from what the client sent first.
#[derive(Debug, Clone)]
pub(crate) struct Router {
    /// Routes with `sni=` or `alpn=` (and the default), for TLS clients; `None` if there are none.
    tls: Option<NameTable<usize>>,
    /// Routes with `host=` (and the default), for plain HTTP clients; `None` if there are none.
    http: Option<NameTable<usize>>,
    /// The route without any pattern.
    default: Option<usize>,
}

impl Router {
    /// The router of a listener with these routes (validated: at most one default, no two alike).
    pub(crate) fn new(routes: &[Route]) -> Router {
        let default = routes.iter().position(|r| !r.routes_by_name());
        let table = |select: &dyn Fn(&Route) -> bool, by_host: bool| {
            if !routes.iter().any(select) {
                return None;
            }
            let entries = routes.iter().enumerate().filter_map(|(i, r)| {
                if select(r) {
                    let pattern = if by_host { &r.host } else { &r.sni };
                    Some((pattern.clone(), r.alpn.clone(), i))
                } else if Some(i) == default {
                    Some((None, None, i))
                } else {
                    None
                }
            });
            Some(NameTable::new(entries))
        };
        let tls = table(
            &|r| r.host.is_none() && (r.sni.is_some() || r.alpn.is_some()),
            false,
        );
        let http = table(&|r| r.host.is_some(), true);
        Router { tls, http, default }
    }

    /// True if clients must be read before a route can be chosen.
    pub(crate) fn reads_first(&self) -> bool {
        self.tls.is_some() || self.http.is_some()
    }

    /// True if TLS clients are routed by name.
    pub(crate) fn routes_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// True if HTTP clients are routed by Host.
    pub(crate) fn routes_http(&self) -> bool {
        self.http.is_some()
    }

    /// The route for a TLS client that sent `name` and offered `alpn`.
    pub(crate) fn for_tls(
        &self,
        name: Option<&str>,
        alpn: &[String],
    ) -> Option<(usize, MatchKind)> {
        match &self.tls {
            Some(table) => table.lookup(name, alpn).map(|(i, kind)| (*i, kind)),
            None => self.fallback(),
        }
    }

    /// The route for an HTTP client that sent Host `name`.
    pub(crate) fn for_http(&self, name: Option<&str>) -> Option<(usize, MatchKind)> {
        match &self.http {
            Some(table) => table.lookup(name, &[]).map(|(i, kind)| (*i, kind)),
            None => self.fallback(),
        }
    }

    /// The route for a client that is neither TLS nor HTTP (or sent nothing usable).
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
