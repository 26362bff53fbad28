fn main() -> std::process::ExitCode {
    healthfolio::cli::main()
}
