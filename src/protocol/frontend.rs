//! Messages a client sends: the tags sluice watches, readers for the ones it
//! routes by, and encoders for the ones it writes itself (to the catalog
//! copy, or to a node when a statement must be prepared there too).

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;
use super::frame::Frame;
use super::write::{self, read_cstr};

pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const BIND: u8 = b'B';
pub const DESCRIBE: u8 = b'D';
pub const EXECUTE: u8 = b'E';
pub const CLOSE: u8 = b'C';
pub const SYNC: u8 = b'S';
pub const FLUSH: u8 = b'H';
pub const FUNCTION_CALL: u8 = b'F';
pub const TERMINATE: u8 = b'X';
pub const PASSWORD: u8 = b'p';

/// Terminate, as a client sends it.
pub const TERMINATE_MESSAGE: [u8; 5] = [TERMINATE, 0, 0, 0, 4];
/// Sync, as a client sends it.
pub const SYNC_MESSAGE: [u8; 5] = [SYNC, 0, 0, 0, 4];

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

/// A Parse message's parts: statement name, SQL text, and the parameter
/// type section that follows (kept as bytes).
pub struct ParseParts<'a> {
    pub name: &'a [u8],
    pub text: &'a [u8],
    pub param_types: &'a [u8],
}

pub fn parse_parts(body: &[u8]) -> Result<ParseParts<'_>, ProtocolError> {
    let (name, rest) = read_cstr(body).ok_or(ProtocolError::malformed(
        "Parse",
        "statement name is not terminated",
    ))?;
    let (text, param_types) = read_cstr(rest).ok_or(ProtocolError::malformed(
        "Parse",
        "query text is not terminated",
    ))?;
    if param_types.len() < 2 {
        return Err(ProtocolError::malformed(
            "Parse",
            "parameter type count is missing",
        ));
    }
    Ok(ParseParts {
        name,
        text,
        param_types,
    })
}

/// The statement name and SQL text of a Parse message.
pub fn parse_text(body: &[u8]) -> Result<(&[u8], &[u8]), ProtocolError> {
    let p = parse_parts(body)?;
    Ok((p.name, p.text))
}

/// A Bind message's portal name, statement name, and the rest of its body.
pub type BindNames<'a> = (&'a [u8], &'a [u8], &'a [u8]);

pub fn bind_names(body: &[u8]) -> Result<BindNames<'_>, ProtocolError> {
    let (portal, rest) = read_cstr(body).ok_or(ProtocolError::malformed(
        "Bind",
        "portal name is not terminated",
    ))?;
    let (statement, rest) = read_cstr(rest).ok_or(ProtocolError::malformed(
        "Bind",
        "statement name is not terminated",
    ))?;
    Ok((portal, statement, rest))
}

/// Describe and Close: `'S'` (statement) or `'P'` (portal), and the name.
pub fn target<'a>(body: &'a [u8], what: &'static str) -> Result<(u8, &'a [u8]), ProtocolError> {
    match body.split_first() {
        Some((&kind @ (b'S' | b'P'), rest)) => match read_cstr(rest) {
            Some((name, [])) => Ok((kind, name)),
            _ => Err(ProtocolError::malformed(what, "name is not terminated")),
        },
        _ => Err(ProtocolError::malformed(what, "target must be S or P")),
    }
}

/// Execute's portal name.
pub fn execute_portal(body: &[u8]) -> Result<&[u8], ProtocolError> {
    read_cstr(body)
        .map(|(portal, _)| portal)
        .ok_or(ProtocolError::malformed(
            "Execute",
            "portal name is not terminated",
        ))
}

