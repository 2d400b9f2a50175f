//! Child processes of `dev up`: spawn (re-executing meshctl), watch for
//! unexpected exits, stop them all (SIGTERM, grace period, SIGKILL).
//!
//! Children never outlive meshctl: each gets its own process group (so a
//! terminal Ctrl-C reaches only meshctl, which then stops them in order),
//! `kill_on_drop`, and a parent-death signal set by the child itself (see
//! [`super::orphan_guard`]) for when meshctl is killed outright.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use rustix::process::{kill_process, Pid, Signal};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A child that ended while it was supposed to run.
#[derive(Debug)]
pub(crate) struct Exit {
    /// Its display name, e.g. `gateway cluster-a`.
    pub(crate) name: String,
    /// Its log file (stdout and stderr).
    pub(crate) log: PathBuf,
    /// How it ended.
    pub(crate) status: std::io::Result<ExitStatus>,
}

/// Owns the children of one `dev up` run.
pub(crate) struct Supervisor {
    exe: PathBuf,
    log_dir: PathBuf,
    tasks: Vec<JoinHandle<()>>,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits_rx: mpsc::UnboundedReceiver<Exit>,
    stop_tx: watch::Sender<bool>,
    grace: Duration,
}

impl Supervisor {
    /// Children run `exe` (this binary); logs go to `log_dir/<file>.log`;
    /// on stop each child gets `grace` between SIGTERM and SIGKILL.
    pub(crate) fn new(exe: PathBuf, log_dir: PathBuf, grace: Duration) -> Self {
        let (exits_tx, exits_rx) = mpsc::unbounded_channel();
        let (stop_tx, _) = watch::channel(false);
        Self {
            exe,
            log_dir,
            tasks: Vec::new(),
            exits_tx,
            exits_rx,
            stop_tx,
            grace,
        }
    }

    /// Runs `exe <args>` as `name`, logging to `log_dir/<log_name>.log`.
    /// Returns the log path.
    ///
    /// # Errors
    /// The log file cannot be created or the process cannot be spawned.
    pub(crate) fn spawn(
        &mut self,
        name: &str,
        log_name: &str,
        args: Vec<OsString>,
    ) -> anyhow::Result<PathBuf> {
        let log = self.log_dir.join(format!("{log_name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("create log {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("open log {}", log.display()))?;
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            // Logs go to files: no colour escapes in them.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("start {name} ({})", self.exe.display()))?;
        let pid = child.id().and_then(|id| Pid::from_raw(id as i32));
        let exits = self.exits_tx.clone();
        let mut stop = self.stop_tx.subscribe();
        let grace = self.grace;
        let (name, log_path) = (name.to_owned(), log.clone());
        self.tasks.push(tokio::spawn(async move {
            tokio::select! {
                status = child.wait() => {
                    let _ = exits.send(Exit { name, log: log_path, status });
                }
                // A dropped sender (supervisor gone) also means stop.
                () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                    if let Some(pid) = pid {
                        // ESRCH: it is already gone, which is what we want.
                        let _ = kill_process(pid, Signal::TERM);
                    }
                    if tokio::time::timeout(grace, child.wait()).await.is_err() {
                        tracing::warn!(child = %name, "no exit after SIGTERM, killing");
                        let _ = child.kill().await;
                    }
                }
            }
        }));
        Ok(log)
    }

    /// Waits for the next child that exits on its own.
    pub(crate) async fn next_exit(&mut self) -> Exit {
        match self.exits_rx.recv().await {
            Some(exit) => exit,
            // Invariant: `self` holds a sender, so the channel never closes.
            None => unreachable!("the supervisor holds a sender"),
        }
    }

    /// Stops every child (SIGTERM, then SIGKILL after the grace period) and
    /// waits until all are gone.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop_tx.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The last `lines` lines of a log file, for a failure report.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => tail_of(&String::from_utf8_lossy(&bytes), lines),
        Err(e) => format!("(cannot read {}: {e})\n", path.display()),
    }
}

fn tail_of(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    let mut out = String::new();
    for line in &all[start..] {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_indented() {
        assert_eq!(tail_of("a\nb\nc\n", 2), "    b\n    c\n");
        assert_eq!(tail_of("a", 5), "    a\n");
        assert_eq!(tail_of("", 5), "");
    }

    #[test]
    fn tail_of_a_missing_file_says_so() {
        let msg = tail(Path::new("/nonexistent/meshctl.log"), 3);
        assert!(
            msg.contains("cannot read /nonexistent/meshctl.log"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn unexpected_exit_is_reported_and_shutdown_stops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        // `sh -c` stands in for meshctl.
        let mut sup = Supervisor::new("/bin/sh".into(), dir.path().into(), Duration::from_secs(5));
        sup.spawn(
            "quick",
            "quick",
            vec!["-c".into(), "echo bye; exit 3".into()],
        )
        .unwrap();
        let log = sup
            .spawn(
                "sleeper",
                "sleeper",
                vec!["-c".into(), "exec sleep 600".into()],
            )
            .unwrap();
        let exit = sup.next_exit().await;
        assert_eq!(exit.name, "quick");
        assert_eq!(exit.status.unwrap().code(), Some(3));
        assert!(tail(&exit.log, 5).contains("bye"));
        assert!(log.ends_with("sleeper.log"));
        tokio::time::timeout(Duration::from_secs(10), sup.shutdown())
            .await
            .expect("SIGTERM stops sleep well within the grace period");
    }
}
