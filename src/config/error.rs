//! Configuration errors: each names the file, the key and what is wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: key `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Error {
    /// Turn a TOML error into one that names the file and line.
    pub(super) fn syntax(path: &std::path::Path, text: &str, e: toml::de::Error) -> Error {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        Error::Syntax {
            path: path.to_path_buf(),
            line,
            message: e.message().to_string(),
        }
    }
}
