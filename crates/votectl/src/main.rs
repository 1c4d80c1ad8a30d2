//! `votectl`, the one CLI of the platform: runs the local stack, casts votes, shows results.
//!
//! - [`cli`]: the commands and flags (every address and port has a flag and an env variable).
//! - [`stack_cmd`]: `up`, `down`, `status` over [`vote_stack`].
//! - [`cast`]: sending votes over gRPC or REST with progress, throughput and latency.
//! - [`dataset`]: the votes to send, from the shipped data set or a traffic file.
//! - [`results`]: the live counts from Redis, of the band votes or of a manifest workload.
//! - [`recount`]: rebuild the Redis counters from the MongoDB logs, exactly once per vote.
//! - [`component`]: deploy, list and roll back the wasm host's components.
//! - [`bench`]: the producers measured in rotating rounds, a concurrency sweep and open loop.
//! - [`broker_bench`]: one workload's broker (Kafka or RabbitMQ) measured through the publishers.
//! - [`open_loop`]: votes on a fixed schedule, latency corrected for coordinated omission.
//! - [`procstat`]: CPU time and peak memory of the stack's processes from `/proc`.

mod bench;
mod broker_bench;
mod cast;
mod cli;
mod component;
mod dataset;
mod open_loop;
mod procstat;
mod recount;
mod results;
mod stack_cmd;

use std::backtrace::BacktraceStatus;
use std::process::ExitCode;

use clap::Parser;

/// Runs the command; an error is printed as one paragraph (`error: what: why: ...`), with a
/// backtrace only when one was asked for (`RUST_BACKTRACE=1` or `RUST_LIB_BACKTRACE=1`), and
/// the exit code is 1. (Returning the error from `main` would print its `Debug` form: a "Caused
/// by" list and, with `RUST_BACKTRACE` set anywhere in the environment, a full stack backtrace.)
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_paragraph(&error));
            if error.backtrace().status() == BacktraceStatus::Captured {
                eprintln!("\nbacktrace:\n{}", error.backtrace());
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `error: outer: inner: root`; a cause whose text the
/// previous message already ends with (some errors print their source too) is said once.
fn error_paragraph(error: &anyhow::Error) -> String {
    let mut line = String::from("error");
    let mut previous = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !text.is_empty() && !previous.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        previous = text;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_joined_once_each() {
        let root = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = anyhow::Error::new(root).context("connecting to Redis");
        assert_eq!(error_paragraph(&error), "error: connecting to Redis: refused");
        let echoing = anyhow::anyhow!("dial failed: refused").context("connecting");
        assert_eq!(error_paragraph(&echoing.context("up")), "error: up: connecting: dial failed: refused");
    }
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = cli::Cli::parse();
    let config = cli.stack.to_config();
    match cli.command {
        cli::Command::Up => stack_cmd::up(&config).await,
        cli::Command::Down => stack_cmd::down(&config),
        cli::Command::Status { json } => stack_cmd::status(&config, json).await,
        cli::Command::Cast(args) => cast::run(&config, args).await,
        cli::Command::Results(args) => results::run(&config, args).await,
        cli::Command::Recount(args) => recount::run(&config, args).await,
        cli::Command::Component(command) => component::run(&config, command).await,
        cli::Command::Bench(args) => bench::run(&config, args).await,
        cli::Command::BenchBroker(args) => broker_bench::run(&config, args).await,
    }
}
