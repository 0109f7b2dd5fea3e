//! Vertica's dialect of the protocol, translated to and from PostgreSQL's.
//!
//! A Vertica driver (vertica-python, JDBC, ODBC) answered by a PostgreSQL
//! server needs its startup rewritten, PostgreSQL's RowDescription and
//! ParameterDescription put into Vertica's layout, a CommandDescription (`m`)
//! after every Describe of a statement, its Bind stripped of the parameter
//! type OIDs, `?` placeholders numbered, and a few text values re-encoded
//! (vertica-protocol.md §1–§5). Every function here is bytes in, bytes out;
//! the translating session in the `frontend` module decides when to call
//! them, and reads the statements' text (placeholders, command tags) itself.
//!
//! The reverse direction is here too: [`parse_row_description`] reads a
//! Vertica RowDescription (table OIDs, type pool), which the Vertica catalog
//! sync uses to derive table columns from a result.
//!
//! * `startup`: the startup rewrite, Vertica's own startup and password
//!   hash, the ParameterStatus messages Vertica clients read, and
//!   LoadBalanceResponse.
//! * `describe`: RowDescription, ParameterDescription, CommandDescription
//!   and Vertica's row-count results.
//! * `bind`: Parse and Bind for PostgreSQL.
//! * `values`: DataRows and the text of binary values.
//! * `error`: ErrorResponse and NoticeResponse.
//!
//! Everything is re-exported here: callers name `protocol::vertica::X`.

mod bind;
mod describe;
mod error;
mod startup;
mod values;

use bytes::BytesMut;

use super::ProtocolError;
use super::frame::Frame;
use super::write::{self, read_cstr};

pub use bind::{bind_to_postgres, encode_parse};
pub use describe::{
    PgColumn, VerticaColumn, counts_rows, encode_command_description, encode_row_count,
    encode_row_count_description, parameter_description_to_vertica, parse_pg_row_description,
    parse_row_description, row_count, row_description_to_vertica,
};
pub use error::error_to_vertica;
pub use startup::{
    LoadBalanceResponse, encode_auto_commit, encode_md5_request, encode_vertica_parameters,
    encode_vertica_startup, negotiated_protocol, parameter_status, postgres_startup,
    requested_autocommit, sha512_password,
};
pub use values::{
    bytea_hex, bytea_to_vertica, data_row_to_vertica, data_row_values, vertica_unescape,
};

/// Vertica-only backend message: CommandDescription, after Describe(statement).
pub const COMMAND_DESCRIPTION: u8 = b'm';
/// PostgreSQL's NegotiateProtocolVersion, which no Vertica client understands.
pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
pub const PARAMETER_DESCRIPTION: u8 = b't';
pub const NO_DATA: u8 = b'n';
pub const ROW_DESCRIPTION: u8 = b'T';
pub const DATA_ROW: u8 = b'D';

/// LoadBalanceResponse 'Y' (redirect); sluice itself only ever answers 'N'.
pub const LOAD_BALANCE_ACCEPTED: u8 = b'Y';

/// The newest Vertica protocol whose layout sluice writes: 3.16. sluice
/// never announces `request_complex_types`, so RowDescription carries no
/// parent attribute numbers at any version.
pub const SUPPORTED_PROTOCOL: i32 = 0x0003_0010;

/// Vertica type OIDs (vertica-protocol.md §3.7).
pub mod oid {
    pub const UNKNOWN: i32 = 4;
    pub const BOOL: i32 = 5;
    pub const INT8: i32 = 6;
    pub const FLOAT8: i32 = 7;
    pub const CHAR: i32 = 8;
    pub const VARCHAR: i32 = 9;
    pub const DATE: i32 = 10;
    pub const TIME: i32 = 11;
    pub const TIMESTAMP: i32 = 12;
    pub const TIMESTAMPTZ: i32 = 13;
    pub const INTERVAL: i32 = 14;
    pub const TIMETZ: i32 = 15;
    pub const NUMERIC: i32 = 16;
    pub const VARBINARY: i32 = 17;
    pub const UUID: i32 = 20;
    pub const INTERVALYM: i32 = 114;
    pub const LONG_VARCHAR: i32 = 115;
    pub const LONG_VARBINARY: i32 = 116;
    pub const BINARY: i32 = 117;
}

/// PostgreSQL type OIDs the map knows.
mod pg {
    pub const BOOL: i32 = 16;
    pub const BYTEA: i32 = 17;
    pub const CHAR: i32 = 18;
    pub const NAME: i32 = 19;
    pub const INT8: i32 = 20;
    pub const INT2: i32 = 21;
    pub const INT4: i32 = 23;
    pub const TEXT: i32 = 25;
    pub const OID: i32 = 26;
    pub const FLOAT4: i32 = 700;
    pub const FLOAT8: i32 = 701;
    pub const BPCHAR: i32 = 1042;
    pub const VARCHAR: i32 = 1043;
    pub const DATE: i32 = 1082;
    pub const TIME: i32 = 1083;
    pub const TIMESTAMP: i32 = 1114;
    pub const TIMESTAMPTZ: i32 = 1184;
    pub const INTERVAL: i32 = 1186;
    pub const TIMETZ: i32 = 1266;
    pub const NUMERIC: i32 = 1700;
    pub const UUID: i32 = 2950;
}

