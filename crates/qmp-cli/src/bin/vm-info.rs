//! `vm-info`: the same as `qmp info`.
fn main() -> std::process::ExitCode {
    qmp_cli::main_classic("vm-info", &["info"])
}
