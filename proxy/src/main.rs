//! `sluice`: a MySQL-wire proxy with pooling and read/write split.

/// mimalloc, not glibc's malloc: every command's boxed future (about 2.6 KiB)
/// is larger than glibc's per-thread cache holds, so each one took glibc's
/// slow path (about 500 instructions for the allocation and its free).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_proxy::cli::main()
}
