//! `dinoscope`: the desktop app (no subcommand) and the command line (`src/cli/`).

mod cli;

use std::io::{IsTerminal, Write};

/// glibc's allocator, keeping freed blocks of 32 MiB and more for reuse (`alloc.rs`).
#[global_allocator]
static HOST_ALLOCATOR: dinoscope::alloc::LargeBlockCache = dinoscope::alloc::LargeBlockCache::new();

fn main() {
    dinoscope::device::quiet_headless_gpu_probe();
    dinoscope::alloc::tune_host_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, never into a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(err) = cli::run() {
        // Not eprintln!: it panics when stderr is a closed pipe.
        let _ = writeln!(std::io::stderr(), "error: {}", cli::error_line(&err));
        std::process::exit(cli::exit_code(&err));
    }
}
