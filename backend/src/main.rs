//! `hotplex-worker`: see [`hotplex_worker::cli`].

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// jemalloc reads this symbol at startup to enable heap profiling (`/debug/pprof/heap`).
// Defining it needs `#[export_name]`, which the `unsafe_code` lint flags; this is the
// only place the crate allows it.
#[allow(unsafe_code, non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8] = hotplex_common::profiling::MALLOC_CONF_WORKER;

fn main() -> std::process::ExitCode {
    hotplex_worker::cli::main()
}
