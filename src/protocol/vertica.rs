//! Vertica's dialect of the protocol, translated to and from PostgreSQL's.
//!
//! A Vertica driver (vertica-python, JDBC, ODBC) answered by a PostgreSQL
//! server needs its startup rewritten, PostgreSQL's RowDescription and
//! ParameterDescription put into Vertica's layout, a CommandDescription (`m`)
//! after every Describe of a statement, its Bind stripped of the parameter
//! type OIDs, `?` placeholders numbered, and a few text values re-encoded
//! (vertica-protocol.md §1–§5). Every function here is bytes in, bytes out;
//! the translating session in [`crate::frontend`] decides when to call them.
//!
//! The reverse direction is here too: [`parse_row_description`] reads a
//! Vertica RowDescription (table OIDs, type pool), which the Vertica catalog
//! sync uses to derive table columns from a result.

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;
use super::frame::Frame;
use super::startup::StartupMessage;
use super::write::{self, read_cstr};
use crate::lex::Kind;

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
// Startup

/// Startup parameters PostgreSQL knows that a Vertica client may send; all
/// others (client_type, protocol_features, autocommit, ...) would make
/// PostgreSQL refuse the login (§7, "unrecognized configuration parameter").
const KEPT_PARAMETERS: &[&str] = &["user", "database"];

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
    super::backend::encode_parameter_status(buf, "protocol_version", &protocol.to_string());
    encode_auto_commit(buf, autocommit);
    if !timezone.is_empty() {
        super::backend::encode_parameter_status(buf, "timezone", timezone);
    }
}

pub fn encode_auto_commit(buf: &mut BytesMut, on: bool) {
    super::backend::encode_parameter_status(buf, "auto_commit", if on { "on" } else { "off" });
}

/// Reads a ParameterStatus body: (name, value).
pub fn parameter_status(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = read_cstr(body)?;
    let (value, _) = read_cstr(rest)?;
    Some((name, value))
}

