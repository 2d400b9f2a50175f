//! Finding the `mesh-gateway`, `mesh-sidecar` and `mesh-controller` binaries
//! next to the running test (or bench) executable, building them once if they
//! are missing.
//!
//! A test executable lives in `<target>/<profile>/deps/`; the binaries of the
//! same profile are in `<target>/<profile>/`. So any `CARGO_TARGET_DIR` and
//! either profile work. When a binary is missing the harness runs
//! `cargo build [--release] -p mesh-gateway -p mesh-sidecar -p mesh-controller`
//! with that target dir, once per process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

/// The data-path binaries and the controller.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `mesh-gateway`.
    pub gateway: PathBuf,
    /// `mesh-sidecar`.
    pub sidecar: PathBuf,
    /// `mesh-controller` (package `mesh-controller`).
    pub controller: PathBuf,
}

static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();

/// The binaries of the current profile, built if missing (once per process).
///
/// # Errors
/// The profile dir cannot be found from `current_exe`, or `cargo build`
/// failed.
pub fn binaries() -> Result<Binaries> {
    BINARIES
        .get_or_init(|| locate_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn locate_or_build() -> Result<Binaries> {
    let profile_dir = profile_dir()?;
    let bins = Binaries {
        gateway: profile_dir.join("mesh-gateway"),
        sidecar: profile_dir.join("mesh-sidecar"),
        controller: profile_dir.join("mesh-controller"),
    };
    if bins.gateway.is_file() && bins.sidecar.is_file() && bins.controller.is_file() {
        return Ok(bins);
    }
    build(&profile_dir)?;
    for b in [&bins.gateway, &bins.sidecar, &bins.controller] {
        if !b.is_file() {
            bail!("cargo build succeeded but {} is still missing", b.display());
        }
    }
    Ok(bins)
}

/// `<target>/<profile>`: the parent of the executable, skipping `deps`.
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", exe.display()))?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent", dir.display()))?;
    }
    Ok(dir.to_owned())
}

fn build(profile_dir: &Path) -> Result<()> {
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", profile_dir.display()))?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("bad profile dir {}", profile_dir.display()))?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("Cargo.toml"))
        .ok_or_else(|| anyhow!("no workspace root"))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "-p",
            "mesh-gateway",
            "-p",
            "mesh-sidecar",
            "-p",
            "mesh-controller",
        ])
        .env("CARGO_TARGET_DIR", target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    #[allow(clippy::print_stderr)] // tell the person waiting why it takes a while
    {
        eprintln!(
            "multicluster-tests: binaries missing in {}; running {cmd:?}",
            profile_dir.display()
        );
    }
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
