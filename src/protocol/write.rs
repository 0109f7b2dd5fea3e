//! The one place where a message's length field is written.

use bytes::{BufMut, BytesMut};

/// Appends a typed message: `tag`, a length back-patched after `body` ran,
/// then the body.
pub(crate) fn message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    untagged(buf, body);
}

/// Appends an untagged packet (startup, SSLRequest, CancelRequest): a length
/// that counts itself, then the body.
pub(crate) fn untagged(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - start) as i32;
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NUL-terminated string. An embedded NUL would end the string
/// early on the other side, so the text is cut there instead.
pub(crate) fn cstr(buf: &mut BytesMut, s: &str) {
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    buf.put_slice(&bytes[..end]);
    buf.put_u8(0);
}

/// Reads a NUL-terminated string from the front of `body`, returning it and the rest.
pub(crate) fn read_cstr(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = body.iter().position(|&b| b == 0)?;
    Some((&body[..end], &body[end + 1..]))
}
