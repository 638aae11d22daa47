//! Prometheus metrics.
//!
//! Each service owns one explicit [`Registry`] built at start-up (no global
//! recorder), so two instances of a service in one test process keep separate
//! figures. Components register their metrics into it; the HTTP layer
//! encodes it for `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry;

use crate::ServiceIdentity;

/// A registry with Keel's prefix and a `keel_build_info` gauge
/// (`service`, `version` labels, value 1), the usual way to join metrics
/// with a deployed version.
pub fn registry(identity: &ServiceIdentity) -> Registry {
    let mut registry = Registry::with_prefix("keel");
    let info = Family::<Vec<(String, String)>, Gauge>::default();
    info.get_or_create(&vec![
        ("service".to_owned(), identity.name.to_owned()),
        ("version".to_owned(), identity.version.to_owned()),
    ])
    .set(1);
    registry.register("build_info", "Build information", info);
    registry
}

/// The registry in Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoding error would be a bug
    // in a metric's label type, and an empty scrape says so loudly enough.
    if encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_info_gauge_names_the_service_and_version() {
        let identity = ServiceIdentity::new("api-gateway", "1.2.3");
        let text = render(&registry(&identity));
        assert!(
            text.contains(r#"keel_build_info{service="api-gateway",version="1.2.3"} 1"#),
            "{text}"
        );
    }
}
