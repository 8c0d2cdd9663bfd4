//! Samples of the server under test from `/proc`: resident memory (`VmRSS`), CPU time
//! (`utime + stime`) and open file descriptors, summed over the `--pid` processes and all their
//! descendants (found by walking the `ppid` of every `/proc/*/stat`), so a server that forks
//! workers (nginx, a Node cluster) is measured whole.

use std::{collections::HashMap, fs};

/// ` server rss N KiB fds N` for a progress line, or nothing without `--pid`.
pub(crate) fn progress_suffix(procs: Option<&ProcSet>) -> String {
    procs.map_or(String::new(), |p| {
        let s = p.sample();
        format!(" server rss {} KiB fds {}", s.rss_kb, s.fds)
    })
}

/// One reading, summed over the process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    /// Resident set size in KiB (`VmRSS`).
    pub(crate) rss_kb: u64,
    /// User plus system CPU time in microseconds, of the live processes.
    pub(crate) cpu_us: u64,
    /// Entries in `/proc/PID/fd`.
    pub(crate) fds: u64,
    /// Processes found (the roots that still live, plus descendants).
    pub(crate) processes: u64,
}

/// The `--pid` roots to sample.
#[derive(Clone, Debug)]
pub(crate) struct ProcSet {
    roots: Vec<u32>,
    /// Clock ticks per second, to turn `/proc/PID/stat` times into microseconds.
    ticks_per_s: u64,
}

impl ProcSet {
    /// Parses `--pid 123[,456]`.
    pub(crate) fn parse(list: &str) -> Result<Self, String> {
        let roots = list
            .split(',')
            .map(|p| {
                p.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("--pid: {p:?} is not a process id"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for &pid in &roots {
            if fs::metadata(format!("/proc/{pid}")).is_err() {
                return Err(format!("--pid: no process {pid}"));
            }
        }
        Ok(Self {
            roots,
            ticks_per_s: rustix::param::clock_ticks_per_second().max(1),
        })
    }

    /// This process (the tool itself), to report its own CPU cost next to the server's.
    pub(crate) fn own() -> Self {
        Self {
            roots: vec![std::process::id()],
            ticks_per_s: rustix::param::clock_ticks_per_second().max(1),
        }
    }

    /// Reads `/proc` now. Processes that vanish meanwhile are skipped.
    pub(crate) fn sample(&self) -> Sample {
        let mut s = Sample::default();
        let mut ticks = 0;
        for pid in self.tree() {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((_, t)) = parse_stat(&stat) else {
                continue;
            };
            ticks += t;
            s.processes += 1;
            s.rss_kb += fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|st| parse_vm_rss(&st))
                .unwrap_or(0);
            s.fds += fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count() as u64)
                .unwrap_or(0);
        }
        s.cpu_us = ticks * 1_000_000 / self.ticks_per_s;
        s
    }

    /// The roots and every descendant, each once.
    fn tree(&self) -> Vec<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        if let Ok(dir) = fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if let Some((ppid, _)) = fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .as_deref()
                    .and_then(parse_stat)
                {
                    children.entry(ppid).or_default().push(pid);
                }
            }
        }
        let mut out = self.roots.clone();
        let mut i = 0;
        while i < out.len() {
            for &c in children.get(&out[i]).map(Vec::as_slice).unwrap_or(&[]) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
            i += 1;
        }
        out
    }
}

/// Busy CPU time of the whole machine so far in microseconds (all cores, from `/proc/stat`):
/// unlike per-process times it includes interrupt and softirq work, where the kernel delivers
/// loopback TCP segments and which no process is charged for.
pub(crate) fn machine_busy_us() -> Option<u64> {
    let ticks = parse_proc_stat_busy(&fs::read_to_string("/proc/stat").ok()?)?;
    Some(ticks * 1_000_000 / rustix::param::clock_ticks_per_second().max(1))
}

/// Busy ticks from the `cpu` line of `/proc/stat`: everything but `idle` and `iowait`
/// (`guest` time is already inside `user`).
pub(crate) fn parse_proc_stat_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = f[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// `(ppid, utime + stime in ticks)` from the text of `/proc/PID/stat`. The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().take(13).collect();
    // f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `VmRSS` in KiB from the text of `/proc/PID/status`; `None` for kernel threads.
pub(crate) fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_with_an_awkward_name() {
        let stat = "4242 (my (odd) srv) S 17 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 3 0 9876 123456789 2500 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((17, 325)));
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\twsgate\nVmPeak:\t  10000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn reads_machine_busy_time() {
        let stat = "cpu  100 5 50 1000 7 3 11 2 0 0\ncpu0 50 2 25 500 3 1 5 1 0 0\nintr 1 2 3\n";
        assert_eq!(parse_proc_stat_busy(stat), Some(100 + 5 + 50 + 3 + 11 + 2));
        assert_eq!(parse_proc_stat_busy("cpu  1 2\n"), None);
        assert!(machine_busy_us().is_some());
    }

    #[test]
    fn samples_this_process() {
        let me = ProcSet::parse(&std::process::id().to_string()).unwrap();
        let s = me.sample();
        assert!(s.processes >= 1);
        assert!(s.rss_kb > 0);
        assert!(s.fds >= 3);
        assert!(ProcSet::parse("abc").is_err());
    }
}
