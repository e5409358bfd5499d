//! `qom-fuse`: the same as `qmp qom fuse`.
fn main() -> std::process::ExitCode {
    qmp_cli::main_classic("qom-fuse", &["qom", "fuse"])
}
