//! RESP2, the Redis wire format: the subset the backplane speaks, pure and sans-I/O.
//!
//! * **Encoding** appends commands (arrays of bulk strings) to a caller's buffer, so a
//!   `PUBLISH` can be written straight into the backplane's queue without a temporary.
//! * **Decoding** reads one reply from the front of a byte slice and has three outcomes, as
//!   httparse does: [`Parsed::Complete`] with the value and the bytes it used,
//!   [`Parsed::Partial`] (read more and call again), or a [`RespError`] (the connection is
//!   unusable). Values borrow from the input; arrays are validated views whose items are
//!   decoded on iteration, so decoding never allocates.
//!
//! The five reply types of RESP2 (<https://redis.io/docs/latest/develop/reference/protocol-spec/>):
//! ```text
//! +OK\r\n                 simple string      -ERR unknown command\r\n   error
//! :42\r\n                 integer            $5\r\nhello\r\n           bulk string ($-1 null)
//! *2\r\n$1\r\na\r\n:1\r\n  array (*-1 null)
//! ```

/// Longest line (simple string, error, integer, or a length) accepted before its CRLF.
/// Redis's own errors and status lines are far shorter.
pub const MAX_LINE: usize = 64 * 1024;
/// Largest bulk string accepted: Redis's own default `proto-max-bulk-len` (512 MiB).
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// Deepest nesting of arrays accepted. Pub/sub replies are one level deep.
pub const MAX_DEPTH: usize = 8;

/// How large a reply may be. A reader buffers a reply until it is complete, so these caps
/// bound that buffer: past them the reply is an error before its bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string.
    pub max_bulk: usize,
    /// Most items in one array.
    pub max_items: usize,
}

impl Limits {
    /// Redis's own caps: `proto-max-bulk-len`, and no item limit of its own.
    pub const REDIS: Limits = Limits {
        max_bulk: MAX_BULK,
        max_items: usize::MAX,
    };
}

/// One decoded reply, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// `+...`: a status such as `OK` or `PONG`.
    Simple(&'a [u8]),
    /// `-...`: an error reply, e.g. `WRONGPASS invalid username-password pair ...`.
    Error(&'a [u8]),
    /// `:...`: e.g. the number of subscribers a `PUBLISH` reached.
    Integer(i64),
    /// `$n`: binary-safe bytes.
    Bulk(&'a [u8]),
    /// `$-1` or `*-1`.
    Null,
    /// `*n`: `n` values, already validated.
    Array(Array<'a>),
}

/// An array whose items were validated while parsing; [`Array::iter`] decodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Array<'a> {
    len: usize,
    /// Exactly the bytes of the `len` items.
    body: &'a [u8],
}

/// What [`parse`] found at the front of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// One whole reply, which used the first `consumed` bytes.
    Complete { value: Value<'a>, consumed: usize },
    /// The reply is not all there yet: read more bytes and parse again from the same start.
    Partial,
}

/// Why bytes are not RESP2. Each is terminal for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RespError {
    /// The type byte (first byte of a value) is none of `+ - : $ *`.
    UnknownType(u8),
    /// A `$` or `*` length that is not `-1` or a decimal number.
    BadLength,
    /// A `:` integer that is not a decimal `i64`.
    BadInteger,
    /// A line or bulk string not ended by CRLF (a lone CR or LF, or other bytes).
    MissingCrlf,
    /// No CRLF within [`MAX_LINE`] bytes.
    LineTooLong,
    /// A bulk string longer than the limit ([`MAX_BULK`] by default); carries the announced
    /// length.
    BulkTooLong(usize),
    /// An array with more items than the limit; carries the announced count.
    ArrayTooLong(usize),
    /// Arrays nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl RespError {
    /// Stable label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RespError::UnknownType(_) => "unknown_type",
            RespError::BadLength => "bad_length",
            RespError::BadInteger => "bad_integer",
            RespError::MissingCrlf => "missing_crlf",
            RespError::LineTooLong => "line_too_long",
            RespError::BulkTooLong(_) => "bulk_too_long",
            RespError::ArrayTooLong(_) => "array_too_long",
            RespError::TooDeep => "too_deep",
        }
    }
}

