//! `meshctl`: the Isthmus operator CLI.
//!
//! What it owns: the command line (`meshctl version`, `meshctl dev up`) and
//! the local multi-cluster runner behind `dev up`, which generates CAs,
//! bundles and component configs (docs/reference/data-path-config.md) and
//! runs every component as a child process by re-executing this binary with a
//! hidden subcommand (`__gateway`, `__sidecar`, `__demo-app`).
//!
//! What it does not own: the data path itself (`mesh-gateway` and
//! `mesh-sidecar` are libraries called through their `run_cli`) and the trust
//! rules (`trust-bundle`).

mod cmd;
mod demo;
mod dev;
mod http;
mod output;

use std::process::ExitCode;

fn main() -> ExitCode {
    cmd::run(std::env::args_os())
}
