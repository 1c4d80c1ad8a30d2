//! The read side of the manifest's workloads over real Redis and NX-27017, on aggregates and logs
//! written straight with the keys and writes of the shipped specs: `votectl results --workload`
//! (exact numbers, `total`), the results app's `/api/workloads`, snapshot, live stream and log
//! search, with 400s naming the field, 404s for an unknown workload, and the stream bound.

use std::process::Output;
use std::time::Duration;

use e2e::workloads::{self, weather, XSS_SEDE};
use e2e::TestStack;
use serde_json::{json, Value};
use vote_stack::Part;

/// `(values, count, share)` of each member of the count aggregate `name` in a view's JSON.
fn members(view: &Value, name: &str) -> Vec<(Vec<String>, u64, Option<f64>)> {
    let count = view["counts"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no count {name} in {view}"));
    count["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let values = m["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
            (values, m["count"].as_u64().unwrap(), m["share"].as_f64())
        })
        .collect()
}

/// `(values, mean, samples)` of each member of the mean aggregate `name`.
fn means(view: &Value, name: &str) -> Vec<(Vec<String>, f64, u64)> {
    let mean = view["means"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no mean {name} in {view}"));
    mean["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect(), m["mean"].as_f64().unwrap(), m["samples"].as_u64().unwrap()))
        .collect()
}

fn v(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

/// Checks the weather view of the sample reports, exactly.
fn check_weather(view: &Value) {
    assert_eq!(view["total"], 8, "{view}");
    assert_eq!(view["workload"], "weather");
    assert_eq!(members(view, "municipality"), [(v(&["guatemala"]), 4, None), (v(&["mixco"]), 3, None), (v(&["amatitlan"]), 1, None)]);
    assert_eq!(members(view, "weather"), [(v(&["sunny"]), 3, None), (v(&["cloudy"]), 2, None), (v(&["rainy"]), 2, None), (v(&["foggy"]), 1, None)]);
    assert_eq!(
        members(view, "municipality_weather"),
        [
            (v(&["guatemala", "cloudy"]), 2, Some(50.0)),
            (v(&["mixco", "sunny"]), 2, Some(66.7)),
            (v(&["amatitlan", "sunny"]), 1, Some(100.0)),
            (v(&["guatemala", "foggy"]), 1, Some(25.0)),
            (v(&["guatemala", "rainy"]), 1, Some(25.0)),
            (v(&["mixco", "rainy"]), 1, Some(33.3)),
        ]
    );
    assert_eq!(means(view, "temperature"), [(v(&["guatemala"]), 18.5, 4), (v(&["mixco"]), 21.7, 3), (v(&["amatitlan"]), 30.0, 1)]);
    assert_eq!(means(view, "humidity"), [(v(&["guatemala"]), 77.5, 4), (v(&["mixco"]), 70.0, 3), (v(&["amatitlan"]), 40.0, 1)]);
    let recent = view["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 8, "the spec keeps 10");
    assert_eq!(recent[0]["data"], json!({ "municipality": "guatemala", "weather": "rainy", "temperature": 20, "humidity": 85 }), "newest first");
    let count = &view["counts"][0];
    assert_eq!((count["size"].as_u64(), count["overflow"].as_u64(), count["title"].as_str()), (Some(3), Some(0), Some("Reports per municipality")));
}

async fn votectl(stack: &TestStack, args: &[&str]) -> Output {
    tokio::process::Command::new(e2e::binary("votectl")).args(stack.votectl_args()).arg("results").args(args).output().await.expect("running votectl results")
}

async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    assert_eq!(response.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"), "{url}");
    let body = response.text().await.unwrap();
    assert!(!body.contains('<') && !body.contains('>'), "markup characters are escaped in JSON: {body}");
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}")))
}

/// Reads server-sent events from `response` until the text holds `wanted`.
async fn read_until(response: &mut reqwest::Response, seen: &mut String, wanted: &str) {
    let reading = async {
        while !seen.contains(wanted) {
            seen.push_str(&String::from_utf8_lossy(&response.chunk().await.unwrap().expect("an event")));
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading).await.unwrap_or_else(|_| panic!("no {wanted} in the stream: {seen}"));
}

#[tokio::test]
async fn workload_results_from_votectl_and_the_results_api() {
    let stack = TestStack::start_parts(&[Part::Redis, Part::Mongo]).await;
    let (weather_spec, ballots_spec) = (workloads::spec("weather"), workloads::spec("ballots"));
    let reports = workloads::envelopes(&weather_spec, 0, workloads::sample_reports());
    let cast = workloads::envelopes(&ballots_spec, 0, workloads::sample_ballots());
    let mut redis = stack.redis().await;
    workloads::count(&mut redis, &weather_spec, &reports).await;
    workloads::count(&mut redis, &ballots_spec, &cast).await;
    workloads::log(&stack.config.mongo_url(), &weather_spec, &reports).await;

    // votectl: the workload's view as JSON with its total, as text, an unknown workload named
    // with the known ones, and the band votes as before without --workload.
    let output = votectl(&stack, &["--workload", "weather", "--json"]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let from_votectl: Value = serde_json::from_slice(&output.stdout).expect("votectl prints JSON");
    check_weather(&from_votectl);
    let manifest = workloads::manifest_path();
    let output = votectl(&stack, &["--workload", "ballots", "--manifest", manifest.to_str().unwrap()]).await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && text.starts_with("2023 general election (ballots): 9 events"), "{text}");
    assert!(text.contains("       3  Guatemala\n") && text.contains("50.0%  Guatemala / UNE"), "{text}");
    let output = votectl(&stack, &["--workload", "tweets"]).await;
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && error.contains("no workload \"tweets\"") && error.contains("known: ballots, votes, weather"), "{error}");
    let output = votectl(&stack, &["--json"]).await;
    let bands: Value = serde_json::from_slice(&output.stdout).expect("votectl prints JSON");
    assert_eq!((bands["total"].as_u64(), bands["bands"].as_object().map(|b| b.len())), (Some(0), Some(0)), "{bands}");

    // The results app with the manifest.
    stack.start_results(&["--manifest", manifest.to_str().unwrap(), "--max-event-streams", "2"]).await;
    let base = stack.config.results_url();
    let (status, listing) = get(&format!("{base}/api/workloads")).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listing["workloads"].as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ballots", "votes", "weather"]);
    let weather_entry = &listing["workloads"][2];
    assert_eq!((weather_entry["title"].as_str(), weather_entry["topic"].as_str(), weather_entry["format"].as_str()), (Some("Weather tweets"), Some("weather"), Some("json")));
    assert_eq!(weather_entry["search"], json!(["municipality", "weather"]));
    assert_eq!(weather_entry["counts"][2], json!({ "name": "municipality_weather", "title": "Conditions per municipality", "by": ["municipality", "weather"], "where": {}, "share": true, "top": 20 }));
    assert_eq!(weather_entry["means"][0]["field"], "temperature");
    assert_eq!(listing["workloads"][0]["counts"][0]["top"], 3);
    assert_eq!(listing["workloads"][1]["format"], "vote-event");

    let (status, snapshot) = get(&format!("{base}/api/workloads/weather/snapshot")).await;
    assert_eq!(status, 200);
    check_weather(&snapshot);
    for key in ["counts", "means", "recent", "total"] {
        assert_eq!(snapshot[key], from_votectl[key], "votectl and the results app read the same view ({key})");
    }
    let (_, ballots_view) = get(&format!("{base}/api/workloads/ballots/snapshot")).await;
    // The top 3 of four: a tie at the cut goes to the member Redis ranks first (reverse byte order).
    assert_eq!(members(&ballots_view, "presidential_by_department"), [(v(&["Guatemala"]), 3, None), (v(&["Quetzaltenango"]), 2, None), (v(&["Sololá"]), 1, None)]);
    assert_eq!(
        members(&ballots_view, "party_by_department")[..4],
        [
            (v(&["Guatemala", "UNE"]), 2, Some(50.0)),
            (v(&["Quetzaltenango", "Semilla"]), 2, Some(100.0)),
            (v(&["Guatemala", "A|B"]), 1, Some(25.0)),
            (v(&["Guatemala", "VAMOS"]), 1, Some(25.0)),
        ]
    );
    let places = members(&ballots_view, "polling_place");
    assert_eq!(places.iter().map(|p| (p.0[0].as_str(), p.1)).collect::<Vec<_>>(), [("EORM 1", 3), ("Escuela Central", 2), ("Instituto Quetzal", 2), (XSS_SEDE, 1), ("Escuela Petén", 1)]);
    assert_eq!(ballots_view["recent"].as_array().unwrap().len(), 5, "the last 5 ballots");
    assert_eq!(ballots_view["recent"][0]["data"]["sede"], "Escuela Petén");
    let (status, bands) = get(&format!("{base}/api/workloads/votes/snapshot")).await;
    assert_eq!((status, bands["total"].as_u64(), bands["bands"].as_array().map(Vec::len)), (200, Some(0), Some(0)), "the band contest's snapshot");

    // Unknown workloads: 404 naming the field and the known workloads.
    for path in ["nope/snapshot", "nope/logs?municipality=mixco", "nope/events", "%3Cb%3E/snapshot"] {
        let (status, body) = get(&format!("{base}/api/workloads/{path}")).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["field"], "workload");
        assert!(body["error"].as_str().unwrap().contains("known: ballots, votes, weather"), "{body}");
    }

    // The log search: only the spec's fields, newest first, a bounded page.
    let search = |query: &str| get_logs(&base, "weather", query.to_owned());
    let mixco = search("municipality=mixco").await;
    let temperatures: Vec<i64> = mixco["items"].as_array().unwrap().iter().map(|i| i["data"]["temperature"].as_i64().unwrap()).collect();
    assert_eq!(temperatures, [23, 22, 20]);
    assert_eq!(mixco["items"][0]["id"], reports[6].id);
    assert_eq!(mixco["items"][0]["producer"], "weather-rest@0.1.0");
    assert_eq!(mixco["items"][0]["received_at"], "2026-01-01T00:00:06Z");
    assert_eq!(mixco["more"], false);
    assert_eq!(search("municipality=mixco&weather=sunny").await["items"].as_array().unwrap().len(), 2);
    let page = search("weather=cloudy&limit=1").await;
    assert_eq!((page["items"].as_array().unwrap().len(), &page["more"]), (1, &json!(true)));
    assert_eq!(search("municipality=chinautla").await["items"], json!([]));
    let long = "x".repeat(257);
    for (query, field) in [
        ("temperature=20".to_owned(), "temperature"),
        ("limit=0".to_owned(), "limit"),
        ("limit=101".to_owned(), "limit"),
        ("municipality=a&municipality=b".to_owned(), "municipality"),
        (format!("weather={long}"), "weather"),
        ("weather=%07".to_owned(), "weather"),
        ("%3Cscript%3E=1".to_owned(), "<script>"),
    ] {
        let (status, body) = get(&format!("{base}/api/workloads/weather/logs?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(body["error"].as_str().unwrap().starts_with(field), "{body}");
    }

    // The live stream of a workload: its view at once, and the next as soon as an event counts.
    let mut stream = reqwest::get(format!("{base}/api/workloads/weather/events")).await.unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    read_until(&mut stream, &mut seen, "\"total\":8").await;
    assert!(seen.contains("event: snapshot") && seen.contains("\"workload\":\"weather\""), "{seen}");
    let more = workloads::envelopes(&weather_spec, 8, vec![weather("chinautla", "foggy", 15, 95)]);
    workloads::count(&mut redis, &weather_spec, &more).await;
    read_until(&mut stream, &mut seen, "\"total\":9").await;
    assert!(seen.contains("\"values\":[\"chinautla\"]"), "{seen}");

    // The streams share the results app's bound: two open, a third gets a fast 503.
    let second = reqwest::get(format!("{base}/api/workloads/ballots/events")).await.unwrap();
    assert_eq!(second.status(), 200);
    let third = reqwest::get(format!("{base}/api/events")).await.unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(third.headers()["retry-after"], "5");
    drop((stream, second));
    let reopened = e2e::eventually(Duration::from_secs(20), || async { reqwest::get(format!("{base}/api/workloads/ballots/events")).await.is_ok_and(|r| r.status() == 200) });
    assert!(reopened.await.is_ok(), "a closed stream frees its place");
}

async fn get_logs(base: &str, workload: &str, query: String) -> Value {
    let (status, body) = get(&format!("{base}/api/workloads/{workload}/logs?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

/// `votectl results` (and the bench's settle loop, which reads the same total) waits out a Redis
/// that stalls for a moment, as a busy two-core box or a slow script makes it, instead of failing
/// on the Redis client's default 500 ms response timeout: a CI run's bench failed with
/// "timed out" that way.
#[tokio::test]
async fn votectl_results_waits_out_a_redis_that_stalls_for_a_second() {
    let stack = TestStack::start_parts(&[Part::Redis]).await;
    let mut redis = stack.redis().await;
    let _: () = redis::cmd("SET").arg(vote_store::keys::TOTAL).arg(42).query_async(&mut redis).await.unwrap();
    let _: () = redis::cmd("CLIENT").arg("PAUSE").arg(1500).arg("ALL").query_async(&mut redis).await.unwrap();
    let output = votectl(&stack, &["--json"]).await;
    assert!(output.status.success(), "votectl results failed while Redis paused for 1.5 s: {}", String::from_utf8_lossy(&output.stderr));
    let results: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results["total"], 42, "{results}");
}
