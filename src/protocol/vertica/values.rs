//! Column values: DataRows, and binary values in Vertica's escaped text and
//! PostgreSQL's bytea.

use bytes::BufMut;

use super::{DATA_ROW, Reader, ValueConversion, all_same, framed};
use crate::protocol::ProtocolError;
use crate::protocol::frame::Frame;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
