//! Readiness: poll an HTTP endpoint in a bounded loop until it answers 200
//! with the expected body, while watching for children that die meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::supervisor::{Exit, Supervisor};
use crate::http;

/// Time between two attempts.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Time one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// What "ready" means for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    /// Shown name, e.g. `gateway cluster-a`.
    pub(crate) name: String,
    /// Where to send `GET path`.
    pub(crate) addr: SocketAddr,
    /// Request path, e.g. `/readyz`.
    pub(crate) path: String,
    /// Strings the body must contain.
    pub(crate) expect: Vec<String>,
}

/// Why a probe never passed.
#[derive(Debug)]
pub(crate) enum NotReady {
    /// A child exited while we waited.
    Died(Exit),
    /// The patience ran out; the last attempt's outcome.
    Timeout(String),
}

impl Probe {
    /// One attempt: `Ok` when the endpoint answered as expected, else what
    /// it did instead.
    pub(crate) async fn check(&self) -> Result<String, String> {
        match http::get(self.addr, &self.path, ATTEMPT_TIMEOUT).await {
            Ok(r) if r.status == hyper::StatusCode::OK => {
                let body = r.text();
                match self.expect.iter().find(|e| !body.contains(e.as_str())) {
                    None => Ok(body),
                    Some(missing) => Err(format!(
                        "200 without {missing:?} in the body: {}",
                        body.trim()
                    )),
                }
            }
            Ok(r) => Err(format!("status {}: {}", r.status, r.text().trim())),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// Polls until [`Probe::check`] passes, a child dies, or `patience`
    /// runs out. Returns the passing body.
    pub(crate) async fn wait(
        &self,
        patience: Duration,
        supervisor: &mut Supervisor,
    ) -> Result<String, NotReady> {
        self.wait_every(patience, POLL_INTERVAL, supervisor).await
    }

    /// [`Probe::wait`] with `interval` between attempts.
    pub(crate) async fn wait_every(
        &self,
        patience: Duration,
        interval: Duration,
        supervisor: &mut Supervisor,
    ) -> Result<String, NotReady> {
        let deadline = Instant::now() + patience;
        loop {
            let last = tokio::select! {
                exit = supervisor.next_exit() => return Err(NotReady::Died(exit)),
                outcome = self.check() => match outcome {
                    Ok(body) => return Ok(body),
                    Err(e) => e,
                },
            };
            if Instant::now() >= deadline {
                return Err(NotReady::Timeout(last));
            }
            tokio::select! {
                exit = supervisor.next_exit() => return Err(NotReady::Died(exit)),
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}
