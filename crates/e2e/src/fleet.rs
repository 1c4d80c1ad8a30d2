//! Fleet hosts under test: hosts that follow the fleet topic with the stack's deploy key, and the
//! admin client that signs their deploys.

use std::time::Duration;

use vote_stack::admin::AdminClient;
use vote_stack::{Part, StackConfig};

use crate::{component, eventually, free_port, TestStack, ADMIN_TOKEN};

/// The fleet topic of the tests (the name k8s and compose use).
pub const FLEET_TOPIC: &str = "votes.components";

impl TestStack {
    /// Starts a host named `name` on ports of its own, serving `vote_rest` first, following the
    /// fleet topic with the stack's deploy public key (created on first use) and extra flags;
    /// returns its configuration without waiting for it.
    pub fn spawn_fleet_host(&self, name: &str, extra_args: &[&str]) -> StackConfig {
        let mut config = self.config.clone();
        config.host_port = free_port();
        config.host_admin_port = free_port();
        config.component = component("vote_rest");
        let token = config.admin_token_path();
        std::fs::create_dir_all(token.parent().unwrap()).unwrap();
        std::fs::write(&token, ADMIN_TOKEN).unwrap();
        vote_stack::stack::ensure_deploy_key(&config).expect("writing the deploy key");
        let mut launch = config.launch(Part::Host).args(["--fleet-topic", FLEET_TOPIC, "--fleet-create-topic"]).args(extra_args);
        launch.name = name.to_owned();
        self.supervisor.spawn(&launch).expect("starting votes-host");
        config
    }

    /// [`TestStack::spawn_fleet_host`], then waits until it answers `/readyz`.
    pub async fn start_fleet_host(&self, name: &str) -> StackConfig {
        let config = self.spawn_fleet_host(name, &[]);
        self.wait_host_ready(name, &config, Duration::from_secs(60)).await;
        config
    }

    /// Waits until the host `name` answers `/readyz`; panics with its log when it does not.
    pub async fn wait_host_ready(&self, name: &str, host: &StackConfig, timeout: Duration) {
        let ready = format!("{}/readyz", host.host_url());
        eventually(timeout, || async { vote_stack::probe::http_ok(&ready).await.is_ok() })
            .await
            .unwrap_or_else(|_| panic!("{name} did not become ready:\n{}", self.supervisor.log_tail(name, 30)));
    }
}

/// The admin API of `host` with the test token and the stack's deploy key: deploys and
/// rollbacks are signed as `votectl component` signs them.
pub fn signed_admin(host: &StackConfig) -> AdminClient {
    let key = AdminClient::read_key(&host.deploy_key_path()).expect("the stack's deploy key");
    AdminClient::new(reqwest::Client::new(), &host.host_admin_url(), ADMIN_TOKEN.to_owned(), Some(key))
}
