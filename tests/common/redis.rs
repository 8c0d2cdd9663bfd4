//! A real `redis-server` (Debian's) on a loopback port for the backplane tests.
#![allow(dead_code)]

use super::{require_program, wait_accepting, Proc, TempDir, WAIT};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

/// A `redis-server` on a loopback port, without persistence; killed when dropped.
pub struct Redis {
    proc: Option<Proc>,
    pub port: u16,
    /// Its own working directory: a replica writes the RDB of its sync there, and a server
    /// started later in a shared directory would load it.
    _dir: TempDir,
}

impl Redis {
    pub fn start(port: u16, password: Option<&str>) -> Redis {
        Self::start_with(port, password, &[])
    }

    /// A replica of the `redis-server` on `primary` (it syncs in the background).
    pub fn start_replica(port: u16, primary: u16) -> Redis {
        Self::start_with(
            port,
            None,
            &["--replicaof", "127.0.0.1", &primary.to_string()],
        )
    }

    fn start_with(port: u16, password: Option<&str>, extra: &[&str]) -> Redis {
        let bin = require_program("redis-server");
        let dir = TempDir::new("redis");
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            // A replica's first sync at once, not after Redis 7's 5 s wait for more replicas.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(extra);
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let mut proc = Proc::spawn("redis-server", cmd);
        wait_accepting(&mut proc, Self::addr_of(port));
        Redis {
            proc: Some(proc),
            port,
            _dir: dir,
        }
    }

    pub fn addr_of(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.proc.as_ref().expect("running").pid();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} redis-server");
    }

    /// SIGKILL: no goodbye to the clients beyond the kernel's.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        let mut proc = self.proc.take().unwrap();
        proc.wait_exit(WAIT);
    }

    /// Sends commands (already RESP-encoded) and returns the first `replies` reply lines.
    pub fn command(&self, resp: &str, replies: usize) -> String {
        let mut s = TcpStream::connect(Self::addr_of(self.port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(resp.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while got.windows(2).filter(|w| w == b"\r\n").count() < replies {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "redis closed: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // A paused server would sit out the SIGTERM grace period.
        if self.proc.is_some() {
            self.signal("-CONT");
        }
    }
}
