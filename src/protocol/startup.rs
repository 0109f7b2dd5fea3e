//! Packets that come before the first typed message: `Int32 length, Int32 code, ...`.
//!
//! A client may send several in a row on one connection (an SSLRequest, then,
//! inside TLS, a StartupMessage), or one CancelRequest and nothing else.
//! Vertica adds the LoadBalanceRequest and a binary-valued `protocol_version`
//! startup parameter (vertica-protocol.md §1).

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;
use super::write::{self, read_cstr};

pub const SSL_REQUEST_CODE: i32 = 80877103;
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
pub const CANCEL_REQUEST_CODE: i32 = 80877102;
/// Vertica's LoadBalanceRequest: 1235 << 16.
pub const LOAD_BALANCE_REQUEST_CODE: i32 = 80936960;

/// A CancelRequest is 16 bytes in protocol 3.0; 3.2 allows longer secrets (up to 256 bytes).
const MAX_CANCEL_PACKET: usize = 12 + 256;

/// The smallest valid packet: the length and a code.
pub const MIN_PACKET: usize = 8;

/// Which protocol dialect a client speaks, from its startup packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientDialect {
    Postgres,
    Vertica,
}

impl std::fmt::Display for ClientDialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientDialect::Postgres => "postgres",
            ClientDialect::Vertica => "vertica",
        })
    }
}

/// The key that names a running query for cancellation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CancelKey {
    pub process_id: i32,
    pub secret: Bytes,
}

impl CancelKey {
    /// Encodes the CancelRequest packet carrying this key.
    pub fn cancel_request(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(12 + self.secret.len());
        write::untagged(&mut buf, |b| {
            b.put_i32(CANCEL_REQUEST_CODE);
            b.put_i32(self.process_id);
            b.put_slice(&self.secret);
        });
        buf.freeze()
    }
}

/// One pre-startup packet.
#[derive(Debug, PartialEq, Eq)]
pub enum StartupPacket {
    SslRequest,
    GssEncRequest,
    LoadBalanceRequest,
    CancelRequest(CancelKey),
    Startup(StartupMessage),
}

/// A StartupMessage: the protocol version and the session's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupMessage {
    raw: Bytes,
    version: i32,
    params: Vec<(String, String)>,
    /// Vertica's binary `protocol_version` parameter, when present.
    vertica_protocol: Option<i32>,
}

impl StartupMessage {
    /// The packet exactly as the client sent it.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    pub fn version(&self) -> (u16, u16) {
        ((self.version >> 16) as u16, self.version as u16)
    }

    /// A parameter's value; Vertica's binary `protocol_version` is given in decimal.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }

    pub fn user(&self) -> &str {
        self.param("user").unwrap_or("")
    }

    /// The database; PostgreSQL defaults it to the user name.
    pub fn database(&self) -> &str {
        self.param("database").unwrap_or_else(|| self.user())
    }

    /// `application_name`, or Vertica's `client_label`.
    pub fn application(&self) -> &str {
        self.param("application_name")
            .or_else(|| self.param("client_label"))
            .unwrap_or("")
    }

    /// Vertica drivers announce themselves by the binary `protocol_version`
    /// parameter, which no PostgreSQL client sends.
    pub fn dialect(&self) -> ClientDialect {
        if self.vertica_protocol.is_some() || self.param("client_type").is_some() {
            ClientDialect::Vertica
        } else {
            ClientDialect::Postgres
        }
    }

    pub fn vertica_protocol(&self) -> Option<i32> {
        self.vertica_protocol
    }

    /// Encodes a StartupMessage for protocol 3.0 with these parameters.
    pub fn encode(params: &[(&str, &str)]) -> Bytes {
        let mut buf = BytesMut::new();
        write::untagged(&mut buf, |b| {
            b.put_i32(3 << 16);
            for (name, value) in params {
                write::cstr(b, name);
                write::cstr(b, value);
            }
            b.put_u8(0);
        });
        buf.freeze()
    }
}

