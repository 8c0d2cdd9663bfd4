//! `--static DIR`: serves files from a directory (GET and HEAD only), `index.html` for `/`,
//! with MIME types by extension and no way out of the directory.
//!
//! ```text
//! target ─> sanitize (pure: query off, percent-decode, refuse .. NUL \ //) ─> relative path
//!        ─> unblock: canonicalize, must stay under canonical DIR, regular file, size cap, read
//! ```
//! Two fences against traversal: the pure check refuses every `..` segment however it is
//! spelled, and the canonical path (symlinks resolved) must still start with the canonical
//! directory, so a symlink pointing out of it is a 404 too.

use crate::http::{self, Status};
use crate::prelude::Reject;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Largest file served; bigger ones are answered 500 and logged (an operator's mistake,
/// not the client's). The whole file is held in memory while it is written.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// The file served for `/` and for any path ending in `/`.
pub const INDEX: &str = "index.html";

/// Extra headers on every file: browsers must not second-guess the MIME type.
const NOSNIFF: &str = "X-Content-Type-Options: nosniff\r\n";

/// Why a request target was refused before touching the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form target (`/...`).
    NotAbsolutePath,
    /// A `%` not followed by two hex digits: 400.
    BadPercentEncoding,
    /// The decoded path is not UTF-8: 400.
    NotUtf8,
    /// A NUL byte.
    Nul,
    /// A backslash (a path separator elsewhere).
    Backslash,
    /// A `..` or `.` segment, however it was encoded.
    DotSegment,
    /// An empty segment (`//`): would restart the path at the root.
    EmptySegment,
}

impl PathError {
    /// Stable label for logs and metrics. The log says what the check found; the answer to
    /// the client stays a plain 404 for every path that reaches outside the directory.
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolutePath => "static_not_a_path",
            PathError::BadPercentEncoding => "static_bad_percent_encoding",
            PathError::NotUtf8 => "static_not_utf8",
            PathError::Nul => "static_nul",
            PathError::Backslash => "static_backslash",
            PathError::DotSegment => "static_dot_segment",
            PathError::EmptySegment => "static_empty_segment",
        }
    }

    /// The status this refusal is answered with.
    pub fn status(self) -> Status {
        match self {
            PathError::BadPercentEncoding | PathError::NotUtf8 => Status::BadRequest,
            _ => Status::NotFound,
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolutePath => "not a path",
            PathError::BadPercentEncoding => "bad percent-encoding",
            PathError::NotUtf8 => "path is not UTF-8",
            PathError::Nul
            | PathError::Backslash
            | PathError::DotSegment
            | PathError::EmptySegment => "no such file",
        })
    }
}

/// The whole response for `target` under `dir`, or the refusal to answer (counted and logged
/// by the prelude like every other).
pub(crate) async fn serve(dir: &Path, method: &str, target: &str) -> Result<Vec<u8>, Reject> {
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Err(Reject::method_not_allowed(method)),
    };
    let rel = sanitize(target).map_err(|e| Reject::http(e.status(), e.as_str(), e))?;
    let dir = dir.to_path_buf();
    let found = smol::unblock(move || read_under(&dir, &rel)).await;
    match found {
        Ok((path, body)) => {
            let mime = mime_type(&path);
            Ok(http::response(Status::Ok, mime, NOSNIFF, &body, head_only))
        }
        Err(ReadError::NotFound) => Err(Reject::http(
            Status::NotFound,
            "static_not_found",
            "no such file",
        )),
        Err(ReadError::TooBig { path, len }) => Err(Reject::internal(
            "static_file_too_big",
            format_args!("{} is over {MAX_FILE_BYTES} bytes", path.display()),
        )
        .with_field("bytes", len)),
        Err(ReadError::Io { path, err }) => Err(Reject::internal(
            "static_read_failed",
            format_args!("{}: {err}", path.display()),
        )),
    }
}

/// The relative path a request target names: query dropped, percent-decoded, every
/// segment checked, `index.html` appended for a trailing `/`. Pure.
pub fn sanitize(target: &str) -> Result<PathBuf, PathError> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolutePath)?;
    let decoded = crate::percent::decode(rest.as_bytes()).ok_or(PathError::BadPercentEncoding)?;
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    if decoded.contains('\0') {
        return Err(PathError::Nul);
    }
    if decoded.contains('\\') {
        return Err(PathError::Backslash);
    }
    let mut rel = PathBuf::new();
    let (dirs, file) = match decoded.rsplit_once('/') {
        Some((dirs, file)) => (Some(dirs), file),
        None => (None, decoded.as_str()),
    };
    for seg in dirs.into_iter().flat_map(|d| d.split('/')) {
        rel.push(segment(seg)?);
    }
    if file.is_empty() {
        rel.push(INDEX);
    } else {
        rel.push(segment(file)?);
    }
    Ok(rel)
}

/// One path segment, refused when it is empty, `.` or `..`.
fn segment(seg: &str) -> Result<&str, PathError> {
    match seg {
        "" => Err(PathError::EmptySegment),
        "." | ".." => Err(PathError::DotSegment),
        s => Ok(s),
    }
}

/// The `Content-Type` for a file name, by its extension (case-insensitive).
pub fn mime_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

/// Why a sanitized path was not read.
#[derive(Debug)]
enum ReadError {
    /// Missing, not a regular file, or resolving outside the directory: 404.
    NotFound,
    /// Over [`MAX_FILE_BYTES`]: 500, logged.
    TooBig { path: PathBuf, len: u64 },
    /// The file was there but reading it failed: 500, logged.
    Io { path: PathBuf, err: std::io::Error },
}

