//! Messages a client sends, and the tags sluice watches among them.

use super::ProtocolError;
use super::write::read_cstr;

pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const SYNC: u8 = b'S';
pub const FUNCTION_CALL: u8 = b'F';
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

/// The mechanism and initial data of a SASLInitialResponse (a `p` message
/// answering AuthenticationSASL).
pub fn sasl_initial_response(body: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let bad = |why| ProtocolError::malformed("SASLInitialResponse", why);
    let (mechanism, rest) = read_cstr(body).ok_or(bad("mechanism is not terminated"))?;
    let (len, data) = rest
        .split_first_chunk::<4>()
        .ok_or(bad("data length is missing"))?;
    let len = i32::from_be_bytes(*len);
    match len {
        -1 if data.is_empty() => Ok((mechanism, data)),
        n if n >= 0 && n as usize == data.len() => Ok((mechanism, data)),
        _ => Err(bad("data length does not match the message")),
    }
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

    #[test]
    fn sasl_initial_response_checks_its_length() {
        let ok = b"SCRAM-SHA-256\0\0\0\0\x03n,,";
        assert_eq!(
            sasl_initial_response(ok).unwrap(),
            (&b"SCRAM-SHA-256"[..], &b"n,,"[..])
        );
        assert!(sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x09n,,").is_err());
        assert!(sasl_initial_response(b"SCRAM").is_err());
        assert!(sasl_initial_response(b"SCRAM\0\0\0").is_err());
    }
}
