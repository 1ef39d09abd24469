//! `sluice`: a MySQL-wire proxy with pooling and read/write split.

/// jemalloc, not glibc's malloc: every command's boxed future (about 2.6 KiB)
/// is larger than glibc's per-thread cache holds, so each one took glibc's
/// slow path (about 500 instructions for the allocation and its free;
/// jemalloc's thread cache: under 100). mimalloc 3 measured 250 (it
/// over-allocates for the aligned calls its Rust binding makes). 10,000
/// idle clients take 50 MB with it against 63 MB with glibc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    sluice_proxy::cli::main()
}
