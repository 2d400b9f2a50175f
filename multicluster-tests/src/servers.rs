//! Real servers nobody here wrote: nginx, PostgreSQL and python3
//! `http.server`, each on a given loopback address with all its state in a
//! directory the caller owns. nginx also runs inside a cluster's network
//! namespace ([`Nginx::start_in`]).

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use crate::process::{Process, Spec};
use crate::ready::{wait_tcp, wait_until};
use crate::site::Site;
use crate::tools::{require, run, Tool};

/// Whether we run as root (euid 0): `/proc/self` is owned by the euid.
pub fn running_as_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// An nginx serving static files from [`Nginx::root`], `GET /whoami`
/// answering the request's `x-forwarded-client-cert` header, and WebDAV
/// `PUT /upload/<name>` (no size limit) storing into `root/upload/`.
/// Besides the usual access log it writes `timed.log`, one
/// `$msec $status $request_uri` line per request ([`Nginx::served`]).
pub struct Nginx {
    /// The listening address.
    pub addr: SocketAddr,
    root: PathBuf,
    dir: PathBuf,
    site: Site,
    process: Process,
}

/// One request an nginx answered, from its `timed.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// When nginx logged it (the end of the request), ms since the Unix
    /// epoch (nginx's `$msec`).
    pub at_ms: u64,
    /// The status it answered.
    pub status: u16,
    /// The request URI.
    pub uri: String,
}

impl Served {
    /// [`Served::at_ms`] as a [`SystemTime`].
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at_ms)
    }
}

/// Parses `timed.log` lines (`1700000000.123 200 /ok.txt`); malformed
/// lines (a line being written) are skipped.
pub fn parse_timed_log(text: &str) -> Vec<Served> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (secs, ms) = it.next()?.split_once('.')?;
            let at_ms = secs.parse::<u64>().ok()? * 1000 + ms.parse::<u64>().ok()?;
            let status = it.next()?.parse().ok()?;
            let uri = it.next()?.to_owned();
            Some(Served { at_ms, status, uri })
        })
        .collect()
}

impl Nginx {
    /// Starts nginx on `addr` with its files under `dir/nginx-<port>/` and
    /// waits until it accepts connections.
    ///
    /// # Errors
    /// nginx is missing (the error names the Debian package), or it did not
    /// start.
    pub fn start(dir: &Path, addr: SocketAddr) -> Result<Self> {
        Self::start_in(&Site::root(), dir, addr)
    }

    /// [`Nginx::start`] inside `site` (a cluster's namespace), its files
    /// under `dir/nginx-<ip>-<port>/`.
    ///
    /// # Errors
    /// As [`Nginx::start`].
    pub fn start_in(site: &Site, dir: &Path, addr: SocketAddr) -> Result<Self> {
        let base = match site.name() {
            None => dir.join(format!("nginx-{}", addr.port())),
            Some(_) => dir.join(format!("nginx-{}-{}", addr.ip(), addr.port())),
        };
        let root = base.join("www");
        for d in [&root, &root.join("upload"), &base.join("tmp")] {
            fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
        }
        let b = base.display();
        let mut conf = nginx_conf_head(&base, 4096);
        write!(
            conf,
            r#"    log_format timed '$msec $status $request_uri';
    access_log {b}/access.log;
    access_log {b}/timed.log timed;
    default_type application/octet-stream;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen {addr} backlog=4096;
        root {root};
        location / {{ }}
        location /whoami {{
            default_type text/plain;
            return 200 "$http_x_forwarded_client_cert";
        }}
        location /upload/ {{
            dav_methods PUT;
            client_max_body_size 0;
            create_full_put_path on;
            client_body_buffer_size 1m;
        }}
    }}
}}
"#,
            root = root.display()
        )?;
        let mut process = spawn_nginx_in(site, &format!("nginx {addr}"), &base, &conf, None)?;
        site.wait_tcp(&mut process, addr)?;
        Ok(Nginx {
            addr,
            root,
            dir: base,
            site: site.clone(),
            process,
        })
    }

    /// Every request in `timed.log` so far.
    pub fn served(&self) -> Vec<Served> {
        parse_timed_log(&fs::read_to_string(self.dir.join("timed.log")).unwrap_or_default())
    }

    /// SIGKILLs nginx (it stays down until [`Nginx::restart`]).
    ///
    /// # Errors
    /// The kill failed.
    pub fn kill9(&mut self) -> Result<()> {
        self.process.kill9()
    }

    /// Starts nginx again with the same config and waits until it accepts
    /// connections.
    ///
    /// # Errors
    /// It did not start.
    pub fn restart(&mut self) -> Result<()> {
        self.process.restart()?;
        self.site.wait_tcp(&mut self.process, self.addr)
    }

    /// The document root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where `PUT /upload/<name>` stores files.
    pub fn upload_dir(&self) -> PathBuf {
        self.root.join("upload")
    }

    /// Lines of the access log (one per request served).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// The process (to check it is alive).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// The head of an nginx config whose files live under `base` (it must hold
