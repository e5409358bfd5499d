//! `qom-get`: the same as `qmp qom get`.
fn main() -> std::process::ExitCode {
    qmp_cli::main_classic("qom-get", &["qom", "get"])
}
