//! Where a component runs: the test process's own network namespace (the
//! loopback tier) or a cluster's namespace of a [`crate::netns::Wan`] (the
//! network-namespace tier).
//!
//! A [`Site`] spawns programs there ([`Site::spec`], [`Site::command`]),
//! picks listen addresses ([`Site::tcp_addr`]) and reaches TCP listeners
//! there from the test process ([`Site::connect`], [`Site::http_get`],
//! [`Site::wait_http_ready`]). A namespace's listeners are not reachable from
//! the root namespace (198.18.0.0/15 is never routed there), so a connect
//! runs on a short-lived thread that first joins the namespace with
//! `setns(2)`: the socket stays in that namespace, and the thread's
//! namespace dies with the thread, so the test's other threads are
//! untouched.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sched::{setns, CloneFlags};

use crate::net;
use crate::netns::{netns_command, netns_spec};
use crate::process::{Process, Spec};
use crate::ready::wait_until;

/// Where named network namespaces are bind-mounted by `ip netns add`.
const NETNS_RUN_DIR: &str = "/run/netns";

/// The root namespace (`None`) or a named network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Site {
    netns: Option<String>,
}

impl Site {
    /// The test process's own namespace (loopback tier).
    pub fn root() -> Self {
        Site { netns: None }
    }

    /// The named namespace `netns` (as listed by `ip netns list`).
    pub fn netns(netns: impl Into<String>) -> Self {
        Site {
            netns: Some(netns.into()),
        }
    }

    /// The namespace's name, `None` for the root namespace.
    pub fn name(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// A [`Spec`] running `program` here (through `ip netns exec … setpriv
    /// --pdeathsig KILL` in a namespace, see [`netns_spec`]).
    pub fn spec(&self, program: impl AsRef<OsStr>) -> Spec {
        match &self.netns {
            None => Spec::new(program.as_ref()),
            Some(ns) => netns_spec(ns, program),
        }
    }

    /// A [`Command`] running `program` here.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(ns) => netns_command(ns, program),
        }
    }

    /// A TCP listen address on `ip`: in the root namespace the `preferred`
    /// port if it is free now, else an ephemeral one ([`net::tcp_addr`]);
    /// in a namespace (fresh, every host with its own address) always
    /// `preferred`.
    ///
    /// # Errors
    /// Root namespace: nothing can be bound on `ip`.
    pub fn tcp_addr(&self, ip: Ipv4Addr, preferred: u16) -> Result<SocketAddr> {
        match self.netns {
            None => net::tcp_addr(ip, preferred),
            Some(_) => Ok(SocketAddr::from((ip, preferred))),
        }
    }

    /// [`Site::tcp_addr`] for UDP.
    ///
    /// # Errors
    /// Root namespace: nothing can be bound on `ip`.
    pub fn udp_addr(&self, ip: Ipv4Addr, preferred: u16) -> Result<SocketAddr> {
        match self.netns {
            None => net::udp_addr(ip, preferred),
            Some(_) => Ok(SocketAddr::from((ip, preferred))),
        }
    }

    /// A TCP connection to `addr` as seen from here.
    ///
    /// # Errors
    /// The namespace cannot be joined, or the connect failed or timed out.
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
        let Some(ns) = &self.netns else {
            return Ok(TcpStream::connect_timeout(&addr, timeout)?);
        };
        let path = std::path::Path::new(NETNS_RUN_DIR).join(ns);
        let joined = std::thread::Builder::new()
            .name("isthmus-netns-connect".into())
            .spawn(move || -> Result<TcpStream> {
                let file = std::fs::File::open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns({})", path.display()))?;
                Ok(TcpStream::connect_timeout(&addr, timeout)?)
            })
            .context("spawning the netns connect thread")?
            .join()
            .map_err(|_| anyhow!("the netns connect thread panicked"))?;
        joined.with_context(|| format!("connecting to {addr} in namespace {ns}"))
    }

    /// A minimal HTTP/1.1 `GET` (Connection: close) to `addr` from here:
    /// status and body as text (for admin endpoints).
    ///
    /// # Errors
    /// Connect, I/O or timeout, or an unparsable status line.
    pub fn http_get(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, String)> {
        crate::ready::http_get_over(self.connect(addr, timeout)?, addr, path, timeout)
    }

    /// Waits until `GET <path>` on `addr` answers 200, failing early (with
    /// the log tail) if `process` exits.
    ///
    /// # Errors
    /// The process exited, or it was not ready within the patience.
    pub fn wait_http_ready(
        &self,
        process: &mut Process,
        addr: SocketAddr,
        path: &str,
    ) -> Result<()> {
        wait_until(process, &format!("GET http://{addr}{path} -> 200"), || {
            let (status, _) = self.http_get(addr, path, Duration::from_secs(2))?;
            if status == 200 {
                Ok(())
            } else {
                bail!("status {status}")
            }
        })
    }

    /// Waits until `addr` accepts TCP connections from here, failing early
    /// if `process` exits.
    ///
    /// # Errors
    /// The process exited, or nothing listened within the patience.
    pub fn wait_tcp(&self, process: &mut Process, addr: SocketAddr) -> Result<()> {
        wait_until(process, &format!("TCP connect {addr}"), || {
            self.connect(addr, Duration::from_secs(1)).map(drop)
        })
    }
}
