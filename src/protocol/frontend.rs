//! Messages a client sends, and the tags sluice watches among them.

use super::ProtocolError;
use super::write::read_cstr;

pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const SYNC: u8 = b'S';
pub const TERMINATE: u8 = b'X';
pub const PASSWORD: u8 = b'p';

/// Terminate, as a client sends it.
pub const TERMINATE_MESSAGE: [u8; 5] = [TERMINATE, 0, 0, 0, 4];

/// The SQL text of a Query message, without its terminator.
pub fn query_text(body: &[u8]) -> Result<&[u8], ProtocolError> {
    match read_cstr(body) {
        Some((text, [])) => Ok(text),
        _ => Err(ProtocolError::malformed(
            "Query",
            "text must end with its only NUL",
        )),
    }
}

/// The statement name and SQL text of a Parse message.
pub fn parse_text(body: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let (name, rest) = read_cstr(body).ok_or(ProtocolError::malformed(
        "Parse",
        "statement name is not terminated",
    ))?;
    let (text, _) = read_cstr(rest).ok_or(ProtocolError::malformed(
        "Parse",
        "query text is not terminated",
    ))?;
    Ok((name, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_parse_text() {
        assert_eq!(query_text(b"select 1\0").unwrap(), b"select 1");
        assert!(query_text(b"select 1").is_err());
        assert!(query_text(b"a\0b\0").is_err());
        assert_eq!(
            parse_text(b"s1\0select $1\0\0\0").unwrap(),
            (&b"s1"[..], &b"select $1"[..])
        );
        assert!(parse_text(b"s1\0select").is_err());
    }
}
