//! The command line: one file per subcommand, dispatched from [`run`].
//!
//! Exit codes scripts can trust: 0 success, 1 failure (unreachable
//! controller, server error, failed check), 2 usage error (bad flags,
//! unknown kind, invalid input caught before sending).

mod apply;
mod ca;
mod check;
mod component;
mod config;
mod delete;
mod demo_app;
mod dev_down;
mod dev_up;
mod export;
mod get;
mod link;
mod status;
mod token;
mod version;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::api::{ApiError, Client};
use crate::contexts::{config_path, ContextsFile};
use crate::output::Console;

/// meshctl: operate Isthmus, the multi-cluster federation service mesh.
#[derive(Debug, Parser)]
#[command(name = "meshctl", version, propagate_version = true)]
struct Cli {
    /// `--config` and `--context` before the subcommand (kubectl-style);
    /// the subcommand's own flags win.
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print meshctl's version.
    Version,
    /// Manage contexts (which controller meshctl talks to).
    Config(config::ConfigArgs),
    /// Create or update resources from files or stdin (-f -).
    Apply(apply::ApplyArgs),
    /// Delete resources by kind and name, or those named in files.
    Delete(delete::DeleteArgs),
    /// List or show resources.
    Get(get::GetArgs),
    /// Export a service to every linked cluster (applies a ServiceExport).
    Export(export::ExportArgs),
    /// Withdraw a service's export (deletes its ServiceExport).
    Unexport(export::ExportArgs),
    /// Join tokens for workloads.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The cluster's CA.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Link two clusters as peers (both contexts, or in two steps).
    Link(link::LinkArgs),
    /// Remove a link on both sides.
    Unlink(link::UnlinkArgs),
    /// Show the controller's view of the cluster.
    Status(status::StatusArgs),
    /// Check the control plane, CA, peers, gateways and exports (✔/✘);
    /// exits 1 when a check fails.
    Check(check::CheckArgs),
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
    /// cluster-b on 127.0.2.x), each with its controller, gateway, sidecars
    /// and demo workloads; Ctrl-C tears everything down.
    Up(dev_up::DevUpArgs),
    /// Stop a `dev up` started with --state-dir (from another terminal).
    Down(dev_down::DevDownArgs),
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Start a root rotation: the new root is published in the bundle first,
    /// SVIDs switch after the peers' refresh window, the old root is dropped
    /// after the SVID TTL. No other operator step.
    Rotate(ca::RotateArgs),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a join token for one namespace and service account.
    Create(token::CreateArgs),
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
    let mut console = Console::stdout();
    match cli.command {
        Command::Version => version::run(&mut console),
        Command::Config(mut args) => {
            if args.config.is_none() {
                args.config = cli.target.config;
            }
            let result = config::run(args, &mut console);
            report(&mut console, result)
        }
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
        api_command => {
            let result = run_api(api_command, &cli.target, &mut console);
            report(&mut console, result)
        }
    }
}

/// Runs a command that talks to controllers, on a current-thread runtime.
fn run_api(command: Command, top: &Target, console: &mut Console) -> anyhow::Result<ExitCode> {
    let runtime =
        current_thread_runtime().map_err(|e| anyhow::anyhow!("cannot start the runtime: {e}"))?;
    match command {
        Command::Apply(mut args) => {
            args.target.inherit(top);
            runtime.block_on(apply::run(args, console))
        }
        Command::Delete(mut args) => {
            args.target.inherit(top);
            runtime.block_on(delete::run(args, console))
        }
        Command::Get(mut args) => {
            args.target.inherit(top);
            runtime.block_on(get::run(args, console))
        }
        Command::Export(mut args) => {
            args.target.inherit(top);
            runtime.block_on(export::export(args, console))
        }
        Command::Unexport(mut args) => {
            args.target.inherit(top);
            runtime.block_on(export::unexport(args, console))
        }
        Command::Token {
            command: TokenCommand::Create(mut args),
        } => {
            args.target.inherit(top);
            runtime.block_on(token::create(args, console))
        }
        Command::Ca {
            command: CaCommand::Rotate(mut args),
        } => {
            args.target.inherit(top);
            runtime.block_on(ca::rotate(args, console))
        }
        Command::Link(mut args) => {
            args.target.inherit(top);
            runtime.block_on(link::link(args, console))
        }
        Command::Unlink(mut args) => {
            args.target.inherit(top);
            runtime.block_on(link::unlink(args, console))
        }
        Command::Status(mut args) => {
            args.target.inherit(top);
            runtime.block_on(status::run(args, console))
        }
        Command::Check(mut args) => {
            args.target.inherit(top);
            runtime.block_on(check::run(args, console))
        }
        other => Err(anyhow::anyhow!("not an API command: {other:?}")),
    }
}

