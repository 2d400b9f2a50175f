//! What the report says about the machine and the programs: CPU model,
//! usable cores, kernel, date, and the versions of every program measured.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use time::OffsetDateTime;

use super::proxies::ProxyKind;
use super::report::Machine;
use crate::tools::{require, Tool};

/// The machine, now.
pub fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cpu_model,
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        kernel,
        date_utc: date_utc(),
    }
}

/// Now, UTC, `YYYY-MM-DD HH:MM:SS`.
pub fn date_utc() -> String {
    let t = OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Now, UTC, `YYYYMMDD-HHMMSS` (for file names).
pub fn stamp_utc() -> String {
    date_utc().replace(['-', ':'], "").replace(' ', "-")
}

/// Versions of the isthmus tree (git commit, `-dirty` with uncommitted
/// changes to tracked files), Envoy, HAProxy, nginx, h2load and iperf3;
/// `unavailable: …` for a missing one.
pub fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("isthmus".into(), git_commit());
    for kind in ProxyKind::ALL {
        let text = kind
            .binary()
            .and_then(|b| kind.version_of(&b))
            .unwrap_or_else(|e| format!("unavailable: {e}"));
        v.insert(kind.name().into(), text);
    }
    for (tool, flag) in [
        (Tool::Nginx, "-v"),
        (Tool::H2load, "--version"),
        (Tool::Iperf3, "--version"),
    ] {
        let text = require(tool)
            .ok()
            .and_then(|p| first_line(&p, flag))
            .unwrap_or_else(|| "unavailable".into());
        v.insert(tool.command().into(), text);
    }
    v
}

/// The first non-empty line a program prints (stdout, else stderr) for
/// `flag`.
fn first_line(program: &Path, flag: &str) -> Option<String> {
    let out = Command::new(program).arg(flag).output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

fn git_commit() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_have_the_documented_shapes() {
        let d = date_utc();
        assert_eq!(d.len(), 19, "{d}");
        assert_eq!(&d[4..5], "-");
        let s = stamp_utc();
        assert_eq!(s.len(), 15, "{s}");
        assert_eq!(&s[8..9], "-");
        assert!(s.chars().filter(|c| *c != '-').all(|c| c.is_ascii_digit()));
    }
}
