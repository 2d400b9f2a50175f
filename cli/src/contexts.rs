//! The contexts file: which controllers meshctl talks to, kubeconfig-style.
//!
//! ```yaml
//! current-context: a
//! contexts:
//!   - name: a
//!     server: http://127.0.1.2:15014
//!     token: secret            # optional
//!   - name: b
//!     server: http://127.0.2.2:15014
//!     token-file: /path/token  # optional, read at each use
//! ```
//!
//! Its path is `--config`, else `$MESHCTL_CONFIG`, else
//! `$XDG_CONFIG_HOME/isthmus/meshctl.yaml`, else
//! `$HOME/.config/isthmus/meshctl.yaml`. Loading does no other I/O than
//! reading that file; the environment is passed in ([`config_path`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::api::Client;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct ContextsFile {
    /// The context used when `--context` is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) current_context: Option<String>,
    /// Every context, in the order they were added.
    #[serde(default)]
    pub(crate) contexts: Vec<Context>,
}

/// One controller: its admin API and how to authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub(crate) struct Context {
    /// The name commands refer to.
    pub(crate) name: String,
    /// The admin API, `http://host:port`.
    pub(crate) server: String,
    /// Bearer token, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
    /// Bearer token, read from this file at each use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token_file: Option<PathBuf>,
}

/// Where the contexts file is: `flag`, else `$MESHCTL_CONFIG`, else under
/// `$XDG_CONFIG_HOME`, else under `$HOME/.config`. `env` looks a variable up.
///
/// # Errors
/// None of those is set.
pub(crate) fn config_path(
    flag: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> anyhow::Result<PathBuf> {
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(path) = flag {
        return Ok(path.to_owned());
    }
    if let Some(path) = set("MESHCTL_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let base = match (set("XDG_CONFIG_HOME"), set("HOME")) {
        (Some(xdg), _) => PathBuf::from(xdg),
        (None, Some(home)) => PathBuf::from(home).join(".config"),
        (None, None) => {
            bail!("cannot find the contexts file: set --config, MESHCTL_CONFIG, XDG_CONFIG_HOME or HOME")
        }
    };
    Ok(base.join("isthmus").join("meshctl.yaml"))
}

impl ContextsFile {
    /// Reads `path`; a missing file is an empty one.
    ///
    /// # Errors
    /// Unreadable file or invalid YAML (with the file name).
    pub(crate) fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml_ng::from_str(&text).with_context(|| format!("parse {}", path.display()))
    }

    /// Writes `path` (owner-only permissions: it may hold tokens), creating
    /// its directory; replaces the file atomically.
    ///
    /// # Errors
    /// Directory, write or rename failures.
    pub(crate) fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::PermissionsExt as _;

        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let text = serde_yaml_ng::to_string(self).context("serialize the contexts")?;
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)
            .with_context(|| format!("create a temp file in {}", dir.display()))?;
        tmp.write_all(text.as_bytes())
            .with_context(|| format!("write {}", tmp.path().display()))?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", tmp.path().display()))?;
        tmp.persist(path)
            .map_err(|e| anyhow!("write {}: {}", path.display(), e.error))?;
        Ok(())
    }

    /// The context called `name`.
    pub(crate) fn find(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// The context to use: `name` if given, else the current one.
    ///
    /// # Errors
    /// No such context, or none given and none current.
    pub(crate) fn select(&self, name: Option<&str>) -> anyhow::Result<&Context> {
        let name = match (name, &self.current_context) {
            (Some(n), _) => n,
            (None, Some(n)) => n.as_str(),
            (None, None) => bail!(
                "no context given and no current context: meshctl config set-context NAME --server URL, then meshctl config use-context NAME"
            ),
        };
        self.find(name).ok_or_else(|| {
            let known: Vec<&str> = self.contexts.iter().map(|c| c.name.as_str()).collect();
            if known.is_empty() {
                anyhow!("context {name:?} not found (no contexts are configured)")
            } else {
                anyhow!("context {name:?} not found (known: {})", known.join(", "))
            }
        })
    }

    /// Adds or updates `context` (by name).
    pub(crate) fn upsert(&mut self, context: Context) {
        match self.contexts.iter_mut().find(|c| c.name == context.name) {
            Some(existing) => *existing = context,
            None => self.contexts.push(context),
        }
    }

    /// Removes the context called `name`; clears the current context if it
    /// was that one. `false` when there was none.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        let before = self.contexts.len();
        self.contexts.retain(|c| c.name != name);
        if self.current_context.as_deref() == Some(name) {
            self.current_context = None;
        }
        self.contexts.len() != before
    }
}

