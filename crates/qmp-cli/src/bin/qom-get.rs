//! `qom-get`: the same as `qmp qom get`.
fn main() -> std::process::ExitCode {
    qmp_cli::main_with(qmp_cli::classic(&["qom", "get"]))
}