impl std::fmt::Display for RespError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RespError::UnknownType(b) => write!(f, "RESP: unknown type byte 0x{b:02x}"),
            RespError::BulkTooLong(n) => write!(f, "RESP: bulk string of {n} bytes"),
            RespError::ArrayTooLong(n) => write!(f, "RESP: array of {n} items"),
            e => write!(f, "RESP: {}", e.as_str()),
        }
    }
}

impl std::error::Error for RespError {}

/// Decodes one reply from the front of `buf`, within Redis's own limits.
pub fn parse(buf: &[u8]) -> Result<Parsed<'_>, RespError> {
    parse_with(buf, &Limits::REDIS)
}

/// Decodes one reply from the front of `buf`, refusing bulk strings and arrays over `limits`.
pub fn parse_with<'a>(buf: &'a [u8], limits: &Limits) -> Result<Parsed<'a>, RespError> {
    Ok(match value(buf, 0, limits)? {
        Some((value, consumed)) => Parsed::Complete { value, consumed },
        None => Parsed::Partial,
    })
}

/// One value and the bytes it used, or `None` when incomplete.
fn value<'a>(
    buf: &'a [u8],
    depth: usize,
    limits: &Limits,
) -> Result<Option<(Value<'a>, usize)>, RespError> {
    let Some(&ty) = buf.first() else {
        return Ok(None);
    };
    if !matches!(ty, b'+' | b'-' | b':' | b'$' | b'*') {
        return Err(RespError::UnknownType(ty));
    }
    let Some((line, line_end)) = line(&buf[1..])? else {
        return Ok(None);
    };
    let head = 1 + line_end;
    Ok(Some(match ty {
        b'+' => (Value::Simple(line), head),
        b'-' => (Value::Error(line), head),
        b':' => (Value::Integer(integer(line)?), head),
        b'$' => {
            let Some(n) = length(line)? else {
                return Ok(Some((Value::Null, head)));
            };
            if n > limits.max_bulk {
                return Err(RespError::BulkTooLong(n));
            }
            let end = head + n;
            let Some(crlf) = buf.get(end..end + 2) else {
                // A CR or anything else where the CRLF must start is already wrong.
                return match buf.get(end) {
                    Some(b) if *b != b'\r' => Err(RespError::MissingCrlf),
                    _ => Ok(None),
                };
            };
            if crlf != b"\r\n" {
                return Err(RespError::MissingCrlf);
            }
            (Value::Bulk(&buf[head..end]), end + 2)
        }
        _ => {
            let Some(n) = length(line)? else {
                return Ok(Some((Value::Null, head)));
            };
            if depth >= MAX_DEPTH {
                return Err(RespError::TooDeep);
            }
            if n > limits.max_items {
                return Err(RespError::ArrayTooLong(n));
            }
            let mut pos = head;
            for _ in 0..n {
                match value(&buf[pos..], depth + 1, limits)? {
                    Some((_, used)) => pos += used,
                    None => return Ok(None),
                }
            }
            let body = &buf[head..pos];
            (Value::Array(Array { len: n, body }), pos)
        }
    }))
}

/// The bytes before the first CRLF and the offset just past it, or `None` when no line end
/// is there yet.
fn line(buf: &[u8]) -> Result<Option<(&[u8], usize)>, RespError> {
    let window = &buf[..buf.len().min(MAX_LINE + 1)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if buf[i] == b'\n' => Err(RespError::MissingCrlf),
        Some(i) => match buf.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((&buf[..i], i + 2))),
            Some(_) => Err(RespError::MissingCrlf),
        },
        None if buf.len() > MAX_LINE => Err(RespError::LineTooLong),
        None => Ok(None),
    }
}

