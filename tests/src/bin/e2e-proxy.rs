//! Test launcher of `hotplex-proxy` (identical to the real binary): see [`hotplex_proxy::cli`].
fn main() -> std::process::ExitCode {
    hotplex_proxy::cli::main()
}
