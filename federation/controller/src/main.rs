//! `mesh-controller`: see the library docs.

fn main() -> std::process::ExitCode {
    mesh_controller::run_cli(std::env::args_os())
}
