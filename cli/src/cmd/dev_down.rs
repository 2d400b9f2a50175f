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
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
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
