//! Unit tests of parsing, validation and serialization.

mod errors;
mod examples;
mod import;
mod props;
mod roundtrip;
mod traffic;
mod workload;
