//! TCP service names (`http`, `ssh`), as /etc/services lists them: the ports a configuration may
//! name instead of numbers. The configuration's parser is given [`tcp_port`] (it reads no file of
//! its own).

use std::sync::OnceLock;

/// The TCP port of a service name or alias in /etc/services (case-insensitive), which is read
/// once per process; `None` if it is not there (or there is no /etc/services).
pub(crate) fn tcp_port(name: &str) -> Option<u16> {
    static SERVICES: OnceLock<Vec<(String, u16)>> = OnceLock::new();
    let services = SERVICES.get_or_init(|| {
        std::fs::read_to_string("/etc/services")
            .map(|text| parse(&text))
            .unwrap_or_default()
    });
    services
        .iter()
        .find(|(service, _)| service.eq_ignore_ascii_case(name))
        .map(|(_, port)| *port)
}

/// Parses the text of /etc/services into (name or alias, TCP port) pairs.
fn parse(text: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((port, "tcp")) = port_proto.split_once('/') else {
            continue;
        };
        let Ok(port) = port.parse::<u16>() else {
            continue;
        };
        for alias in std::iter::once(name).chain(fields) {
            out.push((alias.to_string(), port));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_of_tcp_services_are_read() {
        let services = parse("http 80/tcp www # web\nhttp 80/udp\nssh\t22/tcp\n");
        assert_eq!(
            services,
            vec![("http".into(), 80), ("www".into(), 80), ("ssh".into(), 22)]
        );
    }
}
