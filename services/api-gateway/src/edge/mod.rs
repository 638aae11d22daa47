//! The `/api/v1` edge: every API route sits inside one scope wrapped, from
//! the outside in, by CORS, authentication and rate limiting.
//!
//! CORS is outermost so that even a 401 or 429 reaches the browser page
//! (without CORS headers it could not read the problem); rate limiting is
//! innermost because it keys authenticated requests by user, which only
//! authentication knows. Security headers and 405/413 problems are
//! `keel_http`'s, for every service.
//!
//! - [`cors`]: the CORS policy.
//! - [`rate_limit`]: GCRA in Redis, per route class.
//!
//! Anonymous requests are rate-limited by client address: the TCP peer, or
//! what a proxy in `http.trusted_proxies` (an ingress) forwarded
//! (`keel_http::client_ip`). The address is computed once per request, as
//! a [`ClientAddress`] in the request's extensions, and the proxy tells
//! upstreams that one address.
//!
//! Every decision here (rate-limit class, the authentication skip list,
//! the admin gate, the proxy's target) reads the *canonical* path:
//! `keel_http::canonical` rewrites each request to it, or refuses it with
//! a 400, before routing (ADR 0018). So the string these rules compare is
//! the one the router matched, and no spelling (`/api/v1/%61dmin`,
//! `/api/v1/auth/../admin`) is read one way here and another way there.

pub mod cors;
pub mod rate_limit;

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{HttpMessage, Scope, web};

use crate::authn::{self, Authenticator};
use cors::CorsSettings;
use rate_limit::RateLimiter;

/// The client's address as the gateway computed it (the TCP peer, or the
/// client a trusted proxy vouches for); `None` when the connection has no
/// peer address. Set on every `/api/v1` request by the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub Option<IpAddr>);

/// What the edge middleware share across actix workers.
#[derive(Debug, Clone)]
pub struct Edge {
    pub authenticator: Arc<Authenticator>,
    pub limiter: Arc<RateLimiter>,
    pub cors: CorsSettings,
    /// Proxies whose `X-Forwarded-For` names the client (`http.trusted_proxies`).
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
}

impl Edge {
    /// The `/api/v1` scope with the edge middleware; areas `configure` their
    /// routes into it (one scope: a second `/api/v1` scope would never be
    /// reached, actix routes to the first matching prefix).
    pub fn api_scope(
        self,
    ) -> Scope<
        impl ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        let limiter = self.limiter;
        let trusted_proxies = self.trusted_proxies;
        let authenticator = self.authenticator;
        web::scope("/api/v1")
            .wrap(from_fn(move |req: ServiceRequest, next| {
                let ip = req.extensions().get::<ClientAddress>().and_then(|c| c.0);
                rate_limit::middleware(limiter.clone(), ip, req, next)
            }))
            .wrap(from_fn(move |req, next| {
                authn::middleware(authenticator.clone(), req, next)
            }))
            .wrap(from_fn(
                move |req: ServiceRequest, next: actix_web::middleware::Next<_>| {
                    let ip = keel_http::client_ip::of_request(req.request(), &trusted_proxies);
                    req.extensions_mut().insert(ClientAddress(ip));
                    next.call(req)
                },
            ))
            .wrap(cors::middleware(&self.cors))
    }
}
