//! The one error enum of `preba-serve`: what stops the server from starting.
//! Request-level failures are HTTP answers, not errors of this type.
#![forbid(unsafe_code)]

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad command line (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A model repository entry or config.toml is wrong.
    #[error("{0}")]
    Config(String),
    /// Something needed to serve could not start (card, worker, socket).
    #[error("{0}")]
    Startup(String),
    #[error(transparent)]
    Host(#[from] preba_host::Error),
}
