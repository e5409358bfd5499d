//! `qom-set`: the same as `qmp qom set`.
fn main() -> std::process::ExitCode {
    qmp_cli::main_classic("qom-set", &["qom", "set"])
}
