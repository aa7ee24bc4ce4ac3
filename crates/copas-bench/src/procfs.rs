//! What `/proc` tells about a process: CPU time, resident memory, threads, and the machine.

use std::fs;
use std::io;
use std::time::Duration;

use crate::epoll::clock_ticks_per_second;

/// A sample of one process.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcSample {
    /// User plus system CPU time of all its threads (live and exited).
    pub(crate) cpu: Duration,
    /// Resident set size in bytes (`VmRSS`).
    pub(crate) rss: u64,
    /// Threads (`Threads`).
    pub(crate) threads: u64,
}

/// Samples `/proc/PID/stat` and `/proc/PID/status`.
pub(crate) fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))
    };
    let total_ticks = ticks(11)? + ticks(12)?;
    let hz = clock_ticks_per_second();
    let cpu = Duration::from_nanos(total_ticks.saturating_mul(1_000_000_000) / hz);

    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu,
        rss: field("VmRSS:") * 1024,
        threads: field("Threads:"),
    })
}

/// User plus system CPU time of this process's reaped children (`cutime + cstime` of
/// `/proc/self/stat`): how `wrk`'s CPU is measured once it has exited.
pub(crate) fn children_cpu() -> io::Result<Duration> {
    let stat = fs::read_to_string("/proc/self/stat")?;
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': cutime (16) and cstime (17) are at 13 and 14.
    let ticks = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/self/stat"))
    };
    let total = ticks(13)? + ticks(14)?;
    Ok(Duration::from_nanos(
        total.saturating_mul(1_000_000_000) / clock_ticks_per_second(),
    ))
}

/// Machine-wide CPU time from the first line of `/proc/stat`, in ticks: `(busy, total)`.
/// Busy counts user, nice, system, irq, softirq and steal; idle and iowait are not busy.
pub(crate) fn machine_ticks() -> io::Result<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| io::Error::other("no cpu line in /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    let total = busy + at(3) + at(4);
    Ok((busy, total))
}

/// The machine: core count, CPU model, kernel.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    pub(crate) cores: usize,
    pub(crate) cpu_model: String,
    pub(crate) kernel: String,
}

impl Machine {
    pub(crate) fn probe() -> Machine {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpu_model = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Machine {
            cores,
            cpu_model,
            kernel,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss > 0);
        assert!(s.threads >= 1);
        let (busy, total) = machine_ticks().unwrap();
        assert!(total >= busy);
    }
}
