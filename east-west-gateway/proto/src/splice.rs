//! FIN and RESET propagation between two spliced byte streams
//! (docs/reference/tunnel-protocol.md: "A FIN is a half-close and is
//! propagated as a FIN; a RESET_STREAM is an abort and is propagated as a
//! reset").
//!
//! The driver copies bytes itself; [`Splice`] only decides what to do with
//! the ends of streams. Each side has a receive half (bytes from it) and a
//! send half (bytes to it). A FIN received from one side finishes the other
//! side's send half. A reset from one side, or a failed write to one side,
//! aborts everything: every half still open is reset (send) or stopped
//! (receive) with the same code.

use std::collections::VecDeque;

use crate::code;

/// One of the two spliced streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The stream towards the opener (the caller).
    Downstream,
    /// The stream towards the destination (or the next hop).
    Upstream,
}

/// What the driver must do to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceCommand {
    /// Finish the send half of this side (QUIC FIN, TCP `shutdown(Write)`),
    /// after all bytes already copied to it.
    Finish(Side),
    /// Reset the send half of this side with this application code (QUIC
    /// RESET_STREAM; on TCP, abort the connection).
    Reset(Side, u32),
    /// Stop reading from this side with this application code (QUIC
    /// STOP_SENDING; on TCP, stop reading).
    StopSending(Side, u32),
}

/// The FIN/RESET state of two spliced streams.
#[derive(Debug)]
pub struct Splice {
    /// Indexed by [`Side::index`].
    recv_open: [bool; 2],
    /// Indexed by [`Side::index`].
    send_open: [bool; 2],
    aborted: bool,
    commands: VecDeque<SpliceCommand>,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Downstream => Side::Upstream,
            Side::Upstream => Side::Downstream,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Downstream => 0,
            Side::Upstream => 1,
        }
    }
}

impl Splice {
    /// Both streams fully open.
    pub fn new() -> Splice {
        Splice {
            recv_open: [true; 2],
            send_open: [true; 2],
            aborted: false,
            commands: VecDeque::new(),
        }
    }

    /// `from` finished its send half (we read its FIN, or TCP read 0 bytes):
    /// finish the other side's send half.
    pub fn handle_fin(&mut self, from: Side) {
        if self.aborted || !std::mem::take(&mut self.recv_open[from.index()]) {
            return;
        }
        let to = from.other();
        if std::mem::take(&mut self.send_open[to.index()]) {
            self.commands.push_back(SpliceCommand::Finish(to));
        }
    }

    /// `from` reset its send half with application code `code` (or, for TCP,
    /// the connection was reset): abort both streams. Codes of
    /// [`crate::code`] (0–4) are passed on as they are; any other code becomes
    /// [`code::PEER_RESET`].
    pub fn handle_reset(&mut self, from: Side, code: u64) {
        if self.aborted {
            return;
        }
        self.recv_open[from.index()] = false;
        self.abort(from.other(), propagated_code(code));
    }

    /// Writing to `to` failed (it sent STOP_SENDING, or the connection is
    /// gone): abort both streams with [`code::PEER_RESET`].
    pub fn handle_write_error(&mut self, to: Side) {
        if self.aborted {
            return;
        }
        self.send_open[to.index()] = false;
        self.abort(to.other(), code::PEER_RESET);
    }

    /// The next thing the driver must do.
    pub fn poll_command(&mut self) -> Option<SpliceCommand> {
        self.commands.pop_front()
    }

    /// Whether both directions are finished, or the splice was aborted. The
    /// driver still drains [`Splice::poll_command`] first.
    pub fn is_done(&self) -> bool {
        self.aborted || (self.recv_open == [false; 2] && self.send_open == [false; 2])
    }

    /// Whether a reset or write error aborted the splice.
    pub fn is_aborted(&self) -> bool {
        self.aborted
    }

    /// Closes every half still open, `first` side first.
    fn abort(&mut self, first: Side, code: u32) {
        self.aborted = true;
        for side in [first, first.other()] {
            if std::mem::take(&mut self.send_open[side.index()]) {
                self.commands.push_back(SpliceCommand::Reset(side, code));
            }
            if std::mem::take(&mut self.recv_open[side.index()]) {
                self.commands
                    .push_back(SpliceCommand::StopSending(side, code));
            }
        }
    }
}

impl Default for Splice {
    fn default() -> Splice {
        Splice::new()
    }
}

/// The code to pass on for a reset received with `code`.
fn propagated_code(code: u64) -> u32 {
    match u32::try_from(code) {
        Ok(
            c @ (code::CANCELLED
            | code::PEER_RESET
            | code::PROTOCOL
            | code::HEADER_TIMEOUT
            | code::DRAINING),
        ) => c,
        _ => code::PEER_RESET,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Splice) -> Vec<SpliceCommand> {
        std::iter::from_fn(|| s.poll_command()).collect()
    }

    #[test]
    fn fins_in_both_directions_finish_the_splice() {
        let mut s = Splice::new();
        s.handle_fin(Side::Downstream);
        assert_eq!(drain(&mut s), [SpliceCommand::Finish(Side::Upstream)]);
        assert!(!s.is_done());
        s.handle_fin(Side::Downstream); // duplicate: ignored
        assert!(drain(&mut s).is_empty());
        s.handle_fin(Side::Upstream);
        assert_eq!(drain(&mut s), [SpliceCommand::Finish(Side::Downstream)]);
        assert!(s.is_done());
        assert!(!s.is_aborted());
    }

    #[test]
    fn reset_aborts_everything_with_the_code() {
        let mut s = Splice::new();
        s.handle_reset(Side::Upstream, u64::from(code::DRAINING));
        assert_eq!(
            drain(&mut s),
            [
                SpliceCommand::Reset(Side::Downstream, code::DRAINING),
                SpliceCommand::StopSending(Side::Downstream, code::DRAINING),
                SpliceCommand::Reset(Side::Upstream, code::DRAINING),
            ]
        );
        assert!(s.is_done() && s.is_aborted());
        s.handle_reset(Side::Downstream, 0);
        s.handle_fin(Side::Downstream);
        s.handle_write_error(Side::Upstream);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn reset_after_half_close_only_touches_open_halves() {
        let mut s = Splice::new();
        s.handle_fin(Side::Downstream);
        drain(&mut s);
        s.handle_reset(Side::Upstream, 1 << 40);
        assert_eq!(
            drain(&mut s),
            [
                SpliceCommand::Reset(Side::Downstream, code::PEER_RESET),
                // Upstream's send half was finished and Downstream's receive
                // half ended with its FIN: nothing to do there.
            ]
        );
    }

    #[test]
    fn write_error_stops_the_other_side() {
        let mut s = Splice::new();
        s.handle_write_error(Side::Downstream);
        assert_eq!(
            drain(&mut s),
            [
                SpliceCommand::Reset(Side::Upstream, code::PEER_RESET),
                SpliceCommand::StopSending(Side::Upstream, code::PEER_RESET),
                SpliceCommand::StopSending(Side::Downstream, code::PEER_RESET),
            ]
        );
        assert!(s.is_done());
    }

    #[test]
    fn codes() {
        assert_eq!(propagated_code(0), code::CANCELLED);
        assert_eq!(propagated_code(3), code::HEADER_TIMEOUT);
        assert_eq!(propagated_code(5), code::PEER_RESET);
        assert_eq!(propagated_code(u64::MAX), code::PEER_RESET);
        assert_eq!(Side::Downstream.other(), Side::Upstream);
        assert!(!Splice::default().is_done());
    }
}
