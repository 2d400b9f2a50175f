//! The meshctl commands `dev up` prints next to the curls, and their check:
//! each one is run (this very binary, with `MESHCTL_CONFIG` pointing at the
//! state dir's contexts file) before it is printed, and must exit 0 and
//! show what it is said to show.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

use super::configs;
use super::control::linked;
use super::topology::{Role, Topology};
use crate::output::Hint;

/// The variable naming the contexts file (docs/reference/meshctl.md).
pub(crate) const CONFIG_ENV: &str = "MESHCTL_CONFIG";
/// Time one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// A printed meshctl command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    /// Arguments after `meshctl`.
    pub(crate) args: Vec<String>,
    /// What it shows.
    pub(crate) comment: String,
    /// Strings its output contains.
    pub(crate) expect: Vec<String>,
}

/// The commands for the dev topology: the import in the frontend's cluster,
/// the export in the exporting one, the registered workloads, the link, and
/// `check` on the current context.
pub(crate) fn commands(topology: &Topology) -> Vec<Command> {
    let mut out = Vec::new();
    let home = &topology.clusters[0];
    let ctx = |name: &str, rest: &[&str]| -> Vec<String> {
        ["--context", name]
            .iter()
            .chain(rest)
            .map(|s| (*s).to_owned())
            .collect()
    };
    for exporter in topology.clusters.iter().filter(|c| !c.exports.is_empty()) {
        let names: Vec<String> = exporter.exports.iter().map(|s| short(s)).collect();
        for importer in linked(topology, exporter) {
            out.push(Command {
                args: ctx(&importer.name, &["get", "serviceimports"]),
                comment: format!("{} imported from {}", names.join(", "), exporter.name),
                expect: names.clone(),
            });
        }
        out.push(Command {
            args: ctx(&exporter.name, &["get", "serviceexports"]),
            comment: format!("what {} exports", exporter.name),
            expect: names,
        });
    }
    let registered: Vec<String> = home
        .workloads
        .iter()
        .filter(|w| w.role == Role::Backend)
        .map(configs::workload_name)
        .collect();
    if !registered.is_empty() {
        out.push(Command {
            args: ctx(&home.name, &["get", "workloads"]),
            comment: format!("registered by their sidecars in {}, leased", home.name),
            expect: registered,
        });
    }
    out.push(Command {
        args: vec!["check".into()],
        comment: format!(
            "{}: controller, Raft, CA, peers' bundles and gateways",
            home.name
        ),
        expect: Vec::new(),
    });
    out
}

/// The commands as printed: `meshctl ARGS` when `meshctl` on `PATH` is this
/// binary, else this binary's full path.
pub(crate) fn hints(commands: &[Command]) -> Vec<Hint> {
    let program = program_name();
    commands
        .iter()
        .map(|c| Hint {
            command: format!("{program} {}", c.args.join(" ")),
            comment: c.comment.clone(),
        })
        .collect()
}

/// Runs each command against `contexts`; one `✔` line per command.
///
/// # Errors
/// A command failed, timed out or did not show what it should.
pub(crate) async fn check(commands: &[Command], contexts: &Path) -> anyhow::Result<Vec<String>> {
    let exe = std::env::current_exe().context("locate the meshctl binary")?;
    let mut done = Vec::new();
    for command in commands {
        let shown = format!("meshctl {}", command.args.join(" "));
        let output = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio::process::Command::new(&exe)
                .args(&command.args)
                .env(CONFIG_ENV, contexts)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .map_err(|_| anyhow!("{shown}: no exit within {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("run {shown}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "{shown}: {}\n{}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        if let Some(missing) = command.expect.iter().find(|e| !stdout.contains(e.as_str())) {
            bail!("{shown}: no {missing:?} in its output:\n{stdout}");
        }
        done.push(format!("{shown}: {}", summary(&stdout, &command.expect)));
    }
    Ok(done)
}

/// The output line naming the first expected string, else the last line
/// (`check`'s verdict), whitespace squeezed and a leading `✔` dropped.
fn summary(stdout: &str, expect: &[String]) -> String {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    let line = expect
        .first()
        .and_then(|e| lines.iter().find(|l| l.contains(e.as_str())))
        .or(lines.last())
        .copied()
        .unwrap_or("(no output)");
    let line = line.trim().trim_start_matches('✔').trim_start();
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn short(service: &str) -> String {
    service.rsplit('/').next().unwrap_or(service).to_owned()
}

fn program_name() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "meshctl".to_owned();
    };
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<PathBuf>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("meshctl"))
        .find(|candidate| candidate.is_file());
    let same = on_path
        .as_ref()
        .and_then(|p| p.canonicalize().ok())
        .zip(exe.canonicalize().ok())
        .is_some_and(|(a, b)| a == b);
    if same {
        "meshctl".to_owned()
    } else {
        exe.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DEFAULT_PORT_BASE;

    #[test]
    fn the_dev_commands() {
        let t = Topology::dev(DEFAULT_PORT_BASE).unwrap();
        let commands = commands(&t);
        let args: Vec<String> = commands.iter().map(|c| c.args.join(" ")).collect();
        assert_eq!(
            args,
            vec![
                "--context cluster-a get serviceimports",
                "--context cluster-b get serviceexports",
                "--context cluster-a get workloads",
                "check",
            ]
        );
        assert_eq!(commands[0].expect, vec!["backend"]);
        assert!(commands[0].comment.contains("from cluster-b"));
        assert_eq!(commands[2].expect, vec!["backend-1"]);
        let hints = hints(&commands);
        assert!(hints[3].command.ends_with(" check"), "{:?}", hints[3]);
    }

    #[test]
    fn summaries_show_the_matching_row() {
        let out = "NAMESPACE  NAME     TYPE\ndefault    backend  ClusterSetIP\n";
        assert_eq!(
            summary(out, &["backend".to_owned()]),
            "default backend ClusterSetIP"
        );
        assert_eq!(
            summary("✔ a\n✔ b\n\n✔ all 2 checks passed\n", &[]),
            "all 2 checks passed"
        );
        assert_eq!(summary("", &[]), "(no output)");
    }
}
