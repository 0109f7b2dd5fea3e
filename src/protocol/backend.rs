//! Messages a server sends: the tags sluice watches, the few it reads, and
//! the ones it writes itself (its own errors, its own BackendKeyData).

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;
use super::startup::CancelKey;
use super::write::{self, read_cstr};

pub const AUTHENTICATION: u8 = b'R';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const BIND_COMPLETE: u8 = b'2';
pub const CLOSE_COMPLETE: u8 = b'3';
pub const COMMAND_COMPLETE: u8 = b'C';
pub const DATA_ROW: u8 = b'D';
pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const NOTIFICATION_RESPONSE: u8 = b'A';
pub const PARAMETER_STATUS: u8 = b'S';
pub const PARSE_COMPLETE: u8 = b'1';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const ROW_DESCRIPTION: u8 = b'T';

/// Authentication request codes (the Int32 after the 'R' header).
pub const AUTH_OK: i32 = 0;
pub const AUTH_CLEARTEXT: i32 = 3;
pub const AUTH_MD5: i32 = 5;
pub const AUTH_SASL: i32 = 10;
pub const AUTH_SASL_CONTINUE: i32 = 11;
pub const AUTH_SASL_FINAL: i32 = 12;

/// The type OID of `text`: every column sluice answers itself is text.
pub const TEXT_OID: i32 = 25;

/// The single-byte answers to SSLRequest, GSSENCRequest and LoadBalanceRequest.
pub const SSL_ACCEPTED: u8 = b'S';
pub const REQUEST_DECLINED: u8 = b'N';

/// Transaction status carried by ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TransactionStatus {
    /// ReadyForQuery's status byte.
    pub fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// The request code of an Authentication message's body (`AUTH_OK`,
/// `AUTH_MD5`, ...); -1 when it is too short to have one.
pub fn auth_code(body: &[u8]) -> i32 {
    match body {
        [a, b, c, d, ..] => i32::from_be_bytes([*a, *b, *c, *d]),
        _ => -1,
    }
}

/// Reads ReadyForQuery's status byte.
pub fn ready_for_query(body: &[u8]) -> Result<TransactionStatus, ProtocolError> {
    match body {
        [b'I'] => Ok(TransactionStatus::Idle),
        [b'T'] => Ok(TransactionStatus::InTransaction),
        [b'E'] => Ok(TransactionStatus::Failed),
        _ => Err(ProtocolError::malformed(
            "ReadyForQuery",
            "status must be one of I, T, E",
        )),
    }
}

/// Reads BackendKeyData: `Int32 process id`, then the secret (4 bytes in
/// protocol 3.0, up to 256 in 3.2).
pub fn backend_key_data(body: &[u8]) -> Result<CancelKey, ProtocolError> {
    if body.len() < 8 || body.len() > 260 {
        return Err(ProtocolError::malformed(
            "BackendKeyData",
            "key must be 8 to 260 bytes",
        ));
    }
    Ok(CancelKey {
        process_id: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        secret: Bytes::copy_from_slice(&body[4..]),
    })
}

pub fn encode_backend_key_data(buf: &mut BytesMut, key: &CancelKey) {
    write::message(buf, BACKEND_KEY_DATA, |b| {
        b.put_i32(key.process_id);
        b.put_slice(&key.secret);
    });
}

/// The SQLSTATE class (first two characters of the `C` field) of an
/// ErrorResponse body, without allocating: the relay counts every error.
pub fn error_class(body: &[u8]) -> Option<[u8; 2]> {
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            return None;
        }
        let (value, after) = read_cstr(tail)?;
        if code == b'C' {
            return match value {
                [a, b, ..] => Some([*a, *b]),
                _ => None,
            };
        }
        rest = after;
    }
    None
}

pub fn encode_authentication_ok(buf: &mut BytesMut) {
    encode_authentication_request(buf, AUTH_OK);
}

/// An Authentication message that is only its code (Ok, CleartextPassword).
pub fn encode_authentication_request(buf: &mut BytesMut, code: i32) {
    write::message(buf, AUTHENTICATION, |b| b.put_i32(code));
}

