//! `votectl up`, `down` and `status`: the local stack, driven through [`vote_stack`].

use vote_stack::{Part, PartStatus, StackConfig, Supervisor};

pub async fn up(config: &StackConfig) -> anyhow::Result<()> {
    let supervisor = Supervisor::detached(&config.state_dir);
    println!("starting the local stack (state in {})", config.state_dir.display());
    let report = vote_stack::up(config, &supervisor, &Part::ALL).await?;
    print_table(&report);
    println!("\nlogs: {}/logs", config.state_dir.display());
    println!("send votes: votectl cast --path grpc --count 1000");
    println!("see counts: votectl results, or open {}/", config.results_url());
    println!("see metrics: {} (Prometheus; dashboards in grafana/)", config.prometheus_url());
    Ok(())
}

pub fn down(config: &StackConfig) -> anyhow::Result<()> {
    let supervisor = Supervisor::detached(&config.state_dir);
    for (part, was_running) in vote_stack::down(&supervisor)? {
        println!("{part:<14} {}", if was_running { "stopped" } else { "not running" });
    }
    Ok(())
}

pub async fn status(config: &StackConfig, json: bool) -> anyhow::Result<()> {
    let supervisor = Supervisor::detached(&config.state_dir);
    let report = vote_stack::status(config, &supervisor).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    anyhow::ensure!(report.iter().all(|p| p.healthy), "some parts are not healthy");
    Ok(())
}

fn print_table(report: &[PartStatus]) {
    println!("{:<14} {:<9} {:<8} {:<8} address", "part", "state", "pid", "healthy");
    for part in report {
        let pid = part.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        println!("{:<14} {:<9} {:<8} {:<8} {}", part.part, part.state, pid, if part.healthy { "yes" } else { "no" }, part.address);
        if !part.detail.is_empty() {
            println!("{:<14} {}", "", part.detail);
        }
    }
}
