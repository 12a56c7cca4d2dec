//! `g2p-keymanager`: encrypt, decrypt, sign, verify and publish keys through a MOSIP
//! Keymanager, from the command line.
#![forbid(unsafe_code)]

mod audit;
mod bench_cmd;
mod bulk_cmd;
mod cli;
mod commands;
mod failure;
mod io;
mod kms_cmd;
mod kms_migrate;
mod records_io;
mod registry_cmd;
mod registry_db;
mod serve_cmd;
mod service;

use std::process::ExitCode;

use clap::Parser;

/// A faster allocator than the system's for the many small, short-lived allocations of
/// records and requests handled across threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logs(&cli);
    // Key operations run on the blocking pool; a burst of them (the first batch of a registry
    // run, before the key is cached) must not start hundreds of threads.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(
            std::thread::available_parallelism().map_or(4, std::num::NonZeroUsize::get) * 32,
        )
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(failure::EXIT_SYSTEM);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.exit)
        }
    }
}
