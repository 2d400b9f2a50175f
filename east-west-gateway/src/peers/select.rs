//! Pure choice among a peer's gateway replicas (decide, then act): which
//! replicas a new stream tries and in which order ([`try_order`]), and what
//! a failed attempt on one replica means for it and for the stream
//! ([`dispose`]). No I/O and no clock: the pool and [`crate::forward`]
//! carry the decisions out.
//!
//! Re-sending the OPEN header to another replica is legal because nothing
//! of the stream's payload is relayed before the accept: the sidecar waits
//! for the accept before it writes, and whatever it pipelined after its
//! header stays buffered at this gateway until a replica accepts
//! (docs/reference/tunnel-protocol.md, "Gateway replicas").

/// What the pool knows about one replica's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// Connected, and the connection is open.
    Up,
    /// Its first connect attempt is under way (it never failed): worth a
    /// bounded wait when nothing is up.
    Starting,
    /// In reconnect backoff, or re-probing after a failed attempt or a lost
    /// connection: not tried by new streams.
    Down,
}

/// How one attempt on a replica ended without an answer from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptFailure {
    /// The replica had no connection within the wait (down, or its first
    /// connect did not finish in time).
    NoConnection,
    /// The connection refused a new stream: it is closed.
    StreamRefused,
    /// No stream slot came free in time (the replica's
    /// `max_concurrent_streams`); the replica itself is fine.
    StreamLimit,
    /// Nothing at all (no packet, no byte) arrived from the replica within
    /// `timeouts.peer_open_ms` after the OPEN header: it is gone.
    Silent,
    /// The replica reset the stream (e.g. `DRAINING`), finished it, or the
    /// connection failed before any answer.
    Reset,
    /// The replica is alive but did not answer within the whole open
    /// deadline (it is still trying its endpoints).
    Slow,
    /// The replica's answer was malformed.
    Protocol,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Declare the replica's connection lost: close it (which resets every
    /// stream relayed over it at once), let the pool re-probe it with
    /// backoff, and try the next replica.
    MarkDownAndNext,
    /// Try the next replica; this one stays as it is.
    Next,
    /// Stop: reject the stream with `PeerUnavailable`.
    GiveUp,
}

/// The replicas a new stream tries, in order: the `Up` ones round robin
/// from `cursor`, then the `Starting` ones (rotated the same way); never
/// the `Down` ones. Empty when every replica is down: the stream is
/// rejected at once, so the sidecar can fail over.
pub fn try_order(states: &[ReplicaState], cursor: usize) -> Vec<usize> {
    let n = states.len();
    if n == 0 {
        return Vec::new();
    }
    let rotated = (0..n).map(|i| (cursor % n + i) % n);
    let mut order: Vec<usize> = rotated
        .clone()
        .filter(|&i| states[i] == ReplicaState::Up)
        .collect();
    order.extend(rotated.filter(|&i| states[i] == ReplicaState::Starting));
    order
}

/// What a failed attempt means: a replica that is gone (silent, or its
/// connection refuses streams) is marked down; a replica that is fine but
/// could not take this stream (no connection yet, no stream slot, a reset
/// such as `DRAINING`) is skipped; a replica that is alive but slow, or
/// that answered garbage, ends the stream's attempts (another replica
/// would face the same slow endpoints, and the deadline is spent).
pub fn dispose(failure: AttemptFailure) -> Disposition {
    match failure {
        AttemptFailure::Silent | AttemptFailure::StreamRefused => Disposition::MarkDownAndNext,
        AttemptFailure::NoConnection | AttemptFailure::StreamLimit | AttemptFailure::Reset => {
            Disposition::Next
        }
        AttemptFailure::Slow | AttemptFailure::Protocol => Disposition::GiveUp,
    }
}

#[cfg(test)]
mod tests {
    use super::ReplicaState::{Down, Starting, Up};
    use super::*;

    #[test]
    fn up_replicas_round_robin_then_starting_never_down() {
        assert_eq!(try_order(&[Up, Up, Up], 0), vec![0, 1, 2]);
        assert_eq!(try_order(&[Up, Up, Up], 1), vec![1, 2, 0]);
        assert_eq!(try_order(&[Up, Up, Up], 5), vec![2, 0, 1]);
        assert_eq!(try_order(&[Up, Down, Up], 1), vec![2, 0]);
        assert_eq!(try_order(&[Starting, Up, Down], 0), vec![1, 0]);
        assert_eq!(
            try_order(&[Starting, Down, Starting], 1),
            vec![2, 0],
            "starting replicas are waited for when nothing is up"
        );
        assert_eq!(try_order(&[Down, Down], 7), Vec::<usize>::new());
        assert_eq!(try_order(&[], 3), Vec::<usize>::new());
    }

    #[test]
    fn successive_cursors_spread_streams_evenly_over_up_replicas() {
        let states = [Up, Down, Up, Up];
        let mut firsts = [0usize; 4];
        for cursor in 0..400 {
            firsts[try_order(&states, cursor)[0]] += 1;
        }
        // Replica 1 is down; its turns go to the next up replica (2).
        assert_eq!(firsts, [100, 0, 200, 100]);
    }

    #[test]
    fn every_failure_has_its_disposition() {
        use AttemptFailure::*;
        let table = [
            (NoConnection, Disposition::Next),
            (StreamRefused, Disposition::MarkDownAndNext),
            (StreamLimit, Disposition::Next),
            (Silent, Disposition::MarkDownAndNext),
            (Reset, Disposition::Next),
            (Slow, Disposition::GiveUp),
            (Protocol, Disposition::GiveUp),
        ];
        for (failure, want) in table {
            assert_eq!(dispose(failure), want, "{failure:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn order_is_a_permutation_of_the_non_down_replicas(
            states in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(Up),
                    proptest::strategy::Just(Starting),
                    proptest::strategy::Just(Down),
                ],
                0..12,
            ),
            cursor in 0usize..1000,
        ) {
            let order = try_order(&states, cursor);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            let want: Vec<usize> = (0..states.len()).filter(|&i| states[i] != Down).collect();
            proptest::prop_assert_eq!(sorted, want);
            let first_starting = order.iter().position(|&i| states[i] == Starting);
            if let Some(p) = first_starting {
                proptest::prop_assert!(order[p..].iter().all(|&i| states[i] == Starting));
            }
        }
    }
}
