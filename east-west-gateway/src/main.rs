//! `mesh-gateway --config <file>`: see [`mesh_gateway::run_cli`].

fn main() -> std::process::ExitCode {
    mesh_gateway::run_cli(std::env::args_os())
}
