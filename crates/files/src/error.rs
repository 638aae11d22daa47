//! The crate's error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No object under this key.
    #[error("no object {key}")]
    NotFound { key: String },
    /// The key is not a valid object path (empty segments, `..`, ...).
    #[error("invalid object key {key}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// The local root directory cannot be created or opened.
    #[error("cannot use the storage directory {path}: {source}")]
    Directory {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The backend failed (I/O, network, credentials, ...).
    #[error("object storage failed: {0}")]
    Backend(#[source] object_store::Error),
}

impl Error {
    pub(crate) fn from_store(key: &str, error: object_store::Error) -> Self {
        match error {
            object_store::Error::NotFound { .. } => Error::NotFound {
                key: key.to_owned(),
            },
            e => Error::Backend(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
