//! Guaranteed teardown of the namespaces the harness creates, in three
//! layers:
//!
//! 1. `Drop` of [`Namespaces`] deletes them (also while unwinding a panic);
//! 2. a process-wide SIGINT/SIGTERM hook ([`install_signal_hook`]) deletes
//!    every namespace still registered, then exits with `128 + signal`;
//! 3. names carry the creating pid (`isthmus-<pid>-…`), so [`sweep`] at the
//!    next start deletes the leftovers of a run that was SIGKILLed.
//!
//! TUN devices need none of this: their only file descriptors belong to this
//! process, and the kernel deletes a non-persistent TUN when they close.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Mutex, Once};

use anyhow::{bail, Context, Result};

/// Prefix of every namespace the harness creates.
pub const PREFIX: &str = "isthmus-";

/// Namespaces alive in this process, for the signal hook.
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static HOOK: Once = Once::new();

/// Namespaces owned by one harness; deleted on drop.
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates namespace `name` (registered first, so a signal during
    /// creation still removes it).
    ///
    /// # Errors
    /// `ip netns add` failed.
    pub fn add(&mut self, name: &str) -> Result<()> {
        live().insert(name.to_owned());
        self.names.push(name.to_owned());
        ip(&["netns", "add", name])
    }

    /// The namespaces, in creation order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in self.names.drain(..).rev() {
            delete(&name);
            live().remove(&name);
        }
    }
}

/// Runs `ip <args>`, failing with its stderr.
///
/// # Errors
/// `ip` could not run or exited non-zero.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces `ip netns list` shows.
///
/// # Errors
/// `ip` could not run or failed.
pub fn list() -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("running `ip netns list`")?;
    if !out.status.success() {
        bail!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Deletes the harness's namespaces whose creating process is gone.
///
/// # Errors
/// `ip netns list` failed.
pub fn sweep() -> Result<Vec<String>> {
    let mut swept = Vec::new();
    for name in list()? {
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete(&name);
            swept.push(name);
        }
    }
    Ok(swept)
}

/// Installs (once per process) a thread that, on SIGINT or SIGTERM, deletes
/// every live namespace and exits with `128 + signal`. The test process then
/// no longer dies of the default action: this hook is what ends it.
///
/// # Errors
/// The signal handlers could not be registered.
pub fn install_signal_hook() -> Result<()> {
    let mut result = Ok(());
    HOOK.call_once(|| result = spawn_hook());
    result
}

fn spawn_hook() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("building the signal hook's runtime")?;
    let (mut int, mut term) = {
        let _guard = rt.enter();
        (
            signal(SignalKind::interrupt()).context("SIGINT handler")?,
            signal(SignalKind::terminate()).context("SIGTERM handler")?,
        )
    };
    std::thread::Builder::new()
        .name("isthmus-netns-signals".into())
        .spawn(move || {
            let code = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => 130,
                    _ = term.recv() => 143,
                }
            });
            let names = std::mem::take(&mut *live());
            for name in names.iter().rev() {
                delete(name);
            }
            std::process::exit(code);
        })
        .context("spawning the signal hook thread")?;
    Ok(())
}

fn delete(name: &str) {
    // Best effort: a namespace already gone is fine, and there is nobody to
    // report a failure to during teardown but the log.
    if let Err(e) = ip(&["netns", "delete", name]) {
        warn(&format!("{e:#}"));
    }
}

#[allow(clippy::print_stderr)] // teardown has no caller to return the error to
fn warn(msg: &str) {
    eprintln!("isthmus netns teardown: {msg}");
}

fn live() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    // A panic while holding this lock leaves a valid set; keep using it.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}
