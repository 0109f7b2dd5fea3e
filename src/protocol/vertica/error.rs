//! ErrorResponse and NoticeResponse for a Vertica client.

use bytes::BufMut;

use super::framed;
use crate::protocol::frame::Frame;
use crate::protocol::{ProtocolError, backend, write};

/// An ErrorResponse or NoticeResponse without PostgreSQL's `V` field (the
/// unlocalized severity), which Vertica clients read as a numeric error
/// code (§3.5). `tag` is `E` or `N`.
pub fn error_to_vertica(tag: u8, body: &[u8]) -> Result<Frame, ProtocolError> {
    let fields = backend::error_fields(body)?;
    Ok(framed(tag, |b| {
        for (code, value) in fields.iter().filter(|(c, _)| *c != b'V') {
            b.put_u8(*code);
            write::cstr(b, value);
        }
        b.put_u8(0);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_lose_postgres_v_field() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0P15\0\0";
        let e = error_to_vertica(b'E', body).unwrap();
        assert_eq!(
            e.body(),
            b"SERROR\0C42P01\0Mrelation \"nope\" does not exist\0P15\0\0"
        );
        assert!(error_to_vertica(b'E', b"SERROR").is_err());
    }
}
