//! The `mesh-sidecar` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    mesh_sidecar::run_cli(std::env::args_os())
}
