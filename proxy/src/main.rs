//! `hotplex-proxy`: see [`hotplex_proxy::cli`].
fn main() -> std::process::ExitCode {
    hotplex_proxy::cli::main()
}
