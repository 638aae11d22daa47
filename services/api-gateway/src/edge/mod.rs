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
//! (`keel_http::client_ip`).

pub mod cors;
pub mod rate_limit;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{Scope, web};

use crate::authn::{self, Authenticator};
use cors::CorsSettings;
use rate_limit::RateLimiter;

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
                let ip = keel_http::client_ip::of_request(req.request(), &trusted_proxies);
                rate_limit::middleware(limiter.clone(), ip, req, next)
            }))
            .wrap(from_fn(move |req, next| {
                authn::middleware(authenticator.clone(), req, next)
            }))
            .wrap(cors::middleware(&self.cors))
    }
}