/// `SET SESSION AUTOCOMMIT TO on|off`, which vertica-python sends when its
/// `autocommit` property is set: Some(new value).
pub fn set_autocommit(sql: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(sql).ok()?;
    let words: Vec<String> = text
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["set", "session", "autocommit", "to" | "=", v] => match v {
            "on" | "true" => Some(true),
            "off" | "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
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
            LoadBalanceResponse::Declined => buf.put_u8(super::backend::REQUEST_DECLINED),
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

// ---------------------------------------------------------------------------
// RowDescription and ParameterDescription

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

/// Whether a statement with this command tag ([`command_tag`]) gets
/// Vertica's row-count result.
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

/// The command tag Vertica would give a statement: its first keyword in
/// upper case ("" for an empty statement), after comments and opening
/// parentheses.
pub fn command_tag(sql: &str) -> String {
    for (kind, range) in crate::lex::pieces(sql) {
        match kind {
            Kind::Comment | Kind::Whitespace => continue,
            Kind::Text => {
                let text = sql[range].trim_start_matches(['(', ';']);
                if text.is_empty() {
                    continue;
                }
                return text
                    .split(|c: char| !c.is_ascii_alphabetic())
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
            }
            Kind::Literal | Kind::Quoted => return String::new(),
        }
    }
    String::new()
}

// ---------------------------------------------------------------------------
// Parse and Bind

/// Numbers `?` placeholders `$1`, `$2`, ... outside string literals, quoted
/// identifiers, dollar quotes and comments (as [`crate::lex`] finds them).
/// Returns the text and the count.
pub fn number_placeholders(sql: &str) -> (String, usize) {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for (kind, range) in crate::lex::pieces(sql) {
        let piece = &sql[range];
        if kind != Kind::Text {
            out.push_str(piece);
            continue;
        }
        for c in piece.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
    }
    (out, n)
}

/// A Vertica Parse for PostgreSQL: placeholders numbered; Vertica ignores
/// parameter types, so none are sent. Also returns the statement's name and
/// command tag for the CommandDescription that will answer its Describe.
pub fn parse_to_postgres(body: &[u8]) -> Result<(Frame, Vec<u8>, String), ProtocolError> {
    let parts = super::frontend::parse_parts(body)?;
    let sql = String::from_utf8_lossy(parts.text);
    let (text, _) = number_placeholders(&sql);
    let frame = framed(super::frontend::PARSE, |b| {
        b.put_slice(parts.name);
        b.put_u8(0);
        write::cstr(b, &text);
        b.put_i16(0);
    });
    Ok((frame, parts.name.to_vec(), command_tag(&sql)))
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
    Ok(framed(super::frontend::BIND, |b| {
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

// ---------------------------------------------------------------------------
// Values

/// Vertica's escaped binary text (`\ooo` octal, `\\`) as bytes.
pub fn vertica_unescape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'\\' {
            if text.get(i + 1) == Some(&b'\\') {
                out.push(b'\\');
                i += 2;
                continue;
            }
            if let Some(oct) = text.get(i + 1..i + 4)
                && oct.iter().all(|c| (b'0'..=b'7').contains(c))
            {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(text[i]);
        i += 1;
    }
    out
}

/// Bytes as PostgreSQL's bytea hex input, `\x...`.
pub fn bytea_hex(bytes: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(2 + bytes.len() * 2);
    out.extend_from_slice(b"\\x");
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 15)]);
    }
    out
}

/// PostgreSQL's bytea text output (`\x0102` hex, or the old escape form) as
/// Vertica's VARBINARY text: printable ASCII as is, `\` as `\\`, every
/// other byte `\ooo`.
pub fn bytea_to_vertica(text: &[u8]) -> Vec<u8> {
    let bytes = match text.strip_prefix(b"\\x") {
        Some(hex) => hex
            .chunks(2)
            .filter_map(|p| {
                let s = std::str::from_utf8(p).ok()?;
                u8::from_str_radix(s, 16).ok()
            })
            .collect(),
        None => vertica_unescape(text),
    };
    let mut out = Vec::with_capacity(bytes.len());
    for b in bytes {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
        }
    }
    out
}

/// A DataRow's values (`None` for NULL); the layout is the same in both dialects.
pub fn data_row_values(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolError> {
    let mut r = Reader::new(body, "DataRow");
    let n = r.count()?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.i32()?;
        values.push(if len < 0 {
            None
        } else {
            Some(r.take(len as usize)?)
        });
    }
    r.end()?;
    Ok(values)
}

/// A DataRow with its values converted per column; `None` when nothing
/// changes (the original bytes are forwarded).
pub fn data_row_to_vertica(
    body: &[u8],
    conversions: &[ValueConversion],
) -> Result<Option<Frame>, ProtocolError> {
    if all_same(conversions) {
        return Ok(None);
    }
    let values = data_row_values(body)?;
    Ok(Some(framed(DATA_ROW, |b| {
        b.put_i16(values.len() as i16);
        for (i, v) in values.iter().enumerate() {
            match (v, conversions.get(i)) {
                (None, _) => b.put_i32(-1),
                (Some(v), Some(ValueConversion::Bytea)) => {
                    let converted = bytea_to_vertica(v);
                    b.put_i32(converted.len() as i32);
                    b.put_slice(&converted);
                }
                (Some(v), _) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
            }
        }
    })))
}

// ---------------------------------------------------------------------------
// Errors

/// An ErrorResponse or NoticeResponse without PostgreSQL's `V` field (the
/// unlocalized severity), which Vertica clients read as a numeric error
/// code (§3.5). `tag` is `E` or `N`.
pub fn error_to_vertica(tag: u8, body: &[u8]) -> Result<Frame, ProtocolError> {
    let fields = super::backend::error_fields(body)?;
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
    use crate::protocol::startup::{self, StartupPacket};

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

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
        assert_eq!(set_autocommit(b"SET SESSION AUTOCOMMIT TO ON"), Some(true));
        assert_eq!(
            set_autocommit(b"set session autocommit to off;"),
            Some(false)
        );
        assert_eq!(set_autocommit(b"SET search_path TO x"), None);
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
        assert_eq!(command_tag("  select 1"), "SELECT");
        assert_eq!(command_tag("-- c\n/* x */ insert into t"), "INSERT");
        assert_eq!(command_tag("(SELECT 1)"), "SELECT");
        assert_eq!(command_tag(""), "");
    }

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

    #[test]
    fn placeholders_are_numbered_outside_literals_and_comments() {
        assert_eq!(
            number_placeholders("select ?, '?', \"a?\", x from t where a = ? -- ?\n and b = ?"),
            (
                "select $1, '?', \"a?\", x from t where a = $2 -- ?\n and b = $3".into(),
                3
            )
        );
        assert_eq!(
            number_placeholders("select 'it''s ?' /* ? /* ? */ */ , ?"),
            ("select 'it''s ?' /* ? /* ? */ */ , $1".into(), 1)
        );
        assert_eq!(
            number_placeholders("select $q$ ? $q$, ?, $1"),
            ("select $q$ ? $q$, $1, $1".into(), 1)
        );
        assert_eq!(number_placeholders("select '?"), ("select '?".into(), 0));
        let body = b"s1\0insert into t values (?, ?)\0\0\0";
        let (frame, name, tag) = parse_to_postgres(body).unwrap();
        assert_eq!(frame.body(), b"s1\0insert into t values ($1, $2)\0\0\0");
        assert_eq!((name.as_slice(), tag.as_str()), (&b"s1"[..], "INSERT"));
    }

    #[test]
    fn bytea_text_becomes_vertica_varbinary() {
        assert_eq!(bytea_to_vertica(b"\\x61005c7fff"), b"a\\000\\\\\\177\\377");
        assert_eq!(bytea_to_vertica(b"\\x"), b"");
        assert_eq!(vertica_unescape(b"a\\000\\\\\\177\\377"), b"a\0\\\x7f\xff");
        // DataRow: bytea second, NULL third.
        let mut body = vec![0, 3];
        body.extend_from_slice(b"\0\0\0\x01t");
        body.extend_from_slice(b"\0\0\0\x06\\x0a41");
        body.extend_from_slice(&[0xff; 4]);
        let conv = [
            ValueConversion::Same,
            ValueConversion::Bytea,
            ValueConversion::Bytea,
        ];
        let row = data_row_to_vertica(&body, &conv).unwrap().unwrap();
        let mut expected = vec![0, 3];
        expected.extend_from_slice(b"\0\0\0\x01t");
        expected.extend_from_slice(b"\0\0\0\x05\\012A");
        expected.extend_from_slice(&[0xff; 4]);
        assert_eq!(row.body(), &expected[..]);
        assert_eq!(data_row_to_vertica(&body, &conv[..1]).unwrap(), None);
        assert!(data_row_to_vertica(&body[..7], &conv).is_err());
    }

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
