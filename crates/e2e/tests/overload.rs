//! The wasm host under pressure: a thousand slow clients are cut off by the timeouts while
//! normal clients keep being served; more requests than the in-flight bound get a fast 503 with
//! Retry-After, never a 500; deploys time out, run one at a time and never block a rollback.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::{component, raise_open_files_limit, rss_kib, thp_enabled, valid_votes, vote_json, TestStack};
use futures::stream::{self, StreamExt};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vote_stack::Part;

/// Slow connections held open at once.
const SLOW: usize = 1_000;
/// The header and body timeouts the host gets in these tests.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How much later than its timeout a slow connection may be closed on this busy machine.
const CLOSE_SLACK: Duration = Duration::from_secs(5);
/// How fast a normal client must be answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// What a slow connection sent before it went quiet.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stall {
    /// Part of the request head, never the blank line that ends it.
    Headers,
    /// The whole head and 13 of the 64 bytes of body it announced.
    Body,
}

/// Opens a connection and sends part of a request; returns it with the time the sending ended.
async fn open_slow(addr: String, stall: Stall) -> (TcpStream, Stall, Instant) {
    let mut stream = TcpStream::connect(&addr).await.expect("connecting a slow client");
    let partial = match stall {
        Stall::Headers => "POST /votes HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: applic".to_owned(),
        Stall::Body => "POST /votes HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: 64\r\n\r\n{\"name\":\"Alux".to_owned(),
    };
    stream.write_all(partial.as_bytes()).await.expect("sending part of a request");
    (stream, stall, Instant::now())
}

