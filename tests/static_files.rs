//! `--static DIR` end to end: files with their MIME types, `index.html` for `/` and for
//! `dir/`, GET and HEAD only, and no way out of the directory (`..` raw or encoded, symlinks
//! pointing out), while `/healthz` and the upgrade routes keep working.
mod common;
use common::{raw, scrape, status, Gateway, TempDir};
use std::fs;
use std::os::unix::fs::symlink;

/// `(status, head, body)` of one request.
fn request(gw: &Gateway, method: &str, target: &str) -> (u16, String, Vec<u8>) {
    let req = format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    let resp = raw(gw.addr, req.as_bytes());
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head")
        + 4;
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    (status(&resp), head, resp[split..].to_vec())
}

fn get(gw: &Gateway, target: &str) -> (u16, String, Vec<u8>) {
    request(gw, "GET", target)
}

/// `<tmp>/www` served, with `<tmp>/secret.txt` beside it as the traversal target.
struct Site {
    tmp: TempDir,
    gw: Gateway,
}

fn site() -> Site {
    let tmp = TempDir::new("static");
    let www = tmp.path().join("www");
    fs::create_dir_all(www.join("sub")).unwrap();
    fs::create_dir_all(www.join("noindex")).unwrap();
    fs::write(tmp.path().join("secret.txt"), "TOP SECRET").unwrap();
    fs::write(www.join("index.html"), "<h1>home</h1>").unwrap();
    fs::write(www.join("app.js"), "console.log(1)").unwrap();
    fs::write(www.join("style.css"), "body{}").unwrap();
    fs::write(www.join("logo.png"), [0x89, b'P', b'N', b'G']).unwrap();
    fs::write(www.join("blob.bin"), [0u8, 1, 2]).unwrap();
    fs::write(www.join("hello world.txt"), "spaced").unwrap();
    fs::write(www.join("sub").join("index.html"), "<p>sub</p>").unwrap();
    fs::write(www.join("sub").join("data.json"), "{}").unwrap();
    symlink(tmp.path().join("secret.txt"), www.join("leak.txt")).unwrap();
    symlink(tmp.path(), www.join("up")).unwrap();
    symlink(www.join("app.js"), www.join("alias.js")).unwrap();
    let dir = www.to_str().unwrap().to_string();
    let gw = Gateway::start(&["--static", &dir, "--admin-listen", "127.0.0.1:0"]);
    Site { tmp, gw }
}

#[test]
fn files_with_their_mime_types() {
    let s = site();
    for (target, mime, body) in [
        ("/", "text/html; charset=utf-8", &b"<h1>home</h1>"[..]),
        ("/index.html", "text/html; charset=utf-8", b"<h1>home</h1>"),
        ("/?room=x", "text/html; charset=utf-8", b"<h1>home</h1>"),
        (
            "/app.js",
            "text/javascript; charset=utf-8",
            b"console.log(1)",
        ),
        (
            "/app.js?v=2",
            "text/javascript; charset=utf-8",
            b"console.log(1)",
        ),
        ("/style.css", "text/css; charset=utf-8", b"body{}"),
        ("/logo.png", "image/png", b"\x89PNG"),
        ("/blob.bin", "application/octet-stream", b"\0\x01\x02"),
        ("/hello%20world.txt", "text/plain; charset=utf-8", b"spaced"),
        ("/sub/", "text/html; charset=utf-8", b"<p>sub</p>"),
        ("/sub/data.json", "application/json", b"{}"),
        (
            "/alias.js",
            "text/javascript; charset=utf-8",
            b"console.log(1)",
        ),
    ] {
        let (code, head, got) = get(&s.gw, target);
        assert_eq!(code, 200, "{target}: {head}");
        assert!(
            head.contains(&format!("\r\nContent-Type: {mime}\r\n")),
            "{target}: {head}"
        );
        assert!(
            head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
            "{target}: {head}"
        );
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        assert_eq!(got, body, "{target}");
    }
}

#[test]
fn head_has_the_headers_and_no_body() {
    let s = site();
    let (code, head, body) = request(&s.gw, "HEAD", "/app.js");
    assert_eq!(code, 200);
    assert!(head.contains("\r\nContent-Length: 14\r\n"), "{head}");
    assert!(head.contains("text/javascript"), "{head}");
    assert!(body.is_empty(), "{body:?}");
}

