//! `dev-up.pid` in the state dir: how `meshctl dev down --state-dir DIR`
//! finds the `dev up` to stop. `dev up` writes it at start and removes it
//! at exit; `dev down` sends that process SIGTERM (the same teardown as
//! Ctrl-C) and waits for it to exit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use rustix::process::{kill_process, Pid, Signal};

/// The file name in the state dir.
pub(crate) const FILE: &str = "dev-up.pid";
/// Between two checks whether the process is gone.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The pid file of a running `dev up`; removed on drop.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes our pid into `state/dev-up.pid`.
    ///
    /// # Errors
    /// Another `dev up` runs with this state dir, or the file cannot be
    /// written.
    pub(crate) fn create(state: &Path) -> anyhow::Result<Self> {
        let path = state.join(FILE);
        if let Ok(Some(pid)) = read(&path) {
            if is_dev_up(pid) {
                bail!(
                    "another dev up (pid {}) runs with {}; stop it with `meshctl dev down --state-dir {}`",
                    pid.as_raw_nonzero(),
                    state.display(),
                    state.display()
                );
            }
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .with_context(|| format!("write {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Gone already (a removed temp state dir) is fine.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Stops the `dev up` running with `state`: SIGTERM, then waits up to
/// `patience` for it to exit. Returns its pid.
///
/// # Errors
/// No pid file, no such process (a stale file), a process that is not
/// `dev up`, or no exit within `patience`.
pub(crate) async fn stop(state: &Path, patience: Duration) -> anyhow::Result<i32> {
    let path = state.join(FILE);
    let pid = read(&path)
        .with_context(|| format!("no dev up runs with {}", state.display()))?
        .ok_or_else(|| anyhow!("{}: not a process id", path.display()))?;
    let raw = pid.as_raw_nonzero().get();
    if !is_dev_up(pid) {
        bail!(
            "{}: process {raw} is not a running `meshctl dev up` (stale file?)",
            path.display()
        );
    }
    kill_process(pid, Signal::TERM).with_context(|| format!("SIGTERM to {raw}"))?;
    let deadline = tokio::time::Instant::now() + patience;
    // A zombie (exited, not yet reaped by its parent) has an empty command
    // line: it counts as gone.
    while is_dev_up(pid) {
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "dev up (pid {raw}) still runs {}s after SIGTERM",
                patience.as_secs()
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok(raw)
}

/// The pid in `path`; `Ok(None)` when the file holds no valid pid.
fn read(path: &Path) -> std::io::Result<Option<Pid>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.trim().parse::<i32>().ok().and_then(Pid::from_raw))
}

/// Whether `pid` runs `… dev up …` (guards against a recycled pid).
fn is_dev_up(pid: Pid) -> bool {
    let cmdline = format!("/proc/{}/cmdline", pid.as_raw_nonzero());
    match std::fs::read(cmdline) {
        Ok(bytes) => {
            let args: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
            args.windows(2).any(|w| w[0] == b"dev" && w[1] == b"up")
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_holds_our_pid_and_goes_away_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let file = PidFile::create(dir.path()).unwrap();
        let pid = read(&dir.path().join(FILE)).unwrap().unwrap();
        assert_eq!(pid.as_raw_nonzero().get() as u32, std::process::id());
        drop(file);
        assert!(!dir.path().join(FILE).exists());
    }

    #[tokio::test]
    async fn down_refuses_a_process_that_is_not_dev_up() {
        let dir = tempfile::tempdir().unwrap();
        // The test binary itself: alive, but not `dev up`.
        std::fs::write(dir.path().join(FILE), std::process::id().to_string()).unwrap();
        let err = stop(dir.path(), Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a running `meshctl dev up`"), "{err}");
    }

    #[tokio::test]
    async fn down_without_a_pid_file_names_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!(
            "{:#}",
            stop(dir.path(), Duration::from_secs(1)).await.unwrap_err()
        );
        assert!(err.contains("no dev up runs with"), "{err}");
    }
}