/// AuthenticationMD5Password with its salt.
pub fn encode_authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    write::message(buf, AUTHENTICATION, |b| {
        b.put_i32(AUTH_MD5);
        b.put_slice(&salt);
    });
}

/// AuthenticationSASL offering the given mechanisms.
pub fn encode_authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    write::message(buf, AUTHENTICATION, |b| {
        b.put_i32(AUTH_SASL);
        for m in mechanisms {
            write::cstr(b, m);
        }
        b.put_u8(0);
    });
}

pub fn encode_authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    write::message(buf, AUTHENTICATION, |b| {
        b.put_i32(AUTH_SASL_CONTINUE);
        b.put_slice(data);
    });
}

pub fn encode_authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    write::message(buf, AUTHENTICATION, |b| {
        b.put_i32(AUTH_SASL_FINAL);
        b.put_slice(data);
    });
}

pub fn encode_parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    write::message(buf, PARAMETER_STATUS, |b| {
        write::cstr(b, name);
        write::cstr(b, value);
    });
}

pub fn encode_ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    write::message(buf, READY_FOR_QUERY, |b| b.put_u8(status.byte()));
}

/// RowDescription for columns of type text, in text format.
pub fn encode_row_description(buf: &mut BytesMut, columns: &[&str]) {
    write::message(buf, ROW_DESCRIPTION, |b| {
        b.put_i16(columns.len().min(i16::MAX as usize) as i16);
        for name in columns.iter().take(i16::MAX as usize) {
            write::cstr(b, name);
            b.put_i32(0); // table OID: none
            b.put_i16(0); // column number: none
            b.put_i32(TEXT_OID);
            b.put_i16(-1); // variable length
            b.put_i32(-1); // no type modifier
            b.put_i16(0); // text format
        }
    });
}

