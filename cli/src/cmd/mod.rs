//! The command line: one file per subcommand, dispatched from [`run`].

mod component;
mod demo_app;
mod dev_down;
mod dev_up;
mod version;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Console;

/// meshctl: operate Isthmus, the multi-cluster federation service mesh.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print meshctl's version.
    Version,
    /// Local development: run whole meshes on this machine.
    Dev {
        #[command(subcommand)]
        command: DevCommand,
    },
    /// Run the east-west gateway in this process (used by `dev up`).
    #[command(name = "__gateway", hide = true)]
    Gateway(component::ComponentArgs),
    /// Run a sidecar in this process (used by `dev up`).
    #[command(name = "__sidecar", hide = true)]
    Sidecar(component::ComponentArgs),
    /// Run a federation controller in this process (used by `dev up`).
    #[command(name = "__controller", hide = true)]
    Controller(component::ComponentArgs),
    /// Run a demo workload in this process (used by `dev up`).
    #[command(name = "__demo-app", hide = true)]
    DemoApp(demo_app::DemoAppArgs),
}

#[derive(Debug, Subcommand)]
enum DevCommand {
    /// Start two linked clusters on loopback (cluster-a on 127.0.1.x,
    /// cluster-b on 127.0.2.x) with gateways, sidecars and demo workloads;
    /// Ctrl-C tears everything down.
    Up(dev_up::DevUpArgs),
    /// Stop a `dev up` started with --state-dir (from another terminal).
    Down(dev_down::DevDownArgs),
}

/// Parses `args` (the first item is the program name) and runs the command.
pub(crate) fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // Help and version go to stdout with status 0, errors to stderr with 2.
        Err(err) => err.exit(),
    };
    match cli.command {
        Command::Version => version::run(&mut Console::stdout()),
        Command::Dev {
            command: DevCommand::Up(args),
        } => dev_up::run(args),
        Command::Dev {
            command: DevCommand::Down(args),
        } => dev_down::run(args),
        Command::Controller(args) => dev_up::run_controller(args),
        Command::Gateway(args) => component::run_gateway(args),
        Command::Sidecar(args) => component::run_sidecar(args),
        Command::DemoApp(args) => demo_app::run(args),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `default_filter`).
pub(crate) fn init_logs(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn hidden_component_commands_pass_their_arguments_through() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "__gateway",
            "--parent-pid",
            "42",
            "--config",
            "/x/gateway.yaml",
        ])
        .unwrap();
        let Command::Gateway(args) = cli.command else {
            panic!("not a gateway command: {cli:?}");
        };
        assert_eq!(args.parent_pid, Some(42));
        assert_eq!(args.args, vec!["--config", "/x/gateway.yaml"]);
    }

    #[test]
    fn dev_up_defaults() {
        let cli = Cli::try_parse_from(["meshctl", "dev", "up"]).unwrap();
        let Command::Dev {
            command: DevCommand::Up(args),
        } = cli.command
        else {
            panic!("not dev up: {cli:?}");
        };
        assert_eq!(args.port_base, crate::dev::DEFAULT_PORT_BASE);
        assert_eq!(args.state_dir, None);
        assert!((args.rate - 5.0).abs() < f64::EPSILON);
    }

    #[test]
    fn help_hides_internal_commands() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("dev"), "{help}");
        assert!(!help.contains("__gateway"), "{help}");
    }
}
