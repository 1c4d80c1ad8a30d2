//! `--check-config`: a binary parses its flags and environment, checks them, prints the effective
//! configuration and exits, without touching the network or any file. Deploy manifests are
//! tested through it, so a flag or variable a binary does not read is caught before a rollout.

use std::collections::BTreeSet;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches};

/// Every environment variable the project's binaries read starts with this.
pub const ENV_PREFIX: &str = "VOTES_";

/// The flag every service binary has.
pub const FLAG: &str = "check_config";

/// Parses flags and environment into `T`, keeping the matches for [`finish`].
pub fn parse<T: CommandFactory + FromArgMatches>() -> (T, ArgMatches) {
    let matches = T::command().get_matches();
    let parsed = T::from_arg_matches(&matches).unwrap_or_else(|error| error.format(&mut T::command()).exit());
    (parsed, matches)
}

/// `VOTES_*` variables in the environment that `command` does not read: a misspelt or stale
/// variable in a manifest would otherwise be ignored without a word.
pub fn unknown_env(command: &Command) -> Vec<String> {
    let known: BTreeSet<String> = command.get_arguments().filter_map(|arg| arg.get_env()).map(|env| env.to_string_lossy().into_owned()).collect();
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with(ENV_PREFIX) && !known.contains(name))
        .collect();
    unknown.sort();
    unknown
}

/// One line per setting: `--flag = value (source)`, secrets masked.
pub fn effective(command: &Command, matches: &ArgMatches) -> Vec<String> {
    command
        .get_arguments()
        .filter(|arg| arg.get_id() != FLAG && arg.get_long().is_some())
        .map(|arg| {
            let id = arg.get_id().as_str();
            let value = match matches.get_raw(id) {
                Some(_) if arg.is_hide_env_values_set() => "<set, hidden>".to_owned(),
                Some(values) => values.map(|v| v.to_string_lossy().into_owned()).collect::<Vec<_>>().join(","),
                None => "<unset>".to_owned(),
            };
            let source = match (matches.value_source(id), arg.get_env()) {
                (Some(ValueSource::EnvVariable), Some(env)) => format!("from {}", env.to_string_lossy()),
                (Some(ValueSource::CommandLine), _) => "from the command line".to_owned(),
                _ => "default".to_owned(),
            };
            format!("--{} = {value} ({source})", arg.get_long().unwrap_or(id))
        })
        .collect()
}

/// With `--check-config`, adds the unknown `VOTES_*` variables to `problems`, prints the
/// effective configuration and exits (0 when there is no problem, 2 otherwise). Without it,
/// warns about unknown variables and returns an error listing the problems, if any.
pub fn finish<T: CommandFactory>(check_only: bool, matches: &ArgMatches, mut problems: Vec<String>) -> anyhow::Result<()> {
    let command = T::command();
    let unknown = unknown_env(&command);
    if !unknown.is_empty() {
        let problem = format!("{} does not read {} (known variables: see --help)", command.get_name(), unknown.join(", "));
        // A running service only warns: a child of `votectl up` inherits the user's own VOTES_*.
        if check_only {
            problems.push(problem);
        } else {
            tracing::warn!("{problem}");
        }
    }
    if check_only {
        if problems.is_empty() {
            println!("{}: configuration ok", command.get_name());
            for line in effective(&command, matches) {
                println!("  {line}");
            }
            std::process::exit(0);
        }
        for problem in &problems {
            eprintln!("{}: bad configuration: {problem}", command.get_name());
        }
        std::process::exit(2);
    }
    anyhow::ensure!(problems.is_empty(), "bad configuration: {}", problems.join("; "));
    Ok(())
}

/// A problem when `brokers` is not a comma-separated list of `host:port`.
pub fn check_brokers(brokers: &str) -> Option<String> {
    let bad: Vec<&str> = brokers
        .split(',')
        .map(str::trim)
        .filter(|broker| match broker.rsplit_once(':') {
            Some((host, port)) => host.is_empty() || port.parse::<u16>().is_err(),
            None => true,
        })
        .collect();
    (!bad.is_empty()).then(|| format!("brokers: {bad:?} is not host:port (a comma-separated list of host:port)"))
}

/// The URL schemes a Redis connection accepts.
pub const REDIS_SCHEMES: &[&str] = &["redis://", "rediss://", "redis+unix://", "unix://"];

/// The URL schemes a MongoDB connection accepts.
pub const MONGO_SCHEMES: &[&str] = &["mongodb://", "mongodb+srv://"];

/// A problem when `url` does not start with one of `schemes` (`redis://`, ...).
pub fn check_url(field: &str, url: &str, schemes: &[&str]) -> Option<String> {
    let ok = schemes.iter().any(|scheme| url.strip_prefix(scheme).is_some_and(|rest| !rest.is_empty()));
    (!ok).then(|| format!("{field}: {url:?} must start with one of {schemes:?} and name a server"))
}

/// A problem when `topic` is not a legal Kafka topic name.
pub fn check_topic(field: &str, topic: &str) -> Option<String> {
    let legal = !topic.is_empty() && topic.len() <= 249 && topic.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) && topic != "." && topic != "..";
    (!legal).then(|| format!("{field}: {topic:?} is not a Kafka topic name (letters, digits, '.', '_', '-', at most 249)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_urls_and_topics_are_checked() {
        assert_eq!(check_brokers("kafka:9092, k2:9093"), None);
        assert!(check_brokers("kafka").unwrap().contains("kafka"));
        assert!(check_brokers("kafka:x").is_some());
        assert_eq!(check_url("redis-url", "redis://redis:6379", &["redis://", "rediss://"]), None);
        assert!(check_url("mongo-url", "http://x", &["mongodb://"]).unwrap().starts_with("mongo-url"));
        assert_eq!(check_topic("topic", "votes.components"), None);
        assert!(check_topic("topic", "votes components").is_some());
    }

    #[derive(clap::Parser, Debug)]
    struct Demo {
        #[arg(long, env = "VOTES_DEMO_ADDR", default_value = "0.0.0.0:1")]
        addr: String,
        #[arg(long, env = "VOTES_DEMO_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[arg(long)]
        check_config: bool,
    }

    #[test]
    fn effective_configuration_masks_secrets() {
        let command = Demo::command();
        let matches = command.clone().get_matches_from(["demo", "--token", "s3cret", "--addr", "1.2.3.4:5"]);
        let lines = effective(&command, &matches).join("\n");
        assert!(lines.contains("--addr = 1.2.3.4:5 (from the command line)"), "{lines}");
        assert!(lines.contains("--token = <set, hidden>"), "{lines}");
        assert!(!lines.contains("s3cret"), "{lines}");
        assert!(!lines.contains("check-config"), "{lines}");
    }
}
