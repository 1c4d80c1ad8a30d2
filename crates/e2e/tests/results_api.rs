//! The results service's JSON API over real Redis and NX-27017: the counters, the live event
//! stream, the log search's filters and pagination, 400s naming the parameter, and JSON that
//! stays inert when a name is markup.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use e2e::TestStack;
use vote_core::proto::VoteEvent;
use vote_stack::Part;

const XSS_BAND: &str = "<script>alert(1)</script>";
/// 2026-01-01T00:00:00Z.
const BASE_MS: i64 = 1_767_225_600_000;

/// Vote `i`: bands cycle through three (one named like markup), paths alternate, one second apart.
fn event(i: usize) -> VoteEvent {
    let (name, album) = [("Alux Nahual", "Conquista"), ("a|b", r"c\d"), (XSS_BAND, "<b>bold</b>")][i % 3];
    let (path, producer) = if i % 2 == 0 { ("wasm", "vote-rest@0.1.0") } else { ("grpc", "grpc-producer@0.1.0") };
    VoteEvent {
        schema_version: vote_core::SCHEMA_VERSION,
        vote_id: format!("vote-{i:04}"),
        name: name.into(),
        album: album.into(),
        year: 1990,
        rank: 1,
        path: path.into(),
        producer: producer.into(),
        received_at_ms: BASE_MS + i as i64 * 1000,
    }
}

/// Counts and logs votes `range` the way the consumer does.
async fn store(stack: &TestStack, range: std::ops::Range<usize>) {
    let first = range.start as i64;
    let events: Vec<VoteEvent> = range.map(event).collect();
    stack.store_votes(&events, first).await;
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = response.text().await.unwrap();
    if url.contains("/api/") {
        assert_eq!(content_type, "application/json", "{url}");
    }
    (status, body)
}

