//! The shipped application (`spin.toml`) under mixed load: band votes, weather reports and
//! ballots served at once by their three components for a minute, while the vote component is
//! hot-swapped and rolled back again and again. No request of any workload fails, the other two
//! components never change version, and every workload's counts are exact.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{component, eventually, valid_votes, vote_json, TestStack};
use redis::AsyncCommands;
use vote_platform::Manifest;

/// How long the three workloads are driven.
const LOAD: Duration = Duration::from_secs(60);
/// Clients per workload.
const CLIENTS: usize = 4;

/// What one workload's clients saw: accepted events, failures, and the versions that served.
#[derive(Default, Debug)]
struct Seen {
    accepted: u64,
    failures: Vec<String>,
    versions: BTreeSet<String>,
    /// Accepted events per value of the field the test checks (band, municipality, department).
    per_member: BTreeMap<String, u64>,
}

/// Posts `bodies` round-robin to `path` from `CLIENTS` clients until `stop`.
async fn drive(http: reqwest::Client, url: String, bodies: Vec<serde_json::Value>, member_field: &'static str, stop: Arc<AtomicBool>) -> Seen {
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (http, url, bodies, stop) = (http.clone(), url.clone(), bodies.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut i = client;
            while !stop.load(Ordering::Relaxed) {
                let body = &bodies[i % bodies.len()];
                i += CLIENTS;
                match http.post(&url).json(body).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let version = response.headers().get("x-component-version").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                        seen.versions.insert(version);
                        if status == 202 {
                            seen.accepted += 1;
                            *seen.per_member.entry(body[member_field].as_str().unwrap_or_default().to_lowercase()).or_default() += 1;
                        } else {
                            seen.failures.push(format!("{status}: {}", response.text().await.unwrap_or_default()));
                        }
                    }
                    Err(error) => seen.failures.push(error.to_string()),
                }
            }
            seen
        }));
    }
    let mut all = Seen::default();
    for client in clients {
        let seen = client.await.unwrap();
        all.accepted += seen.accepted;
        all.failures.extend(seen.failures);
        all.versions.extend(seen.versions);
        for (member, n) in seen.per_member {
            *all.per_member.entry(member).or_default() += n;
        }
    }
    all
}

