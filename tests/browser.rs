//! Headless Chromium (Debian `chromium`) driven by playwright-core (tests/node/browser_chat.js)
//! on the embedded chat page: a message typed in one of two pages appears in both, and when
//! the gateway restarts (SIGTERM, then a new process on the same address), both pages
//! reconnect on their own and chat again.
//! The chat test leaves a screenshot at `target/browser-chat.png` for a look at the page.
mod common;
use common::{field, node_dir, require_program, run_client_script, Gateway, Proc, TempDir, WAIT};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Bound for one browser script run: Chromium can start slowly on a busy machine.
const BROWSER_WAIT: Duration = Duration::from_secs(180);

/// The browser script for `mode` against `gw`, with a fresh profile in `profile`.
fn browser_command(
    gw: &Gateway,
    mode: &str,
    profile: &TempDir,
    screenshot: Option<&Path>,
) -> Command {
    let chromium = require_program("chromium");
    let dir = node_dir(&["playwright-core"]);
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg(dir.join("browser_chat.js"))
        .arg(format!("http://{}/", gw.addr))
        .arg(mode)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .env("CHROMIUM", &chromium)
        .env("PROFILE_DIR", profile.path());
    if let Some(path) = screenshot {
        cmd.env("SCREENSHOT", path);
    }
    cmd
}

#[test]
fn two_chromium_pages_chat_through_the_embedded_page() {
    let gw = Gateway::start(&[]);
    // A fresh profile, removed at the end; any browser process still using it is ended first.
    let profile = TempDir::new("chromium-profile");
    let _strays = Strays(profile.path().to_path_buf());
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("browser-chat.png");
    let _ = std::fs::remove_file(&screenshot);
    let cmd = browser_command(&gw, "chat", &profile, Some(&screenshot));
    let ok = run_client_script(&gw, "chromium", cmd, 2, BROWSER_WAIT);
    assert!(ok.contains("messages=1,1"), "{ok}");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );

    let opens = gw.events("open");
    assert_eq!(opens.len(), 2, "{opens:#?}");
    for open in &opens {
        assert_eq!(field(open, "room"), Some("main"), "{open}");
    }
    // Closing the pages closes their sockets: 1001 (going away) is what browsers send.
    for close in gw.wait_logs(2, WAIT, |l| l.split(' ').nth(2) == Some("close")) {
        let code = field(&close, "code");
        assert!(matches!(code, Some("1000" | "1001")), "{close}");
    }
}

#[test]
fn chromium_pages_reconnect_after_the_gateway_comes_back() {
    let mut gw = Gateway::start(&[]);
    let addr = gw.addr;
    let profile = TempDir::new("chromium-profile");
    let _strays = Strays(profile.path().to_path_buf());
    let mut page = Proc::spawn(
        "chromium",
        browser_command(&gw, "reconnect", &profile, None),
    );
    page.wait_stdout(BROWSER_WAIT, |l| l == "ready" || l.starts_with("FAIL"));
    assert!(
        page.stdout().iter().any(|l| l == "ready"),
        "{}",
        page.transcript()
    );
    gw.wait_logs(2, WAIT, |l| l.split(' ').nth(2) == Some("open"));
    // A rolling restart: SIGTERM closes both pages with 1001, then the process exits.
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(WAIT), Some(0), "{}", gw.logs().join("\n"));
    let closes = gw.events("close");
    assert_eq!(closes.len(), 2, "{closes:#?}");
    for close in closes {
        assert_eq!(field(&close, "code"), Some("1001"), "{close}");
    }
    drop(gw);
    page.send_line("go");
    page.wait_stdout(BROWSER_WAIT, |l| l == "closed" || l.starts_with("FAIL"));
    assert!(
        page.stdout().iter().any(|l| l == "closed"),
        "{}",
        page.transcript()
    );
    let gw = Gateway::start_on(&addr.to_string(), &[]);
    gw.wait_logs(2, BROWSER_WAIT, |l| l.split(' ').nth(2) == Some("open"));
    page.send_line("go");
    let status = page.wait_exit(BROWSER_WAIT);
    let ok = page.stdout().iter().any(|l| l.starts_with("ok "));
    assert!(
        status.success() && ok,
        "{status}\n{}\nwsgate:\n{}",
        page.transcript(),
        gw.logs().join("\n")
    );
}

/// Ends, by pid, any process whose command line names the profile dir (Chromium's browser
/// and helpers), in case the script died without closing the browser.
struct Strays(PathBuf);

impl Strays {
    fn pids(&self) -> Vec<u32> {
        let marker = self.0.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
            .collect()
    }
}

impl Drop for Strays {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let left = self.pids();
        if !left.is_empty() {
            eprintln!("ending leftover browser processes {left:?}");
            for pid in left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}
