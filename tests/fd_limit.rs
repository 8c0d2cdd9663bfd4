//! The open-files limit: raised at start, and at its end the accept errors are logged at most
//! once a second with a count, while the gateway keeps serving what it holds.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

/// Runs the rest of the command line under `limits` (a `ulimit` argument list).
fn under_ulimit(limits: &str) -> Vec<String> {
    vec![
        "bash".into(),
        "-c".into(),
        format!("ulimit {limits} && exec \"$@\""),
        "sh".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn started_with_a_soft_limit_of_256_it_serves_600_clients() {
    let wrap = under_ulimit("-Sn 256");
    let gw = Gateway::start_wrapped(&strs(&wrap), "127.0.0.1:0", &[], &[]);
    let line = gw.wait_log(|l| l.contains(" fd_limit "));
    assert!(line.contains("raised_from=256"), "{line}");
    let soft: u64 = field(&line, "soft").unwrap().parse().unwrap();
    assert!(soft >= 1024, "{line}");
    // The default --max-connections is lowered to fit, when it has to; never a warning.
    assert!(gw.logs().iter().all(|l| !l.contains(" WARN ")));
    // 600 clients from another process (its own fd limit is its own), held for a second.
    let url = format!("ws://{}/ws/fd", gw.addr);
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate-load"))
        .args([
            "idle",
            "--url",
            &url,
            "--clients",
            "600",
            "--connect-rate",
            "2000",
        ])
        .args(["--hold", "1s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().last().unwrap_or_default();
    assert!(
        json.contains("\"connected\":600") && json.contains("\"held\":600"),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn at_the_fd_limit_accept_errors_are_logged_once_a_second_with_a_count() {
    // Soft and hard 48: the gateway cannot raise it. It warns that the --max-connections given
    // cannot fit, then runs out of fds once about 40 connections sit in their prelude.
    let wrap = under_ulimit("-n 48");
    let args = [
        "--admin-listen",
        "127.0.0.1:0",
        "--header-timeout",
        "30s",
        "--max-connections",
        "1000",
    ];
    let gw = Gateway::start_wrapped(&strs(&wrap), "127.0.0.1:0", &args, &[]);
    let admin = gw.admin_addr();
    let warn = gw.wait_log(|l| l.contains(" fd_limit_low "));
    assert!(warn.contains("soft=48"), "{warn}");
    let mut held = Vec::new();
    for _ in 0..80 {
        // Connected by the kernel's backlog even when the gateway cannot accept.
        held.push(TcpStream::connect(gw.addr).unwrap());
    }
    // About 20 failed accepts a second (the 50 ms backoff) for 3 s.
    std::thread::sleep(Duration::from_secs(3));
    let lines = gw.events("accept_failed");
    assert!(
        (1..=4).contains(&lines.len()),
        "{} accept_failed lines in 3 s:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(lines[0].contains("reason=emfile"), "{}", lines[0]);
    let suppressed: u64 = lines
        .iter()
        .map(|l| field(l, "suppressed").unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(lines.len() < 2 || suppressed >= 10, "{lines:?}");
    // Let go: the gateway accepts the rest (closed before a request) and answers again.
    drop(held);
    let mut probe = None;
    for _ in 0..100 {
        if let Ok(mut s) = TcpStream::connect(admin) {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            probe = Some(());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(probe.is_some());
    let m = wait_metric(admin, "wsgate_connections_open", 0.0);
    let failed = m.get(r#"wsgate_accept_errors_total{reason="emfile"}"#);
    let logged_or_counted = lines.len() as f64 + suppressed as f64;
    assert!(
        failed >= logged_or_counted && failed >= 20.0,
        "emfile {failed}, lines {} + suppressed {suppressed}",
        lines.len()
    );
    assert_eq!(http_get(gw.addr, "/healthz").0, 200);
}
