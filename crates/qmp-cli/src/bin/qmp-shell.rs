//! `qmp-shell`: the same as `qmp shell`.
fn main() -> std::process::ExitCode {
    qmp_cli::main_classic("qmp-shell", &["shell"])
}