/// Which contexts file and which context a command uses.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct Target {
    /// The contexts file [default: $MESHCTL_CONFIG, else
    /// $XDG_CONFIG_HOME/isthmus/meshctl.yaml, else
    /// ~/.config/isthmus/meshctl.yaml].
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The context to use instead of the current one.
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,
}

impl Target {
    /// Takes `--config`/`--context` from `outer` where this one has none.
    pub(crate) fn inherit(&mut self, outer: &Target) {
        if self.config.is_none() {
            self.config.clone_from(&outer.config);
        }
        if self.context.is_none() {
            self.context.clone_from(&outer.context);
        }
    }

    /// The contexts file's path.
    pub(crate) fn path(&self) -> anyhow::Result<PathBuf> {
        config_path(self.config.as_deref(), |name| std::env::var_os(name))
    }

    /// The contexts file (empty if missing).
    pub(crate) fn load(&self) -> anyhow::Result<ContextsFile> {
        ContextsFile::load(&self.path()?)
    }

    /// A client for `--context`, else the current context.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        self.load()?.select(self.context.as_deref())?.client()
    }

    /// A client for the context called `name`.
    pub(crate) fn client_for(&self, name: &str) -> anyhow::Result<Client> {
        self.load()?.select(Some(name))?.client()
    }
}

/// A mistake in how meshctl was called: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// `Err(UsageError)` as an `anyhow` error.
pub(crate) fn usage<T>(message: impl Into<String>) -> anyhow::Result<T> {
    Err(UsageError(message.into()).into())
}

