//! What a statement's Describe and results look like to a Vertica client:
//! RowDescription, ParameterDescription and CommandDescription in Vertica's
//! layout, and the row-count result Vertica sends after INSERT, UPDATE,
//! DELETE and MERGE.

use bytes::BufMut;

use super::{
    COMMAND_DESCRIPTION, Conversions, DATA_ROW, PARAMETER_DESCRIPTION, ROW_DESCRIPTION, Reader,
    ValueConversion, framed, oid, pg, vertica_type,
};
use crate::protocol::ProtocolError;
use crate::protocol::frame::Frame;
use crate::protocol::write;

/// One column of a PostgreSQL RowDescription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgColumn {
    pub name: Vec<u8>,
    pub table_oid: i32,
    pub attnum: i16,
    pub type_oid: i32,
    pub size: i16,
    pub typmod: i32,
    pub format: i16,
}

pub fn parse_pg_row_description(body: &[u8]) -> Result<Vec<PgColumn>, ProtocolError> {
    let mut r = Reader::new(body, "RowDescription");
    let n = r.count()?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        columns.push(PgColumn {
            name: r.cstr()?.to_vec(),
            table_oid: r.i32()?,
            attnum: r.i16()?,
            type_oid: r.i32()?,
            size: r.i16()?,
            typmod: r.i32()?,
            format: r.i16()?,
        });
    }
    r.end()?;
    Ok(columns)
}

/// PostgreSQL's RowDescription in Vertica's layout (§3.2): an empty type
/// pool, table OID 0 (so no schema and table names; sluice does not know
/// them), mapped type OIDs, nullable, never identity, text format. Returns
/// the new message and how each column's values must be converted.
pub fn row_description_to_vertica(body: &[u8]) -> Result<(Frame, Conversions), ProtocolError> {
    let columns = parse_pg_row_description(body)?;
    let conversions = columns
        .iter()
        .map(|c| {
            if c.type_oid == pg::BYTEA {
                ValueConversion::Bytea
            } else {
                ValueConversion::Same
            }
        })
        .collect();
    let frame = framed(ROW_DESCRIPTION, |b| {
        b.put_i16(columns.len() as i16);
        b.put_i32(0); // type pool: empty
        for c in &columns {
            let (type_oid, size) = vertica_type(c.type_oid);
            b.put_slice(&c.name);
            b.put_u8(0);
            b.put_i64(0); // table OID: none, so no schema and table names
            b.put_i16(c.attnum);
            b.put_u8(0); // not a pool type
            b.put_i32(type_oid);
            b.put_i16(size);
            b.put_i16(1); // nullable
            b.put_i16(0); // not an identity column
            b.put_i32(c.typmod);
            b.put_i16(0); // text: sluice asks PostgreSQL for text only
        }
    });
    Ok((frame, conversions))
}

/// One column of a Vertica RowDescription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerticaColumn {
    pub name: String,
    pub table_oid: i64,
    /// Schema and table, present only when `table_oid` is not 0.
    pub table: Option<(String, String)>,
    pub attnum: i16,
    pub parent_attnum: Option<i16>,
    /// The type OID, resolved through the pool for pool types.
    pub type_oid: i32,
    /// The pool type's name, for pool types.
    pub type_name: Option<String>,
    pub size: i16,
    pub nullable: bool,
    pub identity: bool,
    pub typmod: i32,
    pub format: i16,
}

/// Reads a Vertica RowDescription. `complex_types`: the session announced
/// `request_complex_types` (then each field has a parent attribute number).
pub fn parse_row_description(
    body: &[u8],
    complex_types: bool,
) -> Result<Vec<VerticaColumn>, ProtocolError> {
    let mut r = Reader::new(body, "Vertica RowDescription");
    let n = r.count()?;
    let pool_len = r.i32()?;
    if pool_len < 0 {
        return Err(ProtocolError::malformed(
            "Vertica RowDescription",
            "negative type pool size",
        ));
    }
    let mut pool = Vec::new();
    for _ in 0..pool_len {
        let base = r.i32()?;
        let name = String::from_utf8_lossy(r.cstr()?).into_owned();
        pool.push((base, name));
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        let name = text(r.cstr()?);
        let table_oid = r.i64()?;
        let table = if table_oid != 0 {
            Some((text(r.cstr()?), text(r.cstr()?)))
        } else {
            None
        };
        let attnum = r.i16()?;
        let parent_attnum = if complex_types { Some(r.i16()?) } else { None };
        let uses_pool = r.u8()? == 1;
        let type_ref = r.i32()?;
        let (type_oid, type_name) = if uses_pool {
            let (base, name) = usize::try_from(type_ref)
                .ok()
                .and_then(|i| pool.get(i))
                .ok_or(ProtocolError::malformed(
                    "Vertica RowDescription",
                    "type pool index out of range",
                ))?;
            (*base, Some(name.clone()))
        } else {
            (type_ref, None)
        };
        columns.push(VerticaColumn {
            name,
            table_oid,
            table,
            attnum,
            parent_attnum,
            type_oid,
            type_name,
            size: r.i16()?,
            nullable: r.i16()? == 1,
            identity: r.i16()? == 1,
            typmod: r.i32()?,
            format: r.i16()?,
        });
    }
    r.end()?;
    Ok(columns)
}

