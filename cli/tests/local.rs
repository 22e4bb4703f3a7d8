//! What `kdfs local` shows a person (issue 28): a short banner on the terminal and
//! nothing else while it runs, each component's log in `<data-dir>/logs/`, `--verbose`
//! to stream those logs, and the errors that stop it on stderr with a non-zero exit.
//! Each test starts the built `kdfs` binary as its own child process.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{KDFS, Local, START_TIMEOUT, ok, wait_exit};

/// Each component and the line it logs once it serves.
const STARTUP_LINES: [(&str, &str); 5] = [
    ("namenode", "namenode ready"),
    ("datanode-0", "datanode ready"),
    ("datanode-1", "datanode ready"),
    ("datanode-2", "datanode ready"),
    ("gateway", "gateway ready"),
];

fn log_of(data: &Path, component: &str) -> String {
    std::fs::read_to_string(data.join("logs").join(format!("{component}.log")))
        .unwrap_or_else(|e| panic!("{component}.log: {e}"))
}

/// Whether `text` holds a log line (a level between spaces, as the plain format writes).
fn has_log_lines(text: &str) -> bool {
    [" TRACE ", " DEBUG ", " INFO ", " WARN ", " ERROR "]
        .iter()
        .any(|level| text.contains(level))
}

/// Lines that `rx` yields within `within` of each other, until `last` matches one.
fn lines_until(rx: &std::sync::mpsc::Receiver<String>, last: &str) -> Vec<String> {
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let done = line.starts_with(last);
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

#[test]
fn a_quiet_start_prints_the_banner_and_logs_to_files() {
    let local = Local::start("1MiB");
    let data = local.data();
    let mut stdout = local.before.clone();
    stdout.extend(lines_until(&local.rest, "stop:"));
    let text = stdout.join("\n");
    assert_eq!(stdout[0], "kdfs local is serving", "stdout:\n{text}");
    assert_eq!(stdout[1], format!("gateway: {}", local.gateway));
    for (key, value) in [
        ("page:", format!("{}/", local.gateway)),
        ("data:", data.display().to_string()),
        ("logs:", data.join("logs").display().to_string()),
        ("tls:", data.join("tls").display().to_string()),
        ("stop:", "Ctrl-C".to_owned()),
    ] {
        assert!(
            stdout
                .iter()
                .any(|l| l.starts_with(key) && l.contains(&value)),
            "no {key} line with {value}:\n{text}"
        );
    }
    assert!(!has_log_lines(&text), "log lines on stdout:\n{text}");

    // An upload works, and its lines go to the gateway's log, not the terminal.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("hello.txt"), b"hello, quiet kdfs\n").unwrap();
    let out = ok(&local.kdfs(&["upload", "-q", "hello.txt"], work.path()));
    let hash = kdfs_testkit::sha256_hex(b"hello, quiet kdfs\n");
    assert!(out.contains(&hash), "upload printed: {out}");
    kdfs_testkit::wait_until_blocking(
        "the upload's audit line in gateway.log",
        Duration::from_secs(10),
        || log_of(&data, "gateway").contains(&hash),
    );

    for (component, line) in STARTUP_LINES {
        let log = log_of(&data, component);
        assert!(log.contains(line), "{component}.log lacks {line:?}:\n{log}");
    }
    // Each datanode's lines are its own: one node id per datanode log.
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let log = log_of(&data, &format!("datanode-{i}"));
            let ready = log.lines().find(|l| l.contains("datanode ready")).unwrap();
            ready
                .split("node=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "datanode logs mixed up: {ids:?}"
    );

    // SIGTERM: one line on stdout as it stops, and a clean exit.
    local.sigterm();
    let after = lines_until(&local.rest, "kdfs local stopped");
    assert_eq!(
        after.last().map(String::as_str),
        Some("kdfs local stopped"),
        "stdout after SIGTERM: {after:?}"
    );
    assert!(!has_log_lines(&after.join("\n")), "{after:?}");
    let stderr_path = local.stderr.clone();
    let (status, dir) = local.wait();
    assert!(
        status.success(),
        "kdfs local exited with {status} after SIGTERM"
    );
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(stderr.is_empty(), "stderr of a quiet run:\n{stderr}");

    // A restart appends to the same files.
    let local = Local::start_in(dir, "1MiB", &[]);
    let log = log_of(&local.data(), "namenode");
    assert_eq!(
        log.matches("namenode ready").count(),
        2,
        "namenode.log:\n{log}"
    );
    let (status, _) = local.terminate();
    assert!(status.success(), "second run exited with {status}");
}

#[test]
fn verbose_streams_every_component_log_to_stderr() {
    let local = Local::start_in(tempfile::tempdir().unwrap(), "1MiB", &["--verbose"]);
    kdfs_testkit::wait_until_blocking(
        "every component's startup line on stderr",
        Duration::from_secs(10),
        || {
            let stderr = local.stderr();
            ["namenode ready", "datanode ready", "gateway ready"]
                .iter()
                .all(|l| stderr.contains(l))
        },
    );
    // The files get them as well.
    for (component, line) in STARTUP_LINES {
        assert!(
            log_of(&local.data(), component).contains(line),
            "{component}.log"
        );
    }
    let (status, _) = local.terminate();
    assert!(status.success(), "exited with {status}");
}

/// Runs `kdfs local` with `args` (expecting it to fail on its own); its exit status,
/// stdout and stderr.
fn failing_start(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(KDFS)
        .args(["local", "--reserved", "0"])
        .args(args)
        .current_dir(dir.path())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, START_TIMEOUT);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    (status, read(&out), read(&err))
}

#[test]
fn a_gateway_port_in_use_fails_on_stderr() {
    let port = kdfs_testkit::free_ports(1)[0];
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let (status, stdout, stderr) = failing_start(&["--http", &addr, "--data-dir", "data"]);
    assert!(!status.success(), "exited with {status}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} for the gateway")),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stdout.is_empty(), "stdout: {stdout}");
}

#[test]
fn a_component_that_fails_stops_the_cluster_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("datanode-1")).unwrap();
    std::fs::write(data.join("datanode-1").join("VERSION"), "not json").unwrap();
    let port = kdfs_testkit::free_ports(1)[0].to_string();
    let http = format!("127.0.0.1:{port}");
    let data_arg = data.display().to_string();
    let (status, stdout, stderr) = failing_start(&["--http", &http, "--data-dir", &data_arg]);
    assert!(!status.success(), "exited with {status}");
    assert!(
        stderr.contains("the datanode-1 stopped") && stderr.contains("VERSION"),
        "stderr: {stderr}"
    );
    assert!(!stdout.contains("gateway: "), "it served anyway: {stdout}");
}
