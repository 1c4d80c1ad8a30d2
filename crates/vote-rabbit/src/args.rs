//! The flags that say where a process finds RabbitMQ, shared by the host and the consumer.

use crate::settings::{RabbitSettings, SettingsError};

/// Where the RabbitMQ node's stream listener is and how to log in; needed only when the manifest
/// binds a topic to RabbitMQ.
#[derive(clap::Args, Debug, Clone)]
pub struct RabbitArgs {
    /// The RabbitMQ node's stream listener, `host:port` (or `user:password@host:port`), for the
    /// topics the manifest binds to RabbitMQ (`broker = "rabbitmq"`).
    #[arg(long, env = "VOTES_RABBITMQ", hide_env_values = true)]
    pub rabbitmq: Option<String>,
    /// The user to log in as (instead of one in --rabbitmq; `guest` if neither names one).
    #[arg(long, env = "VOTES_RABBITMQ_USERNAME")]
    pub rabbitmq_username: Option<String>,
    /// Its password.
    #[arg(long, env = "VOTES_RABBITMQ_PASSWORD", hide_env_values = true)]
    pub rabbitmq_password: Option<String>,
}

impl RabbitArgs {
    /// The settings to reach the node when `topics` (the manifest's RabbitMQ topics) is not empty;
    /// `None` when it is. A missing address names the topics that need it.
    pub fn settings(&self, topics: &[String]) -> Result<Option<RabbitSettings>, SettingsError> {
        if topics.is_empty() {
            return Ok(None);
        }
        let address = self.rabbitmq.as_deref().ok_or_else(|| SettingsError::Missing(topics.to_vec()))?;
        let mut settings = RabbitSettings::parse(address)?;
        if let Some(username) = self.rabbitmq_username.as_deref().filter(|u| !u.is_empty()) {
            settings.username = username.to_owned();
        }
        if let Some(password) = &self.rabbitmq_password {
            settings.password = password.clone();
        }
        Ok(Some(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(address: Option<&str>, username: Option<&str>, password: Option<&str>) -> RabbitArgs {
        RabbitArgs { rabbitmq: address.map(str::to_owned), rabbitmq_username: username.map(str::to_owned), rabbitmq_password: password.map(str::to_owned) }
    }

    #[test]
    fn no_topic_on_rabbitmq_needs_no_address() {
        assert!(args(None, None, None).settings(&[]).unwrap().is_none());
    }

    #[test]
    fn a_topic_on_rabbitmq_without_an_address_is_named() {
        let error = args(None, None, None).settings(&["weather".to_owned()]).unwrap_err().to_string();
        assert!(error.contains("weather") && error.contains("VOTES_RABBITMQ"), "{error}");
    }

    #[test]
    fn the_credential_flags_win_over_the_address() {
        let settings = args(Some("a:b@rabbit:5552"), Some("votes"), Some("s3cret")).settings(&["weather".to_owned()]).unwrap().unwrap();
        assert_eq!((settings.username.as_str(), settings.password.as_str(), settings.endpoint().as_str()), ("votes", "s3cret", "rabbit:5552"));
    }
}