fn framed(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Frame {
    let mut buf = BytesMut::new();
    write::message(&mut buf, tag, body);
    Frame::from_raw(buf.freeze())
}

pub fn encode_query(sql: &str) -> Frame {
    framed(QUERY, |b| write::cstr(b, sql))
}

/// Parse of `text` as statement `name`, with these parameter type OIDs.
pub fn encode_parse(buf: &mut BytesMut, name: &str, text: &str, types: &[u32]) {
    write::message(buf, PARSE, |b| {
        write::cstr(b, name);
        write::cstr(b, text);
        b.put_i16(types.len().min(i16::MAX as usize) as i16);
        for t in types.iter().take(i16::MAX as usize) {
            b.put_u32(*t);
        }
    });
}

/// Bind of the unnamed portal to `statement`, text parameters, text results.
pub fn encode_bind_text(buf: &mut BytesMut, statement: &str, values: &[&str]) {
    write::message(buf, BIND, |b| {
        b.put_u8(0);
        write::cstr(b, statement);
        b.put_i16(0);
        b.put_i16(values.len().min(i16::MAX as usize) as i16);
        for v in values.iter().take(i16::MAX as usize) {
            b.put_i32(v.len() as i32);
            b.put_slice(v.as_bytes());
        }
        b.put_i16(0);
    });
}

/// Execute of the unnamed portal, all rows.
pub fn encode_execute(buf: &mut BytesMut) {
    write::message(buf, EXECUTE, |b| {
        b.put_u8(0);
        b.put_i32(0);
    });
}

/// Parse with another statement name, text and parameter types unchanged.
pub fn parse_renamed(parts: &ParseParts<'_>, name: &str) -> Frame {
    framed(PARSE, |b| {
        write::cstr(b, name);
        b.put_slice(parts.text);
        b.put_u8(0);
        b.put_slice(parts.param_types);
    })
}

/// Bind to another statement name; portal, parameters and formats unchanged.
pub fn bind_renamed(body: &[u8], statement: &str) -> Result<Frame, ProtocolError> {
    let (portal, _, rest) = bind_names(body)?;
    Ok(framed(BIND, |b| {
        b.put_slice(portal);
        b.put_u8(0);
        write::cstr(b, statement);
        b.put_slice(rest);
    }))
}

/// Describe or Close of a statement or portal named `name`.
pub fn encode_target(tag: u8, kind: u8, name: &str) -> Frame {
    framed(tag, |b| {
        b.put_u8(kind);
        write::cstr(b, name);
    })
}

/// A PasswordMessage: cleartext or MD5 password, NUL-terminated.
pub fn encode_password(buf: &mut BytesMut, password: &[u8]) {
    write::message(buf, PASSWORD, |b| {
        b.put_slice(password);
        b.put_u8(0);
    });
}

/// SASLInitialResponse: mechanism, then the client-first message.
pub fn encode_sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    write::message(buf, PASSWORD, |b| {
        write::cstr(b, mechanism);
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

/// SASLResponse: the next client message of the exchange.
pub fn encode_sasl_response(buf: &mut BytesMut, data: &[u8]) {
    write::message(buf, PASSWORD, |b| b.put_slice(data));
}

/// CopyData: a piece of the COPY stream.
pub fn encode_copy_data(buf: &mut BytesMut, data: &[u8]) {
    write::message(buf, b'd', |b| b.put_slice(data));
}

/// CopyFail: the client gives up the COPY, saying why.
pub fn encode_copy_fail(buf: &mut BytesMut, why: &str) {
    write::message(buf, b'f', |b| write::cstr(b, why));
}

/// Raw bytes of a frame list, for writing in one go.
pub fn concat(frames: &[Frame]) -> Bytes {
    let mut buf = BytesMut::with_capacity(frames.iter().map(|f| f.raw().len()).sum());
    for f in frames {
        buf.put_slice(f.raw());
    }
    buf.freeze()
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
        assert!(parse_text(b"s1\0select\0").is_err());
    }

    #[test]
    fn renaming_keeps_everything_else() {
        let body = b"S_1\0select $1\0\0\x01\0\0\0\x17";
        let parts = parse_parts(body).unwrap();
        let renamed = parse_renamed(&parts, "sluice_ab");
        assert_eq!(&renamed.body()[..10], b"sluice_ab\0");
        assert_eq!(&renamed.body()[10..], &body[4..]);

        let bind = b"p1\0S_1\0\0\0\0\x01\0\0\0\x0242\0\0";
        let rebound = bind_renamed(bind, "sluice_ab").unwrap();
        assert_eq!(
            bind_names(rebound.body()).unwrap(),
            (&b"p1"[..], &b"sluice_ab"[..], &bind[7..])
        );
        assert_eq!(
            target(b"Sname\0", "Describe").unwrap(),
            (b'S', &b"name"[..])
        );
        assert!(target(b"Xname\0", "Describe").is_err());
        assert!(target(b"Sname", "Describe").is_err());
        assert_eq!(execute_portal(b"p1\0\0\0\0\0").unwrap(), b"p1");
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