/// The exit code of a command's result; errors are printed to stderr, a
/// server's several messages one per line.
fn report(console: &mut Console, result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            print_error(console, &err);
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Prints `err`: an HTTP error with several server messages as a header
/// line and one indented line per message.
pub(crate) fn print_error(console: &mut Console, err: &anyhow::Error) {
    match err.downcast_ref::<ApiError>() {
        Some(ApiError::Http {
            method,
            path,
            status,
            messages,
        }) if messages.len() > 1 => {
            console.fail(&format!("{method} {path}: {status}:"));
            for m in messages {
                console.detail(&format!("  {m}\n"));
            }
        }
        _ => console.fail(&format!("{err:#}")),
    }
}

/// Parses `90s`, `10m`, `1h30m`, `7d` or plain seconds.
///
/// # Errors
/// Empty, zero, unknown unit or overflow.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: use e.g. 90s, 10m, 1h30m, 7d");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return if secs == 0 {
            Err(bad())
        } else {
            Ok(Duration::from_secs(secs))
        };
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The current-thread runtime every subcommand runs on (children are spawned
/// from the main thread, so their parent-death signal follows meshctl).
pub(crate) fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
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

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("meshctl").chain(args.iter().copied()))
            .map(|c| c.command)
    }

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
        assert!(help.contains("check"), "{help}");
        assert!(!help.contains("__gateway"), "{help}");
    }

    #[test]
    fn get_flags() {
        let Command::Get(args) =
            parse(&["get", "svcex", "web", "-n", "shop", "-o", "yaml"]).unwrap()
        else {
            panic!("not get");
        };
        assert_eq!(args.kind, "svcex");
        assert_eq!(args.name.as_deref(), Some("web"));
        assert_eq!(args.namespace.as_deref(), Some("shop"));
        assert_eq!(args.output, crate::output::Format::Yaml);
        assert!(!args.all_namespaces);

        let Command::Get(args) = parse(&["get", "wl", "-A", "--context", "b"]).unwrap() else {
            panic!("not get");
        };
        assert!(args.all_namespaces);
        assert_eq!(args.target.context.as_deref(), Some("b"));
        // -A and -n exclude each other, as do -A and a name.
        assert!(parse(&["get", "wl", "-A", "-n", "x"]).is_err());
        assert!(parse(&["get", "wl", "x", "-A"]).is_err());
        assert!(parse(&["get", "wl", "-o", "xml"]).is_err());
    }

    #[test]
    fn apply_and_delete_flags() {
        let Command::Apply(args) = parse(&["apply", "-f", "a.yaml", "-f", "-"]).unwrap() else {
            panic!("not apply");
        };
        assert_eq!(args.files, vec!["a.yaml", "-"]);
        assert!(parse(&["apply"]).is_err(), "-f is required");

        let Command::Delete(args) = parse(&["delete", "svcex", "web", "-n", "shop"]).unwrap()
        else {
            panic!("not delete");
        };
        assert_eq!(args.kind.as_deref(), Some("svcex"));
        assert_eq!(args.name.as_deref(), Some("web"));
        assert_eq!(args.namespace, "shop");
        assert!(parse(&["delete", "-f", "x.yaml"]).is_ok());
        assert!(parse(&["delete", "svcex", "web", "-f", "x.yaml"]).is_err());
    }

    #[test]
    fn link_modes() {
        let Command::Link(args) = parse(&["link", "a", "b"]).unwrap() else {
            panic!("not link");
        };
        assert_eq!(args.from.as_deref(), Some("a"));
        assert_eq!(args.to.as_deref(), Some("b"));
        let Command::Link(args) =
            parse(&["link", "--create-token", "--ttl", "5m", "-o", "tok"]).unwrap()
        else {
            panic!("not link");
        };
        assert!(args.create_token);
        assert_eq!(args.ttl, Duration::from_secs(300));
        assert_eq!(args.output_file, Some(PathBuf::from("tok")));
        assert!(parse(&["link", "--token-file", "tok", "--context", "b"]).is_ok());
        assert!(parse(&["link"]).is_err(), "a mode is required");
        assert!(parse(&["link", "a"]).is_err(), "two contexts");
        assert!(parse(&["link", "a", "b", "--create-token"]).is_err());
        assert!(parse(&["link", "--create-token", "--token-file", "t"]).is_err());

        let Command::Unlink(args) = parse(&["unlink", "cluster-b"]).unwrap() else {
            panic!("not unlink");
        };
        assert_eq!(args.first, "cluster-b");
        assert_eq!(args.second, None);
    }

    #[test]
    fn token_status_check_config() {
        let Command::Token {
            command: TokenCommand::Create(args),
        } = parse(&[
            "token",
            "create",
            "--namespace",
            "shop",
            "--service-account",
            "web",
            "--ttl",
            "2h",
        ])
        .unwrap()
        else {
            panic!("not token create");
        };
        assert_eq!(args.namespace, "shop");
        assert_eq!(args.service_account, "web");
        assert_eq!(args.ttl, Duration::from_secs(7200));
        assert!(parse(&["token", "create", "--namespace", "x"]).is_err());

        let Command::Check(args) = parse(&["check", "--wait", "30s", "-o", "json"]).unwrap() else {
            panic!("not check");
        };
        assert_eq!(args.wait, Some(Duration::from_secs(30)));
        assert!(parse(&["status", "-o", "yaml"]).is_ok());
        assert!(parse(&["config", "set-context", "a", "--server", "http://x:1"]).is_ok());
        assert!(parse(&[
            "config",
            "set-context",
            "a",
            "--token",
            "t",
            "--token-file",
            "f"
        ])
        .is_err());
        assert!(parse(&[
            "config",
            "get-contexts",
            "-o",
            "json",
            "--config",
            "/c.yaml"
        ])
        .is_ok());
    }

    #[test]
    fn context_flags_before_or_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["meshctl", "--context", "a", "--config", "/c", "status"]).unwrap();
        let Command::Status(mut args) = cli.command else {
            panic!("not status");
        };
        assert_eq!(args.target.context, None);
        args.target.inherit(&cli.target);
        assert_eq!(args.target.context.as_deref(), Some("a"));
        assert_eq!(args.target.config, Some(PathBuf::from("/c")));
        let mut inner = Target {
            config: None,
            context: Some("b".into()),
        };
        inner.inherit(&cli.target);
        assert_eq!(
            inner.context.as_deref(),
            Some("b"),
            "the subcommand's flag wins"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "0", "0s", "1x", "h", "10m5", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
