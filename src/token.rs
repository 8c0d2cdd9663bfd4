//! HS256 JSON Web Tokens (RFC 7519, RFC 7515) for the handshake: verification only, pure over
//! the token text, the key and the time. No other algorithm is accepted, `alg: none` least of
//! all, and the signature is checked (in constant time) before any claim is read.
//!
//! ```text
//! base64url(header) . base64url(claims) . base64url(HMAC-SHA256(key, header "." claims))
//! header: {"alg":"HS256",...}    claims: {"exp":..,"nbf":..,"sub":"..","rooms":["chat.*"],"pub":false,"aud":".."}
//! ```

use crate::json;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// Longest token accepted, in bytes: a header, a handful of claims and a signature fit in a
/// fraction of it, and a cap keeps a hostile one from costing more than a head.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `exp`: when the grant ends, in seconds since the epoch (required).
    pub exp: u64,
    /// `sub`: who it is, for log lines.
    pub sub: Option<String>,
    /// `rooms`: the rooms it may join; a trailing `*` is a prefix. `None`: any room.
    pub rooms: Option<Vec<String>>,
    /// `pub`: whether it may publish (default true).
    pub publish: bool,
}

impl Claims {
    /// Whether this grant may join `room`.
    pub fn allows(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|rooms| {
            rooms.iter().any(|r| match r.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => r == room,
            })
        })
    }
}

/// Why a token is refused. Each is a `401` at the handshake (a room it does not allow is a
/// `403`, decided by [`Claims::allows`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No token where one is required.
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    TooLong,
    /// Not three base64url parts, or a part that is not the JSON object it must be.
    Malformed,
    /// A header whose `alg` is not `HS256` (`none` included), or with `crit` extensions.
    Algorithm,
    /// The signature does not match.
    Signature,
    /// No numeric `exp`.
    NoExpiry,
    /// Past `exp` (plus the leeway).
    Expired,
    /// Before `nbf` (minus the leeway).
    NotYetValid,
    /// `aud` does not name the audience configured.
    Audience,
    /// A claim of the wrong type (`sub` not a string, `rooms` not a list of strings, `pub` not
    /// a boolean, `nbf` not a number).
    BadClaim,
}

impl TokenError {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::TooLong => "token_too_long",
            TokenError::Malformed => "token_malformed",
            TokenError::Algorithm => "token_algorithm",
            TokenError::Signature => "token_signature",
            TokenError::NoExpiry => "token_no_exp",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::Audience => "token_audience",
            TokenError::BadClaim => "token_bad_claim",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Missing => "no token",
            TokenError::TooLong => "token too long",
            TokenError::Malformed => "malformed token",
            TokenError::Algorithm => "only HS256 tokens are accepted",
            TokenError::Signature => "bad token signature",
            TokenError::NoExpiry => "token has no exp",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not valid yet (nbf)",
            TokenError::Audience => "token is for another audience",
            TokenError::BadClaim => "token has a claim of the wrong type",
        })
    }
}

/// What a token is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// The HS256 key.
    pub key: &'a [u8],
    /// Now, in seconds since the epoch.
    pub now: u64,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// When set, `aud` must be (or contain) it.
    pub audience: Option<&'a str>,
}

