//! Fleet hot-swap: hosts that follow one fleet topic all serve a deploy or rollback sent to any of
//! them within seconds, under load and with no failed request; a host started afterwards replays
//! the topic and serves the current version from its first request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::fleet::signed_admin;
use e2e::{component, eventually, valid_votes, vote_json, TestStack, ADMIN_TOKEN};
use reqwest::Method;
use vote_stack::{Part, StackConfig};

const VOTE_REST: &str = "vote-rest@0.1.0";
const CONTEST: &str = "vote-rest-contest@0.1.0";
/// Every host must serve a deploy or rollback this soon after it was sent.
const FLEET_DEADLINE: Duration = Duration::from_secs(5);
/// Requests in flight per host.
const CONCURRENCY: usize = 4;

/// The version a host serves, from its `/readyz`.
async fn serving(http: &reqwest::Client, host: &StackConfig) -> String {
    let ready: serde_json::Value = http.get(format!("{}/readyz", host.host_url())).send().await.unwrap().json().await.unwrap();
    ready["version"].as_str().unwrap_or_default().to_owned()
}

/// An admin API call with the test token; returns the status and the JSON answer.
async fn admin(http: &reqwest::Client, host: &StackConfig, method: Method, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let response = http.request(method, format!("{}{path}", host.host_admin_url())).bearer_auth(ADMIN_TOKEN).body(body).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

/// Sends votes to `host` from `CONCURRENCY` tasks until `stop`; returns (status, version) of each.
fn load(http: reqwest::Client, host: StackConfig, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(u16, String)>> {
    tokio::spawn(async move {
        let workers = (0..CONCURRENCY).map(|worker| {
            let (http, url, stop) = (http.clone(), format!("{}/votes", host.host_url()), stop.clone());
            async move {
                let votes = valid_votes(4);
                let mut replies = Vec::new();
                let mut i = worker;
                while !stop.load(Ordering::Relaxed) {
                    let response = http.post(&url).json(&vote_json(&votes[i % votes.len()])).send().await;
                    i += 1;
                    replies.push(match response {
                        Ok(r) => (r.status().as_u16(), r.headers().get("x-component-version").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()),
                        Err(error) => (0, error.to_string()),
                    });
                }
                replies
            }
        });
        futures::future::join_all(workers).await.into_iter().flatten().collect()
    })
}

/// Waits until every host serves `version`; panics when one does not within [`FLEET_DEADLINE`]
/// of `sent`.
async fn wait_fleet_serves(http: &reqwest::Client, hosts: &[StackConfig], version: &str, sent: Instant, what: &str) -> Duration {
    for host in hosts {
        let reached = eventually(FLEET_DEADLINE.saturating_sub(sent.elapsed()), || async { serving(http, host).await == version }).await;
        assert!(reached.is_ok(), "{what}: the host on port {} still serves {} {:?} after it was sent", host.host_port, serving(http, host).await, sent.elapsed());
    }
    sent.elapsed()
}

/// Two hosts under load, five deploys and rollbacks sent alternately to either host's admin API:
/// no request fails, both hosts serve each new version within 5 s of the request, and a third
/// host started afterwards serves the current version and reads the same history.
#[tokio::test(flavor = "multi_thread")]
async fn fleet_deploys_reach_every_host() {
    let stack = TestStack::start_parts(&[Part::Kafka]).await;
    let hosts = vec![stack.start_fleet_host("host-a").await, stack.start_fleet_host("host-b").await];
    let http = reqwest::Client::builder().pool_max_idle_per_host(2 * CONCURRENCY).build().unwrap();
    for host in &hosts {
        assert_eq!(serving(&http, host).await, VOTE_REST);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = hosts.iter().map(|host| load(http.clone(), host.clone(), stop.clone())).collect();

    let contest = std::fs::read(component("vote_rest_contest")).unwrap();
    let mut slowest = Duration::ZERO;
    for round in 0..5 {
        let (to, other) = (&hosts[round % 2], &hosts[(round + 1) % 2]);
        let sent = Instant::now();
        let (status, deployed) = signed_admin(to).deploy(contest.clone()).await.unwrap();
        assert_eq!(status, 201, "deploy {round}: {deployed}");
        assert_eq!(deployed["version"], CONTEST, "deploy {round}: {deployed}");
        slowest = slowest.max(wait_fleet_serves(&http, &hosts, CONTEST, sent, &format!("deploy {round}")).await);

        let sent = Instant::now();
        let (status, rolled) = signed_admin(other).rollback().await.unwrap();
        assert_eq!(status, 200, "rollback {round}: {rolled}");
        slowest = slowest.max(wait_fleet_serves(&http, &hosts, VOTE_REST, sent, &format!("rollback {round}")).await);
    }
    let (status, _) = signed_admin(&hosts[0]).deploy(contest).await.unwrap();
    assert_eq!(status, 201, "the last deploy");
    wait_fleet_serves(&http, &hosts, CONTEST, Instant::now(), "the last deploy").await;

    let late = stack.start_fleet_host("host-late").await;
    assert_eq!(serving(&http, &late).await, CONTEST, "a host started later serves the current version");
    let first = http.post(format!("{}/votes", late.host_url())).json(&vote_json(&valid_votes(1)[0])).send().await.unwrap();
    let version = first.headers().get("x-component-version").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!((first.status().as_u16(), version.as_str()), (202, CONTEST), "the late host's first vote");
    let (status, listed) = admin(&http, &late, Method::GET, "/components", Vec::new()).await;
    assert_eq!(status, 200);
    assert_eq!(listed[1]["version"], VOTE_REST, "the late host can roll back to what came before: {listed}");

    let (status, history) = admin(&http, &late, Method::GET, "/components/history", Vec::new()).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = history.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    let expected: Vec<&str> = (0..5).flat_map(|_| ["deploy", "rollback"]).chain(["deploy"]).collect();
    assert_eq!(actions, expected, "the late host read the whole history: {history}");
    assert!(history.as_array().unwrap().iter().all(|e| e["applied"] == true && e["origin"].as_str().is_some_and(|o| !o.is_empty())), "{history}");

    stop.store(true, Ordering::Relaxed);
    let mut replies = Vec::new();
    for load in loads {
        replies.extend(load.await.unwrap());
    }
    let failed: Vec<_> = replies.iter().filter(|(status, _)| *status != 202).collect();
    assert!(failed.is_empty(), "{} of {} requests failed, first: {:?}", failed.len(), replies.len(), failed.first());
    let served_by_contest = replies.iter().filter(|(_, version)| version == CONTEST).count();
    assert!(served_by_contest > 0 && served_by_contest < replies.len(), "both versions served under load");
    assert!(replies.iter().all(|(_, version)| version == CONTEST || version == VOTE_REST));
    eprintln!("{} requests, none failed; slowest fleet-wide swap {slowest:?}", replies.len());
}
