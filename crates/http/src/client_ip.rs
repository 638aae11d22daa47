//! The client's address behind reverse proxies.
//!
//! `X-Forwarded-For` is a list each proxy appends its peer to; anything
//! left of the first proxy we trust may be forged by the client. So the
//! client is the rightmost entry that is not itself a trusted proxy, and a
//! connection from an untrusted peer is taken at face value.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The address to attribute a request to (throttling, session records).
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let peer = peer?;
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(list) = forwarded_for else {
        return Some(peer);
    };
    let mut client = peer;
    for hop in list.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => client = ip,
            Ok(ip) => return Some(ip),
            // A malformed entry: nothing left of it can be trusted either.
            Err(_) => break,
        }
    }
    Some(client)
}

/// [`client_ip`] for an actix request.
pub fn of_request(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let forwarded_for = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    client_ip(req.peer_addr().map(|a| a.ip()), forwarded_for, trusted)
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
}
