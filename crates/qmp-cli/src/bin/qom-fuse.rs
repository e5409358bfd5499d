//! `qom-fuse`: the same as `qmp qom fuse`.
fn main() -> std::process::ExitCode {
    qmp_cli::main_with(qmp_cli::classic(&["qom", "fuse"]))
}