impl Context {
    /// The bearer token: inline, else read from `token-file` (trimmed).
    ///
    /// # Errors
    /// The token file cannot be read.
    pub(crate) fn bearer(&self) -> anyhow::Result<Option<String>> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        match &self.token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path).with_context(|| {
                    format!("context {}: read token file {}", self.name, path.display())
                })?;
                Ok(Some(token.trim().to_owned()))
            }
            None => Ok(None),
        }
    }

    /// An API client for this context.
    ///
    /// # Errors
    /// Bad server URL or unreadable token file.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.name, &self.server, self.bearer()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn path_precedence() {
        let all = [
            ("MESHCTL_CONFIG", "/m.yaml"),
            ("XDG_CONFIG_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(
            config_path(Some(Path::new("/flag.yaml")), env(&all)).unwrap(),
            PathBuf::from("/flag.yaml")
        );
        assert_eq!(
            config_path(None, env(&all)).unwrap(),
            PathBuf::from("/m.yaml")
        );
        assert_eq!(
            config_path(None, env(&all[1..])).unwrap(),
            PathBuf::from("/xdg/isthmus/meshctl.yaml")
        );
        assert_eq!(
            config_path(None, env(&[("XDG_CONFIG_HOME", ""), ("HOME", "/home/u")])).unwrap(),
            PathBuf::from("/home/u/.config/isthmus/meshctl.yaml")
        );
        assert!(config_path(None, env(&[])).is_err());
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/isthmus/meshctl.yaml");
        assert_eq!(ContextsFile::load(&path).unwrap(), ContextsFile::default());

        let mut file = ContextsFile::default();
        file.upsert(Context {
            name: "a".into(),
            server: "http://127.0.1.2:15014".into(),
            token: Some("t".into()),
            token_file: None,
        });
        file.upsert(Context {
            name: "b".into(),
            server: "http://127.0.2.2:15014".into(),
            token: None,
            token_file: Some(dir.path().join("tok")),
        });
        file.current_context = Some("a".into());
        file.save(&path).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("current-context: a"), "{text}");
        assert!(text.contains("token-file:"), "{text}");
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = ContextsFile::load(&path).unwrap();
        assert_eq!(back, file);

        std::fs::write(dir.path().join("tok"), "secret\n").unwrap();
        let b = back.select(Some("b")).unwrap();
        assert_eq!(b.bearer().unwrap().as_deref(), Some("secret"));
        assert_eq!(back.select(None).unwrap().name, "a");
    }

    #[test]
    fn upsert_select_remove() {
        let mut file = ContextsFile::default();
        let err = file.select(None).unwrap_err().to_string();
        assert!(err.contains("no current context"), "{err}");
        file.upsert(Context {
            name: "a".into(),
            server: "http://x:1".into(),
            token: None,
            token_file: None,
        });
        file.upsert(Context {
            name: "a".into(),
            server: "http://y:2".into(),
            token: None,
            token_file: None,
        });
        assert_eq!(file.contexts.len(), 1);
        assert_eq!(file.contexts[0].server, "http://y:2");
        let err = file.select(Some("zz")).unwrap_err().to_string();
        assert!(err.contains("known: a"), "{err}");
        file.current_context = Some("a".into());
        assert!(file.remove("a"));
        assert!(!file.remove("a"));
        assert_eq!(file.current_context, None);
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "contexts: []\nbogus: 1\n").unwrap();
        let err = format!("{:#}", ContextsFile::load(&path).unwrap_err());
        assert!(err.contains("c.yaml") && err.contains("bogus"), "{err}");
    }
}