/// Blocking: resolves `rel` under `dir` and reads it. Returns the canonical path (for the
/// MIME type) and the bytes.
fn read_under(dir: &Path, rel: &Path) -> Result<(PathBuf, Vec<u8>), ReadError> {
    let root = dir.canonicalize().map_err(|_| ReadError::NotFound)?;
    let path = root
        .join(rel)
        .canonicalize()
        .map_err(|_| ReadError::NotFound)?;
    if !path.starts_with(&root) {
        return Err(ReadError::NotFound);
    }
    // A FIFO or device would block or never end: only regular files are served.
    if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(ReadError::NotFound);
    }
    let io = |err| ReadError::Io {
        path: path.clone(),
        err,
    };
    let file = std::fs::File::open(&path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > MAX_FILE_BYTES {
        return Err(ReadError::TooBig { path, len });
    }
    let mut body = Vec::with_capacity(len as usize);
    // Read one byte past the cap so a file that grew meanwhile is still refused.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(io)?;
    if body.len() as u64 > MAX_FILE_BYTES {
        let len = body.len() as u64;
        return Err(ReadError::TooBig { path, len });
    }
    Ok((path, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(target: &str) -> String {
        sanitize(target)
            .unwrap_or_else(|e| panic!("{target}: {e:?}"))
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn paths() {
        assert_eq!(ok("/"), "index.html");
        assert_eq!(ok("/?x=1"), "index.html");
        assert_eq!(ok("/app.js"), "app.js");
        assert_eq!(ok("/app.js?v=3"), "app.js");
        assert_eq!(ok("/a/b/c.css"), "a/b/c.css");
        assert_eq!(ok("/docs/"), "docs/index.html");
        assert_eq!(ok("/hello%20world.txt"), "hello world.txt");
        assert_eq!(ok("/caf%C3%A9.txt"), "café.txt");
        assert_eq!(ok("/a%2fb.txt"), "a/b.txt");
        assert_eq!(ok("/.well-known/x"), ".well-known/x");
        assert_eq!(ok("/x..y"), "x..y");
        assert_eq!(ok("/%3F.txt"), "?.txt");
    }

    #[test]
    fn traversal_is_refused_however_spelled() {
        for t in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/a/..",
            "/%2e%2e/etc/passwd",
            "/%2E%2e/etc/passwd",
            "/%2e./x",
            "/.%2E/x",
            "/..%2fetc%2fpasswd",
            "/..%2Fetc/passwd",
            "/a%2f..%2f..%2fx",
            "/./x",
            "/a/.",
        ] {
            assert_eq!(sanitize(t), Err(PathError::DotSegment), "{t}");
        }
        assert_eq!(sanitize("//etc/passwd"), Err(PathError::EmptySegment));
        assert_eq!(sanitize("/%2fetc/passwd"), Err(PathError::EmptySegment));
        assert_eq!(sanitize("/a//b"), Err(PathError::EmptySegment));
        assert_eq!(sanitize("/..\\x"), Err(PathError::Backslash));
        assert_eq!(sanitize("/%5c..%5cx"), Err(PathError::Backslash));
        assert_eq!(sanitize("/a%00.html"), Err(PathError::Nul));
        assert_eq!(sanitize("etc/passwd"), Err(PathError::NotAbsolutePath));
        assert_eq!(sanitize("http://x/a"), Err(PathError::NotAbsolutePath));
        assert_eq!(sanitize("*"), Err(PathError::NotAbsolutePath));
        assert_eq!(sanitize("/%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(sanitize("/a%2"), Err(PathError::BadPercentEncoding));
        assert_eq!(sanitize("/a%"), Err(PathError::BadPercentEncoding));
        assert_eq!(sanitize("/%ff"), Err(PathError::NotUtf8));
        assert_eq!(PathError::DotSegment.status(), Status::NotFound);
        assert_eq!(PathError::BadPercentEncoding.status(), Status::BadRequest);
    }

    #[test]
    fn mime_types() {
        let m = |p: &str| mime_type(Path::new(p));
        assert_eq!(m("index.html"), "text/html; charset=utf-8");
        assert_eq!(m("A.HTML"), "text/html; charset=utf-8");
        assert_eq!(m("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(m("mod.mjs"), "text/javascript; charset=utf-8");
        assert_eq!(m("s.css"), "text/css; charset=utf-8");
        assert_eq!(m("d.json"), "application/json");
        assert_eq!(m("app.js.map"), "application/json");
        assert_eq!(m("i.png"), "image/png");
        assert_eq!(m("i.jpg"), "image/jpeg");
        assert_eq!(m("i.JPEG"), "image/jpeg");
        assert_eq!(m("i.gif"), "image/gif");
        assert_eq!(m("i.svg"), "image/svg+xml");
        assert_eq!(m("favicon.ico"), "image/x-icon");
        assert_eq!(m("m.wasm"), "application/wasm");
        assert_eq!(m("r.txt"), "text/plain; charset=utf-8");
        assert_eq!(m("f.woff2"), "font/woff2");
        assert_eq!(m("archive.tar.gz"), "application/octet-stream");
        assert_eq!(m("Makefile"), "application/octet-stream");
        assert_eq!(m(".hidden"), "application/octet-stream");
    }
}
