//! The `votectl` binary as a user runs it: how an error reads, and that `down` stops only what
//! `up` started.

use std::process::{Command, Output};
use std::time::Duration;

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs votectl with a private state directory and no backtrace settings from the caller.
fn votectl(state_dir: &std::path::Path, args: &[&str], backtrace: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_votectl"));
    command.args(args).env("VOTES_STATE_DIR", state_dir).env_remove("RUST_BACKTRACE").env_remove("RUST_LIB_BACKTRACE");
    if backtrace {
        command.env("RUST_BACKTRACE", "1");
    }
    command.output().expect("votectl runs")
}

#[test]
fn an_error_is_one_paragraph_without_a_backtrace() {
    let state = tempfile::tempdir().unwrap();
    let port = closed_port().to_string();
    let output = votectl(state.path(), &["--redis-port", &port, "results"], false);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one paragraph expected:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    // The cause chain is joined on the same line.
    assert!(lines[0].matches(": ").count() >= 2, "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace") && !stderr.contains("Caused by"), "{stderr}");

    // Asked for, the backtrace follows the paragraph.
    let output = votectl(state.path(), &["--redis-port", &port, "results"], true);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.starts_with("error: ") && stderr.contains("backtrace:"), "{stderr}");
}

#[test]
fn down_does_not_signal_a_pid_that_another_process_now_has() {
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(state.path().join("run")).unwrap();
    let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = stranger.id();
    // What `up` recorded for its Redis: this pid, but a process that started at another time.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let started: u64 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap();
    std::fs::write(state.path().join("run/redis.pid"), format!("{pid} {}\n", started.saturating_sub(1))).unwrap();
    // And a pid file of the old format, with no start time.
    std::fs::write(state.path().join("run/kafka.pid"), pid.to_string()).unwrap();

    let output = votectl(state.path(), &["down"], false);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    for part in ["redis", "kafka"] {
        let line = stdout.lines().find(|l| l.starts_with(part)).unwrap_or_else(|| panic!("{part} missing:\n{stdout}"));
        assert!(line.ends_with("not running"), "{line}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(stranger.try_wait().unwrap().is_none(), "votectl down signalled a process it did not start");
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}
