//! The Spin flavour: vote-rest composed with publisher-http into one component that imports only
//! `wasi:*`, served by `wasmtime serve` (a runtime that is not ours) and publishing through the
//! local kafka-bridge; the bridge's replies against the Kafka Bridge OpenAPI; `spin.toml` against
//! Spin's manifest schema and the build's outputs.

use std::time::Duration;

use e2e::spin::{component_wit, shared_schema, world_items, BRIDGE_TOKEN, COMPOSED};
use e2e::{component, free_port, invalid_votes, valid_votes, vote_json, TestStack};
use futures::stream::{self, StreamExt};
use reqwest::Method;

const VOTE_REST: &str = "vote-rest@0.1.0";
const BINARY_RECORDS: &str = "application/vnd.kafka.binary.v2+json";

/// Status, the headers a client acts on, and the JSON body of one reply.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    allow: Option<String>,
    retry_after: Option<String>,
    body: serde_json::Value,
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the server answers");
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (status, allow, retry_after) = (response.status().as_u16(), header("allow"), header("retry-after"));
    Answer { status, allow, retry_after, body: response.json().await.unwrap_or_default() }
}

/// The invalid requests of the REST contract, each as (method, path, content type, body).
fn invalid_requests() -> Vec<(Method, &'static str, &'static str, String)> {
    let mut requests: Vec<(Method, &str, &str, String)> =
        invalid_votes(20).into_iter().map(|(vote, _)| (Method::POST, "/votes", "application/json", vote_json(&vote).to_string())).collect();
    let vote = r#"{"name":"Legión","album":"Legión","year":"1989","rank":"1"}"#;
    for body in [r#"{"name":"#, "[]", r#"{"name":"a","album":"b","year":2000,"rank":1,"extra":1}"#, "null"] {
        requests.push((Method::POST, "/votes", "application/json", body.to_owned()));
    }
    for content_type in ["text/plain", "application/xml", "", "application/jsonx"] {
        requests.push((Method::POST, "/votes", content_type, vote.to_owned()));
    }
    let huge = format!(r#"{{"name":"{}","album":"a","year":"2000","rank":"1"}}"#, "x".repeat(20 * 1024));
    requests.push((Method::POST, "/votes", "application/json", huge));
    requests.push((Method::POST, "/votes/batch", "application/json", "{}".to_owned()));
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        requests.push((method, "/votes", "application/json", String::new()));
    }
    for path in ["/vote", "/", "/votes/1"] {
        requests.push((Method::POST, path, "application/json", "{}".to_owned()));
    }
    requests
}

/// vote-rest plugged with publisher-http is one component whose imports are all `wasi:*`.
#[test]
fn vote_rest_plugged_with_publisher_http_imports_only_wasi() {
    let rest_imports = world_items(&component_wit(&component("vote_rest")), "import");
    assert!(rest_imports.iter().any(|i| i == "votes:platform/publisher@0.1.0"), "vote-rest imports {rest_imports:?}");
    let publisher_exports = world_items(&component_wit(&component("publisher_http")), "export");
    assert_eq!(publisher_exports, ["votes:platform/publisher@0.1.0"]);

    let composed = component(COMPOSED);
    let wit = component_wit(&composed);
    let imports = world_items(&wit, "import");
    eprintln!("{} imports:\n  {}", composed.display(), imports.join("\n  "));
    assert!(imports.len() > 3, "{imports:?}");
    let not_wasi: Vec<&String> = imports.iter().filter(|i| !i.starts_with("wasi:")).collect();
    assert!(not_wasi.is_empty(), "imports other than wasi:* left: {not_wasi:?}");
    assert!(imports.iter().any(|i| i.starts_with("wasi:http/outgoing-handler@")), "{imports:?}");
    let mut exports = world_items(&wit, "export");
    exports.sort();
    assert_eq!(exports, ["votes:platform/handler@0.1.0", "wasi:http/incoming-handler@0.2.12"], "Spin serves the wasi:http export, the votes host the one-call handler");
}

