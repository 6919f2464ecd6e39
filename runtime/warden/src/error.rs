//! The library's error: callers branch on its kind. A refusal is the caller's (it did not
//! prove who it is, or what it proved does not allow this); a failure of Warden itself (its
//! state store, its files) is `Internal` and never a refusal.

/// Why an operation did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller did not prove who it is, or what it proved does not allow this.
    #[error("{0}")]
    Refused(String),
    /// The deployment, a manifest or the policies are invalid; the message names the file
    /// and the field.
    #[error("{0:#}")]
    Invalid(anyhow::Error),
    /// Warden itself failed: its state store, its files, its engine.
    #[error("{0:#}")]
    Internal(anyhow::Error),
}

impl Error {
    /// A failure of Warden itself, described by what it was doing.
    pub fn internal(doing: &str) -> impl FnOnce(anyhow::Error) -> Error + '_ {
        move |e| Error::Internal(e.context(doing.to_string()))
    }
}
