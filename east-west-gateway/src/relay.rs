//! The byte-copying driver around [`tunnel_proto::Splice`]: two pumps, one
//! per direction, run concurrently in one task; every FIN, reset and write
//! error goes into the shared sans-IO `Splice`, whose commands are carried
//! out by the pump that owns the half they name.
//!
//! The halves of a tunnel stream implement [`SpliceRead`] and
//! [`TunnelWrite`], whatever carries them: quinn's streams here, HTTP/2
//! CONNECT streams in [`crate::tcp_tls::stream`]. The handshake drivers
//! ([`crate::handshake`]) and the routing code are generic over them. TCP
//! halves ([`TcpRead`], [`TcpWrite`]) are splice-only. Each adapter maps
//! its transport's end-of-stream signals onto the protocol's: QUIC
//! FIN/RESET_STREAM/STOP_SENDING, TCP `shutdown(Write)` for a FIN and an
//! RST (zero linger) for a reset.

use std::future::Future;
use std::sync::Mutex;

use quinn::VarInt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tunnel_proto::{code, Side, Splice, SpliceCommand};

/// Copy buffer per direction, bytes.
const BUF_BYTES: usize = 64 * 1024;

/// What a read produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes.
    Data(usize),
    /// End of stream (QUIC FIN, TCP read of 0).
    Fin,
    /// Abort with this application code (QUIC RESET_STREAM, TCP RST or any
    /// transport error).
    Reset(u64),
}

/// The receive half of a spliced stream.
pub trait SpliceRead: Send {
    /// Reads into `buf`.
    fn read(&mut self, buf: &mut [u8]) -> impl Future<Output = ReadOutcome> + Send;
    /// Stops reading (QUIC STOP_SENDING with `code`; no-op on TCP).
    fn stop(&mut self, code: u32);
}

/// Why a write to a spliced stream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The peer stopped the stream with this application code (QUIC
    /// STOP_SENDING; an HTTP/2 RST_STREAM, mapped to a tunnel code).
    #[error("stream stopped by peer with code {0}")]
    Stopped(u64),
    /// The stream or its connection is gone.
    #[error("stream or connection closed")]
    Closed,
}

/// The send half of a spliced stream.
pub trait SpliceWrite: Send {
    /// Writes all of `buf`.
    ///
    /// # Errors
    /// [`WriteError`]: the peer stopped the stream or the connection is
    /// gone.
    fn write_all(&mut self, buf: &[u8]) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Half-closes after what was written (QUIC FIN, TCP `shutdown`).
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
    /// Aborts (QUIC RESET_STREAM with `code`; TCP RST when closed).
    fn reset(&mut self, code: u32);
}

/// The send half of a tunnel stream (not a TCP connection): it can also
/// half-close without waiting, as the acceptor does after a reject.
pub trait TunnelWrite: SpliceWrite {
    /// Half-closes now after what was written (QUIC FIN, HTTP/2
    /// END_STREAM), without waiting for any acknowledgement.
    fn finish_now(&mut self);
}

/// Bytes copied by a finished splice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// From downstream to upstream.
    pub to_upstream: u64,
    /// From upstream to downstream.
    pub to_downstream: u64,
    /// Whether a reset or write error aborted the splice.
    pub aborted: bool,
}

/// Splices `down` and `up` until both directions are finished or aborted.
pub async fn run<DR, DW, UR, UW>(down: (DR, DW), up: (UR, UW)) -> Copied
where
    DR: SpliceRead,
    DW: SpliceWrite,
    UR: SpliceRead,
    UW: SpliceWrite,
{
    let core = Mutex::new(Splice::new());
    // The pump reading downstream owns downstream's reader and upstream's
    // writer; the other pump the rest.
    let (tx_down, rx_down) = mpsc::unbounded_channel();
    let (tx_up, rx_up) = mpsc::unbounded_channel();
    let shared = Shared {
        core: &core,
        tx_down,
        tx_up,
    };
    let (to_upstream, to_downstream) = tokio::join!(
        pump(Side::Downstream, down.0, up.1, rx_down, &shared),
        pump(Side::Upstream, up.0, down.1, rx_up, &shared),
    );
    let aborted = lock(&core).is_aborted();
    Copied {
        to_upstream,
        to_downstream,
        aborted,
    }
}

struct Shared<'a> {
    core: &'a Mutex<Splice>,
    tx_down: mpsc::UnboundedSender<SpliceCommand>,
    tx_up: mpsc::UnboundedSender<SpliceCommand>,
}

impl Shared<'_> {
    /// Feeds one event to the core and routes its commands to their pumps.
    fn handle(&self, f: impl FnOnce(&mut Splice)) {
        let mut core = lock(self.core);
        f(&mut core);
        while let Some(cmd) = core.poll_command() {
            let for_down_pump = matches!(
                cmd,
                SpliceCommand::Finish(Side::Upstream)
                    | SpliceCommand::Reset(Side::Upstream, _)
                    | SpliceCommand::StopSending(Side::Downstream, _)
            );
            let tx = if for_down_pump {
                &self.tx_down
            } else {
                &self.tx_up
            };
            // The receivers live until both pumps return: send cannot fail
            // while a pump still needs the command.
            let _ = tx.send(cmd);
        }
    }
}

fn lock(core: &Mutex<Splice>) -> std::sync::MutexGuard<'_, Splice> {
    // The core is never left half-updated by a panic (it has no panicking
    // paths); recover from poisoning.
    core.lock().unwrap_or_else(|p| p.into_inner())
}

enum Step {
    Cmd(Option<SpliceCommand>),
    Read(ReadOutcome),
}

