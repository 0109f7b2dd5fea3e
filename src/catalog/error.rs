//! Why the catalog copy could not answer.

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot connect to the catalog copy at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("the catalog copy at {addr} did not answer within {timeout:?}")]
    Timeout {
        addr: String,
        timeout: std::time::Duration,
    },
    #[error("the catalog copy refused the login: {message} (SQLSTATE {code})")]
    Refused { code: String, message: String },
    #[error("cannot log in to the catalog copy: {0}")]
    Login(#[from] crate::protocol::login::LoginError),
    #[error("the catalog copy is out of use for {0:?} after failing")]
    Resting(std::time::Duration),
    #[error("no catalog connection was free within {0:?}")]
    Busy(std::time::Duration),
    #[error("the catalog copy connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the catalog copy sent an invalid message: {0}")]
    Protocol(#[from] crate::protocol::ProtocolError),
}
