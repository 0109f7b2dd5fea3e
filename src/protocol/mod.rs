//! The PostgreSQL v3 wire protocol, and Vertica's dialect of it, as bytes.
//!
//! Nothing here does I/O, reads configuration or logs: every function turns
//! bytes into values or values into bytes. The session code in the
//! `frontend` and `backend` modules decides what to do with them.
//!
//! * [`frame`]: splits a message stream into runs relayed untouched and the
//!   few whole messages sluice must look at.
//! * [`startup`]: the untagged packets a client sends before its first typed
//!   message (SSLRequest, CancelRequest, Vertica's LoadBalanceRequest, ...).
//! * [`backend`]: messages servers send, and the ones sluice writes itself.
//! * [`frontend`]: messages clients send.
//! * [`login`]: the client side of a login: what each Authentication
//!   request asks for, and the answer with a password (SCRAM included).
//! * [`sqlstate`]: the SQLSTATE codes sluice reports.
//! * [`vertica`]: Vertica's dialect, translated to and from PostgreSQL's.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod login;
pub mod sqlstate;
pub mod startup;
pub mod vertica;

mod error;
mod write;

pub use error::ProtocolError;
