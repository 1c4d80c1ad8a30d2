//! The REST producer end to end: the vote-rest component in the wasm host -> Tansu -> consumer
//! -> Redis and NX-27017; isolation of misbehaving components; hot-swap under load; broker outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{component, invalid_votes, valid_votes, vote_json, TestStack};
use futures::stream::{self, StreamExt};
use reqwest::Method;

const VOTE_REST: &str = "vote-rest@0.1.0";
const CONTEST: &str = "vote-rest-contest@0.1.0";

/// 1,000 valid votes (990 one by one, 10 in a batch with 2 bad items) and 100 invalid requests of
/// every kind: exactly 1,000 counted and logged with path `wasm` and the component's version.
#[tokio::test]
async fn rest_votes_are_counted_and_logged_with_the_component_version() {
    let stack = TestStack::start().await;
    stack.start_host(&component("vote_rest"), &[]).await;
    stack.start_consumer("consumer", &[]).await;
    let http = reqwest::Client::new();

    let replies: Vec<(u16, String, serde_json::Value)> = stream::iter(valid_votes(990))
        .enumerate()
        .map(|(i, vote)| {
            let (stack, http) = (&stack, &http);
            async move {
                let mut body = vote_json(&vote);
                if i % 2 == 0 {
                    // The seeds send strings; numbers are accepted too.
                    body["year"] = body["year"].as_str().unwrap().parse::<i64>().unwrap().into();
                    body["rank"] = body["rank"].as_str().unwrap().parse::<i64>().unwrap().into();
                }
                stack.post_vote(http, &body).await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for (status, version, reply) in &replies {
        assert_eq!((*status, version.as_str()), (202, VOTE_REST), "{reply}");
        assert!(reply["vote_id"].as_str().is_some_and(|id| id.len() == 36), "{reply}");
    }

    // A batch: 10 valid votes and 2 invalid ones, answered per item.
    let mut batch: Vec<serde_json::Value> = valid_votes(10).iter().map(vote_json).collect();
    batch.insert(3, serde_json::json!({ "name": "Legión", "album": "", "year": "1989", "rank": "1" }));
    batch.push(serde_json::json!({ "name": "Legión", "album": "Legión", "year": "1989", "rank": "0" }));
    let reply: serde_json::Value = http.post(format!("{}/votes/batch", stack.config.host_url())).json(&batch).send().await.unwrap().json().await.unwrap();
    assert_eq!((reply["accepted"].as_u64(), reply["rejected"].as_u64()), (Some(10), Some(2)), "{reply}");
    assert_eq!((reply["results"][3]["status"].as_u64(), reply["results"][3]["field"].as_str()), (Some(400), Some("album")));
    assert_eq!((reply["results"][11]["status"].as_u64(), reply["results"][11]["field"].as_str()), (Some(400), Some("rank")));

    // 100 invalid requests: bad fields, bad JSON, wrong content type, too large, wrong method, wrong path.
    let host = stack.config.host_url();
    let mut invalid = 0;
    for (vote, field) in invalid_votes(80) {
        let (status, _, reply) = stack.post_vote(&http, &vote_json(&vote)).await;
        assert_eq!((status, reply["field"].as_str()), (400, Some(field)), "{vote:?} -> {reply}");
        invalid += 1;
    }
    let raw = |body: &'static str, content_type: &'static str| http.post(format!("{host}/votes")).header("content-type", content_type).body(body);
    for body in [r#"{"name":"#, "[]", r#"{"name":"a","album":"b","year":2000,"rank":1,"extra":1}"#, "null", "\u{0}"] {
        let response = raw(body, "application/json").send().await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{body}");
        assert_eq!(response.json::<serde_json::Value>().await.unwrap()["field"], "body");
        invalid += 1;
    }
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "application/xml", "", "application/jsonx"] {
        let response = raw(r#"{"name":"Legión","album":"Legión","year":"1989","rank":"1"}"#, content_type).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 415, "{content_type}");
        invalid += 1;
    }
    let huge = format!(r#"{{"name":"{}","album":"a","year":"2000","rank":"1"}}"#, "x".repeat(20 * 1024));
    for _ in 0..4 {
        let response = http.post(format!("{host}/votes")).header("content-type", "application/json").body(huge.clone()).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 413);
        invalid += 1;
    }
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let response = http.request(method.clone(), format!("{host}/votes")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "POST");
        invalid += 1;
    }
    for path in ["/vote", "/", "/votes/1"] {
        let response = http.post(format!("{host}{path}")).json(&serde_json::json!({})).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path}");
        invalid += 1;
    }
    assert_eq!(invalid, 100);

    stack.wait_for_counts(1000, Duration::from_secs(60)).await;
    assert_eq!(stack.total().await, 1000);
    assert_eq!(stack.logged().await, 1000);
    assert_eq!(stack.counts(vote_store::keys::PATHS).await["wasm"], 1000);
    assert!(!stack.counts(vote_store::keys::BANDS).await.contains_key("Legión"));
    let logs = stack.logs().await;
    let wasm_logs = logs.count_documents(mongodb::bson::doc! { "path": "wasm", "producer": VOTE_REST }).await.unwrap();
    assert_eq!(wasm_logs, 1000);
}

/// Through the one-call handler (what the host uses when a component exports it): a component
/// that traps, one that loops forever, one that allocates past the cap, one that sets a field the
/// host owns and one whose reply is over the handler's bound each fail only their own request,
/// with a clear 500, while the host keeps serving the others. A component exporting only the
/// handler is served; one whose handler has the wrong type is refused at deploy. With
/// `--perf-map` the host names the guests' compiled functions for `perf`.
#[tokio::test]
async fn misbehaving_components_fail_only_their_own_request() {
    let cases = [("/trap", "trapped"), ("/loop", "deadline"), ("/alloc", "trapped"), ("/bad-header", "sets transfer-encoding, which the host owns"), ("/big", "bytes the one-call handler may return")];
    let stack = misbehaving_fail_alone(&["--perf-map"], &cases).await;

    // A component with the handler and no wasi:http export is served through the handler.
    let http = reqwest::Client::new();
    let deployed = stack.admin(&http, Method::POST, "/components").body(std::fs::read(component("handler_only")).unwrap()).send().await.unwrap();
    assert_eq!(deployed.status().as_u16(), 201, "{}", deployed.text().await.unwrap());
    let echoed: serde_json::Value = http.post(format!("{}/echo?x=1", stack.config.host_url())).body("hi").send().await.unwrap().json().await.unwrap();
    assert_eq!(echoed, serde_json::json!({ "method": "POST", "target": "/echo?x=1", "body": "hi" }));
    // One whose handler export has the wrong type is refused at deploy; the other keeps serving.
    let refused = stack.admin(&http, Method::POST, "/components").body(std::fs::read(component("wrong_handler")).unwrap()).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let reason: serde_json::Value = refused.json().await.unwrap();
    assert!(reason["error"].as_str().unwrap().contains("start-up check"), "{reason}");
    let list: serde_json::Value = stack.admin(&http, Method::GET, "/components").send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["version"], "handler-only@0.1.0", "{list}");

    let pid = stack.supervisor.running(vote_stack::Part::Host.name()).expect("the host runs");
    let map = std::path::PathBuf::from(format!("/tmp/perf-{pid}.map"));
    let names = std::fs::read_to_string(&map).expect("--perf-map writes /tmp/perf-<pid>.map");
    std::fs::remove_file(&map).ok();
    assert!(names.lines().any(|line| line.contains(" wasm[0]::function[")), "no guest function named in {}", map.display());
}

