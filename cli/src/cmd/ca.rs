//! `meshctl ca rotate`.

use std::process::ExitCode;

use clap::Args;

use super::Target;
use crate::output::Console;

/// Arguments of `ca rotate`.
#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    #[command(flatten)]
    pub(crate) target: Target,
}

/// Runs `ca rotate` (`POST /v1/ca/rotate`).
pub(super) async fn rotate(args: RotateArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let client = args.target.client()?;
    let sequence = client.rotate_ca().await?;
    console.ok(&format!(
        "root rotation started on {}: new root sequence {sequence} (published in the trust bundle now; SVIDs switch after the peers' refresh window)",
        client.context()
    ));
    Ok(ExitCode::SUCCESS)
}
