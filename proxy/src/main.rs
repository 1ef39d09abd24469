//! `sluice`: a MySQL-wire proxy with pooling and read/write split.

/// mimalloc (its 2.x line, without transparent huge pages), not glibc's
/// malloc: every command's boxed future (about 2.6 KiB) is larger than
/// glibc's per-thread cache holds, so each one took glibc's slow path
/// (about 500 instructions for the allocation and its free). Instructions
/// per prepared point select on one build: glibc 12,674, mimalloc 2 12,380,
/// mimalloc 3 12,441 (it over-allocates for the aligned calls the Rust
/// binding makes), jemalloc 12,221 (but 70 s of C to build, and 92 MB
/// against mimalloc's 70 MB under bench/memory.sh's load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_proxy::cli::main()
}
