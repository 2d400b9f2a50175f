//! Hidden subcommands `__gateway` and `__sidecar`: run a data-path component
//! in this process, so `dev up` needs no other binary than its own.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `__gateway` / `__sidecar`.
#[derive(Debug, Args)]
pub(crate) struct ComponentArgs {
    /// Exit (SIGTERM) when this process, our parent, goes away.
    #[arg(long)]
    pub(crate) parent_pid: Option<u32>,
    /// Passed to the component as its command line, e.g. `--config FILE`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub(crate) args: Vec<OsString>,
}

/// `meshctl __gateway ARGS` = `mesh-gateway ARGS`.
pub(super) fn run_gateway(args: ComponentArgs) -> ExitCode {
    if let Some(code) = crate::dev::orphan_guard(args.parent_pid) {
        return code;
    }
    mesh_gateway::run_cli(program("mesh-gateway", args.args))
}

/// `meshctl __sidecar ARGS` = `mesh-sidecar ARGS`.
pub(super) fn run_sidecar(args: ComponentArgs) -> ExitCode {
    if let Some(code) = crate::dev::orphan_guard(args.parent_pid) {
        return code;
    }
    mesh_sidecar::run_cli(program("mesh-sidecar", args.args))
}

fn program(name: &str, args: Vec<OsString>) -> Vec<OsString> {
    std::iter::once(OsString::from(name)).chain(args).collect()
}
