//! Where the signing keys come from: configuration (PEM by environment or
//! file, as Kubernetes Secrets provide them) or, in development only, a key
//! generated once and kept under `tokens.dev_key_dir`.

use std::path::{Path, PathBuf};

use keel_config::Environment;
use keel_token::{KeyAlgorithm, Signer, SigningKey};
use secrecy::ExposeSecret;

use crate::settings::TokenSettings;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("tokens.{key}: {source}")]
    Invalid {
        key: &'static str,
        #[source]
        source: keel_token::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot keep the development key at {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tokens.signing_key: production needs a configured signing key")]
    Missing,
}

pub fn load(settings: &TokenSettings, environment: Environment) -> Result<Signer, KeyError> {
    let algorithm =
        KeyAlgorithm::parse(&settings.algorithm).map_err(|source| KeyError::Invalid {
            key: "algorithm",
            source,
        })?;
    let pem = match (&settings.signing_key, &settings.signing_key_file) {
        (Some(pem), _) => pem.expose_secret().as_bytes().to_vec(),
        (None, Some(path)) => read(path)?,
        (None, None) if environment == Environment::Development => {
            development_key(&settings.dev_key_dir, algorithm)?
        }
        (None, None) => return Err(KeyError::Missing),
    };
    let active =
        SigningKey::from_pem(algorithm, &pem, settings.signing_kid.clone()).map_err(|source| {
            KeyError::Invalid {
                key: "signing_key",
                source,
            }
        })?;
    let mut retired = Vec::new();
    if let Some(pem) = &settings.retired_key {
        retired.push(parse_any(pem.expose_secret().as_bytes(), "retired_key")?);
    }
    for path in &settings.retired_key_files {
        retired.push(parse_any(&read(path)?, "retired_key_files")?);
    }
    Signer::new(active, retired).map_err(|source| KeyError::Invalid {
        key: "retired_key_files",
        source,
    })
}

/// A retired key may predate an algorithm switch: try both.
fn parse_any(pem: &[u8], key: &'static str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pem(KeyAlgorithm::Rs256, pem, None)
        .or_else(|_| SigningKey::from_pem(KeyAlgorithm::EdDsa, pem, None))
        .map_err(|source| KeyError::Invalid { key, source })
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Generated once, then reused, so development restarts keep tokens valid.
fn development_key(dir: &Path, algorithm: KeyAlgorithm) -> Result<Vec<u8>, KeyError> {
    let path = dir.join(format!(
        "signing-{}.pem",
        algorithm.to_string().to_lowercase()
    ));
    if path.exists() {
        return read(&path);
    }
    let pem = SigningKey::generate_pem(algorithm).map_err(|source| KeyError::Invalid {
        key: "dev_key_dir",
        source,
    })?;
    let write_err = |source| KeyError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    write_private(&path, pem.as_bytes()).map_err(write_err)?;
    tracing::warn!(path = %path.display(), "generated a development signing key");
    Ok(pem.into_bytes())
}

fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents)
}
