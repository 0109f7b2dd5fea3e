//! SQL lexing shared by everything that reads query text without parsing
//! it: masking and fingerprints of unparsable text
//! ([`crate::classify::fingerprint`]), the token scan that finds relations
//! in Vertica-only syntax ([`crate::classify::scan`]), and the Vertica
//! translation's `?` numbering and command tags ([`crate::protocol::vertica`]).
//! One place knows where comments (nested `/* */` included), literals and
//! quoted identifiers begin and end.

use std::ops::Range;

/// What a lexical piece of SQL text is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Anything else, copied as is.
    Text,
    /// A string, dollar-quoted string, number or parameter.
    Literal,
    Comment,
    Whitespace,
    /// A double-quoted identifier, quotes included.
    Quoted,
}

/// Splits SQL text into pieces (kind, byte range), PostgreSQL's lexical
/// rules simplified: `--` and nested `/* */` comments, `'..'` (with `''`),
/// `E'..'` (with backslash escapes), `$tag$..$tag$`, `"..."`, numbers, `$n`.
pub fn pieces(text: &str) -> Vec<(Kind, Range<usize>)> {
    let mut out = Vec::new();
    each_piece(text, |kind, range| out.push((kind, range)));
    out
}

/// [`pieces`] without the vector: `f` gets each piece in order. For the
/// per-query paths (the classification cache's shape), where collecting
/// the pieces cost more than looking at them.
pub fn each_piece(text: &str, mut f: impl FnMut(Kind, Range<usize>)) {
    let b = text.as_bytes();
    let mut i = 0;
    let mut plain = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
    while i < b.len() {
        let mut start = i;
        let kind = match b[i] {
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                Kind::Comment
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                Kind::Comment
            }
            c if c.is_ascii_whitespace() => {
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                Kind::Whitespace
            }
            b'\'' => {
                let escapes = start > plain
                    && matches!(b[start - 1], b'e' | b'E')
                    && (start < 2 || !ident(b[start - 2]));
                if escapes {
                    // The E belongs to the literal.
                    start -= 1;
                }
                i += 1;
                while i < b.len() {
                    if (escapes && b[i] == b'\\') || (b[i] == b'\'' && b.get(i + 1) == Some(&b'\''))
                    {
                        i += 2;
                    } else if b[i] == b'\'' {
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
                Kind::Literal
            }
            b'"' => {
                i += 1;
                while i < b.len() {
                    if b[i] == b'"' && b.get(i + 1) == Some(&b'"') {
                        i += 2;
                    } else if b[i] == b'"' {
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
                Kind::Quoted
            }
            b'$' if start == 0 || !ident(b[start - 1]) => {
                let mut j = i + 1;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                if j > i + 1 {
                    i = j;
                    Kind::Literal
                } else {
                    let mut k = i + 1;
                    while k < b.len() && (b[k].is_ascii_alphanumeric() || b[k] == b'_') {
                        k += 1;
                    }
                    if b.get(k) == Some(&b'$') {
                        let tag = &text[start..=k];
                        match text[k + 1..].find(tag) {
                            Some(end) => i = k + 1 + end + tag.len(),
                            None => i = b.len(),
                        }
                        Kind::Literal
                    } else {
                        i += 1;
                        continue;
                    }
                }
            }
            c if c.is_ascii_digit() && (start == 0 || !ident(b[start - 1])) => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
                Kind::Literal
            }
            // A word (keyword, name) at once: its digits are not numbers,
            // and looking at each of its bytes above would cost every query.
            c if ident(c) => {
                i += 1;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        };
        i = i.min(b.len());
        if start > plain {
            f(Kind::Text, plain..start);
        }
        f(kind, start..i);
        plain = i;
    }
    if plain < b.len() {
        f(Kind::Text, plain..b.len());
    }
}
