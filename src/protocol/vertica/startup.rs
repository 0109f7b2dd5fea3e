//! Startup: a Vertica client's startup rewritten for PostgreSQL, sluice's
//! own startup on a Vertica node and its password hash, the
//! ParameterStatus messages Vertica clients read, and LoadBalanceResponse.

use bytes::{BufMut, Bytes, BytesMut};

use super::{LOAD_BALANCE_ACCEPTED, SUPPORTED_PROTOCOL};
use crate::protocol::backend;
use crate::protocol::startup::StartupMessage;
use crate::protocol::write::{self, read_cstr};

/// Startup parameters PostgreSQL knows that a Vertica client may send; all
/// others (client_type, protocol_features, autocommit, ...) would make
/// PostgreSQL refuse the login (§7, "unrecognized configuration parameter").
const KEPT_PARAMETERS: &[&str] = &["user", "database"];

/// Vertica's MD5 password request: PostgreSQL's salt, then a 16-byte user
/// salt that MD5 does not use (§2; Vertica drivers read it).
pub fn encode_md5_request(buf: &mut BytesMut, salt: [u8; 4]) {
    write::message(buf, backend::AUTHENTICATION, |b| {
        b.put_i32(backend::AUTH_MD5);
        b.put_slice(&salt);
        b.put_i32(16);
        b.put_slice(&[0; 16]);
    });
}

/// The StartupMessage (protocol 3.0) that stands for a Vertica client's
/// startup towards PostgreSQL: user and database kept, `client_label` as
/// `application_name`, and the output styles Vertica drivers parse.
pub fn postgres_startup(startup: &StartupMessage) -> Bytes {
    let mut params: Vec<(&str, &str)> = KEPT_PARAMETERS
        .iter()
        .filter_map(|name| startup.param(name).map(|v| (*name, v)))
        .collect();
    let label = startup.application();
    if !label.is_empty() {
        params.push(("application_name", label));
    }
    // Vertica prints day-time intervals as "[-]d hh:mm:ss[.ffffff]", which is
    // PostgreSQL's sql_standard style; dates and timestamps as ISO.
    params.push(("DateStyle", "ISO, MDY"));
    params.push(("IntervalStyle", "sql_standard"));
    StartupMessage::encode(&params)
}

/// A Vertica StartupRequest for sluice's own session on a Vertica node (the
/// catalog sync): the fixed 3.5 header, then `protocol_version` first with
/// its binary value (§1.2). 3.5 is asked for on purpose: below 3.12 the
/// node sends no complex-type fields in RowDescription.
pub fn encode_vertica_startup(user: &str, database: &str, label: &str) -> Bytes {
    let mut buf = BytesMut::new();
    write::untagged(&mut buf, |b| {
        b.put_i32(0x0003_0005);
        write::cstr(b, "protocol_version");
        b.put_i32(0x0003_0005);
        b.put_u8(0);
        for (name, value) in [
            ("user", user),
            ("database", database),
            ("client_type", "sluice"),
            ("client_label", label),
            ("autocommit", "on"),
        ] {
            write::cstr(b, name);
            write::cstr(b, value);
        }
        b.put_u8(0);
    });
    buf.freeze()
}

/// The answer to Vertica's SHA-512 hash authentication (codes 65536 and
/// 66048, §2): `"sha512" + hex(sha512(hex(sha512(password ‖ user salt)) ‖ salt))`.
pub fn sha512_password(password: &[u8], user_salt: &[u8], salt: &[u8]) -> String {
    use sha2::{Digest, Sha512};
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    let inner = hex(&Sha512::new()
        .chain_update(password)
        .chain_update(user_salt)
        .finalize());
    let outer = Sha512::new()
        .chain_update(inner.as_bytes())
        .chain_update(salt)
        .finalize();
    format!("sha512{}", hex(&outer))
}

/// The protocol version to announce: the lower of the client's request and
/// what sluice writes; a client that requested none gets 3.5, the version
/// of its fixed StartupRequest header.
pub fn negotiated_protocol(requested: Option<i32>) -> i32 {
    requested.unwrap_or(0x0003_0005).min(SUPPORTED_PROTOCOL)
}

/// The client's startup `autocommit` (Vertica's default is off).
pub fn requested_autocommit(startup: &StartupMessage) -> bool {
    matches!(
        startup
            .param("autocommit")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("on" | "true" | "1")
    )
}

/// The ParameterStatus messages a Vertica client reads (§1.2) that
/// PostgreSQL does not send: `protocol_version` as a decimal string,
/// `auto_commit`, and `timezone` (PostgreSQL calls it `TimeZone`).
pub fn encode_vertica_parameters(
    buf: &mut BytesMut,
    protocol: i32,
    autocommit: bool,
    timezone: &str,
) {
    backend::encode_parameter_status(buf, "protocol_version", &protocol.to_string());
    encode_auto_commit(buf, autocommit);
    if !timezone.is_empty() {
        backend::encode_parameter_status(buf, "timezone", timezone);
    }
}

pub fn encode_auto_commit(buf: &mut BytesMut, on: bool) {
    backend::encode_parameter_status(buf, "auto_commit", if on { "on" } else { "off" });
}

/// Reads a ParameterStatus body: (name, value).
pub fn parameter_status(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = read_cstr(body)?;
    let (value, _) = read_cstr(rest)?;
    Some((name, value))
}

