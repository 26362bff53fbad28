//! What the tests of independent client libraries need: their pinned packages installed (Python's
//! in target/ci-venv, Node's in their folder from the committed lock file), and their scripts run
//! as child processes that print a line, read a line and print their findings as JSON.
//! In CI (where .ci/run installs everything first) a missing tool fails the test; elsewhere the
//! test is skipped with the reason and the command that would fix it.

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Mutex;

/// Serialises installing: both database variants of several tests may ask at once.
static INSTALL: Mutex<()> = Mutex::new(());

pub use crate::tools::root;
use crate::tools::{self, node_modules_current, run};

/// `None` with the reason printed, outside CI only: CI must run every one of these tests.
fn skip<T>(how: &str) -> Option<T> {
    assert!(std::env::var_os("CI").is_none(), "{how}");
    eprintln!("skipped: {how}");
    None
}

/// The python of target/ci-venv with the packages `requirements` (a path under tests/) pins.
pub fn python(requirements: &str) -> Option<PathBuf> {
    tools::venv_python(&root().join(requirements))
}

/// The folder of the Node client libraries, tests/node-clients, with its node_modules from the
/// committed lock file. Optional dependencies are left out: fhirclient's browser crypto shim
/// lists React Native's as optional, and Node never loads them.
pub fn node_clients() -> Option<PathBuf> {
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = root().join("tests/node-clients");
    if node_modules_current(&dir) {
        return Some(dir);
    }
    let done = run(Command::new("npm")
        .args(["ci", "--omit=optional", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(&dir));
    if done.is_ok() && node_modules_current(&dir) {
        return Some(dir);
    }
    skip(&format!(
        "this test needs Node.js 20+, npm and the npm registry: \
         `npm ci --prefix tests/node-clients --omit=optional --ignore-scripts` ({})",
        done.err().unwrap_or_else(|| "npm ci installed other versions than package.json pins".into())
    ))
}

/// That a script's `attempt` was refused as a client that failed to authenticate, for `why`.
pub fn refused(seen: &Value, attempt: &str, why: &str) {
    let v = &seen[attempt];
    assert_eq!(v["error"], "invalid_client", "{attempt}: {seen}");
    assert!(v["description"].as_str().is_some_and(|d| d.contains(why)), "{attempt} refused for {why}: {seen}");
}

/// A client library's script, run as the app: it prints lines and reads the ones it is sent.
pub struct Script {
    name: String,
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Script {
    pub fn start(program: &Path, script: &Path, args: &[&str]) -> Script {
        let name = script.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut child = Command::new(program)
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{} could not start: {e}", program.display()));
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Script { name, child, out }
    }

    /// The next line the script prints (its errors go to the test's stderr).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read from the script");
        assert!(!line.is_empty(), "{} ended early (its error is above)", self.name);
        line.trim().to_string()
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").expect("write to the script");
    }

    /// The script's last line, its findings, once it has exited successfully.
    pub fn findings(mut self) -> Value {
        let line = self.line();
        self.wait();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    pub fn wait(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("wait for the script");
        assert!(status.success(), "{} failed with {status} (its error is above)", self.name);
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        // A failing test must not leave the script waiting on its input.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
