//! The errors of the trainer library; each names the file, row, field or setting at fault.

use std::path::PathBuf;

/// Everything that can go wrong while reading data, loading a model or training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The data is malformed: a missing column, a bad label, an empty text, a broken row.
    #[error("{path}: {message}")]
    Data {
        /// The data file or folder.
        path: PathBuf,
        /// What is wrong, naming the row or column.
        message: String,
    },
    /// The model folder or checkpoint is incomplete or does not fit the architecture.
    #[error("{path}: {message}")]
    Model {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong, naming the tensor or field.
        message: String,
    },
    /// The run folder cannot be used as asked.
    #[error("{path}: {message}")]
    Run {
        /// The run folder.
        path: PathBuf,
        /// What is wrong and how to proceed.
        message: String,
    },
    /// An exported model does not compute what the model it came from does.
    #[error("the exported model fails its check against candle: {0}")]
    Check(#[from] crate::export::CheckFailure),
    /// A setting is out of range or contradicts another.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// The tokenizer failed.
    #[error(transparent)]
    Encode(#[from] feelings_core::EncodeError),
    /// A tensor operation failed.
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A deployment to a gateway failed.
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
}

/// The trainer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A data error in `path`.
    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A model error in `path`.
    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A run-folder error in `path`.
    pub fn run(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Run {
            path: path.into(),
            message: message.into(),
        }
    }
}
