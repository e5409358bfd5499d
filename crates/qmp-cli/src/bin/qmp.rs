//! `qmp`, and any classic tool it is linked as (`ln -s qmp qom-list`).
fn main() -> std::process::ExitCode {
    qmp_cli::main_multicall()
}
