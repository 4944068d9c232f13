//! The `switchyard` binary: parses the command line and hands over to the library.

use std::{io, process::ExitCode};

use clap::Parser as _;
use switchyard::cli::{self, Cli};

fn main() -> ExitCode {
    // Usage errors exit with clap's status 2 from here.
    let cli = Cli::parse();
    // Logs go to stderr, so that `compile` and `crds` output stays clean on stdout.
    // `RUST_LOG` overrides the default (`info`), e.g. `RUST_LOG=switchyard=debug`.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        .with_ansi(false)
        .init();
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    match cli::run(cli, &mut stdin, &mut stdout) {
        Ok(outcome) => outcome.into(),
        // `switchyard crds | head`: the reader has all it wanted; that is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::error_text(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}
