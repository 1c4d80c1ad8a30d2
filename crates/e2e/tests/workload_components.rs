//! The workload components in the host, one at a time, each granted only its own topic:
//! weather-rest (`POST /tweets`) and ballot-rest (`POST /ballots`) publish one envelope per
//! valid event, its fields normalised, keyed by its id (a retry under an idempotency key names
//! the same id); every kind of bad input gets its 4xx naming the field, and nothing reaches the
//! topic. misbehave's `/publish` shows the grant: its own topic acknowledged, any other refused
//! with `403` and nothing on that topic.

use e2e::{component, Record, TestStack};
use reqwest::Method;
use serde_json::{json, Value};
use vote_platform::event::{Envelope, Value as Field};
use vote_stack::Part;

/// A workload component under test.
struct Case {
    wasm: &'static str,
    topic: &'static str,
    path: &'static str,
    producer: &'static str,
    /// Valid bodies and the fields their events hold.
    valid: Vec<(Value, Vec<(&'static str, Field)>)>,
    /// Bodies refused with `400` and the field each names.
    invalid: Vec<(String, &'static str)>,
}

fn text(value: &str) -> Field {
    Field::Text(value.to_owned())
}

/// Starts Kafka with the component's topic (one partition, so offsets count records) and the
/// host serving the component, granted that topic only.
async fn serve(wasm: &str, topic: &str) -> TestStack {
    let stack = TestStack::start_parts(&[Part::Kafka]).await;
    vote_kafka::ensure_topic(&stack.config.brokers(), topic, 1).await.expect("creating the workload's topic");
    stack.start_host(&component(wasm), &["--allowed-topic", topic]).await;
    stack
}

/// A request to the host with a raw body.
fn post(http: &reqwest::Client, stack: &TestStack, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
    http.post(format!("{}{path}", stack.config.host_url())).header("content-type", content_type).body(body)
}

async fn reply(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("the host answers");
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

/// Every refusal the endpoint gives besides bad fields: (what, request, status, field).
fn refusals(http: &reqwest::Client, stack: &TestStack, case: &Case) -> Vec<(String, reqwest::RequestBuilder, u16, &'static str)> {
    let good = case.valid[0].0.to_string();
    let host = stack.config.host_url();
    vec![
        ("text/plain".into(), post(http, stack, case.path, "text/plain", good.clone()), 415, "content-type"),
        ("no content type".into(), http.post(format!("{host}{}", case.path)).body(good.clone()), 415, "content-type"),
        ("5 KiB body".into(), post(http, stack, case.path, "application/json", format!("{good}{}", " ".repeat(5 * 1024))), 413, "body"),
        ("GET".into(), http.get(format!("{host}{}", case.path)), 405, "method"),
        ("PUT".into(), http.put(format!("{host}{}", case.path)).json(&case.valid[0].0), 405, "method"),
        ("another path".into(), post(http, stack, &format!("{}/more", case.path), "application/json", good.clone()), 404, "path"),
        ("the votes path".into(), post(http, stack, "/votes", "application/json", good.clone()), 404, "path"),
        ("a bad idempotency key".into(), post(http, stack, case.path, "application/json", good).header("idempotency-key", "has space"), 400, "idempotency-key"),
    ]
}

/// Posts every invalid request (nothing published), then every valid one (published in order,
/// from offset 0), then a retry under a key; reads the topic back and checks each envelope.
async fn check(case: Case) {
    let stack = serve(case.wasm, case.topic).await;
    let http = reqwest::Client::new();

    let identity: Value = http.get(format!("{}/.well-known/component", stack.config.host_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(identity["producer"], case.producer);

    for (body, field) in &case.invalid {
        let (status, reply) = reply(post(&http, &stack, case.path, "application/json", body.clone())).await;
        assert_eq!((status, reply["field"].as_str()), (400, Some(*field)), "{body} -> {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "{reply}");
    }
    for (what, request, expected, field) in refusals(&http, &stack, &case) {
        let (status, reply) = reply(request).await;
        assert_eq!((status, reply["field"].as_str()), (expected, Some(field)), "{what}: {reply}");
    }
    assert_eq!(stack.published(case.topic), 0, "a refused request published something");

    // The valid events, alternately to `<path>` and `<path>/`: offsets 0, 1, ... in order.
    let mut ids = Vec::new();
    for (i, (body, _)) in case.valid.iter().enumerate() {
        let path = if i % 2 == 0 { case.path.to_owned() } else { format!("{}/", case.path) };
        let response = post(&http, &stack, &path, "application/json; charset=utf-8", body.to_string()).send().await.unwrap();
        assert_eq!(response.headers().get("x-component-version").and_then(|v| v.to_str().ok()), Some(case.producer));
        let (status, reply) = (response.status().as_u16(), response.json::<Value>().await.unwrap());
        assert_eq!(status, 202, "{body} -> {reply}");
        assert_eq!((reply["partition"].as_i64(), reply["offset"].as_i64()), (Some(0), Some(i as i64)), "{reply}");
        ids.push(reply["id"].as_str().expect("the event id").to_owned());
    }
    // A retry under an idempotency key names the same event (published again; counted once).
    let keyed = || post(&http, &stack, case.path, "application/json", case.valid[0].0.to_string()).header("idempotency-key", "retry-1");
    let (first, again) = (reply(keyed()).await, reply(keyed()).await);
    assert_eq!((first.0, again.0), (202, 202));
    assert_eq!(first.1["id"], again.1["id"], "{first:?} {again:?}");
    assert_ne!(first.1["id"].as_str(), Some(ids[0].as_str()), "a keyed event has its own id");

    let expected = case.valid.len() + 2;
    let records: Vec<Record> = tokio::task::block_in_place(|| stack.records(case.topic, expected));
    assert_eq!(records.len(), expected);
    for (i, ((_, fields), record)) in case.valid.iter().zip(&records).enumerate() {
        let event = Envelope::decode(&record.payload).unwrap_or_else(|e| panic!("record {i}: {e}"));
        assert_eq!(event.id, ids[i]);
        assert_eq!(record.key, event.id.as_bytes(), "the Kafka key is the event id");
        assert_eq!((event.workload.as_str(), event.producer.as_str()), (case.topic, case.producer));
        assert!((event.received_at_ms - vote_core::now_ms()).abs() < 600_000, "received_at_ms from the wall clock: {}", event.received_at_ms);
        let expected: Vec<(String, Field)> = fields.iter().map(|(name, value)| (name.to_string(), value.clone())).collect();
        assert_eq!(event.data.into_iter().collect::<Vec<_>>(), expected, "record {i}");
    }
    let retried: Vec<Envelope> = records[case.valid.len()..].iter().map(|r| Envelope::decode(&r.payload).unwrap()).collect();
    assert!(retried.iter().all(|e| e.is_keyed() && Some(e.id.as_str()) == first.1["id"].as_str()));
    assert_eq!(tokio::task::block_in_place(|| stack.published(case.topic)), expected as i64, "only the accepted events are on the topic");
}

#[tokio::test(flavor = "multi_thread")]
async fn weather_reports_are_published_normalised_and_bad_ones_named() {
    let ok = json!({ "municipality": "mixco", "temperature": 20, "humidity": 50, "weather": "sunny" });
    let with = |field: &str, value: &str| {
        let mut body = ok.as_object().unwrap().clone();
        body.insert(field.into(), serde_json::from_str(value).unwrap());
        Value::Object(body).to_string()
    };
    let without = |field: &str| {
        let mut body = ok.as_object().unwrap().clone();
        body.remove(field);
        Value::Object(body).to_string()
    };
    check(Case {
        wasm: "weather_rest",
        topic: "weather",
        path: "/tweets",
        producer: "weather-rest@0.1.0",
        valid: vec![
            (
                json!({ "municipality": "  MIXCO ", "temperature": "24", "humidity": 65, "weather": "Rainy" }),
                vec![("humidity", Field::Integer(65)), ("municipality", text("mixco")), ("temperature", Field::Integer(24)), ("weather", text("rainy"))],
            ),
            (
                json!({ "municipality": "Amatitlán", "temperature": -3, "humidity": "100", "weather": "FOGGY" }),
                vec![("humidity", Field::Integer(100)), ("municipality", text("amatitlan")), ("temperature", Field::Integer(-3)), ("weather", text("foggy"))],
            ),
            (
                json!({ "weather": "cloudy", "humidity": 0, "temperature": 50, "municipality": "Chinautla" }),
                vec![("humidity", Field::Integer(0)), ("municipality", text("chinautla")), ("temperature", Field::Integer(50)), ("weather", text("cloudy"))],
            ),
        ],
        invalid: vec![
            (with("wind", "3"), "wind"),
            (with("municipality", r#""antigua""#), "municipality"),
            (with("municipality", "7"), "municipality"),
            (without("municipality"), "municipality"),
            (with("temperature", "20.5"), "temperature"),
            (with("temperature", "51"), "temperature"),
            (with("temperature", r#""-11""#), "temperature"),
            (with("temperature", "true"), "temperature"),
            (with("humidity", r#""abc""#), "humidity"),
            (with("humidity", "101"), "humidity"),
            (without("humidity"), "humidity"),
            (with("weather", r#""snowy""#), "weather"),
            (with("weather", "null"), "weather"),
            (r#"{"municipality":"mixco","municipality":"guatemala","temperature":20,"humidity":50,"weather":"sunny"}"#.into(), "municipality"),
            (r#"{"municipality":"#.into(), "body"),
            ("[]".into(), "body"),
        ],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ballots_are_published_normalised_and_bad_ones_named() {
    let ok = json!({ "sede": "EORM No. 5", "municipio": "Mixco", "departamento": "Guatemala", "papeleta": "presidente", "partido": "Semilla" });
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body.to_string()
    };
    let ballot = |sede: &str, municipio: &str, departamento: &str, papeleta: &str, partido: &str| {
        vec![("departamento", text(departamento)), ("municipio", text(municipio)), ("papeleta", text(papeleta)), ("partido", text(partido)), ("sede", text(sede))]
    };
    check(Case {
        wasm: "ballot_rest",
        topic: "ballots",
        path: "/ballots",
        producer: "ballot-rest@0.1.0",
        valid: vec![
            (
                json!({ "sede": "  Escuela Oficial Rural Mixta  No. 12 ", "municipio": "Panajachel", "departamento": "solola", "papeleta": "PRESIDENTE", "partido": "Semilla" }),
                ballot("Escuela Oficial Rural Mixta No. 12", "Panajachel", "Sololá", "presidente", "Semilla"),
            ),
            (
                json!({ "sede": "Gimnasio Municipal", "municipio": "Chichicastenango", "departamento": "El Quiché", "papeleta": "Alcalde", "partido": "UNE" }),
                ballot("Gimnasio Municipal", "Chichicastenango", "Quiché", "alcalde", "UNE"),
            ),
            (
                json!({ "sede": "INEB Sumpango", "municipio": "Sumpango", "departamento": " SACATEPEQUEZ", "papeleta": "parlacen", "partido": "Vamos" }),
                ballot("INEB Sumpango", "Sumpango", "Sacatepéquez", "parlacen", "Vamos"),
            ),
        ],
        invalid: vec![
            (with("departamento", "Narnia".into()), "departamento"),
            (with("departamento", 1.into()), "departamento"),
            (with("papeleta", "senado".into()), "papeleta"),
            (with("sede", "   ".into()), "sede"),
            (with("sede", "x".repeat(65).into()), "sede"),
            (with("municipio", "Mix\u{7}co".into()), "municipio"),
            (with("municipio", Value::Null), "municipio"),
            (with("partido", json!(["UNE"])), "partido"),
            (with("partido", "Sem\u{200B}illa".into()), "partido"),
            (with("votos", 1.into()), "votos"),
            ("{}".into(), "sede"),
            ("7".into(), "body"),
        ],
    })
    .await;
}

/// misbehave in a host granted `weather` only: `/publish?topic=weather` is acknowledged,
/// `/publish/votes` refused with `403` naming `topic`, and nothing reaches `votes`.
#[tokio::test(flavor = "multi_thread")]
async fn a_component_publishes_only_to_its_granted_topics() {
    let stack = TestStack::start_parts(&[Part::Kafka]).await;
    vote_kafka::ensure_topic(&stack.config.brokers(), "weather", 1).await.expect("creating the weather topic");
    stack.start_host(&component("misbehave"), &["--allowed-topic", "weather"]).await;
    let http = reqwest::Client::new();
    let host = stack.config.host_url();
    let (status, granted) = reply(http.request(Method::POST, format!("{host}/publish?topic=weather"))).await;
    assert_eq!((status, granted["offset"].as_i64()), (200, Some(0)), "{granted}");
    for path in ["/publish/votes", "/publish?topic=votes"] {
        let (status, refused) = reply(http.post(format!("{host}{path}"))).await;
        assert_eq!((status, refused["field"].as_str()), (403, Some("topic")), "{path}: {refused}");
        assert!(refused["error"].as_str().is_some_and(|e| e.contains("votes")), "{refused}");
    }
    let (published_votes, published_weather) = tokio::task::block_in_place(|| (stack.published(vote_core::TOPIC), stack.published("weather")));
    assert_eq!((published_votes, published_weather), (0, 1));
}
