//! `qom-tree`: the same as `qmp qom tree`.
fn main() -> std::process::ExitCode {
    qmp_cli::main_with(qmp_cli::classic(&["qom", "tree"]))
}
