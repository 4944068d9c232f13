//! The `switchyard` binary: parses the command line and hands over to the library.

use std::{io, process::ExitCode};

use clap::Parser as _;
use switchyard::cli::{self, Cli};

fn main() -> ExitCode {
    // Usage errors exit with clap's status 2 from here.
    let cli = Cli::parse();
    let mut stdin = io::stdin().lock();
    let mut stdout = io::stdout().lock();
    match cli::run(cli, &mut stdin, &mut stdout) {
        Ok(outcome) => outcome.into(),
        // `switchyard crds | head`: the reader has all it wanted; that is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<io::Error>())
        .any(|io| io.kind() == io::ErrorKind::BrokenPipe)
}
