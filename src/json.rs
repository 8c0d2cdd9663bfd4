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

/// The members of the JSON object that `text` is exactly (whitespace around it allowed): each
/// key, unescaped, with its value's raw text. `None` unless `text` is one valid object.
pub fn members(text: &str) -> Option<Vec<(String, &str)>> {
    let items = items(text, b'{')?;
    items
        .into_iter()
        .map(|(key, v)| Some((unescape(key?)?, v)))
        .collect()
}

/// The elements of the JSON array that `text` is exactly, as raw text each.
pub fn elements(text: &str) -> Option<Vec<&str>> {
    Some(items(text, b'[')?.into_iter().map(|(_, v)| v).collect())
}

/// The decoded string that the raw JSON value `v` is, if it is one.
pub fn as_string(v: &str) -> Option<String> {
    let b = v.as_bytes();
    (b.first() == Some(&b'"') && string_len(b) == Some(b.len()))
        .then(|| unescape(&v[1..v.len() - 1]))
        .flatten()
}

/// The top-level items of the container `text` is exactly: for an object the raw key (inside
/// its quotes) and value, for an array the values.
fn items(text: &str, open: u8) -> Option<Vec<(Option<&str>, &str)>> {
    let b = text.as_bytes();
    let start = skip_ws(b, 0);
    if b.get(start) != Some(&open) || value_len(b)? != b.len() {
        return None;
    }
    let (object, close) = (open == b'{', if open == b'{' { b'}' } else { b']' });
    let mut out = Vec::new();
    let mut i = skip_ws(b, start + 1);
    if b.get(i) == Some(&close) {
        return Some(out);
    }
    loop {
        let mut key = None;
        if object {
            let len = string_len(&b[i..])?;
            key = Some(&text[i + 1..i + len - 1]);
            i = skip_ws(b, i + len) + 1; // past ':' (validated above)
            i = skip_ws(b, i);
        }
        let end = value_end(b, i, 1)?;
        out.push((key, &text[i..end]));
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            _ => return Some(out),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_elements() {
        let m = members(r#" {"a":1, "b\u0063" : [true, "x"], "c":{"d":null}} "#).unwrap();
        let keys: Vec<_> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "bc", "c"]);
        assert_eq!(m[1].1, r#"[true, "x"]"#);
        assert_eq!(elements(m[1].1).unwrap(), ["true", r#""x""#]);
        assert_eq!(members("{}").unwrap(), []);
        assert_eq!(elements("[ ]").unwrap(), Vec::<&str>::new());
        for bad in ["", "[1]", "{\"a\":1", "{\"a\":1} x", "{a:1}"] {
            assert!(members(bad).is_none(), "{bad}");
        }
        assert_eq!(as_string(r#""h\u00e9""#).as_deref(), Some("hé"));
        assert_eq!(as_string("1"), None);
    }
}