/// The same through `wasi:http` (`--wasi-http-only`): there a forbidden field traps the
/// component (its `Fields::from_list` fails), and a large reply streams. A component exporting
/// only the handler is refused at deploy.
#[tokio::test]
async fn misbehaving_components_fail_only_their_own_request_through_wasi_http() {
    let cases = [("/trap", "trapped"), ("/loop", "deadline"), ("/alloc", "trapped"), ("/bad-header", "trapped")];
    let stack = misbehaving_fail_alone(&["--wasi-http-only"], &cases).await;
    let big = reqwest::get(format!("{}/big", stack.config.host_url())).await.unwrap();
    assert_eq!(big.status().as_u16(), 200, "wasi:http streams a reply of any size");
    assert!(big.bytes().await.unwrap().len() > 2 * 1024 * 1024);
    // A component it could enter only by the one-call handler is refused, naming why.
    let refused = stack.admin(&reqwest::Client::new(), Method::POST, "/components").body(std::fs::read(component("handler_only")).unwrap()).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    let reason: serde_json::Value = refused.json().await.unwrap();
    assert!(reason["error"].as_str().unwrap().contains("--wasi-http-only"), "{reason}");
}

/// Runs misbehave in a host with `flags`; each of `cases` (a path and what its 500 says) fails
/// alone while other requests keep being served. Returns the stack, still serving.
async fn misbehaving_fail_alone(flags: &[&str], cases: &[(&str, &str)]) -> TestStack {
    let stack = TestStack::start_parts(&[vote_stack::Part::Kafka]).await;
    // The request timeout must exceed a whole publish (checked at start-up): 800 ms + 1.2 s.
    let mut args = vec!["--request-timeout-ms", "2000", "--publish-timeout-ms", "800", "--memory-mib", "32"];
    args.extend_from_slice(flags);
    stack.start_host(&component("misbehave"), &args).await;
    let http = reqwest::Client::new();
    let host = stack.config.host_url();

    let healthy = {
        let (http, host) = (http.clone(), host.clone());
        tokio::spawn(async move {
            let mut answered = 0;
            let deadline = Instant::now() + Duration::from_secs(6);
            while Instant::now() < deadline {
                let response = http.get(format!("{host}/fine")).send().await.expect("the host keeps answering");
                assert_eq!(response.status().as_u16(), 200);
                answered += 1;
            }
            answered
        })
    };
    for (path, reason) in cases {
        let started = Instant::now();
        let response = http.get(format!("{host}{path}")).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 500, "{path}");
        let reply: serde_json::Value = response.json().await.unwrap();
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{path}: {reply}");
        assert!(started.elapsed() < Duration::from_secs(10), "{path} took {:?}", started.elapsed());
    }
    let answered = healthy.await.unwrap();
    assert!(answered > 10, "the host served {answered} other requests meanwhile");
    let metrics = reqwest::get(format!("{host}/metrics")).await.unwrap().text().await.unwrap();
    let failures = format!("host_component_failures_total{{component=\"misbehave\",version=\"misbehave@0.1.0\"}} {}", cases.len());
    assert!(metrics.contains(&failures), "{failures} in {metrics}");
    stack
}

