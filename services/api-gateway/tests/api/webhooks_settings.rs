//! The `[webhooks]` section: development secrets, their environment
//! variables, and production's refusal of them.

use std::collections::HashMap;

use api_gateway::settings::{DEFAULTS, Settings};
use api_gateway::webhooks::settings::DEVELOPMENT_SECRETS;
use keel_config::Environment;
use secrecy::ExposeSecret;

fn load(env: &[(&str, &str)]) -> Result<Settings, keel_config::Error> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    keel_config::load_from(DEFAULTS, None, env)
}

#[test]
fn the_development_configuration_defines_one_source_per_scheme_with_its_development_secret() {
    let settings = Settings::defaults().unwrap();
    let names: Vec<&str> = settings
        .webhooks
        .sources
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["github", "shopify", "standard", "stripe"]);
    for (name, source) in &settings.webhooks.sources {
        assert_eq!(source.scheme.as_str(), name);
        assert_eq!(source.body_limit, 1024 * 1024);
        assert_eq!(
            source.secret_env.as_deref(),
            Some(format!("KEEL_WEBHOOK_SECRET_{}", name.to_uppercase()).as_str())
        );
        let secrets = source.effective_secrets_with(|_| None);
        assert!(source.development_secret(&secrets).is_some(), "{name}");
    }
    assert_eq!(DEVELOPMENT_SECRETS.len(), settings.webhooks.sources.len());
}

#[test]
fn a_secret_from_the_environment_replaces_the_development_one_and_lists_rotations() {
    let settings = Settings::defaults().unwrap();
    let shopify = &settings.webhooks.sources["shopify"];
    let secrets = shopify.effective_secrets_with(|name| {
        (name == "KEEL_WEBHOOK_SECRET_SHOPIFY").then(|| "new-secret, old-secret".to_owned())
    });
    let exposed: Vec<&str> = secrets.iter().map(|s| s.expose_secret()).collect();
    assert_eq!(exposed, ["new-secret", "old-secret"]);
    assert!(shopify.development_secret(&secrets).is_none());
}

#[test]
fn production_refuses_to_start_with_a_development_webhook_secret_naming_the_key() {
    let error = load(&[("KEEL_ENVIRONMENT", "production")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("webhooks.sources."), "{error}");
    assert!(error.contains(".secrets"), "{error}");
    assert!(error.contains("development secret"), "{error}");
    assert!(error.contains("KEEL_WEBHOOK_SECRET_"), "{error}");
}

#[test]
fn production_accepts_sources_that_have_their_own_secrets() {
    let mut settings = Settings::defaults().unwrap();
    let own = |name: &str| match name {
        "standard" => "whsec_b3duLXN0YW5kYXJkLWtleQ==".to_owned(),
        other => format!("whsec_own-{other}-secret"),
    };
    settings
        .webhooks
        .validate_in(Environment::Production, |var| {
            var.strip_prefix("KEEL_WEBHOOK_SECRET_")
                .map(|name| own(&name.to_lowercase()))
        })
        .unwrap();
    for source in settings.webhooks.sources.values_mut() {
        source.secret_env = None;
    }
    // Without the environment, the development secrets are back: refused.
    assert!(
        settings
            .webhooks
            .validate_in(Environment::Production, |_| None)
            .is_err()
    );
}

#[test]
fn an_unusable_standard_secret_is_refused_naming_the_key() {
    let mut settings = Settings::defaults().unwrap();
    let source = settings.webhooks.sources.get_mut("standard").unwrap();
    source.secret_env = None;
    source.secrets = vec!["whsec_not base64!".to_owned().into()];
    let error = settings
        .webhooks
        .validate_in(Environment::Development, |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("webhooks.sources.standard.secrets"),
        "{error}"
    );
}

#[test]
fn group_commit_limits_come_from_the_environment_and_a_zero_batch_is_refused_naming_the_key() {
    let settings = load(&[
        ("KEEL_WEBHOOKS__GROUP_COMMIT__MAX_BATCH", "32"),
        ("KEEL_WEBHOOKS__GROUP_COMMIT__CONCURRENT_BATCHES", "2"),
    ])
    .unwrap();
    assert_eq!(settings.webhooks.group_commit.max_batch, 32);
    assert_eq!(settings.webhooks.group_commit.concurrent_batches, 2);

    let error = load(&[("KEEL_WEBHOOKS__GROUP_COMMIT__MAX_BATCH", "0")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("webhooks.group_commit.max_batch"), "{error}");
}

#[test]
fn the_body_read_deadline_comes_from_the_environment_and_zero_is_refused_naming_the_key() {
    assert_eq!(
        load(&[]).unwrap().webhooks.body_read_timeout,
        std::time::Duration::from_secs(10)
    );
    let settings = load(&[("KEEL_WEBHOOKS__BODY_READ_TIMEOUT", "3s")]).unwrap();
    assert_eq!(
        settings.webhooks.body_read_timeout,
        std::time::Duration::from_secs(3)
    );
    let error = load(&[("KEEL_WEBHOOKS__BODY_READ_TIMEOUT", "0s")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("webhooks.body_read_timeout"), "{error}");
}

#[test]
fn webhooks_are_limited_per_address_by_default_and_a_zero_limit_is_refused_naming_the_key() {
    let settings = load(&[]).unwrap();
    let limit = settings.rate_limit.classes["webhooks"];
    assert_eq!((limit.limit, limit.period.as_secs()), (6000, 60));
    let error = load(&[("KEEL_RATE_LIMIT__CLASSES__WEBHOOKS__LIMIT", "0")])
        .unwrap_err()
        .to_string();
    assert!(error.contains("rate_limit.classes.webhooks"), "{error}");
}
