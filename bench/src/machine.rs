//! What Linux says about this machine and its processes: CPU time per process, thread
//! and machine, resident memory, and the CPU's SHA extensions (all from `/proc`).

/// User + system CPU seconds a process (or `self`, `thread-self`, `self/task/<tid>`)
/// has used so far; the test kit's, which also measures the local cluster's processes.
pub(crate) use kdfs_testkit::proc::cpu_seconds;

/// CPU time of the whole machine so far (every core, every process, interrupts and
/// kernel threads too), from the first line of `/proc/stat`, in seconds.
pub(crate) fn machine_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
    // user nice system idle iowait irq softirq steal …: user to softirq but idle and
    // iowait (steal is time the hypervisor gave to other guests).
    let f: Vec<f64> = cpu
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    let busy: f64 = f
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4 && i < 7)
        .map(|(_, v)| v)
        .sum();
    Some(busy / 100.0)
}

/// This process's resident set now, in bytes (`/proc/self/statm`).
pub(crate) fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Whether the CPU has the SHA extensions (SHA-NI), which SHA-256's speed depends on.
pub(crate) fn sha_ni() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|c| c.split_whitespace().any(|w| w == "sha_ni"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_measurable() {
        assert!(cpu_seconds("self").is_some_and(|s| s >= 0.0));
        assert!(cpu_seconds("thread-self").is_some());
        assert!(machine_cpu_seconds().is_some_and(|s| s > 0.0));
        assert!(rss_bytes() > 0);
        assert_eq!(cpu_seconds("no-such-process"), None);
    }
}
