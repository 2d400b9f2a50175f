//! `meshctl version`.

use std::process::ExitCode;

use crate::output::Console;

/// Prints `meshctl <version>`.
pub(super) fn run(console: &mut Console) -> ExitCode {
    console.line(&format!("meshctl {}", env!("CARGO_PKG_VERSION")));
    ExitCode::SUCCESS
}
