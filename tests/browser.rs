//! Headless Chromium (Debian `chromium`) driven by playwright-core (tests/node/browser_chat.js):
//! two pages open the embedded chat page, a message typed in one appears in both.
//! A screenshot goes to `target/browser-chat.png` for a look at the page.
mod common;
use common::{field, node_dir, require_program, run_client_script, Gateway, TempDir, WAIT};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn two_chromium_pages_chat_through_the_embedded_page() {
    let chromium = require_program("chromium");
    let dir = node_dir(&["playwright-core"]);
    let gw = Gateway::start(&[]);
    // A fresh profile, removed at the end; any browser process still using it is ended first.
    let profile = TempDir::new("chromium-profile");
    let _strays = Strays(profile.path().to_path_buf());
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("browser-chat.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg(dir.join("browser_chat.js"))
        .arg(format!("http://{}/", gw.addr))
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .env("CHROMIUM", &chromium)
        .env("PROFILE_DIR", profile.path())
        .env("SCREENSHOT", &screenshot);
    let ok = run_client_script(&gw, "chromium", cmd, 2, Duration::from_secs(180));
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