/// Under `wasmtime serve`, through kafka-bridge to Tansu: 1,000 votes (990 one by one, 10 in a
/// batch with 2 bad items) counted and logged exactly, and every invalid request answered exactly
/// as the votes host answers it.
#[tokio::test]
async fn votes_through_wasmtime_serve_and_the_bridge_are_counted_exactly() {
    let stack = TestStack::start().await;
    stack.start_consumer("consumer", &[]).await;
    let bridge = stack.start_bridge(free_port(), &[]).await;
    let spin = stack.start_wasmtime_serve(&component(COMPOSED), &bridge).await;
    stack.start_host(&component("vote_rest"), &[]).await;
    let http = reqwest::Client::new();

    let answers: Vec<Answer> = stream::iter(valid_votes(990))
        .map(|vote| send(http.post(format!("{spin}/votes")).json(&vote_json(&vote))))
        .buffer_unordered(32)
        .collect()
        .await;
    for answer in &answers {
        assert_eq!(answer.status, 202, "{answer:?}");
        assert!(answer.body["vote_id"].as_str().is_some_and(|id| id.len() == 36), "{answer:?}");
        assert!(answer.body["offset"].as_i64().is_some_and(|o| o >= 0) && answer.body["partition"].as_i64().is_some(), "{answer:?}");
    }
    let mut batch: Vec<serde_json::Value> = valid_votes(10).iter().map(vote_json).collect();
    batch.insert(3, serde_json::json!({ "name": "Legión", "album": "", "year": "1989", "rank": "1" }));
    batch.push(serde_json::json!({ "name": "Legión", "album": "Legión", "year": "1989", "rank": "0" }));
    let reply = send(http.post(format!("{spin}/votes/batch")).json(&batch)).await;
    assert_eq!((reply.status, reply.body["accepted"].as_u64(), reply.body["rejected"].as_u64()), (200, Some(10), Some(2)), "{reply:?}");
    assert_eq!((reply.body["results"][3]["status"].as_u64(), reply.body["results"][3]["field"].as_str()), (Some(400), Some("album")));

    let host = stack.config.host_url();
    let requests = invalid_requests();
    for (method, path, content_type, body) in &requests {
        let request = |base: &str| http.request(method.clone(), format!("{base}{path}")).header("content-type", *content_type).body(body.clone());
        let (on_spin, on_host) = (send(request(&spin)).await, send(request(&host)).await);
        assert!((400..500).contains(&on_spin.status), "{method} {path} {body:.80} -> {on_spin:?}");
        assert_eq!(on_spin, on_host, "{method} {path} {body:.80}: wasmtime serve and the votes host differ");
    }
    eprintln!("{} invalid requests answered alike by wasmtime serve and the votes host", requests.len());

    stack.wait_for_counts(1000, Duration::from_secs(60)).await;
    assert_eq!(stack.total().await, 1000);
    assert_eq!(stack.logged().await, 1000);
    assert_eq!(stack.counts(vote_store::keys::PATHS).await["wasm"], 1000);
    let logged = stack.logs().await.count_documents(mongodb::bson::doc! { "path": "wasm", "producer": VOTE_REST }).await.unwrap();
    assert_eq!(logged, 1000);
}

