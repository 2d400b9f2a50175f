//! See lib.rs and docs/reference/controller.md.