/// A `$`/`*` length: `-1` is `None`.
fn length(line: &[u8]) -> Result<Option<usize>, RespError> {
    if line == b"-1" {
        return Ok(None);
    }
    if line.is_empty() || !line.iter().all(u8::is_ascii_digit) {
        return Err(RespError::BadLength);
    }
    line.iter()
        .try_fold(0usize, |n, d| {
            n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
        })
        .map(Some)
        .ok_or(RespError::BadLength)
}

fn integer(line: &[u8]) -> Result<i64, RespError> {
    let digits = line.strip_prefix(b"-").unwrap_or(line);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(RespError::BadInteger);
    }
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::BadInteger)
}

impl<'a> Array<'a> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The items, decoded one by one (they were validated by [`parse`]).
    pub fn iter(&self) -> Items<'a> {
        Items {
            left: self.len,
            rest: self.body,
        }
    }
}

/// Iterator over an [`Array`]'s items.
#[derive(Debug, Clone)]
pub struct Items<'a> {
    left: usize,
    rest: &'a [u8],
}

impl<'a> Iterator for Items<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if self.left == 0 {
            return None;
        }
        // The body was validated at depth 1 or deeper, so this cannot fail or be partial.
        // Validated when the array was parsed, within whatever limits applied then.
        let (v, used) = value(self.rest, 1, &Limits::REDIS).ok().flatten()?;
        self.left -= 1;
        self.rest = &self.rest[used..];
        Some(v)
    }
}

/// A reply copied out of the read buffer, for a caller that waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    /// `$-1` or `*-1`.
    Nil,
    /// `:n`.
    Int(i64),
    /// A bulk or simple string.
    Bytes(Vec<u8>),
    /// An array.
    List(Vec<Owned>),
    /// An error reply.
    Error(String),
}

impl Value<'_> {
    /// A copy that outlives the buffer.
    pub fn to_owned(&self) -> Owned {
        match *self {
            Value::Simple(b) | Value::Bulk(b) => Owned::Bytes(b.to_vec()),
            Value::Error(e) => Owned::Error(String::from_utf8_lossy(e).into_owned()),
            Value::Integer(n) => Owned::Int(n),
            Value::Null => Owned::Nil,
            Value::Array(a) => Owned::List(a.iter().map(|v| v.to_owned()).collect()),
        }
    }
}

impl Owned {
    /// The bytes of a string reply.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Owned::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The items of an array reply.
    pub fn list(&self) -> Option<&[Owned]> {
        match self {
            Owned::List(l) => Some(l),
            _ => None,
        }
    }
}

