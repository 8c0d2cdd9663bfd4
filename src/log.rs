//! One log line per event on stderr: `<UTC time> <LEVEL> <event> key=value ...`, or one JSON
//! object per line. Fields are structured so both formats carry the same data.
//!
//! Values are often a client's: paths, header values, Socket.IO event names, message text.
//! So in both formats every control character (C0, DEL, C1) is escaped (`\r`, `\u001b`), and a
//! text value that holds one, or a space, quote, `=` or backslash, is quoted; no byte a client
//! sends can end a line early or drive a terminal. Every value is cut at `--log-value-bytes`
//! and marked `...[+N bytes]`, so one long value cannot flood the log.

use crate::json::Escaped;
use std::fmt::{self, Display, Write as _};
use std::io::Write as _;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Severity. `Warn` is for a client's bad input, `Error` for our own faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `2026-11-25T13:45:00.123Z INFO open conn=1 client=203.0.113.7:4711`
    Text,
    /// `{"ts":"...","level":"info","event":"open","conn":"1",...}`
    Json,
}

impl Format {
    /// The flag's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
        }
    }
}

static FORMAT: AtomicU8 = AtomicU8::new(0);
static MAX_VALUE: AtomicUsize = AtomicUsize::new(DEFAULT_VALUE_BYTES);

/// The default longest value (in bytes) written to a line before it is cut.
pub const DEFAULT_VALUE_BYTES: usize = 256;

/// Chooses the longest value (in bytes, at least 16) for the whole process.
pub fn set_max_value(bytes: usize) {
    MAX_VALUE.store(bytes.max(16), Ordering::Relaxed);
}

/// Chooses the line format for the whole process.
pub fn set_format(f: Format) {
    FORMAT.store(f as u8, Ordering::Relaxed);
}

fn format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Text
    }
}

impl Level {
    fn as_str(self, f: Format) -> &'static str {
        match (self, f) {
            (Level::Info, Format::Text) => "INFO",
            (Level::Warn, Format::Text) => "WARN",
            (Level::Error, Format::Text) => "ERROR",
            (Level::Info, Format::Json) => "info",
            (Level::Warn, Format::Json) => "warn",
            (Level::Error, Format::Json) => "error",
        }
    }
}

/// Writes one line. `fields` are `(key, value)` pairs, in order.
pub fn line(level: Level, event: &str, fields: &[(&str, &dyn Display)]) {
    thread_local! {
        static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        let max = MAX_VALUE.load(Ordering::Relaxed);
        let _ = render(
            &mut b,
            format(),
            max,
            SystemTime::now(),
            level,
            event,
            fields,
        );
        b.push('\n');
        let _ = std::io::stderr().lock().write_all(b.as_bytes());
    });
}

fn render(
    out: &mut String,
    f: Format,
    max: usize,
    now: SystemTime,
    level: Level,
    event: &str,
    fields: &[(&str, &dyn Display)],
) -> fmt::Result {
    let ts = Timestamp(now);
    match f {
        Format::Text => {
            write!(out, "{ts} {} {event}", level.as_str(f))?;
            let mut value = String::new();
            for (k, v) in fields {
                value.clear();
                write!(value, "{v}")?;
                cut(&mut value, max);
                let plain = !value.is_empty()
                    && !value
                        .chars()
                        .any(|c| c.is_control() || matches!(c, ' ' | '"' | '=' | '\\'));
                if plain {
                    write!(out, " {k}={value}")?;
                } else {
                    write!(out, " {k}=\"{}\"", Escaped(&value))?;
                }
            }
        }
        Format::Json => {
            write!(
                out,
                "{{\"ts\":\"{ts}\",\"level\":\"{}\",\"event\":\"{}\"",
                level.as_str(f),
                Escaped(event)
            )?;
            let mut value = String::new();
            for (k, v) in fields {
                value.clear();
                write!(value, "{v}")?;
                cut(&mut value, max);
                write!(out, ",\"{}\":\"{}\"", Escaped(k), Escaped(&value))?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// Cuts `value` to at most `max` bytes (at a character boundary) and marks what was cut.
fn cut(value: &mut String, max: usize) {
    if value.len() <= max {
        return;
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let dropped = value.len() - end;
    value.truncate(end);
    let _ = write!(value, "...[+{dropped} bytes]");
}

/// RFC 3339 UTC time with milliseconds.
struct Timestamp(SystemTime);

impl Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = d.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (y, m, day) = civil_from_days(days as i64);
        write!(
            f,
            "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            d.subsec_millis()
        )
    }
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `info!("event", key = value, ...)`
#[macro_export]
#[doc(hidden)]
macro_rules! log_at {
    ($level:expr, $event:expr $(, $k:ident = $v:expr)* $(,)?) => {
        $crate::log::line($level, $event, &[$((stringify!($k), &$v as &dyn ::std::fmt::Display)),*])
    };
}

/// Logs an INFO line: `info!("open", conn = id, client = addr)`.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log_at!($crate::log::Level::Info, $($t)*) };
}

/// Logs a WARN line (a client's bad input).
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log_at!($crate::log::Level::Warn, $($t)*) };
}

/// Logs an ERROR line (our own fault).
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log_at!($crate::log::Level::Error, $($t)*) };
}