/// Votes at 64 connections while the component is deployed and rolled back five times: every
/// deployed version serves requests between each swap and the next (so each swap happened under
/// load), no request fails, and the counts are exact. A core module and a component of another
/// world are refused, and the old version keeps serving.
#[tokio::test]
async fn hot_swap_under_load_loses_no_request() {
    /// The load stops when the swaps are done, or at this many votes.
    const MAX_VOTES: usize = 60_000;
    let stack = Arc::new(TestStack::start().await);
    stack.start_host(&component("vote_rest"), &[]).await;
    stack.start_consumer("consumer", &[]).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stack, http, stop) = (stack.clone(), http.clone(), stop.clone());
        tokio::spawn(async move {
            // Only bands of the contest list, so both versions accept every vote.
            let votes = valid_votes(4);
            let replies: Vec<(u16, String, serde_json::Value, Instant)> = stream::iter(0..MAX_VOTES)
                .take_while(|_| std::future::ready(!stop.load(Ordering::Relaxed)))
                .map(|i| {
                    let (stack, http, vote) = (&stack, &http, &votes[i % votes.len()]);
                    async move {
                        let (status, version, reply) = stack.post_vote(http, &vote_json(vote)).await;
                        (status, version, reply, Instant::now())
                    }
                })
                .buffer_unordered(64)
                .collect()
                .await;
            replies
        })
    };

    // Each swap: when it was answered, which version it put in, and when the next one was asked.
    let contest = std::fs::read(component("vote_rest_contest")).unwrap();
    let mut swaps: Vec<(Instant, &str)> = Vec::new();
    let mut windows: Vec<(Instant, Instant, &str)> = Vec::new();
    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let asked = Instant::now();
        let deployed = stack.admin(&http, Method::POST, "/components").body(contest.clone()).send().await.unwrap();
        assert_eq!(deployed.status().as_u16(), 201, "deploy {round}: {}", deployed.text().await.unwrap());
        swaps.push((Instant::now(), CONTEST));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let asked_back = Instant::now();
        let rolled = stack.admin(&http, Method::POST, "/components/rollback").send().await.unwrap();
        assert_eq!(rolled.status().as_u16(), 200, "rollback {round}");
        swaps.push((Instant::now(), VOTE_REST));
        if let Some(&(since, version)) = swaps.get(swaps.len().wrapping_sub(3)) {
            windows.push((since, asked, version));
        }
        windows.push((swaps[swaps.len() - 2].0, asked_back, CONTEST));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    windows.push((swaps[swaps.len() - 1].0, Instant::now(), VOTE_REST));
    assert!(!load.is_finished(), "the load ended before the last swap; raise MAX_VOTES");
    stop.store(true, Ordering::Relaxed);

    for (name, bytes) in [("a core module", b"\0asm\x01\0\0\0".to_vec()), ("another world", std::fs::read(component("other_world")).unwrap())] {
        let refused = stack.admin(&http, Method::POST, "/components").body(bytes).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 422, "{name}");
        let reason: serde_json::Value = refused.json().await.unwrap();
        assert!(reason["error"].as_str().unwrap().len() > 20, "{name}: {reason}");
    }
    let unauthorized = http.get(format!("{}/components", stack.config.host_admin_url())).send().await.unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    let list: serde_json::Value = stack.admin(&http, Method::GET, "/components").send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["version"], VOTE_REST, "{list}");

    let replies = load.await.unwrap();
    let failed: Vec<_> = replies.iter().filter(|(status, ..)| *status != 202).collect();
    assert!(failed.is_empty(), "{} requests failed, first: {:?}", failed.len(), failed.first());
    assert!(replies.iter().all(|(_, v, ..)| [VOTE_REST, CONTEST].contains(&v.as_str())), "every reply names one of the two versions");
    // Between a swap and the next one, the version it put in answered requests: the swap
    // happened under load, not after it.
    let served: Vec<usize> = windows
        .iter()
        .map(|&(from, to, version)| replies.iter().filter(|(_, v, _, at)| v == version && (from..to).contains(at)).count())
        .collect();
    println!("hot swap: {} votes, {} swaps, requests served by the new version after each swap: {served:?}", replies.len(), swaps.len());
    assert_eq!(served.len(), 10, "one window after each of the ten swaps");
    assert!(served.iter().all(|&n| n > 0), "a version served nothing after it was swapped in: {served:?}");

    let votes = replies.len() as u64;
    stack.wait_for_counts(votes, Duration::from_secs(180)).await;
    assert_eq!(stack.total().await, votes);
    assert_eq!(stack.logged().await, votes);
    let by_version = stack.logs().await.count_documents(mongodb::bson::doc! { "producer": CONTEST }).await.unwrap();
    let served_by_contest = replies.iter().filter(|(_, version, ..)| version == CONTEST).count() as u64;
    assert_eq!(by_version, served_by_contest, "each log names the version that served it");
}

