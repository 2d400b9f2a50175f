//! `meshctl`: the Isthmus operator CLI.
//!
//! What it owns: the command line, the contexts file (`contexts.rs`), a
//! typed client of the controller's admin REST API (`api.rs`), the checks of
//! `meshctl check` (`status.rs`), and the local multi-cluster runner behind
//! `dev up`, which runs a controller per cluster, sets the mesh up through
//! their admin API (link, join tokens, exports) and runs every component as
//! a child process by re-executing this binary with a hidden subcommand
//! (`__controller`, `__gateway`, `__sidecar`, `__demo-app`).
//!
//! What it does not own: the control plane and the data path themselves
//! (`mesh-controller`, `mesh-gateway` and `mesh-sidecar` are libraries
//! called through their `run_cli`) and the trust rules (`trust-bundle`).

mod api;
mod cmd;
mod contexts;
mod demo;
mod dev;
mod documents;
mod http;
mod kinds;
mod output;
mod status;

use std::process::ExitCode;

fn main() -> ExitCode {
    cmd::run(std::env::args_os())
}
