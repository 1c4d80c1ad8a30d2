//! `votectl component deploy | list | rollback | history`: the wasm host's admin API.

use anyhow::Context;
use vote_stack::StackConfig;

use crate::cli::{ComponentArgs, ComponentCommand};

fn token(config: &StackConfig, args: &ComponentArgs) -> anyhow::Result<String> {
    if let Some(token) = &args.admin_token {
        return Ok(token.clone());
    }
    let path = args.admin_token_file.clone().unwrap_or_else(|| config.admin_token_path());
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("reading the admin token at {} (is the stack up? `votectl up`)", path.display()))?
        .trim()
        .to_owned())
}

pub async fn run(config: &StackConfig, args: ComponentArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = format!("{}/components", config.host_admin_url());
    let request = match &args.command {
        ComponentCommand::List => client.get(&base),
        ComponentCommand::History => client.get(format!("{base}/history")),
        ComponentCommand::Rollback => client.post(format!("{base}/rollback")),
        ComponentCommand::Deploy { file } => {
            let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            client.post(&base).header("content-type", "application/wasm").body(bytes)
        }
    };
    let response = request
        .bearer_auth(token(config, &args)?)
        .send()
        .await
        .with_context(|| format!("reaching the host's admin API at {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    println!("{}", serde_json::to_string_pretty(&body)?);
    anyhow::ensure!(status.is_success(), "the host answered {status}: {}", body["error"].as_str().unwrap_or(""));
    Ok(())
}
