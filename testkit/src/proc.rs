//! One server child process: how to start it, and while it runs its pid, state, peak
//! memory, CPU time and log.
//!
//! A process logs (stdout and stderr) to its own file, appended across restarts, and is
//! killed with the test (`PR_SET_PDEATHSIG`) if the test process dies first.

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a graceful stop may take before the test fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How often [`Proc::stop`] looks whether the process has exited.
const STOP_POLL: Duration = Duration::from_millis(50);

/// One server process: how to start it and, while it runs, its child handle.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    exe: PathBuf,
    pub(crate) args: Vec<String>,
    env: Vec<(String, String)>,
    pub log: PathBuf,
    /// The process's own directory (`--data-dir` for namenode and datanodes).
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Proc {
    /// A process named `name` running `exe` with `args` and `env`, with its directory
    /// `root/<name>` (created) and its log `root/<name>.log`. Not started yet.
    pub fn new(
        name: &str,
        exe: PathBuf,
        root: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("creating a process dir");
        Self {
            log: root.join(format!("{name}.log")),
            name: name.to_owned(),
            exe,
            args,
            env,
            dir,
            child: None,
        }
    }

    /// Starts the process (appending to its log). Panics if it is already running or
    /// cannot be started.
    pub fn start(&mut self) {
        self.spawn()
            .unwrap_or_else(|e| panic!("starting {} failed: {e}", self.name));
    }

    /// Starts the process (appending to its log); the error if it cannot be started.
    /// Panics if it is already running.
    pub fn spawn(&mut self) -> std::io::Result<()> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        // Die with the test if the test process is killed. The signal fires when the
        // thread that spawned the child exits, not only the process: start children
        // from a thread that outlives them (a test's own thread, never a pooled one).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    /// SIGKILL and reap. A no-op if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL (if running) and start again on the same directory, ports and flags.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    /// SIGTERM and wait for the exit; panics if it takes longer than [`STOP_TIMEOUT`].
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let pid = i32::try_from(c.id()).expect("pid fits i32");
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if start.elapsed() < STOP_TIMEOUT => std::thread::sleep(STOP_POLL),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!(
                        "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM",
                        self.name
                    );
                }
            }
        }
    }

    /// Whether the process runs (it may have exited on its own).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// How the process ended, if it was started and has exited on its own.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok()?
    }

    /// The OS process id, if running.
    /// The value of `--name=VALUE` among the process's arguments.
    pub fn flag(&self, name: &str) -> Option<&str> {
        let prefix = format!("--{name}=");
        self.args.iter().find_map(|a| a.strip_prefix(&prefix))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process was started, not stopped by the harness, and has exited
    /// (a crash): it is a zombie not yet reaped, or gone.
    pub fn exited_unexpectedly(&self) -> bool {
        self.pid().is_some_and(is_zombie_or_gone)
    }

    /// Peak resident set size (VmHWM) in KiB, if running.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
    }

    /// User + system CPU seconds the process has used so far, if running.
    pub fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds(&self.pid()?.to_string())
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// User + system CPU seconds used so far by `/proc/<pid>/stat`'s process or thread
/// (`pid` may also be `self`, `thread-self` or `self/task/<tid>`).
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    cpu_seconds_of_stat(&stat)
}

fn cpu_seconds_of_stat(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold spaces) start at state (field 3).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture it runs on.
    Some(ticks / 100.0)
}

/// Whether the child `pid` has exited (a zombie not yet reaped, or gone).
fn is_zombie_or_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => state_of_stat(&stat).is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// The state letter of a `/proc/<pid>/stat` line: it follows the parenthesised
/// command name, which may itself hold spaces and parentheses.
fn state_of_stat(stat: &str) -> Option<&str> {
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
}

/// The WARN and ERROR lines of every process's log, each prefixed with the process
/// name, in time order (the logs' lines start with an RFC 3339 timestamp), at most the
/// last `n`. The mTLS-off warning every process prints at start is left out.
pub fn warnings_digest(procs: &[&Proc], n: usize) -> String {
    let mut lines: Vec<(String, String)> = Vec::new();
    for p in procs {
        for line in p.log_text().lines() {
            if (line.contains(" WARN ") || line.contains(" ERROR "))
                && !line.contains("mTLS is off")
            {
                let at = line.split(' ').next().unwrap_or_default().to_owned();
                lines.push((at, format!("[{}] {line}", p.name)));
            }
        }
    }
    lines.sort();
    let skip = lines.len().saturating_sub(n);
    lines
        .into_iter()
        .skip(skip)
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(root: &Path, name: &str, script: &str) -> Proc {
        let args = vec!["-c".to_owned(), script.to_owned()];
        Proc::new(
            name,
            "/bin/sh".into(),
            root,
            args,
            vec![("X".into(), "42".into())],
        )
    }

    #[test]
    fn a_process_logs_is_measured_and_is_killed() {
        let root = tempfile::tempdir().unwrap();
        let mut p = sh(root.path(), "sleeper", "echo hello $X; exec sleep 30");
        p.start();
        assert!(p.is_running());
        crate::wait_until_blocking("the log line", Duration::from_secs(10), || {
            p.log_text() == "hello 42\n"
        });
        assert!(p.peak_rss_kib().is_some_and(|k| k > 0));
        assert!(p.cpu_seconds().is_some());
        assert!(!p.exited_unexpectedly());
        p.kill();
        assert!(!p.is_running());
        assert_eq!(p.pid(), None);
        p.restart();
        crate::wait_until_blocking("the log appended to", Duration::from_secs(10), || {
            p.log_text().lines().count() == 2
        });
        assert_eq!(p.log_tail(1), "hello 42");
        let status = p.stop();
        assert!(!status.success(), "ended by SIGTERM: {status:?}");
    }

    #[test]
    fn a_crash_is_seen() {
        let root = tempfile::tempdir().unwrap();
        let mut p = sh(root.path(), "crasher", "exit 3");
        p.start();
        crate::wait_until_blocking("the exit", Duration::from_secs(10), || {
            p.exited_unexpectedly()
        });
        assert_eq!(p.exit_status().and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn stat_lines_are_parsed_past_the_command_name() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(state_of_stat(stat), Some("S"));
        assert_eq!(cpu_seconds_of_stat(stat), Some(3.0));
        assert_eq!(cpu_seconds_of_stat("garbage"), None);
        assert!(cpu_seconds("self").is_some());
    }

    #[test]
    fn the_digest_keeps_warnings_in_time_order() {
        let root = tempfile::tempdir().unwrap();
        let a = sh(root.path(), "a", "");
        let b = sh(root.path(), "b", "");
        std::fs::write(&a.log, "2 WARN late\n1 INFO quiet\n0 WARN mTLS is off\n").unwrap();
        std::fs::write(&b.log, "1 ERROR early\n3 WARN last\n").unwrap();
        assert_eq!(
            warnings_digest(&[&a, &b], 10),
            "[b] 1 ERROR early\n[a] 2 WARN late\n[b] 3 WARN last"
        );
        assert_eq!(warnings_digest(&[&a, &b], 1), "[b] 3 WARN last");
    }
}
