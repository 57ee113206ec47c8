//! The server's resident memory and CPU time, read from `/proc` (Linux only).
//!
//! Why `/proc` and not a crate: two small text files give exactly the two numbers needed,
//! and the parsing is tested here.

use crate::LoadError;
use serde::Serialize;

/// Kernel clock ticks per second for `/proc/<pid>/stat` times. `USER_HZ` is 100 on every
/// Linux architecture a server runs on (it is fixed in the ABI, independent of `CONFIG_HZ`);
/// reading it via `sysconf` would need `unsafe` FFI, which the workspace forbids.
const USER_HZ: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcSample {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// User + system CPU time so far, seconds.
    pub cpu_secs: f64,
}

impl ProcSample {
    /// Reads `/proc/<pid>/status` and `/proc/<pid>/stat`.
    pub fn read(pid: u32) -> Result<ProcSample, LoadError> {
        let read = |file: &str| {
            let path = format!("/proc/{pid}/{file}");
            std::fs::read_to_string(&path).map_err(|source| LoadError::Proc { path, source })
        };
        let status = read("status")?;
        let stat = read("stat")?;
        let bad = |what: &str| LoadError::Config(format!("cannot parse {what} of pid {pid}"));
        Ok(ProcSample {
            rss_kib: parse_vm_rss(&status).ok_or_else(|| bad("VmRSS in /proc/<pid>/status"))?,
            cpu_secs: parse_cpu_ticks(&stat).ok_or_else(|| bad("/proc/<pid>/stat"))? as f64
                / USER_HZ,
        })
    }

    /// This process (the load tool itself).
    pub fn current() -> Result<ProcSample, LoadError> {
        ProcSample::read(std::process::id())
    }
}

/// `VmRSS:   123456 kB` → 123456.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime (fields 14 and 15) of `/proc/<pid>/stat`, in clock ticks. The command name
/// (field 2) is in parentheses and may contain spaces or parentheses itself, so fields are
/// counted after its *last* `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): utime is the 12th field of it, stime the 13th.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tchat-server\nVmPeak:\t  999 kB\nVmRSS:\t   51234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(51_234));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        let stat = "4242 (chat (server) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    1234 567 0 0 20 0 3 0 100 1000000 500 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let s = ProcSample::current().unwrap();
        assert!(s.rss_kib > 0);
        assert!(s.cpu_secs >= 0.0);
    }
}
