//! Parse and Bind from a Vertica client, for PostgreSQL.

use bytes::BufMut;

use super::values::{bytea_hex, vertica_unescape};
use super::{Reader, framed, oid};
use crate::protocol::frame::Frame;
use crate::protocol::{ProtocolError, frontend, write};

/// A Parse for PostgreSQL of statement `name` with the text `text` (its
/// `?` placeholders already numbered by the caller): Vertica ignores
/// parameter types, so none are sent.
pub fn encode_parse(name: &[u8], text: &str) -> Frame {
    framed(frontend::PARSE, |b| {
        b.put_slice(name);
        b.put_u8(0);
        write::cstr(b, text);
        b.put_i16(0);
    })
}

/// A Vertica Bind (`..., Int16 P, Int32[P] type OIDs, P values, ...`) for
/// PostgreSQL: the OID array dropped, VARBINARY values (Vertica escapes
/// `\` as `\134`) re-encoded as bytea hex, and text results requested for
/// every column, whatever the client asked: Vertica's binary formats are
/// not PostgreSQL's (§3.6).
pub fn bind_to_postgres(body: &[u8]) -> Result<Frame, ProtocolError> {
    let mut r = Reader::new(body, "Bind");
    let portal = r.cstr()?;
    let statement = r.cstr()?;
    let nformats = r.count()?;
    let formats = r.take(nformats * 2)?;
    let nparams = r.count()?;
    let mut oids = Vec::with_capacity(nparams);
    for _ in 0..nparams {
        oids.push(r.i32()?);
    }
    let mut values = Vec::with_capacity(nparams);
    for _ in 0..nparams {
        let len = r.i32()?;
        if len < 0 {
            values.push(None);
        } else {
            values.push(Some(r.take(len as usize)?));
        }
    }
    let nresults = r.count()?;
    r.take(nresults * 2)?;
    r.end()?;
    Ok(framed(frontend::BIND, |b| {
        b.put_slice(portal);
        b.put_u8(0);
        b.put_slice(statement);
        b.put_u8(0);
        b.put_i16(nformats as i16);
        b.put_slice(formats);
        b.put_i16(nparams as i16);
        for (value, type_oid) in values.iter().zip(&oids) {
            match value {
                None => b.put_i32(-1),
                Some(v)
                    if matches!(
                        *type_oid,
                        oid::VARBINARY | oid::LONG_VARBINARY | oid::BINARY
                    ) && nformats_text(formats, nformats) =>
                {
                    let hex = bytea_hex(&vertica_unescape(v));
                    b.put_i32(hex.len() as i32);
                    b.put_slice(&hex);
                }
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
            }
        }
        b.put_i16(0); // results: all text
    }))
}

fn nformats_text(formats: &[u8], n: usize) -> bool {
    n == 0 || formats.chunks(2).all(|f| f == [0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_loses_its_type_oids() {
        // vertica-python: portal "", statement "s1", 0 param formats, 2 params
        // with OIDs INT8 and VARBINARY, values "42" and "a\134b\001", 1 result
        // format: binary.
        let mut body = b"\0s1\0\0\0\0\x02\0\0\0\x06\0\0\0\x11".to_vec();
        body.extend_from_slice(b"\0\0\0\x0242");
        body.extend_from_slice(b"\0\0\0\x0aa\\134b\\001");
        body.extend_from_slice(b"\0\x01\0\x01");
        let pg = bind_to_postgres(&body).unwrap();
        let mut expected = b"\0s1\0\0\0\0\x02".to_vec();
        expected.extend_from_slice(b"\0\0\0\x0242");
        expected.extend_from_slice(b"\0\0\0\x0a\\x615c6201");
        expected.extend_from_slice(b"\0\0");
        assert_eq!(pg.tag(), b'B');
        assert_eq!(pg.body(), &expected[..]);
        // NULL parameter, no OIDs at all.
        let body = b"p\0s\0\0\0\0\x01\0\0\0\x09\xff\xff\xff\xff\0\0";
        let pg = bind_to_postgres(body).unwrap();
        assert_eq!(pg.body(), b"p\0s\0\0\0\0\x01\xff\xff\xff\xff\0\0");
        assert!(bind_to_postgres(&body[..12]).is_err());
        assert!(bind_to_postgres(b"p\0s\0\0\0\0\x01\0\0\0\x09\0\0\0\x05ab\0\0").is_err());
    }
}