/// With the bridge down a vote gets 503 with Retry-After; once the bridge is up votes go
/// through; with the broker behind it down, 503 with Retry-After again.
#[tokio::test]
async fn bridge_or_broker_down_gives_503_with_retry_after() {
    let stack = TestStack::start_parts(&[vote_stack::Part::Kafka]).await;
    let bridge_port = free_port();
    let spin = stack.start_wasmtime_serve(&component(COMPOSED), &format!("http://127.0.0.1:{bridge_port}")).await;
    let http = reqwest::Client::new();
    let vote = vote_json(&valid_votes(1)[0]);
    let assert_unavailable = |answer: &Answer, when: &str| {
        assert_eq!((answer.status, answer.retry_after.as_deref()), (503, Some("1")), "{when}: {answer:?}");
    };

    let down = send(http.post(format!("{spin}/votes")).json(&vote)).await;
    assert_unavailable(&down, "bridge down");
    assert_eq!(down.body["field"], "broker", "{down:?}");
    let batch = send(http.post(format!("{spin}/votes/batch")).json(&vec![vote.clone(); 3])).await;
    assert_unavailable(&batch, "bridge down, batch");

    stack.start_bridge(bridge_port, &["--publish-timeout-ms", "1500"]).await;
    let up = send(http.post(format!("{spin}/votes")).json(&vote)).await;
    assert_eq!(up.status, 202, "bridge up: {up:?}");

    stack.supervisor.stop("kafka", Duration::from_secs(5)).expect("stopping Tansu");
    let broker_down = send(http.post(format!("{spin}/votes")).json(&vote)).await;
    assert_unavailable(&broker_down, "broker down behind the bridge");
}

/// The OpenAPI schema `name` of the Kafka Bridge, with its objects closed (no properties beyond
/// those named): the document's `OffsetRecordSent` and `Error` name no required fields, so open
/// they would both match any object and `oneOf` could never hold.
fn bridge_schema(openapi: &serde_json::Value, name: &str) -> jsonschema::Validator {
    fn close(schema: &mut serde_json::Value) {
        match schema {
            serde_json::Value::Object(map) => {
                if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                    map.insert("additionalProperties".into(), false.into());
                }
                map.values_mut().for_each(close);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(close),
            _ => {}
        }
    }
    let mut components = openapi["components"].clone();
    close(&mut components);
    let schema = serde_json::json!({ "$ref": format!("#/components/schemas/{name}"), "components": components });
    jsonschema::draft202012::new(&schema).expect("the Bridge's schemas compile")
}

