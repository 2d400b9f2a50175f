//! The controller's gRPC listener (TLS 1.3): Identity, ADS and Peering on one
//! port. SKELETON: the [`PeerIdentity`] extension is the contract.

/// The caller's verified SPIFFE ID, inserted into every request's
/// extensions by the TLS listener: `None` when the client sent no
/// certificate (allowed only for `SignSvid` with a join token and for
/// `Peering.Redeem`) or on the plaintext xDS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub Option<trust_bundle::SpiffeId>);
