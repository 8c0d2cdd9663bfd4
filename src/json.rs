//! JSON, as far as the gateway needs it: validating values in place (Socket.IO packets),
//! decoding strings, and escaping strings for output (log lines, Socket.IO packets). Pure
//! functions over `&[u8]`/`&str`; nothing is built into a tree.

use std::fmt::{self, Display, Write as _};

/// JSON string escaping, as a `Display` wrapper so it writes straight into its destination:
/// `"`, `\\` and every control character (C0, DEL, C1) are escaped. Used for JSON log lines,
/// quoted text log values and Socket.IO packets.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => write!(f, "\\u{:04x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// Decodes the inside of a JSON string (already validated by [`string_len`]); `None` for a
/// bad escape or a lone surrogate.
pub fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hi = hex4(&mut it)?;
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    if it.next()? != '\\' || it.next()? != 'u' {
                        return None;
                    }
                    let lo = hex4(&mut it)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else {
                    hi
                };
                out.push(char::from_u32(cp)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

fn hex4(it: &mut std::str::Chars<'_>) -> Option<u32> {
    (0..4).try_fold(0u32, |acc, _| Some(acc * 16 + it.next()?.to_digit(16)?))
}

/// The index of the first non-whitespace byte at or after `i`.
pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// Most nesting a packet may have; deeper is refused rather than recursed into.
const MAX_DEPTH: usize = 32;

/// Length of the JSON value at the start of `b`, leading and trailing whitespace included,
/// or `None` when it is not one valid value.
pub fn value_len(b: &[u8]) -> Option<usize> {
    value_end(b, skip_ws(b, 0), 0).map(|end| skip_ws(b, end))
}

fn value_end(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    match *b.get(i)? {
        b'"' => Some(i + string_len(&b[i..])?),
        b'[' => container(b, i, b']', depth, false),
        b'{' => container(b, i, b'}', depth, true),
        b't' => literal(b, i, b"true"),
        b'f' => literal(b, i, b"false"),
        b'n' => literal(b, i, b"null"),
        b'-' | b'0'..=b'9' => number_len(b, i),
        _ => None,
    }
}

fn container(b: &[u8], start: usize, close: u8, depth: usize, object: bool) -> Option<usize> {
    let mut i = skip_ws(b, start + 1);
    if b.get(i) == Some(&close) {
        return Some(i + 1);
    }
    loop {
        if object {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            i = skip_ws(b, i + string_len(&b[i..])?);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
        }
        i = skip_ws(b, value_end(b, i, depth + 1)?);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            c if *c == close => return Some(i + 1),
            _ => return None,
        }
    }
}

fn literal(b: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    b[i..].starts_with(word).then_some(i + word.len())
}

fn number_len(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], i: usize| i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let start = i;
    i = digits(b, i);
    if i == start || (b[start] == b'0' && i - start > 1) {
        return None;
    }
    if b.get(i) == Some(&b'.') {
        let s = i + 1;
        i = digits(b, s);
        if i == s {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let s = i;
        i = digits(b, s);
        if i == s {
            return None;
        }
    }
    Some(i)
}

/// Length of the JSON string at the start of `b` (quotes included), validating escapes.
pub fn string_len(b: &[u8]) -> Option<usize> {
    string_end(b).ok()
}

/// [`string_len`], or the offset where the string stopped being valid (a bad escape, a control
/// character, the end of the input), for error messages.
pub fn string_end(b: &[u8]) -> Result<usize, usize> {
    if b.first() != Some(&b'"') {
        return Err(0);
    }
    let mut i = 1;
    loop {
        match *b.get(i).ok_or(i)? {
            b'"' => return Ok(i + 1),
            b'\\' => match *b.get(i + 1).ok_or(i)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = b.get(i + 2..i + 6).ok_or(i)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return Err(i);
                    }
                    i += 6;
                }
                _ => return Err(i),
            },
            c if c < 0x20 => return Err(i),
            _ => i += 1,
        }
    }
}
