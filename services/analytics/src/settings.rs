use keel_config::{Environment, Invalid, Validate};
use keel_db::DatabaseSettings;
use keel_http::HttpSettings;
use keel_messaging::AmqpSettings;
use keel_telemetry::TelemetrySettings;
use serde::Deserialize;

pub const DEFAULTS: &str = include_str!("../config/defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub environment: Environment,
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub telemetry: TelemetrySettings,
}

impl Settings {
    /// The built-in defaults alone (tests start from these).
    pub fn defaults() -> Result<Self, keel_config::Error> {
        keel_config::load_from(DEFAULTS, None, Default::default())
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), Invalid> {
        self.http.validate()?;
        self.database.validate()?;
        keel_config::Validate::validate(&self.amqp)?;
        self.telemetry.validate()?;
        Ok(())
    }
}
