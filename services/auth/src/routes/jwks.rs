use actix_web::http::header;
use actix_web::{HttpResponse, web};

use crate::state::AppState;

/// The public keys (JWK Set). Cacheable for `tokens.jwks_max_age`: a new
/// key is published before it signs (as a retired key's replacement) and a
/// retired one stays published far longer than this, so caches never miss
/// a key a live token needs for long; verifiers refetch on an unknown kid.
pub async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={}", state.jwks_max_age().as_secs()),
        ))
        .json(state.signer.jwks())
}
