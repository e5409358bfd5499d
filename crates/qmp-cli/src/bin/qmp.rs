fn main() -> std::process::ExitCode {
    qmp_cli::main_with(std::env::args_os().collect())
}
