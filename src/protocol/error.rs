//! Why a byte sequence could not be read as a protocol message.

/// A peer sent bytes that are not a valid message.
///
/// Each variant is a fact about the bytes, phrased so that it can be shown to
/// the client that sent them (see [`ProtocolError::sqlstate`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("message type {tag:?} declares length {len}, below the minimum of 4")]
    LengthTooSmall { tag: char, len: i32 },
    #[error("message type {tag:?} is {len} bytes long, over the limit of {limit} bytes")]
    MessageTooLarge { tag: char, len: usize, limit: usize },
    #[error("startup packet declares length {len}, outside the allowed 8 to {limit} bytes")]
    BadStartupLength { len: i32, limit: usize },
    #[error("unsupported frontend protocol {major}.{minor}: sluice speaks 3.x")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("startup packet has more than {limit} parameters")]
    TooManyParameters { limit: usize },
    #[error("malformed {what}: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
}

impl ProtocolError {
    pub(crate) fn malformed(what: &'static str, why: &'static str) -> Self {
        ProtocolError::Malformed { what, why }
    }

    /// The SQLSTATE to report to the client that sent the bytes.
    pub fn sqlstate(&self) -> &'static str {
        use super::sqlstate;
        match self {
            ProtocolError::MessageTooLarge { .. } | ProtocolError::TooManyParameters { .. } => {
                sqlstate::PROGRAM_LIMIT_EXCEEDED
            }
            ProtocolError::UnsupportedProtocol { .. } => sqlstate::FEATURE_NOT_SUPPORTED,
            _ => sqlstate::PROTOCOL_VIOLATION,
        }
    }
}
