//! SQL lexing shared by everything that reads query text without parsing
//! it: masking and fingerprints of unparsable text
//! ([`crate::classify::fingerprint`]), the token scan that finds relations
//! in Vertica-only syntax ([`crate::classify::scan`]), and the Vertica
//! translation's `?` numbering and command tags ([`crate::frontend::vertica_sql`]).
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

/// What a byte can be part of, looked up once per byte: the lexer runs on
/// every query the classification cache does not know verbatim, and a table
/// costs one load where the character tests cost a handful of branches.
const WORD: u8 = 1;
/// ASCII whitespace, as `u8::is_ascii_whitespace` has it.
const SPACE: u8 = 2;
const DIGIT: u8 = 4;
/// Continues a number: letters and digits (`1e5`, `0x1F`) and `.`.
const NUMBER: u8 = 8;

static CLASS: [u8; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut class = 0;
        // Bytes of multi-byte characters are word bytes: names may use them.
        if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 {
            class |= WORD;
        }
        if c.is_ascii_whitespace() {
            class |= SPACE;
        }
        if c.is_ascii_digit() {
            class |= DIGIT;
        }
        if c.is_ascii_alphanumeric() || c == b'.' {
            class |= NUMBER;
        }
        table[i] = class;
        i += 1;
    }
    table
};

fn is(c: u8, class: u8) -> bool {
    CLASS[usize::from(c)] & class != 0
}

/// Where the quoted piece opening at `b[open]` ends (just past its closing
/// quote, or the text's end): a doubled quote stands for itself, and with
/// `escapes` (`E'...'`) a backslash takes the next byte along.
fn closing_quote(b: &[u8], open: usize, escapes: bool) -> usize {
    let quote = b[open];
    let mut i = open + 1;
    while i < b.len() {
        if (escapes && b[i] == b'\\') || (b[i] == quote && b.get(i + 1) == Some(&quote)) {
            i += 2;
        } else if b[i] == quote {
            return i + 1;
        } else {
            i += 1;
        }
    }
    i
}

/// [`pieces`] without the vector: `f` gets each piece in order. For the
/// per-query paths (the classification cache's shape), where collecting
/// the pieces cost more than looking at them.
pub fn each_piece(text: &str, mut f: impl FnMut(Kind, Range<usize>)) {
    let b = text.as_bytes();
    let mut i = 0;
    let mut plain = 0;
    // Where the byte before `at` is a word byte: `$1` and `1` start a
    // literal only after something else (`a$1`, `t1` are names).
    let after_word = |at: usize| at > 0 && is(b[at - 1], WORD);
    while i < b.len() {
        let mut start = i;
        let c = b[i];
        // A digit after anything but a word byte starts a number.
        let number = is(c, DIGIT) && !after_word(start);
        let kind = if is(c, WORD) && !number {
            // A word (keyword, name) at once: its digits are not numbers,
            // and looking at each of its bytes below would cost every query.
            i += 1;
            while i < b.len() && is(b[i], WORD) {
                i += 1;
            }
            continue;
        } else if is(c, SPACE) {
            i += 1;
            while i < b.len() && is(b[i], SPACE) {
                i += 1;
            }
            Kind::Whitespace
        } else {
            match c {
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
                b'\'' => {
                    let escapes = start > plain
                        && matches!(b[start - 1], b'e' | b'E')
                        && !after_word(start - 1);
                    if escapes {
                        // The E belongs to the literal.
                        start -= 1;
                    }
                    i = closing_quote(b, i, escapes);
                    Kind::Literal
                }
                b'"' => {
                    i = closing_quote(b, i, false);
                    Kind::Quoted
                }
                b'$' if !after_word(start) => {
                    let mut j = i + 1;
                    while j < b.len() && is(b[j], DIGIT) {
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
                _ if number => {
                    while i < b.len() && is(b[i], NUMBER) {
                        i += 1;
                    }
                    Kind::Literal
                }
                _ => {
                    i += 1;
                    continue;
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Kind, &str)> {
        pieces(text)
            .into_iter()
            .map(|(k, r)| (k, &text[r]))
            .collect()
    }

    #[test]
    fn words_literals_comments_and_quotes() {
        use Kind::*;
        assert_eq!(
            kinds(
                "SELECT t1.a2, $1, 42.5e3 FROM \"Ta\"\"b\" -- c\nWHERE x = E'\\'' /* a /* b */ */"
            ),
            vec![
                (Text, "SELECT"),
                (Whitespace, " "),
                (Text, "t1.a2,"),
                (Whitespace, " "),
                (Literal, "$1"),
                (Text, ","),
                (Whitespace, " "),
                (Literal, "42.5e3"),
                (Whitespace, " "),
                (Text, "FROM"),
                (Whitespace, " "),
                (Quoted, "\"Ta\"\"b\""),
                (Whitespace, " "),
                (Comment, "-- c"),
                (Whitespace, "\n"),
                (Text, "WHERE"),
                (Whitespace, " "),
                (Text, "x"),
                (Whitespace, " "),
                (Text, "="),
                (Whitespace, " "),
                (Literal, "E'\\''"),
                (Whitespace, " "),
                (Comment, "/* a /* b */ */"),
            ]
        );
        assert_eq!(
            kinds("a$1 $tag$ x $tag$ 'it''s' né2"),
            vec![
                // `$1` after a word is not a parameter, but `1` after `$` is a number.
                (Text, "a$"),
                (Literal, "1"),
                (Whitespace, " "),
                (Literal, "$tag$ x $tag$"),
                (Whitespace, " "),
                (Literal, "'it''s'"),
                (Whitespace, " "),
                (Text, "né2"),
            ]
        );
    }

    #[test]
    fn unterminated_pieces_end_with_the_text() {
        for text in ["'abc", "\"abc", "/* abc", "$$abc", "E'\\", "--"] {
            let all = pieces(text);
            assert_eq!(all.last().map(|(_, r)| r.end), Some(text.len()), "{text}");
        }
    }
}
