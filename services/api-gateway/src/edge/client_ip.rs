//! The client's address, as far as the gateway can tell.

use std::net::IpAddr;

use actix_web::dev::ServiceRequest;

/// The TCP peer, unless the peer is a trusted proxy: then the last hop it
/// appended to `X-Forwarded-For` (the only entry a trusted proxy vouches
/// for; earlier entries come from the client and may be forged).
pub fn client_ip(req: &ServiceRequest, peer_is_trusted: bool) -> Option<IpAddr> {
    let peer = req.peer_addr().map(|a| a.ip());
    if !peer_is_trusted {
        return peer;
    }
    req.headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|ip| ip.trim().parse().ok())
        .or(peer)
}
