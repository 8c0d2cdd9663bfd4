//! Percent-encoding (RFC 3986 section 2.1), decoding only: the one decoder, used for static
//! file paths and `redis://` credentials. Pure.

/// Decodes `%XX` escapes (either case) in a URL part; `None` for a lone or malformed `%`.
pub fn decode(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
            let (hi, lo) = (hex(b.get(i + 1))?, hex(b.get(i + 2))?);
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_either_case_and_refuses_broken_escapes() {
        assert_eq!(decode(b"a%20b%2fc%2F"), Some(b"a b/c/".to_vec()));
        assert_eq!(decode(b"%00%ff"), Some(vec![0, 255]));
        assert_eq!(decode(b"100%"), None);
        assert_eq!(decode(b"%4"), None);
        assert_eq!(decode(b"%zz"), None);
    }
}