/// Checks a packet's declared length before its body is read, so a peer cannot
/// make sluice reserve what it merely claims. Returns the whole packet length.
pub fn packet_len(declared: i32, limit: usize) -> Result<usize, ProtocolError> {
    if declared < MIN_PACKET as i32 || declared as usize > limit {
        return Err(ProtocolError::BadStartupLength {
            len: declared,
            limit,
        });
    }
    Ok(declared as usize)
}

/// Parses one whole packet (length word included).
pub fn parse(packet: Bytes, max_params: usize) -> Result<StartupPacket, ProtocolError> {
    if packet.len() < MIN_PACKET {
        return Err(ProtocolError::malformed(
            "startup packet",
            "shorter than 8 bytes",
        ));
    }
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let fixed_size = |name: &'static str| {
        if packet.len() == MIN_PACKET {
            Ok(())
        } else {
            Err(ProtocolError::malformed(name, "must be exactly 8 bytes"))
        }
    };
    match code {
        SSL_REQUEST_CODE => fixed_size("SSLRequest").map(|_| StartupPacket::SslRequest),
        GSSENC_REQUEST_CODE => fixed_size("GSSENCRequest").map(|_| StartupPacket::GssEncRequest),
        LOAD_BALANCE_REQUEST_CODE => {
            fixed_size("LoadBalanceRequest").map(|_| StartupPacket::LoadBalanceRequest)
        }
        CANCEL_REQUEST_CODE => {
            if packet.len() < 16 || packet.len() > MAX_CANCEL_PACKET {
                return Err(ProtocolError::malformed(
                    "CancelRequest",
                    "key must be 8 to 260 bytes",
                ));
            }
            Ok(StartupPacket::CancelRequest(CancelKey {
                process_id: i32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]),
                secret: packet.slice(12..),
            }))
        }
        version => {
            let major = (version >> 16) as u16;
            if major != 3 {
                return Err(ProtocolError::UnsupportedProtocol {
                    major,
                    minor: version as u16,
                });
            }
            parse_startup(packet, version, max_params).map(StartupPacket::Startup)
        }
    }
}

