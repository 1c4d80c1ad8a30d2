//! Child processes of the stack: spawned detached in a process group of their own, with their
//! output in `logs/NAME.log` and their pid and start time in `run/NAME.pid`, so a later `votectl
//! down` stops what `votectl up` started, and only that: a pid now used by another process (pid
//! reuse) has another start time and is left alone.

use std::collections::HashMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// The environment variables that choose a process's application: set by the stack per child,
/// never inherited from the caller's environment.
pub const APPLICATION_VARIABLES: [&str; 3] = ["VOTES_MANIFEST", "VOTES_HOST_COMPONENT", "VOTES_HOST_COMPONENT_DIR"];

/// How to start one child: program, arguments, environment and the data directory it needs.
#[derive(Debug, Clone)]
pub struct Launch {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Created before the start and used as the working directory.
    pub data_dir: Option<PathBuf>,
}

impl Launch {
    pub fn new(name: &str, program: impl Into<PathBuf>) -> Self {
        Self { name: name.to_owned(), program: program.into(), args: Vec::new(), env: Vec::new(), data_dir: None }
    }
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }
    pub fn data_dir(mut self, dir: PathBuf) -> Self {
        self.data_dir = Some(dir);
        self
    }
}

/// Starts, finds and stops the children of one state directory.
pub struct Supervisor {
    state_dir: PathBuf,
    /// Children started by this process, so their exit is reaped (a zombie is not "running").
    children: Mutex<HashMap<String, Child>>,
    /// Whether children die with this process (tests) or outlive it (`votectl up`).
    die_with_parent: bool,
}

impl Supervisor {
    /// A supervisor whose children outlive it.
    pub fn detached(state_dir: &Path) -> Self {
        Self { state_dir: state_dir.to_owned(), children: Mutex::default(), die_with_parent: false }
    }

    /// A supervisor whose children are killed if this process dies (for tests).
    pub fn attached(state_dir: &Path) -> Self {
        Self { state_dir: state_dir.to_owned(), children: Mutex::default(), die_with_parent: true }
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.state_dir.join("logs").join(format!("{name}.log"))
    }

    fn pid_path(&self, name: &str) -> PathBuf {
        self.state_dir.join("run").join(format!("{name}.pid"))
    }