/// With the broker down a vote gets 503 with Retry-After within the bounded wait; once the broker
/// is back votes flow again and every acknowledged vote is counted once.
#[tokio::test]
async fn broker_down_gives_503_with_retry_after() {
    let stack = TestStack::start().await;
    stack.start_host(&component("vote_rest"), &["--publish-timeout-ms", "3000"]).await;
    stack.start_consumer("consumer", &[]).await;
    let http = reqwest::Client::new();
    for vote in valid_votes(10) {
        assert_eq!(stack.post_vote(&http, &vote_json(&vote)).await.0, 202);
    }

    stack.supervisor.stop("kafka", Duration::from_secs(10)).unwrap();
    let started = Instant::now();
    let response = http.post(format!("{}/votes", stack.config.host_url())).json(&vote_json(&valid_votes(1)[0])).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(started.elapsed() < Duration::from_secs(15), "the wait is bounded, took {:?}", started.elapsed());
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["field"], "broker");

    stack.supervisor.spawn(&stack.config.launch(vote_stack::Part::Kafka)).unwrap();
    vote_stack::stack::wait_ready(&stack.config, &stack.supervisor, vote_stack::Part::Kafka).await.unwrap();
    let mut accepted_after = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while accepted_after < 10 {
        assert!(Instant::now() < deadline, "votes did not flow again after the broker came back");
        match stack.post_vote(&http, &vote_json(&valid_votes(1)[0])).await.0 {
            202 => accepted_after += 1,
            503 => tokio::time::sleep(Duration::from_millis(500)).await,
            other => panic!("unexpected status {other}"),
        }
    }
    stack.wait_for_counts(20, Duration::from_secs(60)).await;
    assert_eq!(stack.total().await, 20);
    assert_eq!(stack.logged().await, 20);
}

/// The host speaks HTTP/2 over cleartext (h2c, prior knowledge) on the HTTP/1.1 port: 200 votes
/// sent as streams of one connection are answered over HTTP/2 and counted once, and HTTP/1.1 is
/// still answered beside them.
#[tokio::test]
async fn rest_votes_over_h2c_are_served_and_counted() {
    let stack = TestStack::start().await;
    stack.start_host(&component("vote_rest"), &[]).await;
    stack.start_consumer("consumer", &[]).await;
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let url = format!("{}/votes", stack.config.host_url());

    let replies: Vec<(reqwest::Version, u16)> = stream::iter(valid_votes(200))
        .map(|vote| {
            let (h2, url) = (&h2, &url);
            async move {
                let response = h2.post(url).json(&vote_json(&vote)).send().await.expect("POST /votes over h2c");
                (response.version(), response.status().as_u16())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let odd: Vec<_> = replies.iter().filter(|(version, status)| *version != reqwest::Version::HTTP_2 || *status != 202).collect();
    assert!(odd.is_empty(), "{} of 200 replies were not HTTP/2 202: {:?}", odd.len(), &odd[..odd.len().min(5)]);

    let (status, _, _) = stack.post_vote(&reqwest::Client::new(), &vote_json(&valid_votes(1)[0])).await;
    assert_eq!(status, 202, "HTTP/1.1 on the same port");
    stack.wait_for_counts(201, Duration::from_secs(60)).await;
    assert_eq!(stack.total().await, 201);
    assert_eq!(stack.logged().await, 201);
}