/// The Vertica type a PostgreSQL type is shown as, and its size. Types
/// Vertica lacks (json, arrays, ranges, ...) are shown as VARCHAR: their
/// text form reads as a string.
pub fn vertica_type(pg_oid: i32) -> (i32, i16) {
    match pg_oid {
        pg::BOOL => (oid::BOOL, 1),
        pg::INT2 | pg::INT4 | pg::INT8 | pg::OID => (oid::INT8, 8),
        pg::FLOAT4 | pg::FLOAT8 => (oid::FLOAT8, 8),
        pg::NUMERIC => (oid::NUMERIC, -1),
        pg::CHAR | pg::BPCHAR => (oid::CHAR, -1),
        pg::VARCHAR | pg::TEXT | pg::NAME => (oid::VARCHAR, -1),
        pg::DATE => (oid::DATE, 8),
        pg::TIME => (oid::TIME, 8),
        pg::TIMESTAMP => (oid::TIMESTAMP, 8),
        pg::TIMESTAMPTZ => (oid::TIMESTAMPTZ, 8),
        pg::INTERVAL => (oid::INTERVAL, 8),
        pg::TIMETZ => (oid::TIMETZ, 8),
        pg::BYTEA => (oid::VARBINARY, -1),
        pg::UUID => (oid::UUID, 16),
        _ => (oid::VARCHAR, -1),
    }
}

/// The PostgreSQL column type for a Vertica type, for tables built from a
/// Vertica result (§6, the reverse of [`vertica_type`]).
pub fn postgres_type_name(vertica_oid: i32) -> &'static str {
    match vertica_oid {
        oid::BOOL => "boolean",
        oid::INT8 => "bigint",
        oid::FLOAT8 => "double precision",
        oid::NUMERIC => "numeric",
        oid::DATE => "date",
        oid::TIME => "time",
        oid::TIMETZ => "timetz",
        oid::TIMESTAMP => "timestamp",
        oid::TIMESTAMPTZ => "timestamptz",
        oid::INTERVAL | oid::INTERVALYM => "interval",
        oid::VARBINARY | oid::LONG_VARBINARY | oid::BINARY => "bytea",
        oid::UUID => "uuid",
        _ => "text",
    }
}

/// How a column's text values must change on the way to a Vertica client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueConversion {
    /// The same text in both dialects.
    Same,
    /// PostgreSQL bytea (`\x0102`) to Vertica's octal-escaped VARBINARY.
    Bytea,
}

/// What the translating session keeps of a result's columns.
pub type Conversions = Vec<ValueConversion>;

/// True when no column of a result needs its values converted, so its rows
/// can be relayed untouched.
pub fn all_same(conversions: &[ValueConversion]) -> bool {
    conversions.iter().all(|c| *c == ValueConversion::Same)
}

// ---------------------------------------------------------------------------
// Reading helpers

struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(body: &'a [u8], what: &'static str) -> Reader<'a> {
        Reader { rest: body, what }
    }
    fn short(&self) -> ProtocolError {
        ProtocolError::malformed(self.what, "message is shorter than its fields")
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.rest.len() < n {
            return Err(self.short());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, ProtocolError> {
        Ok(i16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, ProtocolError> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, ProtocolError> {
        Ok(i64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn cstr(&mut self) -> Result<&'a [u8], ProtocolError> {
        let (s, rest) = read_cstr(self.rest).ok_or(ProtocolError::malformed(
            self.what,
            "string is not terminated",
        ))?;
        self.rest = rest;
        Ok(s)
    }
    fn count(&mut self) -> Result<usize, ProtocolError> {
        let n = self.i16()?;
        if n < 0 {
            return Err(ProtocolError::malformed(self.what, "negative count"));
        }
        Ok(n as usize)
    }
    fn end(&self) -> Result<(), ProtocolError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::malformed(
                self.what,
                "bytes after the last field",
            ))
        }
    }
}

fn framed(tag: u8, body: impl FnOnce(&mut BytesMut)) -> Frame {
    let mut buf = BytesMut::new();
    write::message(&mut buf, tag, body);
    Frame::from_raw(buf.freeze())
}

/// A whole message as bytes, for tests: tag, length, body.
#[cfg(test)]
fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_map() {
        for (pg_oid, v) in [
            (16, 5),
            (20, 6),
            (21, 6),
            (23, 6),
            (26, 6),
            (700, 7),
            (701, 7),
            (1700, 16),
            (1042, 8),
            (18, 8),
            (1043, 9),
            (25, 9),
            (19, 9),
            (1082, 10),
            (1083, 11),
            (1114, 12),
            (1184, 13),
            (1186, 14),
            (1266, 15),
            (17, 17),
            (2950, 20),
            (114, 9),
        ] {
            assert_eq!(vertica_type(pg_oid).0, v, "pg oid {pg_oid}");
        }
    }
}