// ---------------------------------------------------------------------------
// LoadBalanceResponse

/// The answer to a LoadBalanceRequest: `N` is one bare byte, `Y` carries
/// `Int32 len, Int32 port, String host` (§1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadBalanceResponse {
    Declined,
    Redirect { host: String, port: i32 },
}

impl LoadBalanceResponse {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        match self {
            LoadBalanceResponse::Declined => buf.put_u8(backend::REQUEST_DECLINED),
            LoadBalanceResponse::Redirect { host, port } => {
                write::message(&mut buf, LOAD_BALANCE_ACCEPTED, |b| {
                    b.put_i32(*port);
                    write::cstr(b, host);
                })
            }
        }
        buf.freeze()
    }

    /// Reads a whole response; `None` when it is neither `N` nor a valid `Y`.
    pub fn parse(bytes: &[u8]) -> Option<LoadBalanceResponse> {
        match bytes {
            [b'N'] => Some(LoadBalanceResponse::Declined),
            [b'Y', len @ ..] if len.len() >= 9 => {
                let declared = i32::from_be_bytes(len[..4].try_into().ok()?) as usize;
                if declared != len.len() {
                    return None;
                }
                let port = i32::from_be_bytes(len[4..8].try_into().ok()?);
                let (host, rest) = read_cstr(&len[8..])?;
                rest.is_empty().then(|| LoadBalanceResponse::Redirect {
                    host: String::from_utf8_lossy(host).into_owned(),
                    port,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::startup::{self, StartupPacket};
    use crate::protocol::vertica::msg;

    fn vertica_startup() -> StartupMessage {
        // vertica-python 1.4.0: fixed 3.5, binary protocol_version 3.16 first.
        let mut body = b"protocol_version\0".to_vec();
        body.extend_from_slice(&[0x00, 0x03, 0x00, 0x10, 0x00]);
        body.extend_from_slice(
            b"user\0dbadmin\0database\0dwh\0client_type\0vertica-python\0\
              client_label\0vp-1\0autocommit\0on\0protocol_features\0{}\0\0",
        );
        let mut v = ((body.len() + 8) as i32).to_be_bytes().to_vec();
        v.extend_from_slice(&0x0003_0005i32.to_be_bytes());
        v.extend_from_slice(&body);
        match startup::parse(Bytes::from(v), 64).unwrap() {
            StartupPacket::Startup(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn startup_is_rewritten_for_postgres() {
        let s = vertica_startup();
        let raw = postgres_startup(&s);
        assert_eq!(&raw[4..8], &[0, 3, 0, 0], "protocol 3.0");
        let StartupPacket::Startup(pg) = startup::parse(raw, 64).unwrap() else {
            panic!()
        };
        assert_eq!(pg.user(), "dbadmin");
        assert_eq!(pg.database(), "dwh");
        assert_eq!(pg.param("application_name"), Some("vp-1"));
        for dropped in [
            "protocol_version",
            "client_type",
            "client_label",
            "autocommit",
        ] {
            assert_eq!(
                pg.param(dropped),
                None,
                "{dropped} must not reach PostgreSQL"
            );
        }
        assert_eq!(pg.param("IntervalStyle"), Some("sql_standard"));
        assert!(requested_autocommit(&s));
        assert_eq!(negotiated_protocol(s.vertica_protocol()), 196624);
        assert_eq!(negotiated_protocol(Some(0x0003_0011)), SUPPORTED_PROTOCOL);
        assert_eq!(negotiated_protocol(Some(0x0003_000F)), 0x0003_000F);
        assert_eq!(negotiated_protocol(None), 0x0003_0005);
    }

    #[test]
    fn parameter_status_injection() {
        let mut buf = BytesMut::new();
        encode_vertica_parameters(&mut buf, 196624, false, "UTC");
        let mut expected = msg(b'S', b"protocol_version\x00196624\x00");
        expected.extend(msg(b'S', b"auto_commit\0off\0"));
        expected.extend(msg(b'S', b"timezone\0UTC\0"));
        assert_eq!(&buf[..], &expected[..]);
        assert_eq!(
            parameter_status(b"TimeZone\0Etc/UTC\0"),
            Some((&b"TimeZone"[..], &b"Etc/UTC"[..]))
        );
    }

    #[test]
    fn load_balance_response_bytes() {
        assert_eq!(&LoadBalanceResponse::Declined.encode()[..], b"N");
        let y = LoadBalanceResponse::Redirect {
            host: "10.0.0.7".into(),
            port: 5433,
        };
        // 'Y', Int32 len (4 + 4 + "10.0.0.7\0"), Int32 port, String host.
        let bytes = b"Y\x00\x00\x00\x11\x00\x00\x15\x3910.0.0.7\x00";
        assert_eq!(&y.encode()[..], &bytes[..]);
        assert_eq!(LoadBalanceResponse::parse(bytes), Some(y));
        assert_eq!(
            LoadBalanceResponse::parse(b"N"),
            Some(LoadBalanceResponse::Declined)
        );
        assert_eq!(LoadBalanceResponse::parse(b"Y\0\0\0\x09\0\0\0\x01"), None);
        assert_eq!(LoadBalanceResponse::parse(b"E"), None);
    }
}
