//! `sluice`: a MySQL-wire proxy with pooling and read/write split.

fn main() -> std::process::ExitCode {
    sluice_proxy::cli::main()
}