/// a `tmp/` dir): one foreground worker, `user root` when we are root, the
/// error log and pid under `base`, `worker_connections`, and an open
/// `http {` block with every temp path under `base/tmp`. The caller appends
/// its `http`-level directives and servers, then the closing `}`.
pub fn nginx_conf_head(base: &Path, worker_connections: u32) -> String {
    let b = base.display();
    let user = if running_as_root() {
        "user root;\n"
    } else {
        ""
    };
    format!(
        r#"{user}daemon off;
master_process off;
worker_processes 1;
error_log {b}/nginx.err warn;
pid {b}/nginx.pid;
events {{ worker_connections {worker_connections}; }}
http {{
    client_body_temp_path {b}/tmp/body;
    proxy_temp_path {b}/tmp/proxy;
    fastcgi_temp_path {b}/tmp/fastcgi;
    uwsgi_temp_path {b}/tmp/uwsgi;
    scgi_temp_path {b}/tmp/scgi;
"#
    )
}

/// Writes `conf` to `base/nginx.conf` and starts nginx on it in the
/// foreground (prefix `base`, output to `base/nginx.log`), pinned to `cpus`
/// when given. The caller waits for its listeners.
///
/// # Errors
/// nginx is missing (names the Debian package), the file cannot be written,
/// or the process cannot be started.
pub fn spawn_nginx(name: &str, base: &Path, conf: &str, cpus: Option<&str>) -> Result<Process> {
    spawn_nginx_in(&Site::root(), name, base, conf, cpus)
}

/// [`spawn_nginx`] inside `site`.
///
/// # Errors
/// As [`spawn_nginx`].
pub fn spawn_nginx_in(
    site: &Site,
    name: &str,
    base: &Path,
    conf: &str,
    cpus: Option<&str>,
) -> Result<Process> {
    let conf_path = base.join("nginx.conf");
    fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
    let mut spec = site
        .spec(require(Tool::Nginx)?)
        .arg("-p")
        .arg(base)
        .arg("-e")
        .arg(base.join("nginx.err"))
        .arg("-c")
        .arg(&conf_path);
    if let Some(c) = cpus {
        spec = spec.cpus(c);
    }
    Process::spawn(name, spec, &base.join("nginx.log"))
}

/// A PostgreSQL server in a temp data dir, trust auth from 127.0.0.0/8,
/// superuser `postgres`, `authentication_timeout` 2 s. Run as the
/// `postgres` user when we are root (PostgreSQL refuses root).
pub struct Postgres {
    /// The TCP address.
    pub addr: SocketAddr,
    process: Process,
}

impl Postgres {
    /// `initdb` into `dir/pg-<port>/data` and start `postgres` on `addr`.
    ///
    /// # Errors
    /// PostgreSQL is missing (names the Debian package), the `postgres`
    /// user is missing when root, or it did not start.
    pub fn start(dir: &Path, addr: SocketAddr) -> Result<Self> {
        let bin = postgres_bin_dir()?;
        let base = dir.join(format!("pg-{}", addr.port()));
        let data = base.join("data");
        let sock = base.join("sock");
        fs::create_dir_all(&sock)?;
        let user = if running_as_root() {
            let (uid, gid) = user_ids("postgres")?;
            for d in [&base, &sock] {
                std::os::unix::fs::chown(d, Some(uid), Some(gid))
                    .with_context(|| format!("chown {}", d.display()))?;
            }
            Some((uid, gid))
        } else {
            None
        };
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        if let Some((uid, gid)) = user {
            std::os::unix::process::CommandExt::uid(&mut initdb, uid);
            std::os::unix::process::CommandExt::gid(&mut initdb, gid);
        }
        let out = run(&mut initdb, None, Duration::from_secs(120))?;
        if !out.success() {
            bail!("initdb failed: {}\n{}", out.stdout_text(), out.stderr);
        }
        let hba = data.join("pg_hba.conf");
        let mut text = fs::read_to_string(&hba)?;
        text.push_str("\nhost all all 127.0.0.0/8 trust\n");
        fs::write(&hba, text)?;
        let mut spec = Spec::new(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&sock)
            .arg("-h")
            .arg(addr.ip().to_string())
            .arg("-p")
            .arg(addr.port().to_string());
        for setting in [
            "fsync=off",
            "synchronous_commit=off",
            "full_page_writes=off",
            "authentication_timeout=2s",
            "max_connections=50",
            "logging_collector=off",
        ] {
            spec = spec.arg("-c").arg(setting);
        }
        spec.user = user;
        spec.stop_signal = Some("INT");
        let mut process = Process::spawn(
            "postgres",
            spec,
            &dir.join(format!("pg-{}.log", addr.port())),
        )?;
        wait_tcp(&mut process, addr)?;
        let psql = require(Tool::Psql)?;
        wait_until(&mut process, "psql select 1", || {
            let out = run(
                Command::new(&psql)
                    .args(psql_args(addr))
                    .args(["-c", "select 1"]),
                None,
                Duration::from_secs(5),
            )?;
            if out.success() {
                Ok(())
            } else {
                bail!("psql: {}", out.stderr)
            }
        })?;
        Ok(Postgres { addr, process })
    }

    /// The process (to check it is alive).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// `psql` arguments to reach `addr` as `postgres` without reading any
/// `.psqlrc`, failing on the first error, unaligned tuples-only output.
pub fn psql_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "-h".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
        "-U".into(),
        "postgres".into(),
        "-d".into(),
        "postgres".into(),
        "-X".into(),
        "-q".into(),
        "-A".into(),
        "-t".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
    ]
}

/// python3 `http.server` serving a directory (HTTP/1.0, one request per
/// connection).
pub struct PythonHttp {
    /// The listening address.
    pub addr: SocketAddr,
    process: Process,
}

impl PythonHttp {
    /// Serves `root` on `addr`; logs to `log`.
    ///
    /// # Errors
    /// python3 is missing, or it did not start.
    pub fn start(root: &Path, addr: SocketAddr, log: &Path) -> Result<Self> {
        let python = require(Tool::Python3)?;
        let spec = Spec::new(python)
            .arg("-u")
            .arg("-m")
            .arg("http.server")
            .arg("--bind")
            .arg(addr.ip().to_string())
            .arg("--directory")
            .arg(root)
            .arg(addr.port().to_string());
        let mut process = Process::spawn("python3-http.server", spec, log)?;
        wait_tcp(&mut process, addr)?;
        Ok(PythonHttp { addr, process })
    }

    /// The process (to check it is alive).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn postgres_bin_dir() -> Result<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let bin = e.path().join("bin");
            if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(b, _)| v > *b) {
                best = Some((v, bin));
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        anyhow!("PostgreSQL server not found in /usr/lib/postgresql/*/bin: install the Debian package `postgresql` (bash scripts/test.sh does)")
    })
}

/// `(uid, gid)` of a user, from `/etc/passwd`.
fn user_ids(name: &str) -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() > 3 && f[0] == name {
            return Ok((f[2].parse()?, f[3].parse()?));
        }
    }
    bail!("no user {name} in /etc/passwd (the Debian package `postgresql` creates it)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_timed_log() {
        let text = "1700000000.123 200 /ok.txt\n1700000001.005 502 /x?y=1\n1700000002.0\n";
        assert_eq!(
            parse_timed_log(text),
            vec![
                Served {
                    at_ms: 1_700_000_000_123,
                    status: 200,
                    uri: "/ok.txt".into()
                },
                Served {
                    at_ms: 1_700_000_001_005,
                    status: 502,
                    uri: "/x?y=1".into()
                },
            ]
        );
    }
}
