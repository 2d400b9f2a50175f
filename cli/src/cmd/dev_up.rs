//! `meshctl dev up`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::dev::{self, DEFAULT_PORT_BASE};
use crate::output::Console;

/// Arguments of `dev up`.
#[derive(Debug, Args)]
pub(crate) struct DevUpArgs {
    /// Keep configs, keys and logs in DIR (kept on exit) instead of a fresh
    /// temp dir removed on exit.
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Every port is N plus a fixed offset; the default gives apps on 8080,
    /// sidecar admin 15000, inbound 15006, gateway admin 15021, gateway QUIC
    /// 15443 (UDP), sidecar outbound 18080 and 18081.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PORT_BASE)]
    pub(crate) port_base: u16,
    /// Background requests per second from the frontend to each upstream.
    #[arg(long, value_name = "R", default_value_t = 5.0)]
    pub(crate) rate: f64,
}

/// Runs `dev up` on a single-threaded runtime (children are spawned from the
/// main thread, so their parent-death signal follows meshctl itself).
pub(super) fn run(args: DevUpArgs) -> ExitCode {
    super::init_logs("warn");
    let mut console = Console::stdout();
    let runtime = match super::current_thread_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            console.fail(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let options = dev::Options {
        state_dir: args.state_dir,
        port_base: args.port_base,
        rate: args.rate,
    };
    match runtime.block_on(dev::up(options, &mut console)) {
        Ok(code) => code,
        Err(e) => {
            console.fail(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `meshctl __controller ARGS` = `mesh-controller ARGS`: the federation
/// controller `dev up` runs per cluster.
pub(super) fn run_controller(args: super::component::ComponentArgs) -> ExitCode {
    if let Some(code) = dev::orphan_guard(args.parent_pid) {
        return code;
    }
    mesh_controller::run_cli(
        std::iter::once(std::ffi::OsString::from("mesh-controller")).chain(args.args),
    )
}