    /// Spawns a child, appending its output to its log file and recording its pid.
    pub fn spawn(&self, launch: &Launch) -> anyhow::Result<u32> {
        if !launch.program.is_file() {
            bail!("{} is not installed: {} does not exist", launch.name, launch.program.display());
        }
        fs::create_dir_all(self.state_dir.join("logs"))?;
        fs::create_dir_all(self.state_dir.join("run"))?;
        let mut command = Command::new(&launch.program);
        if let Some(dir) = &launch.data_dir {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            command.current_dir(dir);
        }
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path(&launch.name))?;
        // Which application a child serves is the stack's to say (the native baseline and the
        // one-component host have none): a VOTES_MANIFEST or VOTES_HOST_COMPONENT exported for
        // votectl itself must not reach every child.
        for chosen_per_child in APPLICATION_VARIABLES {
            command.env_remove(chosen_per_child);
        }
        command
            .args(&launch.args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        if self.die_with_parent {
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
                });
            }
        }
        let child = command.spawn().with_context(|| format!("starting {}", launch.program.display()))?;
        let pid = child.id();
        let started = start_time(pid).with_context(|| format!("reading the start time of {} (pid {pid})", launch.name))?;
        fs::write(self.pid_path(&launch.name), format!("{pid} {started}\n"))?;
        self.children.lock().expect("children lock").insert(launch.name.clone(), child);
        tracing::debug!(name = %launch.name, pid, "started");
        Ok(pid)
    }

    /// The pid of a running child of this state directory, if any.
    pub fn running(&self, name: &str) -> Option<u32> {
        if let Some(child) = self.children.lock().expect("children lock").get_mut(name) {
            return match child.try_wait() {
                Ok(None) => Some(child.id()),
                _ => None,
            };
        }
        let recorded = fs::read_to_string(self.pid_path(name)).ok()?;
        let mut fields = recorded.split_whitespace();
        let pid: u32 = fields.next()?.parse().ok()?;
        let Some(started) = fields.next().and_then(|s| s.parse::<u64>().ok()) else {
            tracing::warn!(name, pid, "the pid file has no start time (written by an older votectl); not treating pid {pid} as ours");
            return None;
        };
        // The same pid with another start time is another process that reused the number; a
        // zombie (killed, not yet reaped by whoever inherited it) serves nothing.
        (start_time(pid).ok()? == started && !is_zombie(pid)).then_some(pid)
    }

    /// The last `lines` lines of a child's log, to explain why it stopped.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let text = fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends SIGKILL (for crash tests) and waits for the process to be gone.
    pub fn kill(&self, name: &str) -> anyhow::Result<()> {
        self.signal_and_wait(name, Signal::SIGKILL, Duration::from_secs(10))
    }

    /// Stops a child: SIGTERM, then SIGKILL after `grace`. Returns whether one was running.
    pub fn stop(&self, name: &str, grace: Duration) -> anyhow::Result<bool> {
        if self.running(name).is_none() {
            let _ = fs::remove_file(self.pid_path(name));
            return Ok(false);
        }
        if self.signal_and_wait(name, Signal::SIGTERM, grace).is_err() {
            tracing::warn!(name, "did not stop in time, killing");
            self.signal_and_wait(name, Signal::SIGKILL, Duration::from_secs(10))?;
        }
        let _ = fs::remove_file(self.pid_path(name));
        Ok(true)
    }

    /// Signals the child's whole process group (it leads one: see [`Supervisor::spawn`]), after
    /// checking that the pid is still the child's, and waits for the child to be gone.
    fn signal_and_wait(&self, name: &str, signal: Signal, timeout: Duration) -> anyhow::Result<()> {
        let Some(pid) = self.running(name) else { return Ok(()) };
        killpg(Pid::from_raw(pid as i32), signal)
            .or_else(|_| kill(Pid::from_raw(pid as i32), signal))
            .with_context(|| format!("signalling {name}"))?;
        let deadline = Instant::now() + timeout;
        while self.running(name).is_some() {
            if Instant::now() > deadline {
                bail!("{name} (pid {pid}) still running {timeout:?} after {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.children.lock().expect("children lock").remove(name);
        Ok(())
    }
}

/// The fields of `/proc/PID/stat` after the command name, from field 3 (the state) on.
fn stat_after_name(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after the last `)`.
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc stat")?;
    Ok(after_name.split_whitespace().map(str::to_owned).collect())
}

/// When process `pid` started, in clock ticks since boot (field 22 of `/proc/PID/stat`): with the
/// pid, it names one process for good.
pub fn start_time(pid: u32) -> anyhow::Result<u64> {
    let fields = stat_after_name(pid)?;
    Ok(fields.get(19).context("no start time in /proc stat")?.parse()?)
}

/// Whether `pid` is a zombie: dead, its exit status not yet collected (state `Z`, field 3).
fn is_zombie(pid: u32) -> bool {
    stat_after_name(pid).is_ok_and(|fields| fields.first().is_some_and(|state| state == "Z"))
}

impl Drop for Supervisor {
    /// Children that die with their parent are stopped when the supervisor goes.
    fn drop(&mut self) {
        if self.die_with_parent {
            let names: Vec<String> = self.children.lock().map(|c| c.keys().cloned().collect()).unwrap_or_default();
            for name in names {
                let _ = self.stop(&name, Duration::from_secs(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process this supervisor did not start, and a supervisor whose pid file names its pid.
    fn stranger_under(name: &str, recorded: impl FnOnce(u32) -> String) -> (Child, Supervisor, tempfile::TempDir) {
        let stranger = Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("run")).unwrap();
        fs::write(dir.path().join("run").join(format!("{name}.pid")), recorded(stranger.id())).unwrap();
        let supervisor = Supervisor::detached(dir.path());
        (stranger, supervisor, dir)
    }

    #[test]
    fn a_reused_pid_is_not_ours_and_is_not_signalled() {
        // The pid file names the stranger's pid with another start time: what pid reuse looks like.
        let (stranger, supervisor, _dir) = stranger_under("redis", |pid| format!("{pid} {}\n", start_time(pid).unwrap() + 1));
        assert_left_alone(stranger, &supervisor);
    }

    /// The supervisor does not take the stranger for its Redis, and stopping Redis spares it.
    fn assert_left_alone(mut stranger: Child, supervisor: &Supervisor) {
        assert_eq!(supervisor.running("redis"), None);
        assert!(!supervisor.stop("redis", Duration::from_secs(1)).unwrap());
        assert!(stranger.try_wait().unwrap().is_none(), "the stranger was signalled");
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }

    #[test]
    fn a_killed_but_unreaped_process_is_not_running() {
        let (mut zombie, supervisor, _dir) = stranger_under("wasm-host", |pid| format!("{pid} {}\n", start_time(pid).unwrap()));
        assert_eq!(supervisor.running("wasm-host"), Some(zombie.id()));
        kill(Pid::from_raw(zombie.id() as i32), Some(nix::sys::signal::Signal::SIGKILL)).unwrap();
        // Not reaped yet: the pid stays a zombie until `wait` below.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_zombie(zombie.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(is_zombie(zombie.id()));
        assert_eq!(supervisor.running("wasm-host"), None);
        zombie.wait().unwrap();
    }

    #[test]
    fn a_pid_file_without_start_time_is_not_trusted() {
        let (stranger, supervisor, _dir) = stranger_under("redis", |pid| pid.to_string());
        assert_left_alone(stranger, &supervisor);
    }

    #[test]
    fn what_we_started_is_stopped_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::detached(dir.path());
        // A shell that starts a grandchild in the same group and waits for it.
        let launch = Launch::new("group", "/bin/sh").args(["-c", "sleep 30 & echo $! > grandchild; wait"]).data_dir(dir.path().join("data"));
        let pid = supervisor.spawn(&launch).unwrap();
        let grandchild_file = dir.path().join("data").join("grandchild");
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read_to_string(&grandchild_file).map_or(true, |s| s.trim().is_empty()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let grandchild: i32 = fs::read_to_string(&grandchild_file).unwrap().trim().parse().unwrap();
        assert_eq!(supervisor.running("group"), Some(pid));
        assert!(supervisor.stop("group", Duration::from_secs(5)).unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while kill(Pid::from_raw(grandchild), None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        // The grandchild is gone or a zombie awaiting init; either way no longer running.
        let state = fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.rsplit_once(')').unwrap().1.trim_start().starts_with('Z'), "{state}");
    }
}
