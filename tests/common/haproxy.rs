//! HAProxy (Debian `haproxy`) in TCP mode as the load balancer in front of wsgate: the CLB
//! stand-in with `send-proxy` (PROXY v1), the NLB stand-in with `send-proxy-v2`.

use super::{require_program, wait_accepting, Proc, TempDir, WAIT};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// A running `haproxy -db` with a generated config; killed on drop.
pub struct Haproxy {
    pub proc: Proc,
    /// The frontend clients connect to.
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Haproxy {
    /// Starts HAProxy with one TCP frontend on a free loopback port whose only server is `gw`,
    /// reached with `server_opts` (e.g. `send-proxy`). `extra` is appended to the config.
    /// HAProxy logs each session (`option tcplog`) and health-check result to stderr.
    pub fn start(gw: SocketAddr, server_opts: &str, extra: &str) -> Haproxy {
        Self::start_with(|listen| config(listen, gw, server_opts, extra))
    }

    /// Starts HAProxy in HTTP mode on a free loopback port, balancing every request (not
    /// every connection) round robin over `servers`, each reached with `server_opts`: a load
    /// balancer without stickiness, as a CLB TCP listener or an NLB is for polling requests.
    pub fn start_http_round_robin(servers: &[SocketAddr], server_opts: &str) -> Haproxy {
        let lines: String = servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("    server gw{i} {s} {server_opts}\n"))
            .collect();
        Self::start_with(|listen| {
            format!(
                "\
global
    log stderr format raw local0 info

defaults
    mode http
    log global
    option httplog
    option http-server-close
    http-reuse never
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 60s

listen lb
    bind {listen}
    balance roundrobin
{lines}"
            )
        })
    }

    /// Starts HAProxy with the config `make` writes for a listen address.
    pub fn start_with(make: impl Fn(SocketAddr) -> String) -> Haproxy {
        let bin = require_program("haproxy");
        // The free port can be taken by someone else before HAProxy binds it: try again then.
        let mut last = String::new();
        for _ in 0..3 {
            let dir = TempDir::new("haproxy");
            let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
            let cfg = dir.path().join("haproxy.cfg");
            std::fs::write(&cfg, make(addr)).unwrap();
            let mut cmd = Command::new(&bin);
            cmd.arg("-f").arg(&cfg).arg("-db");
            let mut proc = Proc::spawn("haproxy", cmd);
            std::thread::sleep(Duration::from_millis(100));
            if !proc.running() && proc.stderr().iter().any(|l| l.contains("bind")) {
                proc.wait_exit(WAIT);
                last = proc.transcript();
                continue;
            }
            wait_accepting(&mut proc, addr);
            return Haproxy {
                proc,
                addr,
                _dir: dir,
            };
        }
        panic!("haproxy could not bind a free port three times:\n{last}");
    }

    /// HAProxy's `option tcplog` line for the session from client `port`.
    pub fn session_log(&self, port: u16) -> String {
        let prefix = format!("127.0.0.1:{port} ");
        self.proc.wait_stderr(WAIT, |l| l.starts_with(&prefix))
    }
}

fn config(listen: SocketAddr, gw: SocketAddr, server_opts: &str, extra: &str) -> String {
    format!(
        "\
global
    log stderr format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    option log-health-checks
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout check 5s

listen lb
    bind {listen}
    server gw {gw} {server_opts}
{extra}"
    )
}
