//! `meshctl status [-o table|json|yaml]`: the controller's `GET /v1/status`.

use std::process::ExitCode;

use clap::Args;

use super::Target;
use crate::output::{render, Console, Format};
use crate::status::{summary, Status};

/// Arguments of `status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Output format (json and yaml show the server's answer as it is).
    #[arg(short, long, value_enum, default_value_t)]
    pub(crate) output: Format,
    #[command(flatten)]
    pub(crate) target: Target,
}

/// Runs `status`.
pub(super) async fn run(args: StatusArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let client = args.target.client()?;
    let value = client.status_value().await?;
    match render(args.output, &value) {
        Some(text) => console.print(&text),
        None => console.print(&summary(&Status::decode(value)?)),
    }
    Ok(ExitCode::SUCCESS)
}
