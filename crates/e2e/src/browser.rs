//! The browser tests' driver: a script of `tests/browser` (playwright-core with Debian's
//! chromium) run by node, which the test talks to line by line over stdin and stdout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the script has for any one step.
const STEP: Duration = Duration::from_secs(90);

/// The script `tests/browser/<name>`; fails with how to install what it needs.
pub fn script(name: &str) -> PathBuf {
    let dir = vote_stack::config::repo_root().join("tests/browser");
    let missing = if !Path::new(CHROMIUM).is_file() {
        Some(format!("{CHROMIUM} (Debian packages chromium and chromium-driver)"))
    } else if !dir.join("node_modules/playwright-core/package.json").is_file() {
        Some(format!("{}/node_modules/playwright-core (npm ci in tests/browser)", dir.display()))
    } else if std::process::Command::new("node").arg("--version").output().is_err() {
        Some("node (Debian packages nodejs and npm)".to_owned())
    } else {
        None
    };
    if let Some(missing) = missing {
        panic!("the browser test needs {missing}: `make setup` installs them");
    }
    dir.join(name)
}

/// A running browser script.
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Node {
    /// Starts `node <script> <args>` with `env`; its errors go to the test's output.
    pub fn spawn(script: &Path, args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Self {
        let mut command = tokio::process::Command::new("node");
        command.arg(script).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("starting node");
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self { child, stdin, lines }
    }

    /// The script's next line, or None when it closed its output.
    pub async fn next_line(&mut self) -> Option<String> {
        tokio::time::timeout(STEP, self.lines.next_line()).await.expect("the browser script answers in time").expect("reading the script's output")
    }

    /// Writes one line to the script.
    pub async fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Closes the script's input, reads the rest of its output and checks it ended with `ok`.
    pub async fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let mut said = Vec::new();
        while let Some(line) = self.next_line().await {
            said.push(line);
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.expect("node exits").unwrap();
        assert!(status.success(), "the browser script failed (its error is above): {said:?}");
        assert_eq!(said.last().map(String::as_str), Some("ok"), "{said:?}");
        said
    }
}
