//! Layered configuration: built-in defaults < optional file < environment.
//!
//! # Layout
//! - [`load`]: reads the three layers into a service's settings type and
//!   validates it once, so a bad value stops the service at start with one
//!   line naming the key.
//! - [`Validate`] / [`Invalid`]: cross-field checks a settings type adds on
//!   top of what serde already enforces.
//!
//! Each service ships its defaults as a commented TOML file compiled into
//! the binary (`include_str!`), so the defaults are documentation too. The
//! optional file is named by `KEEL_CONFIG_FILE` rather than looked up in the
//! working directory: tests run from crate folders, containers from `/`.
//! Environment variables use the `KEEL_` prefix and `__` between levels:
//! `KEEL_HTTP__PORT=9000` sets `http.port`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use config::{Config, File, FileFormat};
use serde::de::DeserializeOwned;

/// Prefix of every environment variable Keel reads.
pub const ENV_PREFIX: &str = "KEEL";
/// Names the optional configuration file.
pub const CONFIG_FILE_VAR: &str = "KEEL_CONFIG_FILE";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer could not be read or a value has the wrong type; the message
    /// from `config` names the key.
    #[error("configuration error: {0}")]
    Load(#[from] config::ConfigError),
    #[error(
        "configuration error: {CONFIG_FILE_VAR} points to {path}, which cannot be read: {source}"
    )]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration error: {0}")]
    Invalid(#[from] Invalid),
}

/// A value that deserialised but makes no sense, with the key it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    pub key: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the key with the section it was found in, so nested settings
    /// can validate themselves without knowing where they are mounted.
    pub fn within(mut self, section: &str) -> Self {
        self.key = format!("{section}.{}", self.key);
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Where a service runs. Production refuses development conveniences
/// (well-known secrets, generated keys) at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

/// Checks that serde cannot express: ranges, cross-field rules, production-only rules.
pub trait Validate {
    fn validate(&self) -> Result<(), Invalid>;
}

/// Loads settings from the embedded defaults, the file named by
/// `KEEL_CONFIG_FILE` (if set) and the process environment, then validates.
pub fn load<T: DeserializeOwned + Validate>(defaults_toml: &str) -> Result<T, Error> {
    let file = std::env::var_os(CONFIG_FILE_VAR).map(PathBuf::from);
    let env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    load_from(defaults_toml, file.as_deref(), env)
}

/// [`load`] with explicit inputs, for tests and tools.
pub fn load_from<T: DeserializeOwned + Validate>(
    defaults_toml: &str,
    file: Option<&Path>,
    env: HashMap<String, String>,
) -> Result<T, Error> {
    let mut builder = Config::builder().add_source(File::from_str(defaults_toml, FileFormat::Toml));
    if let Some(path) = file {
        // An explicitly named file that is missing is an operator error, not
        // something to skip silently.
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            path: path.to_path_buf(),
            source,
        })?;
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    let env = env
        .into_iter()
        .filter(|(k, _)| k != CONFIG_FILE_VAR)
        .collect::<HashMap<_, _>>();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(env)),
    );
    let settings: T = builder.build()?.try_deserialize()?;
    settings.validate()?;
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Settings {
        http: Http,
        name: String,
    }

    #[derive(Debug, Deserialize)]
    struct Http {
        port: u16,
        host: String,
    }

    impl Validate for Settings {
        fn validate(&self) -> Result<(), Invalid> {
            if self.http.port == 0 {
                return Err(Invalid::new("port", "must not be 0").within("http"));
            }
            Ok(())
        }
    }

    const DEFAULTS: &str = "name = \"keel\"\n[http]\nport = 8080\nhost = \"127.0.0.1\"\n";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_overrides_them() {
        let s: Settings = load_from(DEFAULTS, None, HashMap::new()).unwrap();
        assert_eq!(s.http.port, 8080);
        assert_eq!(s.name, "keel");
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("keel-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keel.toml");
        std::fs::write(&path, "name = \"from-file\"\n[http]\nport = 9000\n").unwrap();

        let s: Settings =
            load_from(DEFAULTS, Some(&path), env(&[("KEEL_HTTP__PORT", "9100")])).unwrap();
        assert_eq!(s.name, "from-file");
        assert_eq!(s.http.port, 9100);
        assert_eq!(s.http.host, "127.0.0.1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let err = load_from::<Settings>(DEFAULTS, None, env(&[("KEEL_HTTP__PORT", "eighty")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("http.port"), "{err}");
    }

    #[test]
    fn a_failed_validation_names_its_key() {
        let err = load_from::<Settings>(DEFAULTS, None, env(&[("KEEL_HTTP__PORT", "0")]))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "configuration error: http.port: must not be 0");
    }

    #[test]
    fn a_named_file_that_does_not_exist_is_an_error() {
        let err = load_from::<Settings>(
            DEFAULTS,
            Some(Path::new("/nonexistent/keel.toml")),
            HashMap::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/keel.toml"), "{err}");
    }
}