/// DataRow of text values; `None` is SQL NULL.
pub fn encode_data_row(buf: &mut BytesMut, values: &[Option<&str>]) {
    write::message(buf, DATA_ROW, |b| {
        b.put_i16(values.len().min(i16::MAX as usize) as i16);
        for value in values.iter().take(i16::MAX as usize) {
            match value {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
    });
}

/// The values of a DataRow; `None` is SQL NULL.
pub fn data_row(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let bad = |why| ProtocolError::malformed("DataRow", why);
    let (count, mut rest) = body.split_first_chunk::<2>().ok_or(bad("too short"))?;
    let count = i16::from_be_bytes(*count).max(0) as usize;
    let mut values = Vec::with_capacity(count.min(rest.len() / 4 + 1));
    for _ in 0..count {
        let (len, after) = rest
            .split_first_chunk::<4>()
            .ok_or(bad("a value is cut off"))?;
        let len = i32::from_be_bytes(*len);
        if len < 0 {
            values.push(None);
            rest = after;
            continue;
        }
        let len = len as usize;
        if after.len() < len {
            return Err(bad("a value is cut off"));
        }
        values.push(Some(&after[..len]));
        rest = &after[len..];
    }
    Ok(values)
}

/// CommandComplete with its tag, e.g. `SHOW`, `SELECT 3`.
pub fn encode_command_complete(buf: &mut BytesMut, tag: &str) {
    write::message(buf, COMMAND_COMPLETE, |b| write::cstr(b, tag));
}

pub fn encode_empty_query_response(buf: &mut BytesMut) {
    write::message(buf, EMPTY_QUERY_RESPONSE, |_| {});
}

/// Re-encodes an ErrorResponse body with a hint of sluice's added after the
/// node's own fields (and its own hint, if any).
pub fn error_with_hint(body: &[u8], hint: &str) -> Result<Bytes, ProtocolError> {
    let fields = error_fields(body)?;
    let mut buf = BytesMut::new();
    write::message(&mut buf, ERROR_RESPONSE, |b| {
        let mut hinted = false;
        for (code, value) in &fields {
            b.put_u8(*code);
            if *code == b'H' {
                write::cstr(b, &format!("{value} {hint}"));
                hinted = true;
            } else {
                write::cstr(b, value);
            }
        }
        if !hinted {
            b.put_u8(b'H');
            write::cstr(b, hint);
        }
        b.put_u8(0);
    });
    Ok(buf.freeze())
}

/// The fields of an ErrorResponse or NoticeResponse that sluice writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// ERROR, FATAL, WARNING, NOTICE, ...
    pub severity: &'static str,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorFields {
    pub fn error(code: &str, message: impl Into<String>) -> ErrorFields {
        ErrorFields {
            severity: "ERROR",
            code: code.to_string(),
            message: message.into(),
            ..ErrorFields::default()
        }
    }

    /// An error after which the connection is closed.
    pub fn fatal(code: &str, message: impl Into<String>) -> ErrorFields {
        ErrorFields {
            severity: "FATAL",
            ..ErrorFields::error(code, message)
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> ErrorFields {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ErrorFields {
        self.hint = Some(hint.into());
        self
    }

    /// Appends the ErrorResponse.
    pub fn encode(&self, buf: &mut BytesMut) {
        self.encode_as(buf, ERROR_RESPONSE)
    }

    /// Appends the same fields as a NoticeResponse.
    pub fn encode_notice(&self, buf: &mut BytesMut) {
        self.encode_as(buf, NOTICE_RESPONSE)
    }

    fn encode_as(&self, buf: &mut BytesMut, tag: u8) {
        write::message(buf, tag, |b| {
            let mut field = |code: u8, value: &str| {
                b.put_u8(code);
                write::cstr(b, value);
            };
            field(b'S', self.severity);
            // 'V' is the unlocalized severity in PostgreSQL but Vertica's
            // numeric error code, so it is left out: both read S.
            field(b'C', &self.code);
            field(b'M', &self.message);
            if let Some(d) = &self.detail {
                field(b'D', d);
            }
            if let Some(h) = &self.hint {
                field(b'H', h);
            }
            b.put_u8(0);
        });
    }

    /// The encoded ErrorResponse as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

/// Reads the (code, value) fields of an ErrorResponse or NoticeResponse body.
pub fn error_fields(body: &[u8]) -> Result<Vec<(u8, String)>, ProtocolError> {
    let mut fields = Vec::new();
    let mut rest = body;
    loop {
        match rest.split_first() {
            Some((0, [])) => return Ok(fields),
            Some((&code, tail)) if code != 0 => {
                let (value, after) = read_cstr(tail).ok_or(ProtocolError::malformed(
                    "ErrorResponse",
                    "field is not terminated",
                ))?;
                fields.push((code, String::from_utf8_lossy(value).into_owned()));
                rest = after;
            }
            _ => {
                return Err(ProtocolError::malformed(
                    "ErrorResponse",
                    "missing or early terminator",
                ));
            }
        }
    }
}

/// One field of an ErrorResponse or NoticeResponse body, without copying
/// or allocating: the relay asks for the SQLSTATE and severity of every
/// error it passes on.
pub fn error_field(body: &[u8], code: u8) -> Option<&[u8]> {
    let mut rest = body;
    while let Some((&c, tail)) = rest.split_first() {
        if c == 0 {
            return None;
        }
        let (value, after) = read_cstr(tail)?;
        if c == code {
            return Some(value);
        }
        rest = after;
    }
    None
}

/// Whether an ErrorResponse ends the session (severity FATAL or PANIC).
pub fn is_fatal(body: &[u8]) -> bool {
    matches!(error_field(body, b'S'), Some(b"FATAL") | Some(b"PANIC"))
}

/// The SQLSTATE and message of an ErrorResponse body, for logs and metrics.
pub fn error_summary(body: &[u8]) -> (String, String) {
    let fields = error_fields(body).unwrap_or_default();
    let get = |code| {
        fields
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    (get(b'C'), get(b'M'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips() {
        let e = ErrorFields::fatal("08006", "no warehouse node was reachable")
            .with_hint("check the nodes");
        let bytes = e.to_bytes();
        assert_eq!(bytes[0], b'E');
        let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len + 1, bytes.len());
        let fields = error_fields(&bytes[5..]).unwrap();
        assert!(fields.contains(&(b'S', "FATAL".into())));
        assert!(fields.contains(&(b'H', "check the nodes".into())));
        assert_eq!(
            error_summary(&bytes[5..]),
            ("08006".into(), "no warehouse node was reachable".into())
        );
    }

    #[test]
    fn data_rows_read_back_as_written() {
        let mut buf = BytesMut::new();
        encode_data_row(&mut buf, &[Some("a"), None, Some("")]);
        let values = data_row(&buf[5..]).unwrap();
        assert_eq!(values, vec![Some(&b"a"[..]), None, Some(&b""[..])]);
        assert!(data_row(&buf[5..buf.len() - 1]).is_err());
        assert!(data_row(b"\x00\x01\x00\x00\x00\x09ab").is_err());
    }

    #[test]
    fn malformed_bodies_are_errors() {
        assert!(error_fields(b"").is_err());
        assert!(error_fields(b"Mabc").is_err());
        assert!(error_fields(b"Mabc\0").is_err());
        assert!(ready_for_query(b"X").is_err());
        assert!(ready_for_query(b"").is_err());
        assert!(backend_key_data(b"1234").is_err());
    }

    #[test]
    fn a_hint_is_added_to_a_node_error() {
        let e = ErrorFields::fatal("28000", "SCRAM channel binding negotiation error").to_bytes();
        let hinted = error_with_hint(&e[5..], "try this").unwrap();
        let fields = error_fields(&hinted[5..]).unwrap();
        assert!(fields.contains(&(b'H', "try this".into())));
        assert!(fields.contains(&(b'C', "28000".into())));
        let twice = error_with_hint(&hinted[5..], "and that").unwrap();
        assert!(
            error_fields(&twice[5..])
                .unwrap()
                .contains(&(b'H', "try this and that".into()))
        );
    }

    #[test]
    fn error_class_reads_the_code_field() {
        let e = ErrorFields::error("42P01", "relation does not exist").to_bytes();
        assert_eq!(error_class(&e[5..]), Some(*b"42"));
        assert_eq!(error_class(b"Mhi\0\0"), None);
        assert_eq!(error_class(b"C4"), None);
        assert_eq!(error_class(b"C4\0\0"), None);
        assert_eq!(error_class(b""), None);
    }

    #[test]
    fn result_set_messages_have_their_lengths() {
        let mut buf = BytesMut::new();
        encode_row_description(&mut buf, &["a", "bc"]);
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        assert_eq!(buf.len(), len + 1);
        assert_eq!(buf.len(), 1 + 4 + 2 + (2 + 18) + (3 + 18));
        let mut buf = BytesMut::new();
        encode_data_row(&mut buf, &[Some("x"), None]);
        assert_eq!(&buf[..], b"D\0\0\0\x0f\0\x02\0\0\0\x01x\xff\xff\xff\xff");
        let mut buf = BytesMut::new();
        encode_ready_for_query(&mut buf, TransactionStatus::Idle);
        assert_eq!(ready_for_query(&buf[5..]).unwrap(), TransactionStatus::Idle);
        let mut buf = BytesMut::new();
        encode_authentication_sasl(&mut buf, &["SCRAM-SHA-256"]);
        assert_eq!(&buf[5..9], &AUTH_SASL.to_be_bytes());
        assert_eq!(&buf[9..], b"SCRAM-SHA-256\0\0");
    }

    #[test]
    fn backend_key_data_round_trips() {
        let key = CancelKey {
            process_id: -7,
            secret: Bytes::from_static(b"abcd"),
        };
        let mut buf = BytesMut::new();
        encode_backend_key_data(&mut buf, &key);
        assert_eq!(backend_key_data(&buf[5..]).unwrap(), key);
    }
}