/// PostgreSQL's ParameterDescription (`Int16 n, Int32[n] OIDs`) in Vertica's
/// layout (§3.3): empty pool, then per parameter `Byte1 0, Int32 OID,
/// Int32 typmod -1, Int16 0` (may be NULL).
pub fn parameter_description_to_vertica(body: &[u8]) -> Result<Frame, ProtocolError> {
    let mut r = Reader::new(body, "ParameterDescription");
    let n = r.count()?;
    let mut oids = Vec::with_capacity(n);
    for _ in 0..n {
        oids.push(r.i32()?);
    }
    r.end()?;
    Ok(framed(PARAMETER_DESCRIPTION, |b| {
        b.put_i16(n as i16);
        b.put_i32(0);
        for pg_oid in oids {
            b.put_u8(0);
            b.put_i32(vertica_type(pg_oid).0);
            b.put_i32(-1);
            b.put_i16(0);
        }
    }))
}

/// CommandDescription: the statement's command tag (empty for an empty
/// statement), and no COPY rewrite.
pub fn encode_command_description(tag: &str) -> Frame {
    framed(COMMAND_DESCRIPTION, |b| {
        write::cstr(b, tag);
        b.put_i16(0);
        b.put_u8(0);
    })
}

// ---------------------------------------------------------------------------
// Row counts

/// Statements Vertica answers with a one-row result set holding the number
/// of rows they changed (`OUTPUT`), where PostgreSQL only reports it in the
/// CommandComplete tag. COPY is not one of them here: a plain `COPY FROM
/// STDIN` is answered PostgreSQL-style, and vertica-python's `copy()`
/// refuses a result set after it.
const COUNTED: &[&str] = &["INSERT", "UPDATE", "DELETE", "MERGE"];

/// Whether a statement with this command tag (its first keyword, upper
/// case) gets Vertica's row-count result.
pub fn counts_rows(tag: &str) -> bool {
    COUNTED.contains(&tag)
}

/// The row count of a CommandComplete body whose tag is one of
/// [`counts_rows`]'s ("INSERT 0 3" → 3, "UPDATE 2" → 2); `None` otherwise.
pub fn row_count(command_complete: &[u8]) -> Option<u64> {
    let tag = command_complete
        .strip_suffix(b"\0")
        .unwrap_or(command_complete);
    let tag = std::str::from_utf8(tag).ok()?;
    let keyword = tag.split(' ').next()?;
    if !counts_rows(keyword) {
        return None;
    }
    tag.rsplit(' ').next()?.parse().ok()
}

/// The RowDescription of Vertica's row-count result: one INTEGER column
/// named `OUTPUT`, never NULL, text format.
pub fn encode_row_count_description() -> Frame {
    framed(ROW_DESCRIPTION, |b| {
        b.put_i16(1);
        b.put_i32(0); // type pool: empty
        write::cstr(b, "OUTPUT");
        b.put_i64(0); // no table
        b.put_i16(0);
        b.put_u8(0); // not a pool type
        b.put_i32(oid::INT8);
        b.put_i16(8);
        b.put_i16(0); // not nullable
        b.put_i16(0); // not an identity column
        b.put_i32(-1);
        b.put_i16(0); // text
    })
}