enum WriteStep {
    Done(Result<(), WriteError>),
    Cmd(Option<SpliceCommand>),
}

/// Reads from side `from` and writes to the other side until both halves
/// it owns are closed. Returns the bytes copied.
async fn pump<R: SpliceRead, W: SpliceWrite>(
    from: Side,
    mut reader: R,
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<SpliceCommand>,
    shared: &Shared<'_>,
) -> u64 {
    let to = from.other();
    let mut reading = true;
    let mut writing = true;
    let mut copied = 0u64;
    let mut buf = vec![0u8; BUF_BYTES];
    while reading || writing {
        let step = tokio::select! {
            biased;
            cmd = rx.recv() => Step::Cmd(cmd),
            r = reader.read(&mut buf), if reading => Step::Read(r),
        };
        match step {
            Step::Cmd(cmd) => {
                apply(cmd, &mut reader, &mut writer, &mut reading, &mut writing).await;
            }
            Step::Read(ReadOutcome::Data(n)) => {
                if !writing {
                    continue;
                }
                let step = tokio::select! {
                    biased;
                    cmd = rx.recv() => WriteStep::Cmd(cmd),
                    res = writer.write_all(&buf[..n]) => WriteStep::Done(res),
                };
                match step {
                    WriteStep::Done(Ok(())) => copied += n as u64,
                    WriteStep::Done(Err(_)) => {
                        writing = false;
                        shared.handle(|c| c.handle_write_error(to));
                    }
                    WriteStep::Cmd(cmd) => {
                        apply(cmd, &mut reader, &mut writer, &mut reading, &mut writing).await;
                    }
                }
            }
            Step::Read(ReadOutcome::Fin) => {
                reading = false;
                shared.handle(|c| c.handle_fin(from));
            }
            Step::Read(ReadOutcome::Reset(code)) => {
                reading = false;
                shared.handle(|c| c.handle_reset(from, code));
            }
        }
    }
    copied
}

async fn apply<R: SpliceRead, W: SpliceWrite>(
    cmd: Option<SpliceCommand>,
    reader: &mut R,
    writer: &mut W,
    reading: &mut bool,
    writing: &mut bool,
) {
    match cmd {
        Some(SpliceCommand::Finish(_)) => {
            writer.finish().await;
            *writing = false;
        }
        Some(SpliceCommand::Reset(_, code)) => {
            writer.reset(code);
            *writing = false;
        }
        Some(SpliceCommand::StopSending(_, code)) => {
            reader.stop(code);
            *reading = false;
        }
        None => {
            // Unreachable while `run` holds the senders; end this pump
            // rather than spin.
            *reading = false;
            *writing = false;
        }
    }
}

/// The read half of a TCP connection.
#[derive(Debug)]
pub struct TcpRead(pub tokio::net::tcp::OwnedReadHalf);

/// The write half of a TCP connection.
#[derive(Debug)]
pub struct TcpWrite(pub Option<tokio::net::tcp::OwnedWriteHalf>);

impl SpliceRead for quinn::RecvStream {
    async fn read(&mut self, buf: &mut [u8]) -> ReadOutcome {
        match quinn::RecvStream::read(self, buf).await {
            Ok(Some(n)) => ReadOutcome::Data(n),
            Ok(None) => ReadOutcome::Fin,
            Err(quinn::ReadError::Reset(code)) => ReadOutcome::Reset(code.into_inner()),
            Err(_) => ReadOutcome::Reset(u64::from(code::PEER_RESET)),
        }
    }

    fn stop(&mut self, code: u32) {
        let _ = quinn::RecvStream::stop(self, VarInt::from_u32(code));
    }
}

impl SpliceWrite for quinn::SendStream {
    async fn write_all(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        quinn::SendStream::write_all(self, buf)
            .await
            .map_err(|e| match e {
                quinn::WriteError::Stopped(code) => WriteError::Stopped(code.into_inner()),
                _ => WriteError::Closed,
            })
    }

    async fn finish(&mut self) {
        if quinn::SendStream::finish(self).is_ok() {
            // Wait until the peer acknowledged everything, so that the
            // stream counts as in flight (for drain) until its bytes landed.
            // Bounded by the connection's idle timeout.
            let _ = self.stopped().await;
        }
    }

    fn reset(&mut self, code: u32) {
        let _ = quinn::SendStream::reset(self, VarInt::from_u32(code));
    }
}

impl TunnelWrite for quinn::SendStream {
    fn finish_now(&mut self) {
        let _ = quinn::SendStream::finish(self);
    }
}

impl SpliceRead for TcpRead {
    async fn read(&mut self, buf: &mut [u8]) -> ReadOutcome {
        match self.0.read(buf).await {
            Ok(0) => ReadOutcome::Fin,
            Ok(n) => ReadOutcome::Data(n),
            Err(_) => ReadOutcome::Reset(u64::from(code::PEER_RESET)),
        }
    }

    fn stop(&mut self, _code: u32) {}
}

impl SpliceWrite for TcpWrite {
    async fn write_all(&mut self, buf: &[u8]) -> Result<(), WriteError> {
        match &mut self.0 {
            Some(w) => AsyncWriteExt::write_all(w, buf)
                .await
                .map_err(|_| WriteError::Closed),
            None => Err(WriteError::Closed),
        }
    }

    async fn finish(&mut self) {
        if let Some(w) = &mut self.0 {
            let _ = w.shutdown().await;
        }
    }

    fn reset(&mut self, _code: u32) {
        // Zero linger, and no FIN from dropping the half: closing the socket
        // (when the read half drops at the end of the splice) sends an RST.
        if let Some(w) = self.0.take() {
            let _ = w.as_ref().set_zero_linger();
            w.forget();
        }
    }
}
