//! `meshctl config get-contexts|use-context|set-context|delete-context|current-context`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde::Serialize;

use super::{usage, Target};
use crate::api::Client;
use crate::contexts::{Context, ContextsFile};
use crate::output::{render, table, Console, Format};

/// Arguments of `config`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    /// The contexts file [default: $MESHCTL_CONFIG, else
    /// $XDG_CONFIG_HOME/isthmus/meshctl.yaml, else
    /// ~/.config/isthmus/meshctl.yaml].
    #[arg(long, value_name = "FILE", global = true)]
    pub(super) config: Option<PathBuf>,
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// List the contexts (tokens are not shown).
    GetContexts {
        /// Output format.
        #[arg(short, long, value_enum, default_value_t)]
        output: Format,
    },
    /// Make a context the current one.
    UseContext {
        /// The context's name.
        name: String,
    },
    /// Create or update a context.
    SetContext {
        /// The context's name.
        name: String,
        /// The controller's admin API, e.g. http://127.0.1.2:15014
        /// (required for a new context).
        #[arg(long, value_name = "URL")]
        server: Option<String>,
        /// Bearer token for the admin API.
        #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
        token: Option<String>,
        /// File holding the bearer token (read at each use).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Remove a context.
    DeleteContext {
        /// The context's name.
        name: String,
    },
    /// Print the current context's name.
    CurrentContext,
}

/// One line of `get-contexts -o json|yaml`.
#[derive(Debug, Serialize)]
struct Shown<'a> {
    name: &'a str,
    server: &'a str,
    current: bool,
    /// `token`, `token-file` or `none`.
    auth: &'static str,
}

/// Runs a `config` subcommand.
pub(super) fn run(args: ConfigArgs, console: &mut Console) -> anyhow::Result<ExitCode> {
    let target = Target {
        config: args.config,
        context: None,
    };
    let path = target.path()?;
    let mut file = ContextsFile::load(&path)?;
    match args.command {
        ConfigCommand::GetContexts { output } => {
            let shown: Vec<Shown<'_>> = file
                .contexts
                .iter()
                .map(|c| Shown {
                    name: &c.name,
                    server: &c.server,
                    current: file.current_context.as_deref() == Some(c.name.as_str()),
                    auth: match (&c.token, &c.token_file) {
                        (Some(_), _) => "token",
                        (None, Some(_)) => "token-file",
                        (None, None) => "none",
                    },
                })
                .collect();
            match render(output, &shown) {
                Some(text) => console.print(&text),
                None => console.print(&contexts_table(&shown)),
            }
        }
        ConfigCommand::UseContext { name } => {
            if file.find(&name).is_none() {
                file.select(Some(&name))?;
            }
            file.current_context = Some(name.clone());
            file.save(&path)?;
            console.line(&format!("Switched to context \"{name}\"."));
        }
        ConfigCommand::SetContext {
            name,
            server,
            token,
            token_file,
        } => {
            let existing = file.find(&name).cloned();
            let server = match (server, &existing) {
                (Some(s), _) => s,
                (None, Some(c)) => c.server.clone(),
                (None, None) => {
                    return usage(format!("context {name:?} is new: --server URL is required"))
                }
            };
            if let Err(e) = Client::new(&name, &server, None) {
                return usage(e.to_string());
            }
            let token_file = match token_file {
                Some(f) => Some(
                    std::path::absolute(&f)
                        .with_context(|| format!("token file {}", f.display()))?,
                ),
                None => None,
            };
            let (token, token_file) = match (token, token_file, &existing) {
                (Some(t), _, _) => (Some(t), None),
                (None, Some(f), _) => (None, Some(f)),
                (None, None, Some(c)) => (c.token.clone(), c.token_file.clone()),
                (None, None, None) => (None, None),
            };
            file.upsert(Context {
                name: name.clone(),
                server,
                token,
                token_file,
            });
            let made_current = file.current_context.is_none();
            if made_current {
                file.current_context = Some(name.clone());
            }
            file.save(&path)?;
            let verb = if existing.is_some() {
                "modified"
            } else {
                "created"
            };
            let current = if made_current {
                " (now the current context)"
            } else {
                ""
            };
            console.line(&format!("Context \"{name}\" {verb}{current}."));
        }
        ConfigCommand::DeleteContext { name } => {
            if !file.remove(&name) {
                bail!("context {name:?} not found in {}", path.display());
            }
            file.save(&path)?;
            console.line(&format!("Deleted context \"{name}\"."));
        }
        ConfigCommand::CurrentContext => match &file.current_context {
            Some(name) => console.line(name),
            None => bail!("current-context is not set in {}", path.display()),
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn contexts_table(shown: &[Shown<'_>]) -> String {
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|c| {
            vec![
                if c.current { "*" } else { "" }.to_owned(),
                c.name.to_owned(),
                c.server.to_owned(),
                c.auth.to_owned(),
            ]
        })
        .collect();
    table(&["CURRENT", "NAME", "SERVER", "AUTH"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_context_is_starred() {
        let t = contexts_table(&[
            Shown {
                name: "a",
                server: "http://127.0.1.2:15014",
                current: true,
                auth: "token",
            },
            Shown {
                name: "bb",
                server: "http://127.0.2.2:15014",
                current: false,
                auth: "none",
            },
        ]);
        assert_eq!(
            t,
            "CURRENT   NAME   SERVER                   AUTH\n\
             *         a      http://127.0.1.2:15014   token\n          \
             bb     http://127.0.2.2:15014   none"
        );
    }
}
