//! Where the RabbitMQ stream listener is and how to log in, from one address string.

use std::time::Duration;

use rabbitmq_stream_client::Environment;

/// The default address: a local node's stream listener (the `rabbitmq_stream` plugin).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:5552";

/// A RabbitMQ address that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the RabbitMQ address {0:?} is not host:port or user:password@host:port")]
    Address(String),
    #[error("the manifest binds {0:?} to rabbitmq: give its stream listener with --rabbitmq or VOTES_RABBITMQ (for example 127.0.0.1:5552)")]
    Missing(Vec<String>),
}

/// How to reach a RabbitMQ node's stream listener.
#[derive(Debug, Clone)]
pub struct RabbitSettings {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// How long a publish waits for the broker's confirm before it answers `Indeterminate`.
    pub timeout: Duration,
}

impl RabbitSettings {
    /// Parses `host:port` or `user:password@host:port` (`guest:guest` when no user is given).
    pub fn parse(address: &str) -> Result<Self, SettingsError> {
        let bad = || SettingsError::Address(address.chars().take(128).collect());
        let (credentials, endpoint) = match address.rsplit_once('@') {
            Some((credentials, endpoint)) => (Some(credentials), endpoint),
            None => (None, address),
        };
        let (username, password) = match credentials {
            Some(credentials) => credentials.split_once(':').ok_or_else(bad)?,
            None => ("guest", "guest"),
        };
        let (host, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
        let port = port.parse().map_err(|_| bad())?;
        if host.is_empty() || username.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            username: username.to_owned(),
            password: password.to_owned(),
            timeout: vote_kafka::DEFAULT_PUBLISH_TIMEOUT,
        })
    }

    /// `host:port`, for logs and errors (never the password).
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Connects an environment (one connection to the node, more opened per producer/consumer).
    pub async fn connect(&self) -> Result<Environment, rabbitmq_stream_client::error::ClientError> {
        Environment::builder()
            .host(&self.host)
            .port(self.port)
            .username(&self.username)
            .password(&self.password)
            .build()
            .await
    }

    /// Connects one plain client (for queries outside a producer or a subscription).
    pub async fn client(&self) -> Result<rabbitmq_stream_client::Client, rabbitmq_stream_client::error::ClientError> {
        let options = rabbitmq_stream_client::ClientOptions::builder()
            .host(&self.host)
            .port(self.port)
            .user(&self.username)
            .password(&self.password)
            .build();
        rabbitmq_stream_client::Client::connect(options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_with_and_without_credentials() {
        let plain = RabbitSettings::parse("127.0.0.1:5552").unwrap();
        assert_eq!((plain.host.as_str(), plain.port, plain.username.as_str()), ("127.0.0.1", 5552, "guest"));
        let with = RabbitSettings::parse("votes:s3cr@t@rabbit:6000").unwrap();
        assert_eq!((with.host.as_str(), with.port, with.username.as_str(), with.password.as_str()), ("rabbit", 6000, "votes", "s3cr@t"));
        assert_eq!(with.endpoint(), "rabbit:6000");
    }

    #[test]
    fn a_bad_address_names_itself() {
        for bad in ["rabbit", "rabbit:port", ":5552", "user@rabbit:5552"] {
            let error = RabbitSettings::parse(bad).unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
        }
    }
}