/// Verifies `token` and returns its claims.
pub fn verify(token: &str, rules: &Rules<'_>) -> Result<Claims, TokenError> {
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header = object(h)?;
    let alg = header
        .iter()
        .find(|(k, _)| k == "alg")
        .map(|(_, v)| v.as_str());
    if alg != Some("\"HS256\"") || header.iter().any(|(k, _)| k == "crit") {
        return Err(TokenError::Algorithm);
    }
    let sig = base64url(sig).ok_or(TokenError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(rules.key).map_err(|_| TokenError::Signature)?;
    mac.update(&token.as_bytes()[..h.len() + 1 + c.len()]);
    mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
    claims(&object(c)?, rules)
}

/// A base64url part decoded and parsed as a JSON object: its members, raw values.
fn object(part: &str) -> Result<Vec<(String, String)>, TokenError> {
    let bytes = base64url(part).ok_or(TokenError::Malformed)?;
    let text = String::from_utf8(bytes).map_err(|_| TokenError::Malformed)?;
    let members = json::members(&text).ok_or(TokenError::Malformed)?;
    Ok(members
        .into_iter()
        .map(|(k, v)| (k, v.trim().to_owned()))
        .collect())
}

fn claims(members: &[(String, String)], rules: &Rules<'_>) -> Result<Claims, TokenError> {
    let get = |name: &str| {
        members
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let exp = get("exp").and_then(seconds).ok_or(TokenError::NoExpiry)?;
    if rules.now > exp.saturating_add(rules.leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = get("nbf") {
        let nbf = seconds(nbf).ok_or(TokenError::BadClaim)?;
        if rules.now.saturating_add(rules.leeway) < nbf {
            return Err(TokenError::NotYetValid);
        }
    }
    if let Some(want) = rules.audience {
        let aud = get("aud").ok_or(TokenError::Audience)?;
        let names = match json::elements(aud) {
            Some(list) => list.into_iter().filter_map(json::as_string).collect(),
            None => json::as_string(aud).into_iter().collect::<Vec<_>>(),
        };
        if !names.iter().any(|a| a == want) {
            return Err(TokenError::Audience);
        }
    }
    let sub = match get("sub") {
        None => None,
        Some(v) => Some(json::as_string(v).ok_or(TokenError::BadClaim)?),
    };
    let rooms = match get("rooms") {
        None => None,
        Some(v) => {
            let list = json::elements(v).ok_or(TokenError::BadClaim)?;
            let names: Option<Vec<String>> = list.into_iter().map(json::as_string).collect();
            Some(names.ok_or(TokenError::BadClaim)?)
        }
    };
    let publish = match get("pub") {
        None => true,
        Some("true") => true,
        Some("false") => false,
        Some(_) => return Err(TokenError::BadClaim),
    };
    Ok(Claims {
        exp,
        sub,
        rooms,
        publish,
    })
}

/// A NumericDate: seconds since the epoch, fractions allowed (and dropped); not negative.
fn seconds(v: &str) -> Option<u64> {
    if v.starts_with('-') || json::value_len(v.as_bytes()) != Some(v.len()) {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().ok();
    }
    // `int[.frac][e[+-]exp]`, truncated to whole seconds by moving the decimal point (no
    // float parser in the binary); 1e18 and more is refused.
    let (mantissa, exp) = match v.find(['e', 'E']) {
        Some(i) => (
            &v[..i],
            v[i + 1..].trim_start_matches('+').parse::<i32>().ok()?,
        ),
        None => (v, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    whole_seconds(int, frac, exp)
}

/// The whole part of `int.frac * 10^exp` (digits only), if below 1e18.
fn whole_seconds(int: &str, frac: &str, exp: i32) -> Option<u64> {
    let digits: String = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    // Where the decimal point falls in `digits` once the leading zeros are gone.
    let point = int.len() as i64 - (int.len() + frac.len() - digits.len()) as i64 + i64::from(exp);
    if point <= 0 || digits.is_empty() {
        return Some(0);
    }
    if point > 18 {
        return None;
    }
    let point = point as usize;
    let whole = if digits.len() >= point {
        digits[..point].to_string()
    } else {
        format!("{digits:0<point$}")
    };
    whole.parse().ok()
}

/// Decodes unpadded base64url (RFC 4648 section 5), as JWS requires; `None` for anything else.
pub fn base64url(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        let take = chunk.len() - 1;
        // Bits past the last whole byte must be zero (a canonical encoding).
        let used = &bytes[1..1 + take];
        let rest = if take < 3 { bytes[1 + take] } else { 0 };
        if rest != 0 {
            return None;
        }
        out.extend_from_slice(used);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_dates_take_fractions_and_exponents_without_floats() {
        assert_eq!(seconds("1700000000"), Some(1_700_000_000));
        assert_eq!(seconds("1700000000.9"), Some(1_700_000_000));
        assert_eq!(seconds("1.7e9"), Some(1_700_000_000));
        assert_eq!(seconds("1.7E+9"), Some(1_700_000_000));
        assert_eq!(seconds("17e-1"), Some(1));
        assert_eq!(seconds("0.5"), Some(0));
        assert_eq!(seconds("0.000e3"), Some(0));
        assert_eq!(
            seconds("999999999999999999.9"),
            Some(999_999_999_999_999_999)
        );
        for bad in ["1e18", "-1", "\"1\"", "true", "1.5x", "1e", "1.e5x"] {
            assert_eq!(seconds(bad), None, "{bad}");
        }
    }

    fn b64(b: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | u32::from(c) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    fn sign(header: &str, claims: &str, key: &[u8]) -> String {
        let signing = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(signing.as_bytes());
        format!("{signing}.{}", b64(&mac.finalize().into_bytes()))
    }

    const KEY: &[u8] = b"a key of thirty-two bytes or so!";
    const HS256: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

    fn rules(now: u64) -> Rules<'static> {
        Rules {
            key: KEY,
            now,
            leeway: 5,
            audience: None,
        }
    }

    /// RFC 7515 appendix A.1's example: a known HS256 token and key.
    #[test]
    fn the_rfc_7515_example_verifies() {
        let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\
            eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.\
            dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let key = base64url(
            "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
        )
        .unwrap();
        let r = Rules {
            key: &key,
            now: 1_300_819_000,
            leeway: 0,
            audience: None,
        };
        let c = verify(token, &r).unwrap();
        assert_eq!(c.exp, 1_300_819_380);
        assert!(c.publish && c.rooms.is_none() && c.sub.is_none());
        let late = Rules {
            now: 1_300_819_381,
            ..r
        };
        assert_eq!(verify(token, &late), Err(TokenError::Expired));
    }

    #[test]
    fn claims_are_read_and_checked() {
        let t = sign(
            HS256,
            r#"{"exp":2000,"nbf":1000,"sub":"ann","rooms":["chat.*","news"],"pub":false}"#,
            KEY,
        );
        let c = verify(&t, &rules(1500)).unwrap();
        assert_eq!(c.sub.as_deref(), Some("ann"));
        assert!(!c.publish);
        assert!(c.allows("chat.a") && c.allows("chat.") && c.allows("news"));
        assert!(!c.allows("chat") && !c.allows("newsroom") && !c.allows("main"));
        assert_eq!(verify(&t, &rules(2006)), Err(TokenError::Expired));
        assert!(verify(&t, &rules(2005)).is_ok(), "within the leeway");
        assert_eq!(verify(&t, &rules(994)), Err(TokenError::NotYetValid));
        let aud = Rules {
            audience: Some("wsgate"),
            ..rules(1500)
        };
        assert_eq!(verify(&t, &aud), Err(TokenError::Audience));
        for claims in [
            r#"{"exp":2000,"aud":"wsgate"}"#,
            r#"{"exp":2000,"aud":["x","wsgate"]}"#,
        ] {
            assert!(verify(&sign(HS256, claims, KEY), &aud).is_ok(), "{claims}");
        }
        assert!(verify(&sign(HS256, r#"{"exp":1999.9}"#, KEY), &rules(1500)).is_ok());
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let now = rules(1500);
        let ok = r#"{"exp":2000}"#;
        let cases = [
            (String::new(), TokenError::Missing),
            ("a".repeat(MAX_TOKEN_BYTES + 1), TokenError::TooLong),
            ("a.b".into(), TokenError::Malformed),
            ("a.b.c.d".into(), TokenError::Malformed),
            ("!!.e30.x".into(), TokenError::Malformed),
            (sign(r#"{"alg":"none"}"#, ok, KEY), TokenError::Algorithm),
            (sign(r#"{"alg":"HS384"}"#, ok, KEY), TokenError::Algorithm),
            (sign(r#"{"typ":"JWT"}"#, ok, KEY), TokenError::Algorithm),
            (
                sign(r#"{"alg":"HS256","crit":["x"]}"#, ok, KEY),
                TokenError::Algorithm,
            ),
            (sign(HS256, ok, b"another key"), TokenError::Signature),
            (sign(HS256, r#"{"sub":"x"}"#, KEY), TokenError::NoExpiry),
            (sign(HS256, r#"{"exp":"2000"}"#, KEY), TokenError::NoExpiry),
            (sign(HS256, r#"{"exp":-1}"#, KEY), TokenError::NoExpiry),
            (
                sign(HS256, r#"{"exp":2000,"sub":1}"#, KEY),
                TokenError::BadClaim,
            ),
            (
                sign(HS256, r#"{"exp":2000,"rooms":"main"}"#, KEY),
                TokenError::BadClaim,
            ),
            (
                sign(HS256, r#"{"exp":2000,"rooms":[1]}"#, KEY),
                TokenError::BadClaim,
            ),
            (
                sign(HS256, r#"{"exp":2000,"pub":0}"#, KEY),
                TokenError::BadClaim,
            ),
            (sign(HS256, "[1]", KEY), TokenError::Malformed),
        ];
        for (token, want) in cases {
            assert_eq!(verify(&token, &now), Err(want), "{token}");
        }
        // alg none with an empty signature: the classic bypass.
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(ok.as_bytes()));
        assert_eq!(verify(&none, &now), Err(TokenError::Algorithm));
        // A valid token with one signature bit flipped.
        let good = sign(HS256, ok, KEY);
        let mut bad = good.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            verify(std::str::from_utf8(&bad).unwrap(), &now),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn base64url_is_strict() {
        assert_eq!(base64url("").unwrap(), b"");
        assert_eq!(base64url("YQ").unwrap(), b"a");
        assert_eq!(base64url("YWI").unwrap(), b"ab");
        assert_eq!(base64url("YWJj").unwrap(), b"abc");
        assert_eq!(base64url("-_8").unwrap(), [0xfb, 0xff]);
        for bad in ["Y", "YQ==", "YR", "a+b/", "Y Q"] {
            assert!(base64url(bad).is_none(), "{bad}");
        }
    }
}
