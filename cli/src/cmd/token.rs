//! `meshctl token create --namespace NS --service-account SA [--ttl 1h]`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, Target};
use crate::output::{render, Console, Format};

/// Arguments of `token create`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The namespace the token may sign SVIDs for.
    #[arg(short, long)]
    pub(crate) namespace: String,
    /// The service account the token may sign SVIDs for.
    #[arg(long, value_name = "SA")]
    pub(crate) service_account: String,
    /// How long the token is valid.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub(crate) ttl: Duration,
    /// Output: table prints the bare token (for `$(meshctl token create …)`),
    /// json and yaml the token and its expiry.
    #[arg(short, long, value_enum, default_value_t)]
    pub(crate) output: Format,
    #[command(flatten)]
    pub(crate) target: Target,
}

/// Runs `token create`.
pub(super) async fn create(args: CreateArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let client = args.target.client()?;
    let token = client
        .create_join_token(&args.namespace, &args.service_account, args.ttl)
        .await?;
    match render(args.output, &token) {
        Some(text) => console.print(&text),
        None => console.line(&token.token),
    }
    Ok(ExitCode::SUCCESS)
}
