//! `switchyard-echo`: the end-to-end test workload (see the library docs for every mode).

#![forbid(unsafe_code)]

use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let code = switchyard_echo::run(switchyard_echo::Args::parse()).await?;
    Ok(std::process::ExitCode::from(code))
}