#[test]
fn other_methods_get_405_with_allow() {
    let s = site();
    for (method, target) in [("POST", "/app.js"), ("PUT", "/x"), ("POST", "/")] {
        let (code, head, _) = request(&s.gw, method, target);
        assert_eq!(code, 405, "{method} {target}: {head}");
        assert!(head.contains("\r\nAllow: GET, HEAD\r\n"), "{head}");
    }
}

#[test]
fn missing_files_and_bare_directories_are_404() {
    let s = site();
    for target in ["/nope.js", "/sub/nope", "/noindex/", "/sub", "/app.js/"] {
        let (code, head, _) = get(&s.gw, target);
        assert_eq!(code, 404, "{target}: {head}");
    }
}

#[test]
fn no_way_out_of_the_directory() {
    let s = site();
    for target in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2e/secret.txt",
        "/..%2fsecret.txt",
        "/..%2Fsecret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/.%2e/secret.txt",
        "/..\\secret.txt",
        "/%5c..%5csecret.txt",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/app.js%00.html",
        // Symlinks inside the directory that point out of it.
        "/leak.txt",
        "/up/secret.txt",
    ] {
        let (code, head, body) = get(&s.gw, target);
        assert_eq!(code, 404, "{target}: {head}");
        let body = String::from_utf8_lossy(&body);
        assert!(!body.contains("TOP SECRET"), "{target}: {body}");
    }
    assert_eq!(get(&s.gw, "/%zz").0, 400);
    assert_eq!(get(&s.gw, "/%ff").0, 400);
    assert!(s.tmp.path().join("secret.txt").exists());
}

#[test]
fn oversize_files_are_refused_and_logged() {
    let s = site();
    let big = fs::File::create(s.tmp.path().join("www").join("big.bin")).unwrap();
    // Sparse: costs no disk.
    big.set_len((16 << 20) + 1).unwrap();
    let (code, head, _) = get(&s.gw, "/big.bin");
    assert_eq!(code, 500, "{head}");
    let line = s.gw.wait_log(|l| l.contains(" static_file_too_big "));
    assert!(line.contains("bytes=16777217"), "{line}");
}

#[test]
fn health_and_upgrades_are_not_shadowed() {
    let s = site();
    fs::write(s.tmp.path().join("www").join("healthz"), "shadow").unwrap();
    let (code, _, body) = get(&s.gw, "/healthz");
    assert_eq!(code, 200);
    assert_ne!(body, b"shadow");
    smol::block_on(async {
        let _ws = common::ws_connect(s.gw.addr, "/ws/static", b"").await;
    });
    let resp = raw(
        s.gw.addr,
        b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status(&resp), 200);
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.contains("\r\n\r\n0{\"sid\":"),
        "the polling handshake: {text}"
    );
}

#[test]
fn refused_static_requests_are_counted_and_logged_with_the_client() {
    let s = site();
    assert_eq!(get(&s.gw, "/missing.txt").0, 404);
    assert_eq!(get(&s.gw, "/%2e%2e/secret.txt").0, 404);
    assert_eq!(get(&s.gw, "/bad%zz").0, 400);
    assert_eq!(request(&s.gw, "POST", "/app.js").0, 405);
    let lines = s.gw.wait_events("http_error", 4);
    for (reason, path) in [
        ("static_not_found", "/missing.txt"),
        ("static_dot_segment", "/%2e%2e/secret.txt"),
        ("static_bad_percent_encoding", "/bad%zz"),
        ("method_not_allowed", "/app.js"),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("reason={reason}"))
                && l.contains(&format!("path={path}"))
                && l.contains("client=127.0.0.1:")),
            "{reason}: {lines:?}"
        );
        let m = scrape(s.gw.admin_addr());
        let key = format!("wsgate_http_errors_total{{reason=\"{reason}\"}}");
        assert_eq!(m.get(&key), 1.0, "{key}");
    }
    // A file that is served is not an error.
    assert_eq!(get(&s.gw, "/app.js").0, 200);
}
