//! `votectl component deploy | list | rollback | history | keygen`: the wasm host's admin API,
//! with fleet deploys signed by the deploy key.

use anyhow::Context;
use vote_stack::admin::AdminClient;
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

/// The deploy key: the one named, or the stack's when it exists.
fn deploy_key(config: &StackConfig, args: &ComponentArgs) -> anyhow::Result<Option<deploy_signing::SecretKey>> {
    match &args.deploy_key_file {
        Some(path) => Ok(Some(AdminClient::read_key(path)?)),
        None if config.deploy_key_path().is_file() => Ok(Some(AdminClient::read_key(&config.deploy_key_path())?)),
        None => Ok(None),
    }
}

pub async fn run(config: &StackConfig, args: ComponentArgs) -> anyhow::Result<()> {
    if let ComponentCommand::Keygen { out } = &args.command {
        let path = out.clone().unwrap_or_else(|| config.deploy_key_path());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let public = deploy_signing::SecretKey::generate()?.write(&path)?;
        println!("deploy key {} (keep it private), public key {} (give it to the hosts)", path.display(), public.display());
        return Ok(());
    }
    let client = AdminClient::new(reqwest::Client::new(), &config.host_admin_url(), token(config, &args)?, deploy_key(config, &args)?).for_component(args.component.clone());
    let (status, body) = match &args.command {
        ComponentCommand::List => client.list().await?,
        ComponentCommand::History => client.history().await?,
        ComponentCommand::App => client.app().await?,
        ComponentCommand::Reload => client.reload().await?,
        ComponentCommand::Rollback => client.rollback().await?,
        ComponentCommand::Deploy { file } => client.deploy(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?).await?,
        ComponentCommand::Keygen { .. } => unreachable!("handled above"),
    };
    println!("{}", serde_json::to_string_pretty(&body)?);
    anyhow::ensure!(status.is_success(), "the host answered {status}: {}", body["error"].as_str().unwrap_or(""));
    Ok(())
}
