//! `qom-tree`: the same as `qmp qom tree`.
fn main() -> std::process::ExitCode {
    qmp_cli::main_classic("qom-tree", &["qom", "tree"])
}
