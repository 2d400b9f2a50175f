//! A minimal HTTP/1.1 client for loopback calls: readiness probes, metrics
//! scrapes and the demo frontend's upstream calls. One connection per call
//! unless the caller keeps a [`Conn`].

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest response body read, bytes; more is an error.
const MAX_BODY_BYTES: usize = 4 << 20;

/// A response: status and the whole body.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// HTTP status.
    pub(crate) status: StatusCode,
    /// The body, at most [`MAX_BODY_BYTES`].
    pub(crate) body: Bytes,
}

impl Response {
    /// The body as (lossy) UTF-8.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `GET http://addr/path` on a fresh connection, everything within `timeout`.
///
/// # Errors
/// Connect, protocol or body errors, a body over 4 MiB, or the timeout.
pub(crate) async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<Response> {
    tokio::time::timeout(timeout, async {
        let mut conn = Conn::connect(addr).await?;
        conn.get(path).await
    })
    .await
    .map_err(|_| anyhow!("GET http://{addr}{path}: no answer within {timeout:?}"))?
}

/// One kept-alive HTTP/1.1 client connection.
pub(crate) struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Empty<Bytes>>,
}

impl Conn {
    /// Connects and runs the connection task in the background.
    ///
    /// # Errors
    /// TCP connect or HTTP handshake failed.
    pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("http handshake with {addr}"))?;
        tokio::spawn(async move {
            // The connection's own error ends the task; the next request on
            // `sender` reports it to the caller.
            let _ = connection.await;
        });
        Ok(Self { addr, sender })
    }

    /// Whether the connection can still carry a request.
    pub(crate) fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// `GET path` on this connection.
    ///
    /// # Errors
    /// The connection failed or the body is over 4 MiB.
    pub(crate) async fn get(&mut self, path: &str) -> anyhow::Result<Response> {
        let addr = self.addr;
        self.sender
            .ready()
            .await
            .with_context(|| format!("GET http://{addr}{path}"))?;
        let request = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .with_context(|| format!("GET http://{addr}{path}: bad request"))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("GET http://{addr}{path}"))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow!("GET http://{addr}{path}: body: {e}"))?
            .to_bytes();
        Ok(Response { status, body })
    }
}
