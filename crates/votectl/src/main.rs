//! `votectl`, the one CLI of the platform: runs the local stack, casts votes, shows results.
//!
//! - [`cli`]: the commands and flags (every address and port has a flag and an env variable).
//! - [`stack_cmd`]: `up`, `down`, `status` over [`vote_stack`].
//! - [`cast`]: sending votes over gRPC or REST with progress, throughput and latency.
//! - [`dataset`]: the votes to send, from the shipped data set or a traffic file.
//! - [`results`]: the live counts from Redis.
//! - [`component`]: deploy, list and roll back the wasm host's components.
//! - [`bench`]: both producers measured one after the other.

mod bench;
mod cast;
mod cli;
mod component;
mod dataset;
mod results;
mod stack_cmd;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = cli::Cli::parse();
    let config = cli.stack.to_config();
    match cli.command {
        cli::Command::Up => stack_cmd::up(&config).await,
        cli::Command::Down => stack_cmd::down(&config),
        cli::Command::Status { json } => stack_cmd::status(&config, json).await,
        cli::Command::Cast(args) => cast::run(&config, args).await,
        cli::Command::Results { json } => results::run(&config, json).await,
        cli::Command::Component(command) => component::run(&config, command).await,
        cli::Command::Bench(args) => bench::run(&config, args).await,
    }
}
