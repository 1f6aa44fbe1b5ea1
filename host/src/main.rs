fn main() -> std::process::ExitCode {
    keel_host::cli::main()
}