fn parse_startup(
    raw: Bytes,
    version: i32,
    max_params: usize,
) -> Result<StartupMessage, ProtocolError> {
    let mut params = Vec::new();
    let mut vertica_protocol = None;
    let mut rest = &raw[8..];
    loop {
        let (name, after_name) = read_cstr(rest).ok_or(ProtocolError::malformed(
            "startup packet",
            "parameter name is not terminated",
        ))?;
        if name.is_empty() {
            if !after_name.is_empty() {
                return Err(ProtocolError::malformed(
                    "startup packet",
                    "bytes after the final terminator",
                ));
            }
            break;
        }
        if params.len() == max_params {
            return Err(ProtocolError::TooManyParameters { limit: max_params });
        }
        let name = String::from_utf8_lossy(name).into_owned();
        // Vertica sends protocol_version as Int32 + NUL; as a C string it
        // would read as "" followed by junk. Versions are 0x0003xxxx, so the
        // first byte is 0, which no decimal text starts with.
        if name == "protocol_version"
            && after_name.len() >= 5
            && after_name[0] == 0
            && after_name[4] == 0
        {
            let v =
                i32::from_be_bytes([after_name[0], after_name[1], after_name[2], after_name[3]]);
            vertica_protocol = Some(v);
            params.push((name, v.to_string()));
            rest = &after_name[5..];
            continue;
        }
        let (value, after_value) = read_cstr(after_name).ok_or(ProtocolError::malformed(
            "startup packet",
            "parameter value is not terminated",
        ))?;
        params.push((name, String::from_utf8_lossy(value).into_owned()));
        rest = after_value;
    }
    Ok(StartupMessage {
        raw,
        version,
        params,
        vertica_protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: i32, body: &[u8]) -> Bytes {
        let mut v = ((body.len() + 8) as i32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        Bytes::from(v)
    }

    #[test]
    fn postgres_startup_round_trips() {
        let raw = StartupMessage::encode(&[
            ("user", "alice"),
            ("database", "dwh"),
            ("application_name", "DBeaver"),
        ]);
        let StartupPacket::Startup(m) = parse(raw.clone(), 64).unwrap() else {
            panic!()
        };
        assert_eq!(m.user(), "alice");
        assert_eq!(m.database(), "dwh");
        assert_eq!(m.application(), "DBeaver");
        assert_eq!(m.dialect(), ClientDialect::Postgres);
        assert_eq!(m.raw(), &raw);
    }

    #[test]
    fn vertica_binary_protocol_version_is_read_as_int() {
        // vertica-python 1.4.0: fixed version 3.5, protocol_version 3.16 first.
        let mut body = b"protocol_version\0".to_vec();
        body.extend_from_slice(&[0x00, 0x03, 0x00, 0x10, 0x00]);
        body.extend_from_slice(b"user\0dbadmin\0client_label\0vp-1\0\0");
        let StartupPacket::Startup(m) = parse(packet(0x0003_0005, &body), 64).unwrap() else {
            panic!()
        };
        assert_eq!(m.vertica_protocol(), Some(196624));
        assert_eq!(m.param("protocol_version"), Some("196624"));
        assert_eq!(m.user(), "dbadmin");
        assert_eq!(m.application(), "vp-1");
        assert_eq!(m.dialect(), ClientDialect::Vertica);
        assert_eq!(m.version(), (3, 5));
    }

    #[test]
    fn special_packets() {
        assert_eq!(
            parse(packet(SSL_REQUEST_CODE, b""), 64).unwrap(),
            StartupPacket::SslRequest
        );
        assert_eq!(
            parse(packet(GSSENC_REQUEST_CODE, b""), 64).unwrap(),
            StartupPacket::GssEncRequest
        );
        assert_eq!(
            parse(packet(LOAD_BALANCE_REQUEST_CODE, b""), 64).unwrap(),
            StartupPacket::LoadBalanceRequest
        );
        let key = CancelKey {
            process_id: 42,
            secret: Bytes::from_static(&[1, 2, 3, 4]),
        };
        assert_eq!(
            parse(key.cancel_request(), 64).unwrap(),
            StartupPacket::CancelRequest(key)
        );
    }

    #[test]
    fn malformed_packets_are_errors_not_panics() {
        assert!(parse(packet(SSL_REQUEST_CODE, b"x"), 64).is_err());
        assert!(parse(packet(CANCEL_REQUEST_CODE, b"abc"), 64).is_err());
        assert!(matches!(
            parse(packet(2 << 16, b"\0"), 64),
            Err(ProtocolError::UnsupportedProtocol { major: 2, .. })
        ));
        assert!(parse(packet(3 << 16, b"user\0alice"), 64).is_err());
        assert!(parse(packet(3 << 16, b"user"), 64).is_err());
        assert!(parse(packet(3 << 16, b"\0junk"), 64).is_err());
        assert!(matches!(
            parse(packet(3 << 16, b"a\0b\0c\0d\0\0"), 1),
            Err(ProtocolError::TooManyParameters { .. })
        ));
        assert!(packet_len(0, 10_000).is_err());
        assert!(packet_len(i32::MAX, 10_000).is_err());
        assert!(packet_len(-5, 10_000).is_err());
        assert_eq!(packet_len(8, 10_000).unwrap(), 8);
    }

    #[test]
    fn every_truncation_of_a_startup_is_an_error() {
        let raw = StartupMessage::encode(&[("user", "alice"), ("database", "dwh")]);
        for cut in 8..raw.len() {
            let mut v = raw[..cut].to_vec();
            v[..4].copy_from_slice(&(cut as i32).to_be_bytes());
            assert!(parse(Bytes::from(v), 64).is_err(), "cut at {cut}");
        }
    }
}