/// kafka-bridge's replies follow the Kafka Bridge OpenAPI: offsets for records it sent, a
/// per-record 404 error for a topic it does not publish to, `Error` bodies for refused requests.
#[tokio::test]
async fn bridge_replies_follow_the_openapi() {
    let stack = TestStack::start_parts(&[vote_stack::Part::Kafka]).await;
    let bridge = stack.start_bridge(free_port(), &[]).await;
    let http = reqwest::Client::new();
    let openapi = shared_schema("strimzi-bridge/openapi.json");
    let produce = |topic: &str, content_type: &str, body: serde_json::Value| {
        http.post(format!("{bridge}/topics/{topic}")).bearer_auth(BRIDGE_TOKEN).header("content-type", content_type).body(body.to_string())
    };
    let records = serde_json::json!({ "records": [
        { "key": "a2V5LTE=", "value": "dm90ZSAx" },
        { "key": "a2V5LTI=", "value": "dm90ZSAy", "headers": [{ "key": "trace", "value": "eA==" }] },
        { "value": "dm90ZSAz" },
    ]});
    let cases = [
        ("sent", produce("votes", BINARY_RECORDS, records.clone()), 200, "OffsetRecordSentList"),
        ("topic not allowed", produce("not-allowed", BINARY_RECORDS, records.clone()), 200, "OffsetRecordSentList"),
        ("bad base64", produce("votes", BINARY_RECORDS, serde_json::json!({ "records": [{ "value": "%%%" }] })), 422, "Error"),
        ("unknown field", produce("votes", BINARY_RECORDS, serde_json::json!({ "records": [{ "value": "eA==", "color": 1 }] })), 422, "Error"),
        ("JSON embedded format", produce("votes", "application/vnd.kafka.json.v2+json", records.clone()), 415, "Error"),
    ];
    for (case, request, status, schema) in cases {
        let response = request.send().await.expect("the bridge answers");
        assert_eq!(response.status().as_u16(), status, "{case}");
        assert_eq!(response.headers()["content-type"], "application/vnd.kafka.v2+json", "{case}");
        let reply: serde_json::Value = response.json().await.expect("a JSON reply");
        if let Some(openapi) = &openapi {
            let errors: Vec<String> = bridge_schema(openapi, schema).iter_errors(&reply).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{case}: {reply} is not a valid {schema}: {errors:?}");
        }
        match case {
            "sent" => {
                let offsets = reply["offsets"].as_array().expect("offsets");
                assert_eq!(offsets.len(), 3, "{reply}");
                assert!(offsets.iter().all(|o| o["offset"].as_i64().is_some_and(|o| o >= 0) && o["partition"].is_i64()), "{reply}");
            }
            "topic not allowed" => {
                let offsets = reply["offsets"].as_array().expect("offsets");
                assert_eq!(offsets.len(), 3, "{reply}");
                assert!(offsets.iter().all(|o| o["error_code"] == 404 && o["message"].as_str().is_some_and(|m| m.contains("not-allowed"))), "{reply}");
            }
            _ => assert_eq!(reply["error_code"], status, "{case}: {reply}"),
        }
    }
    let metrics = reqwest::get(format!("{bridge}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"bridge_records_total{outcome="sent",topic="votes"} 3"#), "{metrics}");
    assert!(metrics.contains(r#"bridge_records_total{outcome="not_allowed",topic="not-allowed"} 3"#), "{metrics}");
}

/// The bridge serves only requests with its bearer token (401 without it, or with another one),
/// refuses requests over its caps (more than 500 records, a record over 64 KiB, a body over
/// 4 MiB) with 413 before publishing anything: a consumer of the topic then finds the one
/// record sent afterwards at its first offset. A bridge without a token, or with an empty one,
/// does not start.
#[tokio::test]
async fn the_bridge_needs_its_token_and_publishes_nothing_of_an_oversized_request() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    const TOPIC: &str = "bridge-caps";
    let stack = TestStack::start_parts(&[vote_stack::Part::Kafka]).await;
    vote_kafka::ensure_topic(&stack.config.brokers(), TOPIC, 1).await.expect("creating the test topic");
    let bridge = stack.start_bridge(free_port(), &["--allowed-topic", TOPIC]).await;
    // A connection per request: the bridge closes one whose body it refused unread.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let b64 = |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    let list = |records: Vec<serde_json::Value>| serde_json::json!({ "records": records }).to_string();
    let small = || serde_json::json!({ "key": b64(b"small"), "value": b64(b"x") });
    let produce = |token: Option<&str>, body: String| {
        let request = http.post(format!("{bridge}/topics/{TOPIC}")).header("content-type", BINARY_RECORDS).body(body);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    };
    let cases = [
        ("no token", produce(None, list(vec![small()])), 401),
        ("another token", produce(Some("not-the-token"), list(vec![small()])), 401),
        ("501 records", produce(Some(BRIDGE_TOKEN), list((0..501).map(|_| small()).collect())), 413),
        (
            "a record of 64 KiB + 1",
            produce(Some(BRIDGE_TOKEN), list(vec![small(), serde_json::json!({ "value": b64(&vec![7u8; 64 * 1024 + 1]) })])),
            413,
        ),
        ("a 4.8 MiB body", produce(Some(BRIDGE_TOKEN), list((0..80).map(|_| serde_json::json!({ "value": b64(&vec![7u8; 60 * 1024]) })).collect())), 413),
    ];
    for (case, request, status) in cases {
        let response = request.send().await.expect("the bridge answers");
        assert_eq!(response.status().as_u16(), status, "{case}: {:?}", response.text().await);
    }
    let sent = produce(Some(BRIDGE_TOKEN), list(vec![serde_json::json!({ "key": b64(b"marker"), "value": b64(b"after") })])).send().await.unwrap();
    assert_eq!(sent.status().as_u16(), 200);
    let reply: serde_json::Value = sent.json().await.unwrap();
    assert_eq!(reply["offsets"][0]["offset"], 0, "the first record on the topic is the one sent afterwards: {reply}");

    let reader: BaseConsumer = vote_kafka::consumer_config(&stack.config.brokers(), "bridge-caps-reader").create().unwrap();
    reader.subscribe(&[TOPIC]).unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|(key, _)| key == b"marker") && std::time::Instant::now() < deadline {
        if let Some(Ok(message)) = reader.poll(Duration::from_millis(500)) {
            seen.push((message.key().unwrap_or_default().to_vec(), message.offset()));
        }
    }
    assert_eq!(seen, vec![(b"marker".to_vec(), 0)], "a consumer of {TOPIC} reads only the record sent after the refused requests");

    let metrics = reqwest::get(format!("{bridge}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(&format!(r#"bridge_records_total{{outcome="sent",topic="{TOPIC}"}} 1"#)), "{metrics}");
    for (args, expected) in [(vec![], "needs a bearer token"), (vec!["--token", " "], "is empty")] {
        let output = std::process::Command::new(stack.config.bin_dir.join("kafka-bridge"))
            .args(&args)
            .env_remove(e2e::spin::BRIDGE_TOKEN_VAR)
            .env("VOTES_BRIDGE_ADDR", format!("127.0.0.1:{}", free_port()))
            .output()
            .expect("running kafka-bridge");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(expected), "kafka-bridge {args:?}: {:?} {stderr}", output.status);
    }
}

/// `spin.toml` is a valid Spin manifest (version 2), and every component `source` and dependency
/// `path` in it is a file the build produced, built by the component's own build command.
#[test]
fn spin_manifest_is_valid_and_names_built_files() {
    let root = vote_stack::config::repo_root();
    let text = std::fs::read_to_string(root.join("spin.toml")).expect("spin.toml at the repository root");
    let manifest: serde_json::Value = toml::from_str(&text).expect("spin.toml is TOML");
    if let Some(schema) = shared_schema("spin/manifest-v2.schema.json") {
        let validator = jsonschema::draft202012::new(&schema).expect("Spin's manifest schema compiles");
        let errors: Vec<String> = validator.iter_errors(&manifest).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "spin.toml does not follow Spin's manifest schema: {errors:#?}");
    }

    // The build writes to `target/` (spin build passes --target-dir target); the tests' binaries
    // may live in another target dir, whose wasm32-wasip2 outputs are the same files.
    let built = component("vote_rest").parent().expect("release dir").to_path_buf();
    let components = manifest["component"].as_object().expect("[component.*] tables");
    let mut checked = 0;
    for (id, spec) in components {
        let build = spec["build"]["command"].as_str().unwrap_or_else(|| panic!("component {id} has a build command"));
        let mut paths: Vec<&str> = vec![spec["source"].as_str().unwrap_or_else(|| panic!("component {id} has a file source"))];
        for dependency in spec["dependencies"].as_object().into_iter().flat_map(|d| d.values()) {
            paths.push(dependency["path"].as_str().unwrap_or_else(|| panic!("component {id}: every dependency is a path")));
        }
        for path in paths {
            let file = path.strip_prefix("target/wasm32-wasip2/release/").unwrap_or_else(|| panic!("{path} is not a build output"));
            assert!(built.join(file).is_file(), "{path} ({}) was not built", built.join(file).display());
            let package = file.trim_end_matches(".wasm").replace('_', "-");
            assert!(build.contains(&format!("-p {package}")), "the build command of {id} does not build {package}: {build}");
            assert!(build.contains("--target-dir target") && build.contains("--target wasm32-wasip2"), "{build}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6, "vote-rest, weather-rest and ballot-rest, each with its publisher dependency");
    let hosts = components["vote-rest"]["allowed_outbound_hosts"].as_array().expect("allowed_outbound_hosts");
    assert_eq!(hosts.len(), 1, "only the bridge: {hosts:?}");
    let variable = hosts[0].as_str().unwrap().trim_start_matches("http://{{ ").trim_end_matches(" }}");
    assert!(manifest["variables"][variable]["default"].is_string(), "the bridge's host is the application variable {variable}");
}