/// Waits until the host closes the connection (EOF or reset); returns how long after the last
/// byte it was closed (None: not within the bound) and what the host wrote.
async fn wait_closed(mut stream: TcpStream, sent: Instant, bound: Duration) -> (Option<Duration>, String) {
    let mut answer = Vec::new();
    let read = tokio::time::timeout_at((sent + bound).into(), async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    (read.ok().map(|_| sent.elapsed()), String::from_utf8_lossy(&answer).into_owned())
}

/// One normal client's request: its status, how long it took, and whether it said Retry-After.
#[derive(Debug)]
struct Answer {
    status: u16,
    took: Duration,
    retry_after: bool,
}

/// `workers` clients posting valid votes one after another until `stop` is set.
async fn normal_clients(url: String, workers: usize, stop: Arc<AtomicBool>) -> Vec<Answer> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let (http, url, stop) = (http.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let votes = valid_votes(4);
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let response = http.post(&url).json(&vote_json(&votes[(worker + answers.len()) % 4])).send().await.expect("a normal client is answered");
                    answers.push(Answer { status: response.status().as_u16(), took: started.elapsed(), retry_after: response.headers().contains_key("retry-after") });
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answers
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// 1,000 connections that send part of their headers or part of their body, then nothing, held
/// open at once: normal clients meanwhile get 202 within a second (or a fast 503 with
/// Retry-After, never a 500), and every slow connection is closed by its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_while_normal_clients_are_served() {
    let limit = raise_open_files_limit();
    assert!(limit >= 2 * SLOW as u64 + 256, "this test needs {} open files, the hard limit is {limit}: raise it with `ulimit -Hn`", 2 * SLOW + 256);
    let stack = TestStack::start_parts(&[Part::Kafka]).await;
    let timeout_ms = READ_TIMEOUT.as_millis().to_string();
    let flags = ["--header-read-timeout-ms", &timeout_ms, "--body-read-timeout-ms", &timeout_ms, "--max-connections", "1500"];
    stack.start_host(&component("vote_rest"), &flags).await;
    let pid = stack.supervisor.running(Part::Host.name()).expect("the host runs");
    // A 2 MiB page would stay resident while any 4 KiB of it is in use: the host turns them off.
    assert!(!thp_enabled(pid), "the host takes transparent huge pages");
    let rss_idle = rss_kib(pid);
    let addr = format!("127.0.0.1:{}", stack.config.host_port);

    let stop = Arc::new(AtomicBool::new(false));
    let normal = tokio::spawn(normal_clients(format!("{}/votes", stack.config.host_url()), 8, stop.clone()));

    let opened: Vec<(TcpStream, Stall, Instant)> = stream::iter(0..SLOW)
        .map(|i| open_slow(addr.clone(), if i % 2 == 0 { Stall::Headers } else { Stall::Body }))
        .buffer_unordered(100)
        .collect()
        .await;
    let rss_held = rss_kib(pid);
    let health = reqwest::get(format!("{}/healthz", stack.config.host_url())).await.unwrap().json::<serde_json::Value>().await.unwrap();
    let closing: Vec<_> = opened
        .into_iter()
        .map(|(stream, stall, sent)| tokio::spawn(async move { (stall, wait_closed(stream, sent, READ_TIMEOUT + CLOSE_SLACK).await) }))
        .collect();
    let mut closed = Vec::new();
    for task in closing {
        closed.push(task.await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = normal.await.unwrap();
    let rss_after = rss_kib(pid);

    let served = answers.iter().filter(|a| a.status == 202).count();
    let shed = answers.iter().filter(|a| a.status == 503).count();
    let slowest_answer = answers.iter().map(|a| a.took).max().unwrap_or_default();
    let slowest_close = closed.iter().filter_map(|(_, (after, _))| *after).max().unwrap_or_default();
    println!(
        "slow-client test: {SLOW} slow connections (half partial headers, half partial bodies), timeouts {READ_TIMEOUT:?}; \
         normal clients: {} requests, {served} served (202), {shed} shed (503), slowest answer {slowest_answer:?}; \
         slowest close {slowest_close:?}; host RSS {} MiB idle, {} MiB with the slow connections open, {} MiB after; /healthz meanwhile {health}",
        answers.len(),
        rss_idle / 1024,
        rss_held / 1024,
        rss_after / 1024
    );

    let log = || stack.supervisor.log_tail(Part::Host.name(), 20);
    for answer in &answers {
        match answer.status {
            202 => assert!(answer.took <= ANSWER_WITHIN, "a normal client waited {:?} for its 202\n{}", answer.took, log()),
            503 => assert!(answer.retry_after && answer.took <= ANSWER_WITHIN, "a 503 must be fast and say Retry-After: {answer:?}"),
            other => panic!("a normal client got {other}: {answer:?}\n{}", log()),
        }
    }
    assert!(served >= 20, "normal clients were served only {served} times while the slow ones were held\n{}", log());
    for (stall, (after, answer)) in &closed {
        assert!(after.is_some(), "a slow connection ({stall:?}) was still open {:?} after its last byte\n{}", READ_TIMEOUT + CLOSE_SLACK, log());
        if *stall == Stall::Body {
            assert!(answer.starts_with("HTTP/1.1 408"), "a stalled body gets 408, got {answer:?}");
        }
    }
    let ready = reqwest::get(format!("{}/readyz", stack.config.host_url())).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200, "ready once the slow clients are gone");
}

/// 40 requests at once to a component that takes 1.5 s, with room for 4 and no queue: the 4 are
/// served, the rest get a fast 503 with Retry-After and a JSON error (never a 500), and `/readyz`
/// says the host is saturated meanwhile.
#[tokio::test]
async fn requests_over_the_in_flight_bound_get_a_fast_503() {
    let stack = TestStack::start_parts(&[Part::Kafka]).await;
    stack.start_host(&component("misbehave"), &["--max-in-flight", "4", "--max-instances", "8", "--max-queued", "0"]).await;
    let http = reqwest::Client::new();
    let host = stack.config.host_url();

    let burst = stream::iter(0..40)
        .map(|_| {
            let (http, host) = (&http, &host);
            async move {
                let started = Instant::now();
                let response = http.get(format!("{host}/sleep")).send().await.expect("answered");
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                let took = started.elapsed();
                (status, took, retry_after, response.json::<serde_json::Value>().await.unwrap_or_default())
            }
        })
        .buffer_unordered(40)
        .collect::<Vec<_>>();
    let readiness = async {
        // Asked while the four served requests are still sleeping.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let response = http.get(format!("{host}/readyz")).send().await.unwrap();
        (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
    };
    let (answers, readiness_meanwhile) = tokio::join!(burst, readiness);

    let served = answers.iter().filter(|a| a.0 == 200).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    println!("overload test: 40 requests, bound 4: {served} served, {} shed", shed.len());
    assert_eq!(served + shed.len(), 40, "only 200 or 503: {answers:?}");
    assert!((4..=8).contains(&served), "{served} served with room for 4");
    for (_, took, retry_after, body) in &shed {
        assert_eq!(retry_after.as_deref(), Some("1"), "{body}");
        assert!(body["error"].as_str().unwrap().contains("overloaded"), "{body}");
        assert!(body["field"].is_null(), "{body}");
        assert!(*took < Duration::from_secs(1), "a shed request waited {took:?}");
    }
    assert_eq!(readiness_meanwhile.0, 503, "{}", readiness_meanwhile.1);
    assert_eq!(readiness_meanwhile.1["status"], "saturated");
    let shed_metric = e2e::metric(stack.config.host_port, "host_shed_total").await;
    assert_eq!(shed_metric as usize, shed.len());
    e2e::eventually(Duration::from_secs(5), || async { http.get(format!("{host}/readyz")).send().await.is_ok_and(|r| r.status() == 200) })
        .await
        .expect("ready again once the burst is over");
}

/// 20 requests at once to a component that takes 1.5 s, with room for 4 and a queue of 4 that
/// waits up to 3 s: the 4 run, the 4 queued are served when places free up (in arrival order),
/// and the 12 the queue cannot hold get the fast 503. Nothing waits unbounded, nothing gets a 500.
#[tokio::test]
async fn requests_over_the_bound_wait_in_a_bounded_queue_before_a_503() {
    let stack = TestStack::start_parts(&[Part::Kafka]).await;
    let flags = ["--max-in-flight", "4", "--max-instances", "8", "--max-queued", "4", "--queue-wait-ms", "3000"];
    stack.start_host(&component("misbehave"), &flags).await;
    let http = reqwest::Client::new();
    let host = stack.config.host_url();
    let answers: Vec<(u16, Duration, Option<String>)> = stream::iter(0..20)
        .map(|_| {
            let (http, host) = (&http, &host);
            async move {
                let started = Instant::now();
                let response = http.get(format!("{host}/sleep")).send().await.expect("answered");
                let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                (response.status().as_u16(), started.elapsed(), retry_after)
            }
        })
        .buffer_unordered(20)
        .collect()
        .await;
    let served: Vec<_> = answers.iter().filter(|a| a.0 == 200).collect();
    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    let queued_and_served = served.iter().filter(|a| a.1 >= Duration::from_millis(2500)).count();
    println!("queue test: 20 requests, bound 4, queue 4: {} served ({queued_and_served} after queueing), {} shed", served.len(), shed.len());
    assert_eq!(served.len() + shed.len(), 20, "only 200 or 503: {answers:?}");
    assert!(served.len() >= 8, "the queued requests were served too: {answers:?}");
    assert!(queued_and_served >= 4, "requests that queued were served once places freed up: {answers:?}");
    for (_, took, retry_after) in &shed {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert!(*took < Duration::from_millis(3000) + CLOSE_SLACK, "a shed request waited {took:?}");
    }
    let waits = e2e::metric(stack.config.host_port, "host_queue_wait_seconds_count").await;
    assert!(waits >= 4.0, "queue waits recorded: {waits}");
}

/// A deploy that runs past the deploy timeout gets 503 and leaves the serving component alone;
/// while its compilation still runs, another deploy gets 409 and a rollback is answered at once.
#[tokio::test]
async fn deploys_time_out_run_one_at_a_time_and_never_block_rollback() {
    let stack = TestStack::start_parts(&[Part::Kafka]).await;
    stack.start_host(&component("vote_rest"), &["--deploy-timeout-ms", "1"]).await;
    let http = reqwest::Client::new();
    let contest = std::fs::read(component("vote_rest_contest")).unwrap();

    let timed_out = stack.admin(&http, Method::POST, "/components").body(contest.clone()).send().await.unwrap();
    assert_eq!(timed_out.status().as_u16(), 503);
    let reason: serde_json::Value = timed_out.json().await.unwrap();
    assert!(reason["error"].as_str().unwrap().contains("deploy timeout"), "{reason}");

    // The compilation goes on in the background: a rollback is answered meanwhile (there is
    // nothing to roll back to), and a second deploy after it is refused because the first one
    // is still compiling, which shows the rollback did not wait for it.
    let rollback = stack.admin(&http, Method::POST, "/components/rollback").send().await.unwrap();
    assert_eq!(rollback.status().as_u16(), 409);
    let second = stack.admin(&http, Method::POST, "/components").body(contest.clone()).send().await.unwrap();
    assert_eq!(second.status().as_u16(), 409, "{}", second.text().await.unwrap());

    let list: serde_json::Value = stack.admin(&http, Method::GET, "/components").send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["version"], "vote-rest@0.1.0", "{list}");
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let (status, version, _) = stack.post_vote(&http, &vote_json(&valid_votes(1)[0])).await;
    assert_eq!((status, version.as_str()), (202, "vote-rest@0.1.0"));

    // Once the background compilation ends, deploys are taken again (and time out again).
    e2e::eventually(Duration::from_secs(60), || async {
        stack.admin(&http, Method::POST, "/components").body(contest.clone()).send().await.unwrap().status() == 503
    })
    .await
    .expect("a deploy is taken again once the timed-out compilation has ended");
}

/// What a connection that never makes a request sends.
#[derive(Debug, Clone, Copy)]
enum Silent {
    /// Nothing at all.
    Nothing,
    /// Only the HTTP/2 preface's first line, `PRI * HTTP/2.0`, and no SETTINGS.
    PrefaceOnly,
}

/// Opens `count` connections to `addr`, alternating nothing and a partial preface.
async fn open_silent(addr: &str, count: usize) -> Vec<TcpStream> {
    stream::iter(0..count)
        .map(|i| {
            let addr = addr.to_owned();
            async move {
                let mut stream = TcpStream::connect(&addr).await.expect("connecting");
                let kind = if i % 2 == 0 { Silent::Nothing } else { Silent::PrefaceOnly };
                if matches!(kind, Silent::PrefaceOnly) {
                    let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\n").await;
                }
                stream
            }
        })
        .buffer_unordered(64)
        .collect()
        .await
}

/// How many of `streams` the server closed within `within` (EOF or reset on read).
async fn closed_within(streams: Vec<TcpStream>, within: Duration) -> usize {
    let reads = streams.into_iter().map(|mut stream| async move {
        let mut buffer = [0u8; 256];
        loop {
            match tokio::time::timeout(within, stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    });
    futures::future::join_all(reads).await.into_iter().filter(|closed| *closed).count()
}

/// Item 2 of the hardening issue: 4,200 connections to the REST host (more than its 4,096
/// bound) and 600 each to the gRPC producer and the results app (bound 256 in this test) that
/// send nothing, or only `PRI * HTTP/2.0`. Before, they sat in HTTP/1-vs-2 detection with no
/// timer, filled the bound, and every vote got 503 for as long as they stayed; the gRPC
/// producer and the results app had no bound and closed none. Now normal clients of all three
/// are served at once (the longest idle connection makes room) and every silent connection is
/// closed by the first-request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_preface_only_connections_never_lock_clients_out() {
    const HOST_SILENT: usize = 4_200;
    const OTHER_SILENT: usize = 600;
    let limit = raise_open_files_limit();
    let needed = (HOST_SILENT + 2 * OTHER_SILENT) as u64 + 512;
    assert!(limit >= needed, "this test needs {needed} open files, the hard limit is {limit}: raise it with `ulimit -Hn`");
    let stack = TestStack::start().await;
    let timeout_ms = READ_TIMEOUT.as_millis().to_string();
    let bounded = ["--max-connections", "256", "--handshake-timeout-ms", &timeout_ms];
    stack.start_host(&component("vote_rest"), &["--header-read-timeout-ms", &timeout_ms]).await;
    stack.start_producer(&bounded).await;
    stack.start_results(&bounded).await;

    let host = open_silent(&format!("127.0.0.1:{}", stack.config.host_port), HOST_SILENT).await;
    let grpc = open_silent(&format!("127.0.0.1:{}", stack.config.grpc_port), OTHER_SILENT).await;
    let results = open_silent(&format!("127.0.0.1:{}", stack.config.results_port), OTHER_SILENT).await;
    let held = Instant::now();

    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut statuses = Vec::new();
    for vote in valid_votes(20) {
        statuses.push(stack.post_vote(&http, &vote_json(&vote)).await.0);
    }
    let cast = tokio::time::timeout(Duration::from_secs(10), stack.cast_all(valid_votes(20))).await;
    let page = http.get(format!("http://127.0.0.1:{}/", stack.config.results_port)).send().await.map(|r| r.status().as_u16());
    let served_within = held.elapsed();

    // A connection whose handshake the kernel dropped from a full accept queue (the client
    // thinks it is open) is accepted on a later SYN-ACK retry, seconds later: the window allows
    // for those retries.
    let slack = Duration::from_secs(40);
    let (host_closed, grpc_closed, results_closed) = tokio::join!(closed_within(host, slack), closed_within(grpc, slack), closed_within(results, slack));
    let metrics = http.get(format!("{}/metrics", stack.config.host_url())).send().await.unwrap().text().await.unwrap();
    let closed_lines: Vec<&str> = metrics.lines().filter(|l| l.starts_with("host_connections_closed_total")).collect();
    println!(
        "silent sockets: held {HOST_SILENT} on the host, {OTHER_SILENT} on gRPC and results; 20 REST votes {statuses:?}, 20 gRPC votes {}, \
         results page {page:?}, all within {served_within:?}; closed by the servers within {slack:?}: host {host_closed}/{HOST_SILENT}, \
         gRPC {grpc_closed}/{OTHER_SILENT}, results {results_closed}/{OTHER_SILENT}; {closed_lines:?}",
        if cast.is_ok() { "accepted" } else { "timed out" }
    );
    assert!(statuses.iter().all(|s| *s == 202), "REST votes while silent connections were held: {statuses:?}");
    assert!(cast.is_ok(), "gRPC votes did not get through while silent connections were held");
    assert_eq!(page.ok(), Some(200), "the results page while silent connections were held");
    assert_eq!(host_closed, HOST_SILENT, "silent connections the host left open");
    assert_eq!(grpc_closed, OTHER_SILENT, "silent connections the gRPC producer left open");
    assert_eq!(results_closed, OTHER_SILENT, "silent connections the results app left open");
}
