//! `meshctl dev down`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::dev;
use crate::output::Console;

/// Arguments of `dev down`.
#[derive(Debug, Args)]
pub(crate) struct DevDownArgs {
    /// The `--state-dir` the `dev up` to stop was started with.
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: PathBuf,
}

/// Stops a `dev up` started with `--state-dir`, as Ctrl-C in its terminal
/// would, and waits until it has torn everything down.
pub(super) fn run(args: DevDownArgs) -> ExitCode {
    super::init_logs("warn");
    let mut console = Console::stdout();
    let runtime = match super::current_thread_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            console.fail(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dev::down(&args.state_dir, &mut console)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            console.fail(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command, DevCommand};
    use clap::Parser as _;

    #[test]
    fn dev_down_needs_the_state_dir() {
        let cli = Cli::try_parse_from(["meshctl", "dev", "down", "--state-dir", "/s"]).unwrap();
        let Command::Dev {
            command: DevCommand::Down(args),
        } = cli.command
        else {
            panic!("not dev down: {cli:?}");
        };
        assert_eq!(args.state_dir, std::path::PathBuf::from("/s"));
        assert!(Cli::try_parse_from(["meshctl", "dev", "down"]).is_err());
    }

    #[test]
    fn the_hidden_controller_command_passes_its_arguments_through() {
        let cli = Cli::try_parse_from([
            "meshctl",
            "__controller",
            "--parent-pid",
            "7",
            "--config",
            "/s/cluster-a/controller.yaml",
            "--log",
            "info",
        ])
        .unwrap();
        let Command::Controller(args) = cli.command else {
            panic!("not the controller: {cli:?}");
        };
        assert_eq!(args.parent_pid, Some(7));
        assert_eq!(
            args.args,
            ["--config", "/s/cluster-a/controller.yaml", "--log", "info"]
        );
    }
}
