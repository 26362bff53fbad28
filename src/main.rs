// A Healthfolio process allocates and frees many small JSON values per request: mimalloc does
// that at a fraction of the system allocator's cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    healthfolio::cli::main()
}