async fn logs(stack: &TestStack, query: &str) -> serde_json::Value {
    let (status, body) = get(&format!("{}/api/logs?{query}", stack.config.results_url())).await;
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn ids(page: &serde_json::Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|item| item["vote_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn results_api_counts_streams_searches_and_refuses_bad_parameters() {
    let stack = TestStack::start_parts(&[Part::Redis, Part::Mongo]).await;
    store(&stack, 0..60).await;
    stack.start_results(&[]).await;
    let base = stack.config.results_url();

    // The counters, with the escaped album field decoded and markup kept as inert text.
    let (status, body) = get(&format!("{base}/api/results")).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains('<') && !body.contains('>'), "markup characters are escaped in JSON: {body}");
    let results: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(results["total"], 60);
    let bands: Vec<(&str, u64)> = results["bands"].as_array().unwrap().iter().map(|b| (b["name"].as_str().unwrap(), b["votes"].as_u64().unwrap())).collect();
    assert_eq!(bands, [(XSS_BAND, 20), ("Alux Nahual", 20), ("a|b", 20)]);
    assert!(results["top_albums"].as_array().unwrap().iter().any(|a| a["band"] == "a|b" && a["album"] == r"c\d" && a["votes"] == 20), "{results}");
    assert_eq!(results["paths"].as_array().unwrap().len(), 2);
    assert_eq!(results["recent"][0]["vote_id"], "vote-0059");

    // The live stream: a snapshot at once, and the next as soon as a vote is counted.
    let mut events = reqwest::get(format!("{base}/api/events")).await.unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    let first_snapshot = async {
        while !seen.contains("\"total\":60") {
            seen.push_str(&String::from_utf8_lossy(&events.chunk().await.unwrap().expect("an event")));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), first_snapshot).await.expect("a first snapshot");
    assert!(seen.contains("event: snapshot"), "{seen}");
    let counted_at = Instant::now();
    store(&stack, 60..61).await;
    let next_snapshot = async {
        while !seen.contains("\"total\":61") {
            seen.push_str(&String::from_utf8_lossy(&events.chunk().await.unwrap().expect("an event")));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), next_snapshot).await.expect("a snapshot after the vote");
    println!("a counted vote reached the event stream after {:?}", counted_at.elapsed());
    drop(events);

    // Filters.
    let alux = logs(&stack, "band=Alux+Nahual&limit=100").await;
    assert_eq!(alux["items"].as_array().unwrap().len(), 21);
    assert!(alux["items"].as_array().unwrap().iter().all(|i| i["name"] == "Alux Nahual"));
    let xss = logs(&stack, &format!("band={}&limit=100", urlencode(XSS_BAND))).await;
    assert_eq!(xss["items"].as_array().unwrap().len(), 20);
    assert_eq!(xss["items"][0]["album"], "<b>bold</b>");
    assert_eq!(logs(&stack, "album=c%5Cd&limit=100").await["items"].as_array().unwrap().len(), 20);
    let wasm_rest = logs(&stack, "path=wasm&producer=vote-rest%400.1.0&limit=100").await;
    assert_eq!(wasm_rest["items"].as_array().unwrap().len(), 31);
    assert_eq!(logs(&stack, "producer=grpc-producer%400.1.0&path=wasm").await["items"].as_array().unwrap().len(), 0);
    let one = logs(&stack, "vote_id=vote-0007").await;
    assert_eq!(ids(&one), ["vote-0007"]);
    assert_eq!(one["items"][0]["received_at"], "2026-01-01T00:00:07Z");
    assert_eq!(one["next_cursor"], serde_json::Value::Null);
    // Received in [00:00:10, 00:00:20): votes 10..19, newest first.
    let window = logs(&stack, "from=2026-01-01T00:00:10Z&to=2026-01-01T00:00:20Z").await;
    assert_eq!(ids(&window), (10..20).rev().map(|i| format!("vote-{i:04}")).collect::<Vec<_>>());
    let window_ms = logs(&stack, &format!("from={}&to={}", BASE_MS + 10_000, BASE_MS + 20_000)).await;
    assert_eq!(ids(&window_ms), ids(&window));

    // Pagination: pages of 7 with a cursor walk all 61 votes once, newest first; and again
    // with a band and a time range.
    for (filter, expected) in [("", (0..61).rev().collect::<Vec<_>>()), ("&band=Alux+Nahual&from=2026-01-01T00:00:09Z", (9..61).rev().filter(|i| i % 3 == 0).collect())] {
        let mut walked = Vec::new();
        let mut query = format!("limit=7{filter}");
        loop {
            let page = logs(&stack, &query).await;
            let page_ids = ids(&page);
            assert!(page_ids.len() <= 7);
            walked.extend(page_ids);
            match page["next_cursor"].as_str() {
                Some(cursor) => query = format!("limit=7{filter}&cursor={}", urlencode(cursor)),
                None => break,
            }
        }
        let expected: Vec<String> = expected.into_iter().map(|i| format!("vote-{i:04}")).collect();
        assert_eq!(walked, expected, "{filter}");
        assert_eq!(walked.iter().collect::<HashSet<_>>().len(), walked.len());
    }

    // Bad parameters: 400 naming the parameter, and the service keeps serving.
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=many", "limit"),
        ("from=yesterday", "from"),
        ("to=2026-13-45T00:00:00Z", "to"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ("cursor=not-a-cursor", "cursor"),
        ("bnad=Alux", "bnad"),
        ("band=a&band=b", "band"),
        (&format!("album={}", "x".repeat(200)), "album"),
    ] {
        let (status, body) = get(&format!("{base}/api/logs?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["field"], field, "{query}: {body}");
        assert!(error["error"].as_str().unwrap().starts_with(field), "{body}");
    }

    let (status, body) = get(&format!("{base}/healthz")).await;
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(metrics.contains("results_log_searches_total{outcome=\"invalid\"} 10"), "{metrics}");
    let (status, page) = get(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"/app.js\"") && !page.contains("http://") && !page.contains("https://"), "no CDN");
}

/// Percent-encodes a query value.
fn urlencode(value: &str) -> String {
    value.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
