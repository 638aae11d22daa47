//! The `storage` configuration section (nested where a service needs it,
//! e.g. `[exports.storage]`).

use std::path::PathBuf;

use keel_config::Invalid;
use secrecy::SecretString;
use serde::Deserialize;

/// Where objects live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A directory on the local file system (one machine, or a shared volume).
    Local,
    /// Amazon S3 or any S3-compatible store.
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    pub backend: Backend,
    /// `local`: the directory objects are kept under, created when missing.
    /// A relative path is resolved against the working directory.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// `s3`: the bucket and how to reach it.
    #[serde(default)]
    pub s3: Option<S3Settings>,
    /// A write buffers up to this many bytes; a larger object is uploaded
    /// in parts of this size (S3 needs at least 5 MiB per part).
    #[serde(default = "default_part_size")]
    pub part_size: usize,
    /// Parts uploaded at once per object: memory per writer is about
    /// `part_size × (upload_concurrency + 1)`.
    #[serde(default = "default_upload_concurrency")]
    pub upload_concurrency: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Settings {
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// For S3-compatible stores (`http://127.0.0.1:9000` for MinIO); empty
    /// or absent for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Credentials; when absent, the standard `AWS_*` environment variables
    /// (and instance metadata) are used.
    #[serde(default)]
    pub access_key_id: Option<SecretString>,
    #[serde(default)]
    pub secret_access_key: Option<SecretString>,
    /// Allow a plain-HTTP endpoint (local MinIO).
    #[serde(default)]
    pub allow_http: bool,
    /// `https://bucket.endpoint/key` instead of `https://endpoint/bucket/key`.
    #[serde(default)]
    pub virtual_hosted_style: bool,
}

fn default_root() -> PathBuf {
    PathBuf::from(".keel/exports")
}

fn default_part_size() -> usize {
    8 * 1024 * 1024
}

fn default_upload_concurrency() -> usize {
    2
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

/// S3's smallest part (all but the last).
const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

impl StorageSettings {
    /// Checks the section; `section` is its dotted name (`exports.storage`)
    /// for the message naming the key.
    pub fn validate_as(&self, section: &str) -> Result<(), Invalid> {
        let invalid = |key: &str, reason: &str| Err(Invalid::new(key, reason).within(section));
        if self.part_size < MIN_PART_SIZE {
            return invalid("part_size", "must be at least 5 MiB (5242880)");
        }
        if self.upload_concurrency == 0 {
            return invalid("upload_concurrency", "must be at least 1");
        }
        match self.backend {
            Backend::Local if self.root.as_os_str().is_empty() => {
                invalid("root", "must name a directory")
            }
            Backend::Local => Ok(()),
            Backend::S3 => match &self.s3 {
                None => invalid("s3", "is required when backend = \"s3\""),
                Some(s3) if s3.bucket.trim().is_empty() => {
                    invalid("s3.bucket", "must not be empty")
                }
                Some(s3) if s3.access_key_id.is_some() != s3.secret_access_key.is_some() => {
                    invalid(
                        "s3.secret_access_key",
                        "access_key_id and secret_access_key go together",
                    )
                }
                Some(_) => Ok(()),
            },
        }
    }
}

/// A local directory (tests, single-machine development).
impl StorageSettings {
    pub fn local(root: impl Into<PathBuf>) -> Self {
        Self {
            backend: Backend::Local,
            root: root.into(),
            s3: None,
            part_size: default_part_size(),
            upload_concurrency: default_upload_concurrency(),
        }
    }
}