fn sample(name: &str) -> Vec<serde_json::Value> {
    let path = vote_stack::config::repo_root().join("data").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn three_workloads_under_load_while_one_component_is_swapped() {
    let manifest_path = vote_stack::config::repo_root().join("spin.toml");
    let manifest = Manifest::load(&manifest_path).unwrap();
    let stack = Arc::new(TestStack::start().await);
    for topic in ["weather", "ballots"] {
        vote_kafka::ensure_topic(&stack.config.brokers(), topic, stack.config.partitions).await.unwrap();
    }
    let manifest_arg = manifest_path.display().to_string();
    stack.start_consumer("consumer", &["--manifest", &manifest_arg]).await;
    stack.start_app_host(&manifest_path, &[]).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(16).build().unwrap();
    let host = stack.config.host_url();

    let stop = Arc::new(AtomicBool::new(false));
    // Only bands of the contest list, so both vote components accept every vote.
    let votes: Vec<serde_json::Value> = valid_votes(4).iter().map(vote_json).collect();
    let loads = [
        tokio::spawn(drive(http.clone(), format!("{host}/votes"), votes, "name", stop.clone())),
        tokio::spawn(drive(http.clone(), format!("{host}/tweets"), sample("weather.json"), "municipality", stop.clone())),
        tokio::spawn(drive(http.clone(), format!("{host}/ballots"), sample("ballots.json"), "departamento", stop.clone())),
    ];

    // Swap the vote component to the contest build and back, again and again, under the load.
    let contest = std::fs::read(component("vote_rest_contest")).unwrap();
    let started = Instant::now();
    let mut swaps = 0;
    while started.elapsed() < LOAD - Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_secs(4)).await;
        let deployed = stack.admin(&http, reqwest::Method::POST, "/components?component=vote-rest").body(contest.clone()).send().await.unwrap();
        assert_eq!(deployed.status().as_u16(), 201, "{}", deployed.text().await.unwrap());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rolled = stack.admin(&http, reqwest::Method::POST, "/components/rollback?component=vote-rest").send().await.unwrap();
        assert_eq!(rolled.status().as_u16(), 200, "{}", rolled.text().await.unwrap());
        swaps += 2;
    }
    tokio::time::sleep(LOAD.saturating_sub(started.elapsed())).await;
    stop.store(true, Ordering::Relaxed);
    let [votes, weather, ballots] = loads;
    let (votes, weather, ballots) = (votes.await.unwrap(), weather.await.unwrap(), ballots.await.unwrap());
    eprintln!(
        "{swaps} swaps in {:?}; accepted: {} votes, {} weather reports, {} ballots",
        started.elapsed(),
        votes.accepted,
        weather.accepted,
        ballots.accepted
    );

    for (name, seen) in [("votes", &votes), ("weather", &weather), ("ballots", &ballots)] {
        assert!(seen.failures.is_empty(), "{name}: {} failed requests, first: {:?}", seen.failures.len(), seen.failures.first());
        assert!(seen.accepted > 100, "{name}: only {} accepted", seen.accepted);
    }
    assert_eq!(weather.versions, BTreeSet::from(["weather-rest@0.1.0".to_owned()]), "the weather component never changed version");
    assert_eq!(ballots.versions, BTreeSet::from(["ballot-rest@0.1.0".to_owned()]), "the ballot component never changed version");
    assert!(votes.versions.len() == 2 && votes.versions.iter().any(|v| v.starts_with("vote-rest-contest")), "both vote versions served: {:?}", votes.versions);

    // Counts: exact per workload, and per member of one aggregate each.
    let mut redis = stack.redis().await;
    let weather_spec = &manifest.workloads["weather"];
    let ballots_spec = &manifest.workloads["ballots"];
    let expected = [(vote_store::keys::TOTAL.to_owned(), votes.accepted), (weather_spec.total_key(), weather.accepted), (ballots_spec.total_key(), ballots.accepted)];
    let counted = eventually(Duration::from_secs(60), || {
        let (mut redis, expected) = (redis.clone(), expected.clone());
        async move {
            for (key, want) in &expected {
                let have: Option<u64> = redis.get(key).await.unwrap();
                if have.unwrap_or(0) != *want {
                    return false;
                }
            }
            true
        }
    })
    .await;
    for (key, want) in &expected {
        let have: Option<u64> = redis.get(key).await.unwrap();
        assert_eq!(have.unwrap_or(0), *want, "{key} (counted: {})", counted.is_ok());
    }
    let per_municipality: Vec<(String, u64)> = redis.zrange_withscores(weather_spec.count_key("municipality"), 0, -1).await.unwrap();
    let per_municipality: BTreeMap<String, u64> = per_municipality.into_iter().collect();
    assert_eq!(per_municipality, weather.per_member, "weather reports per municipality");
    let bands: Vec<(String, u64)> = redis.zrange_withscores(vote_store::keys::BANDS, 0, -1).await.unwrap();
    let bands: BTreeMap<String, u64> = bands.into_iter().map(|(band, n)| (band.to_lowercase(), n)).collect();
    assert_eq!(bands, votes.per_member, "votes per band");
    let ballots_total: u64 = ballots.per_member.values().sum();
    assert_eq!(ballots_total, ballots.accepted);
    let database = mongodb::Client::with_uri_str(stack.config.mongo_url()).await.unwrap().database("votes");
    for (spec, seen) in [(weather_spec, &weather), (ballots_spec, &ballots)] {
        let logged = database.collection::<mongodb::bson::Document>(&spec.collection()).count_documents(mongodb::bson::doc! {}).await.unwrap();
        assert_eq!(logged, seen.accepted, "{} logs", spec.name);
    }
}
