//! Spawned child processes: output to a log file, killed and reaped on drop,
//! their log tail printed when the test that owns them fails: at once if it
//! panics, or by [`logs_on_error`] when it returns an error.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How many log bytes [`Process::log_tail`] shows on failure.
const TAIL_BYTES: u64 = 6000;

thread_local! {
    /// Log tails of the processes dropped on this thread (a test's thread)
    /// since the last [`logs_on_error`] started.
    static DROPPED_TAILS: RefCell<Vec<(String, PathBuf, String)>> = const { RefCell::new(Vec::new()) };
}

/// Runs a test body; if it returns an error, prints the log tail of every
/// [`Process`] it dropped (they are gone by then, and so is the temp dir, so
/// the tails are taken at drop time). Panics print their tails directly.
///
/// # Errors
/// Whatever `body` returns.
pub fn logs_on_error<T>(body: impl FnOnce() -> Result<T>) -> Result<T> {
    DROPPED_TAILS.with(|t| t.borrow_mut().clear());
    let result = body();
    let tails = DROPPED_TAILS.with(|t| std::mem::take(&mut *t.borrow_mut()));
    if result.is_err() {
        for (name, log, tail) in tails {
            print_tail(&name, &log, &tail);
        }
    }
    result
}

#[allow(clippy::print_stderr)] // the harness's one job on failure: show the logs
fn print_tail(name: &str, log: &Path, tail: &str) {
    eprintln!(
        "\n---- log tail of {name} ({}) ----\n{tail}\n---- end of {name} ----",
        log.display()
    );
}

/// What to spawn: program, arguments, environment and an optional user.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Extra environment variables.
    pub env: Vec<(OsString, OsString)>,
    /// Run as this (uid, gid) (e.g. PostgreSQL, which refuses root).
    pub user: Option<(u32, u32)>,
    /// Signal sent on drop before SIGKILL (e.g. `INT` for PostgreSQL's fast
    /// shutdown); `None` kills at once.
    pub stop_signal: Option<&'static str>,
    /// Run pinned to this CPU list (`taskset -c` syntax, e.g. `"1"` or
    /// `"2-3"`): the program is started through `taskset`, which execs it, so
    /// the pid is the program's and every thread it starts inherits the mask.
    pub cpus: Option<String>,
}

impl Spec {
    /// A spec running `program` with no arguments.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Spec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            user: None,
            stop_signal: None,
            cpus: None,
        }
    }

    /// Pins the process to `cpus` (`taskset -c` syntax).
    pub fn cpus(mut self, cpus: impl Into<String>) -> Self {
        self.cpus = Some(cpus.into());
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A running (or stopped) child process whose stdout and stderr go to a log
/// file. Dropping it stops the child (its `stop_signal`, then SIGKILL) and
/// waits for it; then its log tail is printed to stderr if the thread is
/// panicking, or kept for [`logs_on_error`] otherwise.
pub struct Process {
    name: String,
    spec: Spec,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Spawns `spec`, appending its output to `log`.
    ///
    /// # Errors
    /// The log cannot be opened or the program cannot be started.
    pub fn spawn(name: &str, spec: Spec, log: &Path) -> Result<Self> {
        let mut p = Process {
            name: name.to_owned(),
            spec,
            log: log.to_owned(),
            child: None,
        };
        p.start()?;
        Ok(p)
    }

    fn start(&mut self) -> Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening log {}", self.log.display()))?;
        writeln!(file, "==== harness: starting {} ====", self.name)?;
        let err = file.try_clone()?;
        let mut cmd = match &self.spec.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&self.spec.program);
                c
            }
            None => Command::new(&self.spec.program),
        };
        cmd.args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        if let Some((uid, gid)) = self.spec.user {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", self.name, self.spec.program.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// The component's name (for messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The OS process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once the child has exited, `None` while it runs (or
    /// when it was never started / already reaped by [`Process::kill9`]).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Whether the child is alive.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }

    /// Fails with the log tail unless the child is alive.
    ///
    /// # Errors
    /// The process has exited (or was killed).
    pub fn assert_running(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let exit = self.exited();
        bail!(
            "{} is not running (exit: {exit:?}); log tail:\n{}",
            self.name,
            self.log_tail()
        )
    }

    /// SIGKILLs the child and reaps it.
    ///
    /// # Errors
    /// The kill failed.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().with_context(|| format!("reaping {}", self.name))?;
        }
        Ok(())
    }

    /// Sends SIGHUP (reload).
    ///
    /// # Errors
    /// Not running, or `kill` failed.
    pub fn sighup(&self) -> Result<()> {
        self.signal("HUP")
    }

    /// Sends signal `sig` (a name such as `TERM`) with `kill(1)`.
    ///
    /// # Errors
    /// Not running, or `kill` failed.
    pub fn signal(&self, sig: &str) -> Result<()> {
        let Some(pid) = self.pid() else {
            bail!("{} is not running", self.name);
        };
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -{sig} {pid} ({}) failed: {status}", self.name);
        }
        Ok(())
    }

    /// Starts the same command again (after [`Process::kill9`] or an exit),
    /// appending to the same log.
    ///
    /// # Errors
    /// As [`Process::spawn`].
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        self.start()
    }

    /// The last few KiB of the log.
    pub fn log_tail(&self) -> String {
        tail(&self.log, TAIL_BYTES)
    }

    /// The whole log as text (lossy).
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        if let (Some(sig), Ok(None)) = (self.spec.stop_signal, c.try_wait()) {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
        let tail = self.log_tail();
        if std::thread::panicking() {
            print_tail(&self.name, &self.log, &tail);
        } else {
            let entry = (self.name.clone(), self.log.clone(), tail);
            let _ = DROPPED_TAILS.try_with(|t| t.borrow_mut().push(entry));
        }
    }
}

/// The last `max` bytes of a file, lossily decoded.
pub fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
