//! `meshctl link CTX-A CTX-B`, the two-step `link --create-token` /
//! `link --token-file`, and `meshctl unlink`.
//!
//! One step: a single-use peering token is created on A
//! (`POST /v1/peering/tokens`) and redeemed on B (`POST /v1/peering/redeem`);
//! B's controller then calls A's to exchange bundles, endpoints and gateway
//! addresses. Two steps, where one operator cannot reach both: the token is
//! written out on A and carried to B (as Consul and Skupper do).

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use clap::{ArgGroup, Args};

use super::{parse_duration, usage, Target};
use crate::api::{Client, Peer};
use crate::output::Console;

/// Arguments of `link`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["from", "create_token", "token_file"])))]
pub(crate) struct LinkArgs {
    /// The context of the cluster that issues the token (A).
    #[arg(requires = "to", conflicts_with_all = ["create_token", "token_file", "context"])]
    pub(crate) from: Option<String>,
    /// The context of the cluster that redeems it (B).
    pub(crate) to: Option<String>,
    /// Step one: create a peering token on this context and print it (or
    /// write it to --output-file).
    #[arg(long, conflicts_with = "token_file")]
    pub(crate) create_token: bool,
    /// Step two: redeem the token in FILE (- for stdin) on this context.
    #[arg(long, value_name = "FILE")]
    pub(crate) token_file: Option<String>,
    /// How long the peering token stays valid.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub(crate) ttl: Duration,
    /// With --create-token: write the token to FILE (mode 0600) instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE", requires = "create_token")]
    pub(crate) output_file: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) target: Target,
}

/// Arguments of `unlink`.
#[derive(Debug, Args)]
pub(crate) struct UnlinkArgs {
    /// A peer cluster's name (unlinked from --context), or the first of two
    /// contexts.
    pub(crate) first: String,
    /// The second context: unlink the two contexts' clusters.
    #[arg(conflicts_with = "context")]
    pub(crate) second: Option<String>,
    #[command(flatten)]
    pub(crate) target: Target,
}

/// Runs `link`.
pub(super) async fn link(args: LinkArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    if let (Some(from), Some(to)) = (&args.from, &args.to) {
        if from == to {
            return usage(format!("cannot link context {from:?} with itself"));
        }
        let a = args.target.client_for(from)?;
        let b = args.target.client_for(to)?;
        let token = a
            .create_peering_token(args.ttl)
            .await
            .with_context(|| format!("creating a peering token on context {from}"))?;
        console.ok(&format!(
            "peering token created on {} (expires {})",
            a.context(),
            token.expires_at
        ));
        let peer = b
            .redeem(&token.token)
            .await
            .with_context(|| format!("redeeming {from}'s token on context {to}"))?;
        console.ok(&linked_line(&b, &peer));
        return Ok(ExitCode::SUCCESS);
    }
    let client = args.target.client()?;
    if args.create_token {
        let token = client.create_peering_token(args.ttl).await?;
        match &args.output_file {
            Some(path) => {
                write_secret(path, &token.token)?;
                console.ok(&format!(
                    "peering token of {} written to {} (single use, expires {}); on the other side: meshctl link --token-file {}",
                    client.context(),
                    path.display(),
                    token.expires_at,
                    path.display()
                ));
            }
            None => console.line(&token.token),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(file) = &args.token_file else {
        return usage("give CTX-A CTX-B, --create-token or --token-file FILE");
    };
    let token = read_token(file)?;
    let peer = client.redeem(&token).await?;
    console.ok(&linked_line(&client, &peer));
    Ok(ExitCode::SUCCESS)
}

/// Runs `unlink`.
pub(super) async fn unlink(args: UnlinkArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let (client, cluster) = match &args.second {
        Some(second) => {
            let a = args.target.client_for(&args.first)?;
            let b = args.target.client_for(second)?;
            let value = b.status_value().await.with_context(|| {
                format!(
                    "reading the cluster name of context {second} (if it is gone, run: meshctl unlink CLUSTER --context {})",
                    args.first
                )
            })?;
            let status = crate::status::Status::decode(value)
                .with_context(|| format!("status of context {second}"))?;
            if status.cluster.is_empty() {
                return Err(anyhow!(
                    "context {second}: the controller did not name its cluster"
                ));
            }
            (a, status.cluster)
        }
        None => (args.target.client()?, args.first.clone()),
    };
    client.unlink(&cluster).await?;
    console.ok(&format!(
        "unlinked {cluster} from {} (both sides)",
        client.context()
    ));
    Ok(ExitCode::SUCCESS)
}

fn linked_line(client: &Client, peer: &Peer) -> String {
    format!(
        "{} linked with {} (trust domain {})",
        client.context(),
        peer.cluster,
        peer.trust_domain
    )
}

fn read_token(file: &str) -> anyhow::Result<String> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read the token from stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read token file {file}"))?
    };
    let token = text.trim();
    if token.is_empty() {
        return usage(format!("token file {file} is empty"));
    }
    Ok(token.to_owned())
}

/// Writes `secret` and a newline to `path`, readable by the owner only.
fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("write {}", path.display()))
}