/// A duration in seconds with millisecond precision, as `1.234s` (integer formatting: no
/// float printer in the binary).
#[derive(Debug, Clone, Copy)]
pub struct Secs(pub std::time::Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        write!(f, "{}.{:03}s", ms / 1000, ms % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms)
    }

    #[test]
    fn timestamps() {
        assert_eq!(Timestamp(at(0, 0)).to_string(), "1970-01-01T00:00:00.000Z");
        // 2026-11-25T13:45:07.089Z
        assert_eq!(
            Timestamp(at(1_795_614_307, 89)).to_string(),
            "2026-11-25T13:45:07.089Z"
        );
        // 2024-02-29 (leap day) 23:59:59
        assert_eq!(
            Timestamp(at(1_709_251_199, 0)).to_string(),
            "2024-02-29T23:59:59.000Z"
        );
    }

    #[test]
    fn text_and_json() {
        let mut s = String::new();
        let room = "main";
        let reason = "bad \"key\"";
        render(
            &mut s,
            Format::Text,
            256,
            at(0, 0),
            Level::Warn,
            "reject",
            &[("room", &room), ("reason", &reason), ("empty", &"")],
        )
        .unwrap();
        assert_eq!(
            s,
            r#"1970-01-01T00:00:00.000Z WARN reject room=main reason="bad \"key\"" empty="""#
        );
        s.clear();
        render(
            &mut s,
            Format::Json,
            256,
            at(0, 0),
            Level::Info,
            "open",
            &[("conn", &7), ("reason", &reason)],
        )
        .unwrap();
        assert_eq!(
            s,
            r#"{"ts":"1970-01-01T00:00:00.000Z","level":"info","event":"open","conn":"7","reason":"bad \"key\""}"#
        );
    }

    #[test]
    fn client_text_never_reaches_the_line_raw_and_long_values_are_cut() {
        // CR, ESC, DEL, C1 (NEL, CSI), a backslash, and one of every C0 control.
        let evil: String = "abc\rFAKE\x1b[2K\x7f\u{85}\u{9b}\\x"
            .chars()
            .chain((0u8..0x20).map(char::from))
            .collect();
        for f in [Format::Text, Format::Json] {
            let mut s = String::new();
            render(
                &mut s,
                f,
                256,
                at(0, 0),
                Level::Info,
                "message",
                &[("text", &evil)],
            )
            .unwrap();
            assert!(!s.chars().any(|c| c.is_control()), "{f:?}: {s:?}");
            assert!(
                s.contains(r"abc\rFAKE\u001b[2K\u007f\u0085\u009b\\x"),
                "{f:?}: {s}"
            );
        }
        let mut s = String::new();
        // A backslash alone quotes a text value, so the escapes inside read back unambiguously.
        render(
            &mut s,
            Format::Text,
            256,
            at(0, 0),
            Level::Info,
            "e",
            &[("p", &r"a\b")],
        )
        .unwrap();
        assert!(s.ends_with(r#" p="a\\b""#), "{s}");
        s.clear();
        let long = "é".repeat(100); // 200 bytes
        render(
            &mut s,
            Format::Text,
            51,
            at(0, 0),
            Level::Info,
            "e",
            &[("t", &long)],
        )
        .unwrap();
        // Cut at a character boundary: 25 characters (50 bytes), 150 bytes dropped.
        assert!(
            s.ends_with(&format!(" t=\"{}...[+150 bytes]\"", "é".repeat(25))),
            "{s}"
        );
    }
}