/// Appends `*n\r\n`, the header of an array of `n` items.
pub fn array_header(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends one bulk string whose bytes are `parts` one after the other.
pub fn bulk(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len = parts.iter().map(|p| p.len()).sum();
    out.push(b'$');
    push_decimal(out, len);
    out.extend_from_slice(b"\r\n");
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends a command: an array of bulk strings, e.g. `command(out, &[b"PING"])`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    array_header(out, args.len());
    for a in args {
        bulk(out, &[a]);
    }
}

/// Bytes that [`bulk`] appends for `len` bytes of content.
pub fn bulk_len(len: usize) -> usize {
    1 + decimal_len(len) + 2 + len + 2
}

/// Bytes that [`array_header`] appends for `n` items.
pub fn array_header_len(n: usize) -> usize {
    1 + decimal_len(n) + 2
}

fn decimal_len(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Value<'_>, usize) {
        match parse(buf) {
            Ok(Parsed::Complete { value, consumed }) => (value, consumed),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    /// Every strict prefix of a complete reply is `Partial`.
    fn partial_until_whole(buf: &[u8]) {
        for cut in 0..buf.len() {
            assert_eq!(
                parse(&buf[..cut]),
                Ok(Parsed::Partial),
                "prefix {:?}",
                String::from_utf8_lossy(&buf[..cut])
            );
        }
        assert_eq!(complete(buf).1, buf.len());
    }

    #[test]
    fn simple_strings_errors_and_integers() {
        let ok = [b'+', b'O', b'K', b'\r', b'\n'];
        assert_eq!(complete(&ok), (Value::Simple(b"OK"), 5));
        partial_until_whole(&ok);
        let err = b"-WRONGPASS invalid username-password pair\r\n";
        assert_eq!(
            complete(err).0,
            Value::Error(b"WRONGPASS invalid username-password pair")
        );
        assert_eq!(complete(b":0\r\n").0, Value::Integer(0));
        assert_eq!(complete(b":1000\r\n").0, Value::Integer(1000));
        assert_eq!(complete(b":-42\r\n").0, Value::Integer(-42));
        assert_eq!(
            complete(b":-9223372036854775808\r\n").0,
            Value::Integer(i64::MIN)
        );
        // An empty simple string is allowed.
        assert_eq!(complete(b"+\r\n").0, Value::Simple(b""));
        // Only the first reply is taken; the rest is left for the next call.
        assert_eq!(complete(b"+PONG\r\n:1\r\n"), (Value::Simple(b"PONG"), 7));
    }

    #[test]
    fn bulk_strings_are_binary_safe() {
        // "$5\r\nhello\r\n"
        let hello = [
            b'$', b'5', b'\r', b'\n', b'h', b'e', b'l', b'l', b'o', b'\r', b'\n',
        ];
        assert_eq!(complete(&hello), (Value::Bulk(b"hello"), 11));
        partial_until_whole(&hello);
        assert_eq!(complete(b"$0\r\n\r\n").0, Value::Bulk(b""));
        // CR, LF and NUL inside the payload are data.
        let bin = b"$6\r\n\r\n\0\xff\r\n\r\n";
        assert_eq!(complete(bin).0, Value::Bulk(b"\r\n\0\xff\r\n"));
        partial_until_whole(bin);
        assert_eq!(complete(b"$-1\r\n").0, Value::Null);
    }

    #[test]
    fn arrays_nest_and_iterate() {
        // A pmessage as Redis sends it to a PSUBSCRIBE connection.
        let pm =
            b"*4\r\n$8\r\npmessage\r\n$8\r\nwsgate:*\r\n$11\r\nwsgate:main\r\n$3\r\n\x01t\0\r\n";
        partial_until_whole(pm);
        let Value::Array(a) = complete(pm).0 else {
            panic!("not an array")
        };
        assert_eq!(a.len(), 4);
        let items: Vec<Value<'_>> = a.iter().collect();
        assert_eq!(
            items,
            [
                Value::Bulk(b"pmessage"),
                Value::Bulk(b"wsgate:*"),
                Value::Bulk(b"wsgate:main"),
                Value::Bulk(b"\x01t\0"),
            ]
        );
        // The PSUBSCRIBE confirmation mixes bulk strings and an integer.
        let sub = b"*3\r\n$10\r\npsubscribe\r\n$8\r\nwsgate:*\r\n:1\r\n";
        partial_until_whole(sub);
        let Value::Array(a) = complete(sub).0 else {
            panic!()
        };
        assert_eq!(a.iter().nth(2), Some(Value::Integer(1)));
        // Nested, empty and null arrays.
        let nested = b"*2\r\n*1\r\n+a\r\n*0\r\n";
        partial_until_whole(nested);
        let Value::Array(a) = complete(nested).0 else {
            panic!()
        };
        let Some(Value::Array(inner)) = a.iter().next() else {
            panic!()
        };
        assert_eq!(inner.iter().collect::<Vec<_>>(), [Value::Simple(b"a")]);
        assert!(matches!(a.iter().nth(1), Some(Value::Array(e)) if e.is_empty()));
        assert_eq!(complete(b"*-1\r\n").0, Value::Null);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_wait() {
        assert_eq!(parse(b"?"), Err(RespError::UnknownType(b'?')));
        // A type byte is judged before its line is complete.
        assert_eq!(parse(b"x"), Err(RespError::UnknownType(b'x')));
        assert_eq!(parse(b"+OK\n"), Err(RespError::MissingCrlf));
        assert_eq!(parse(b"+OK\rx"), Err(RespError::MissingCrlf));
        assert_eq!(parse(b":12a\r\n"), Err(RespError::BadInteger));
        assert_eq!(parse(b":+1\r\n"), Err(RespError::BadInteger));
        assert_eq!(parse(b":\r\n"), Err(RespError::BadInteger));
        assert_eq!(
            parse(b":9223372036854775808\r\n"),
            Err(RespError::BadInteger)
        );
        assert_eq!(parse(b"$-2\r\n"), Err(RespError::BadLength));
        assert_eq!(parse(b"$\r\n"), Err(RespError::BadLength));
        assert_eq!(parse(b"*x\r\n"), Err(RespError::BadLength));
        // The bulk payload must be followed by CRLF exactly where its length says.
        assert_eq!(parse(b"$1\r\nab\r\n"), Err(RespError::MissingCrlf));
        assert_eq!(parse(b"$1\r\na\rx"), Err(RespError::MissingCrlf));
        assert_eq!(parse(b"$1\r\nax"), Err(RespError::MissingCrlf));
        assert_eq!(
            parse(b"$536870913\r\n"),
            Err(RespError::BulkTooLong(MAX_BULK + 1))
        );
        assert_eq!(
            parse(b"$99999999999999999999\r\n"),
            Err(RespError::BadLength)
        );
        // An error inside an array is found even when later items are missing.
        assert_eq!(parse(b"*3\r\n+a\r\n?"), Err(RespError::UnknownType(b'?')));
        // A configured limit refuses on the length alone, before any payload arrives.
        let small = Limits {
            max_bulk: 10,
            max_items: 4,
        };
        assert_eq!(
            parse_with(b"$10\r\n0123456789\r\n", &small),
            Ok(Parsed::Complete {
                value: Value::Bulk(b"0123456789"),
                consumed: 17
            })
        );
        assert_eq!(
            parse_with(b"$11\r\n", &small),
            Err(RespError::BulkTooLong(11))
        );
        assert_eq!(
            parse_with(b"*5\r\n", &small),
            Err(RespError::ArrayTooLong(5))
        );
        assert_eq!(
            parse_with(b"*1\r\n$536870912\r\n", &small),
            Err(RespError::BulkTooLong(MAX_BULK))
        );
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes()), Err(RespError::TooDeep));
        let long = [b'+']
            .into_iter()
            .chain([b'a'; MAX_LINE + 1])
            .collect::<Vec<_>>();
        assert_eq!(parse(&long), Err(RespError::LineTooLong));
        assert_eq!(parse(&long[..MAX_LINE]), Ok(Parsed::Partial));
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"PING"]);
        assert_eq!(out, b"*1\r\n$4\r\nPING\r\n");
        out.clear();
        command(&mut out, &[b"AUTH", b"user", b"p\r\ns"]);
        assert_eq!(
            out,
            b"*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$4\r\np\r\ns\r\n".as_slice()
        );
        out.clear();
        array_header(&mut out, 3);
        bulk(&mut out, &[b"PUBLISH"]);
        bulk(&mut out, &[b"wsgate", b":", b"main"]);
        bulk(&mut out, &[b"\x01t", b"", b"hi"]);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$11\r\nwsgate:main\r\n$4\r\n\x01thi\r\n".as_slice()
        );
        assert_eq!(
            array_header_len(3) + bulk_len(7) + bulk_len(11) + bulk_len(4),
            out.len()
        );
        // What we encode, we decode.
        let Value::Array(a) = complete(&out).0 else {
            panic!()
        };
        assert_eq!(a.iter().nth(2), Some(Value::Bulk(b"\x01thi")));
        for n in [0, 9, 10, 99, 100, 12345, usize::MAX] {
            let mut v = Vec::new();
            push_decimal(&mut v, n);
            assert_eq!(v, n.to_string().as_bytes());
            assert_eq!(decimal_len(n), v.len());
        }
    }
}
