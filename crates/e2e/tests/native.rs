//! The host's native REST baseline (`votes-host --native`) answers exactly as the wasm component
//! does, request for request (one set of rules, `vote_core::rest`), and its votes are counted on
//! path `native`.

use e2e::{component, TestStack};

/// Status, `retry-after`/`allow` headers and the JSON body without the per-vote fields.
async fn answer(http: &reqwest::Client, base: &str, method: &str, path: &str, content_type: Option<&str>, body: &str) -> (u16, Option<String>, serde_json::Value) {
    let mut request = http.request(method.parse().unwrap(), format!("{base}{path}")).body(body.to_owned());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("request answered");
    let status = response.status().as_u16();
    let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
    let mut json: serde_json::Value = response.json().await.unwrap_or_default();
    strip(&mut json);
    (status, allow, json)
}

/// Removes what differs between two accepted votes (id, partition, offset).
fn strip(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::Object(map) => {
            for key in ["vote_id", "partition", "offset"] {
                map.remove(key);
            }
            map.values_mut().for_each(strip);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn native_rest_answers_every_request_as_the_component_does() {
    let stack = TestStack::start().await;
    stack.start_consumer("consumer", &[]).await;
    stack.start_host(&component("vote_rest"), &[]).await;
    stack.start_native_host(&[]).await;
    let http = reqwest::Client::new();
    let json = Some("application/json");
    let big = format!(r#"{{"name":"{}","album":"x","year":1990,"rank":1}}"#, "a".repeat(20_000));
    let cases: Vec<(&str, &str, Option<&str>, String)> = vec![
        ("POST", "/votes", json, r#"{"name":"Alux Nahual","album":"Conquista","year":"1986","rank":"1"}"#.into()),
        ("POST", "/votes", json, r#"{"name":"","album":"Conquista","year":"1986","rank":"1"}"#.into()),
        ("POST", "/votes", json, r#"{"name":"Alux Nahual","album":"Conquista","year":"1492","rank":"1"}"#.into()),
        ("POST", "/votes", json, r#"{"name":"Alux Nahual","name":"Alux","album":"Conquista","year":1986,"rank":1}"#.into()),
        ("POST", "/votes", json, "not json".into()),
        ("POST", "/votes", Some("text/plain"), r#"{"name":"Alux Nahual","album":"Conquista","year":"1986","rank":"1"}"#.into()),
        ("POST", "/votes", json, big),
        ("POST", "/votes/batch", json, r#"[{"name":"Legión","album":"Legión","year":1989,"rank":1},{"name":"","album":"x","year":1989,"rank":1}]"#.into()),
        ("POST", "/votes/batch", json, "{}".into()),
        ("GET", "/votes", None, String::new()),
        ("GET", "/elsewhere", None, String::new()),
    ];
    let mut accepted = 0;
    for (method, path, content_type, body) in &cases {
        let wasm = answer(&http, &stack.config.host_url(), method, path, *content_type, body).await;
        let native = answer(&http, &stack.config.native_url(), method, path, *content_type, body).await;
        assert_eq!(native, wasm, "{method} {path} {content_type:?} {}", &body[..body.len().min(80)]);
        accepted += match (wasm.0, path) {
            (202, _) => 1,
            (200, &"/votes/batch") => wasm.2["accepted"].as_u64().unwrap(),
            _ => 0,
        };
    }
    assert_eq!(accepted, 2, "one vote and one batch item accepted per producer");
    stack.wait_for_counts(2 * accepted, std::time::Duration::from_secs(30)).await;
    let paths = stack.counts(vote_store::keys::PATHS).await;
    assert_eq!(paths.get("wasm"), Some(&accepted), "{paths:?}");
    assert_eq!(paths.get("native"), Some(&accepted), "{paths:?}");
    let identity: serde_json::Value = http.get(format!("{}/.well-known/component", stack.config.native_url())).send().await.unwrap().json().await.unwrap();
    assert!(identity["producer"].as_str().unwrap().starts_with("native-rest@"), "{identity}");
}

/// The native baseline admits as the wasm host does (one admission path): 300 votes from 64
/// clients against room for 2 wait in the queue and are all accepted; with no queue the excess
/// gets the fast 503 with `Retry-After`.
#[tokio::test(flavor = "multi_thread")]
async fn the_native_host_queues_votes_over_its_bound_before_it_refuses() {
    use futures::stream::{self, StreamExt};
    let stack = TestStack::start_parts(&[vote_stack::Part::Kafka]).await;
    let cast = async |stack: &TestStack| -> Vec<(u16, Option<String>)> {
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
        let url = format!("{}/votes", stack.config.native_url());
        stream::iter(0..300)
            .map(|_| {
                let (http, url) = (&http, &url);
                async move {
                    let body = serde_json::json!({ "name": "Alux Nahual", "album": "Conquista", "year": 1986, "rank": 1 });
                    let response = http.post(url).json(&body).send().await.expect("answered");
                    (response.status().as_u16(), response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned()))
                }
            })
            .buffer_unordered(64)
            .collect()
            .await
    };
    stack.start_native_host(&["--max-in-flight", "2", "--max-queued", "1024", "--queue-wait-ms", "5000"]).await;
    let answers = cast(&stack).await;
    assert!(answers.iter().all(|(status, _)| *status == 202), "every vote waits for a place and is accepted: {answers:?}");
    let waited = e2e::metric(stack.config.native_port, "host_queue_wait_seconds_count").await;
    assert!(waited > 0.0, "votes waited in the queue: {waited}");

    stack.supervisor.stop(vote_stack::Part::NativeHost.name(), std::time::Duration::from_secs(10)).unwrap();
    stack.start_native_host(&["--max-in-flight", "2", "--max-queued", "0"]).await;
    let answers = cast(&stack).await;
    let refused: Vec<_> = answers.iter().filter(|(status, _)| *status == 503).collect();
    assert!(!refused.is_empty(), "with no queue the excess is refused: {answers:?}");
    assert!(refused.iter().all(|(_, retry)| retry.as_deref() == Some("1")), "{refused:?}");
    assert!(answers.iter().all(|(status, _)| matches!(status, 202 | 503)), "{answers:?}");
}
