//! `qom-list`: the same as `qmp qom list`.
fn main() -> std::process::ExitCode {
    qmp_cli::main_classic("qom-list", &["qom", "list"])
}
