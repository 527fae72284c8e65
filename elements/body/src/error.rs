//! Errors of body-model loading and evaluation. Every file error names the file, and the key
//! where one is at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not in the expected format (truncated, corrupt, unknown layout).
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// A required array or metadata entry is absent.
    #[error("{path}: missing key `{key}`")]
    MissingKey { path: PathBuf, key: String },
    /// An array has the wrong shape or element type.
    #[error("{path}: key `{key}`: {message}")]
    BadArray {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// Input to a model evaluation is unusable (wrong length, NaN).
    #[error("body model `{model}`: {message}")]
    Input { model: String, message: String },
}

impl BodyError {
    pub(crate) fn bad(path: &std::path::Path, key: &str, message: impl Into<String>) -> Self {
        BodyError::BadArray {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = BodyError> = std::result::Result<T, E>;
