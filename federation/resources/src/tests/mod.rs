//! Unit tests of parsing, validation and serialization.

mod errors;
mod examples;
mod props;
mod roundtrip;