/// The DataRow of Vertica's row-count result.
pub fn encode_row_count(rows: u64) -> Frame {
    let text = rows.to_string();
    framed(DATA_ROW, |b| {
        b.put_i16(1);
        b.put_i32(text.len() as i32);
        b.put_slice(text.as_bytes());
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::vertica::{msg, postgres_type_name};

    /// PostgreSQL's RowDescription of `SELECT 1::int4 AS a, 'x'::bytea AS b`
    /// where `b` comes from table 16384, attribute 2.
    fn pg_row_description() -> Vec<u8> {
        let mut body = vec![0, 2];
        body.extend_from_slice(b"a\0");
        body.extend_from_slice(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 23, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ]);
        body.extend_from_slice(b"b\0");
        body.extend_from_slice(&[
            0, 0, 0x40, 0, 0, 2, 0, 0, 0, 17, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 1,
        ]);
        body
    }

    #[test]
    fn row_description_into_vertica_layout() {
        let (frame, conv) = row_description_to_vertica(&pg_row_description()).unwrap();
        assert_eq!(conv, vec![ValueConversion::Same, ValueConversion::Bytea]);
        let mut expected = vec![0, 2, 0, 0, 0, 0];
        expected.extend_from_slice(b"a\0");
        expected.extend_from_slice(&[0; 8]); // Int64 table OID 0: no schema/table names
        expected.extend_from_slice(&[0, 0]); // attnum
        expected.push(0); // not a pool type
        expected.extend_from_slice(&[0, 0, 0, 6, 0, 8, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        expected.extend_from_slice(b"b\0");
        expected.extend_from_slice(&[0; 8]);
        expected.extend_from_slice(&[0, 2, 0]);
        expected.extend_from_slice(&[
            0, 0, 0, 17, 0xff, 0xff, 0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ]);
        assert_eq!(frame.tag(), b'T');
        assert_eq!(frame.body(), &expected[..], "binary format 1 became text 0");
        let back = parse_row_description(frame.body(), false).unwrap();
        assert_eq!(back[0].type_oid, oid::INT8);
        assert_eq!(back[1].type_oid, oid::VARBINARY);
        assert!(back[1].nullable && back[1].table.is_none());
        assert!(row_description_to_vertica(&pg_row_description()[..20]).is_err());
    }

    #[test]
    fn vertica_row_description_with_table_oids_and_type_pool() {
        // Two columns: "id" of table 45035996273704980 public.t (INT8, not
        // null, identity); "g" a GEOMETRY from the pool (base LONG VARBINARY).
        let mut body = vec![0, 2];
        body.extend_from_slice(&[0, 0, 0, 1]); // pool of 1
        body.extend_from_slice(&[0, 0, 0, 116]);
        body.extend_from_slice(b"Geometry\0");
        body.extend_from_slice(b"id\0");
        body.extend_from_slice(&45035996273704980i64.to_be_bytes());
        body.extend_from_slice(b"public\0t\0");
        body.extend_from_slice(&[
            0, 1, 0, 0, 0, 0, 6, 0, 8, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0, 0,
        ]);
        body.extend_from_slice(b"g\0");
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&[
            0, 0, 1, 0, 0, 0, 0, 0xff, 0xff, 0, 1, 0, 0, 0, 0, 0x01, 0x04, 0, 0,
        ]);
        let cols = parse_row_description(&body, false).unwrap();
        assert_eq!(cols[0].table, Some(("public".into(), "t".into())));
        assert_eq!(cols[0].table_oid, 45035996273704980);
        assert_eq!(cols[0].type_oid, oid::INT8);
        assert!(!cols[0].nullable && cols[0].identity);
        assert_eq!(cols[1].type_oid, oid::LONG_VARBINARY);
        assert_eq!(cols[1].type_name.as_deref(), Some("Geometry"));
        assert_eq!(cols[1].typmod, 260);
        assert_eq!(postgres_type_name(cols[0].type_oid), "bigint");
        // The same bytes read as if parent attnums were present do not fit.
        assert!(parse_row_description(&body, true).is_err());
        // Zero fields: the pool count is still there.
        assert!(
            parse_row_description(&[0, 0, 0, 0, 0, 0], false)
                .unwrap()
                .is_empty()
        );
        // A pool index out of range is an error, not a panic.
        let mut bad = body.clone();
        let at = bad.len() - 15;
        bad[at] = 9;
        assert!(parse_row_description(&bad, false).is_err());
    }

    #[test]
    fn parameter_description_into_vertica_layout() {
        // PostgreSQL: 2 parameters, int4 and varchar.
        let body = [0, 2, 0, 0, 0, 23, 0, 0, 4, 19];
        let frame = parameter_description_to_vertica(&body).unwrap();
        assert_eq!(
            frame.raw().as_ref(),
            &msg(
                b't',
                &[
                    0, 2, 0, 0, 0, 0, // count, empty pool
                    0, 0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0, 0, // INT8
                    0, 0, 0, 0, 9, 0xff, 0xff, 0xff, 0xff, 0, 0, // VARCHAR
                ]
            )[..]
        );
        let none = parameter_description_to_vertica(&[0, 0]).unwrap();
        assert_eq!(none.body(), &[0, 0, 0, 0, 0, 0]);
        assert!(parameter_description_to_vertica(&[0, 1, 0]).is_err());
    }

    #[test]
    fn row_counts_in_vertica_form() {
        assert_eq!(row_count(b"INSERT 0 3\0"), Some(3));
        assert_eq!(row_count(b"UPDATE 12\0"), Some(12));
        assert_eq!(row_count(b"DELETE 0\0"), Some(0));
        assert_eq!(row_count(b"MERGE 2\0"), Some(2));
        assert_eq!(row_count(b"SELECT 5\0"), None);
        assert_eq!(
            row_count(b"COPY 5\0"),
            None,
            "COPY FROM STDIN stays PostgreSQL-style"
        );
        assert_eq!(row_count(b"INSERT\0"), None);
        assert_eq!(row_count(b"\xff\0"), None);
        let t = encode_row_count_description();
        let columns = parse_row_description(t.body(), false).unwrap();
        assert_eq!(columns.len(), 1);
        assert_eq!(columns[0].name, "OUTPUT");
        assert_eq!(columns[0].type_oid, oid::INT8);
        assert!(!columns[0].nullable);
        assert_eq!(
            encode_row_count(42).raw().as_ref(),
            &msg(b'D', &[0, 1, 0, 0, 0, 2, b'4', b'2'])[..]
        );
    }

    #[test]
    fn command_description_bytes() {
        let m = encode_command_description("SELECT");
        assert_eq!(m.raw().as_ref(), &msg(b'm', b"SELECT\0\0\0\0")[..]);
        assert_eq!(
            encode_command_description("").raw().as_ref(),
            &msg(b'm', b"\0\0\0\0")[..]
        );
    }
}
