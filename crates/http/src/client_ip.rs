//! The client's address behind reverse proxies.
//!
//! `X-Forwarded-For` is a list each proxy appends its peer to; anything
//! left of the first proxy we trust may be forged by the client. So the
//! client is the rightmost entry that is not itself a trusted proxy, and a
//! connection from an untrusted peer is taken at face value.
//!
//! - A header sent on several lines is one list, the lines joined in order
//!   (RFC 9110 §5.3): reading only the first line would let a client put
//!   its own line first and have a trusted proxy's entry ignored.
//! - An entry is an address, optionally with a port or in brackets
//!   (`192.0.2.1:443`, `[2001:db8::1]:443`: some proxies write those).
//!   Anything else is garbage: nothing left of it can be vouched for, so
//!   the walk stops and the last trusted hop is the client. Empty list
//!   elements are skipped, as RFC 9110 §5.6.1 asks.
//! - IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack
//!   socket reports for an IPv4 peer) are read as the IPv4 address, so
//!   `10.0.0.0/8` in a trusted list means what it says.
//!
//! A service that forwards a request on (the gateway) tells the next hop
//! this one address and nothing a client sent ([`forwarded_element`]).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use actix_web::HttpRequest;
use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

/// One list entry as an address, if it is one.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        })?;
    Some(ip.to_canonical())
}

/// The address to attribute a request to (throttling, session records).
/// `forwarded_for` is the whole `X-Forwarded-For` list ([`forwarded_for`]
/// joins a header sent on several lines).
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?.to_canonical();
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(list) = forwarded_for else {
        return Some(peer);
    };
    let mut client = peer;
    for hop in list.rsplit(',').filter(|hop| !hop.trim().is_empty()) {
        match parse_entry(hop) {
            Some(ip) if is_trusted(&ip) => client = ip,
            Some(ip) => return Some(ip),
            // A malformed entry: nothing left of it can be trusted either.
            None => break,
        }
    }
    Some(client)
}

/// Every `X-Forwarded-For` line of `headers` joined into one list, in
/// order; `None` without the header. A line that is not visible ASCII
/// becomes one garbage entry (where the walk stops).
pub fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let mut lines = headers.get_all("x-forwarded-for").peekable();
    lines.peek()?;
    Some(
        lines
            .map(|line| line.to_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// [`client_ip`] for an actix request.
pub fn of_request(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let list = forwarded_for(req.headers());
    client_ip(req.peer_addr().map(|a| a.ip()), list.as_deref(), trusted)
}

/// The RFC 7239 `Forwarded` element naming `client`: `for=192.0.2.1`, or
/// `for="[2001:db8::1]"` (an IPv6 node is bracketed, and then quoted,
/// because `[`, `:` and `]` are not token characters).
pub fn forwarded_element(client: IpAddr) -> String {
    match client {
        IpAddr::V4(ip) => format!("for={ip}"),
        IpAddr::V6(ip) => format!("for=\"[{ip}]\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let got = client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &nets(&["10.0.0.0/8"]));
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn behind_a_trusted_proxy_the_last_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client forged the first entry; the ingress (10.0.0.5) appended
        // the real client, the gateway (10.0.0.7) appended the ingress.
        let got = client_ip(
            ip("10.0.0.7"),
            Some("6.6.6.6, 198.51.100.20, 10.0.0.5"),
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.20"));
    }

    #[test]
    fn a_trusted_peer_without_the_header_is_the_client() {
        assert_eq!(
            client_ip(ip("10.0.0.7"), None, &nets(&["10.0.0.0/8"])),
            ip("10.0.0.7")
        );
    }

    #[test]
    fn a_malformed_entry_stops_the_walk_at_the_last_trusted_hop() {
        let got = client_ip(
            ip("10.0.0.7"),
            Some("198.51.100.20, garbage, 10.0.0.5"),
            &nets(&["10.0.0.0/8"]),
        );
        assert_eq!(got, ip("10.0.0.5"));
    }

    fn request(peer: &str, lines: &[&str]) -> actix_web::HttpRequest {
        let mut req = actix_web::test::TestRequest::default().peer_addr(peer.parse().unwrap());
        for line in lines {
            req = req.append_header(("x-forwarded-for", *line));
        }
        req.to_http_request()
    }

    #[test]
    fn repeated_header_lines_are_one_list_in_order() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client sent the first line; the ingress added its own.
        let req = request("10.0.0.7:4000", &["6.6.6.6", "198.51.100.20, 10.0.0.5"]);
        assert_eq!(of_request(&req, &trusted), ip("198.51.100.20"));
        // Two lines from a trusted proxy, each one entry.
        let req = request("10.0.0.7:4000", &["6.6.6.6", "198.51.100.21"]);
        assert_eq!(of_request(&req, &trusted), ip("198.51.100.21"));
        // From an untrusted peer no line counts.
        let req = request("203.0.113.9:4000", &["6.6.6.6", "198.51.100.21"]);
        assert_eq!(of_request(&req, &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn entries_with_ports_brackets_and_empty_elements_are_read() {
        let trusted = nets(&["10.0.0.0/8"]);
        for (list, client) in [
            ("198.51.100.20:4711", "198.51.100.20"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("198.51.100.20,, 10.0.0.5 ,", "198.51.100.20"),
            ("::ffff:198.51.100.20", "198.51.100.20"),
        ] {
            assert_eq!(
                client_ip(ip("10.0.0.7"), Some(list), &trusted),
                ip(client),
                "{list}"
            );
        }
        // A mapped peer address is matched against IPv4 networks.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.7"), Some("198.51.100.20"), &trusted),
            ip("198.51.100.20")
        );
    }

    #[test]
    fn garbage_never_panics_and_stops_the_walk() {
        let trusted = nets(&["10.0.0.0/8"]);
        for list in [
            "",
            ",,,",
            "unknown",
            "[",
            "]",
            "[::1",
            "1.2.3.4:99999",
            "300.1.1.1",
            "for=1.2.3.4",
            "\u{0}",
            "\u{e9}\u{e9}",
            "1.2.3.4, \"2001:db8::1\"",
        ] {
            let got = client_ip(ip("10.0.0.7"), Some(list), &trusted);
            assert!(got.is_some(), "{list}");
        }
        assert_eq!(
            client_ip(
                ip("10.0.0.7"),
                Some("198.51.100.20, unknown, 10.0.0.5"),
                &trusted
            ),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn the_forwarded_element_brackets_and_quotes_ipv6() {
        assert_eq!(
            forwarded_element("192.0.2.1".parse().unwrap()),
            "for=192.0.2.1"
        );
        assert_eq!(
            forwarded_element("2001:db8::1".parse().unwrap()),
            "for=\"[2001:db8::1]\""
        );
    }
}
