//! The independent tools some tests drive: Node packages (from a committed package-lock.json) and
//! Python packages (pinned requirements, in the venv .ci/run makes), installed when missing.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Serialises installing: both database variants of a test may ask at once.
static NPM: Mutex<()> = Mutex::new(());
static VENV: Mutex<()> = Mutex::new(());

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn target() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

pub fn run(cmd: &mut Command) -> Result<(), String> {
    let what = format!("{cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("{what} exited with {s}")),
        Err(e) => Err(format!("{what} could not start: {e}")),
    }
}

/// Whether `dir`'s node_modules holds exactly the versions its package.json pins.
pub fn node_modules_current(dir: &Path) -> bool {
    let read = |p: PathBuf| std::fs::read_to_string(p).ok().and_then(|s| serde_json::from_str::<Value>(&s).ok());
    let Some(pkg) = read(dir.join("package.json")) else { return false };
    let Some(deps) = pkg["dependencies"].as_object() else { return false };
    deps.iter().all(|(name, version)| {
        read(dir.join("node_modules").join(name).join("package.json")).is_some_and(|m| &m["version"] == version)
    })
}

/// `dir`'s node_modules from its committed lock file (`npm ci`), when missing or stale. No package
/// the tests use has an install script.
pub fn ensure_node_modules(dir: &Path) {
    let _one_at_a_time = NPM.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if node_modules_current(dir) {
        return;
    }
    eprintln!("npm ci in {}", dir.display());
    let done = run(Command::new("npm").args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"]).current_dir(dir));
    if let Err(e) = done {
        panic!("This test needs Node.js 20+ and npm: `npm ci --prefix {}` failed: {e}", dir.display());
    }
    assert!(node_modules_current(dir), "npm ci did not install the versions {}/package.json pins", dir.display());
}

fn pinned_installed(python: &Path, requirements: &Path) -> bool {
    let check = "import sys, importlib.metadata as m\n\
                 pins = [l.split('==') for l in open(sys.argv[1]) if '==' in l and not l.startswith('#')]\n\
                 sys.exit(0 if all(m.version(n) == v.strip() for n, v in pins) else 1)";
    Command::new(python).args(["-c", check]).arg(requirements).status().is_ok_and(|s| s.success())
}

/// The venv's python (target/ci-venv, the one .ci/run makes for its checks) with the packages
/// `requirements` pins, installed here when missing. `None` (skip) only outside CI: CI must run
/// every test.
pub fn venv_python(requirements: &Path) -> Option<PathBuf> {
    let _one_at_a_time = VENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = root().join("target/ci-venv");
    let python = venv.join("bin/python");
    if python.exists() && pinned_installed(&python, requirements) {
        return Some(python);
    }
    let made = (python.exists()
        || Command::new("python3").arg("-m").arg("venv").arg(&venv).status().is_ok_and(|s| s.success()))
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "-r"])
            .arg(requirements)
            .status()
            .is_ok_and(|s| s.success())
        && pinned_installed(&python, requirements);
    if made {
        return Some(python);
    }
    let how = format!(
        "this test needs python3 with venv and pip, and PyPI: `python3 -m venv target/ci-venv && \
         target/ci-venv/bin/pip install -r {}`",
        requirements.strip_prefix(root()).unwrap_or(requirements).display()
    );
    assert!(std::env::var_os("CI").is_none(), "{how}");
    eprintln!("skipped: {how}");
    None
}
