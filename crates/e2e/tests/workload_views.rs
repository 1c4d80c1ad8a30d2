//! The weather and ballots views of the results page in a real headless Chromium, on counts
//! written straight into Redis with the keys of the shipped specs: each view shows what Redis
//! holds, moves without a reload when more is counted, searches its logs, and shows a polling
//! place named like markup as text. The browser is driven by `tests/browser/workload-views.mjs`
//! (playwright-core with Debian's chromium), which this test talks to line by line.

use e2e::browser::{self, Node};
use e2e::workloads::{self, ballot, weather, XSS_SEDE};
use e2e::TestStack;
use vote_stack::Part;

#[tokio::test]
async fn weather_and_ballot_views_update_live_in_chromium() {
    let script = browser::script("workload-views.mjs");
    let stack = TestStack::start_parts(&[Part::Redis, Part::Mongo]).await;
    let (weather_spec, ballots_spec) = (workloads::spec("weather"), workloads::spec("ballots"));
    let mut redis = stack.redis().await;
    let reports = workloads::envelopes(&weather_spec, 0, workloads::sample_reports()[..6].to_vec());
    workloads::count(&mut redis, &weather_spec, &reports).await;
    let cast = workloads::envelopes(&ballots_spec, 0, workloads::sample_ballots());
    workloads::count(&mut redis, &ballots_spec, &cast).await;
    workloads::log(&stack.config.mongo_url(), &ballots_spec, &cast).await;
    let manifest = workloads::manifest_path();
    stack.start_results(&["--manifest", manifest.to_str().unwrap()]).await;

    let expected = serde_json::json!({
        "weather": {
            "total": 6,
            "municipality": { "guatemala": 3, "mixco": 2, "amatitlan": 1 },
            "temperature": { "guatemala": "18.0", "mixco": "21.0", "amatitlan": "30.0" },
            "shares": { "mixco · sunny": "100.0%", "guatemala · cloudy": "66.7%", "guatemala · foggy": "33.3%" },
        },
        "ballots": {
            "total": 9,
            "polling_place": { "EORM 1": 3, "Escuela Central": 2, "Instituto Quetzal": 2, XSS_SEDE: 1, "Escuela Petén": 1 },
            "shares": { "Guatemala · UNE": "50.0%", "Guatemala · A|B": "25.0%", "Sololá · UNE": "50.0%", "Petén · VAMOS": "100.0%" },
            "search": { "departamento": "Sololá", "rows": 2 },
        },
        "xss": XSS_SEDE,
    });
    let artifacts = e2e::artifacts_dir();
    let results_url = format!("{}/", stack.config.results_url());
    let mut node = Node::spawn(&script, &[results_url.as_ref(), artifacts.as_os_str()], &[("EXPECTED", &expected.to_string())]);

    assert_eq!(node.next_line().await.as_deref(), Some("ready weather"), "the weather view showed what Redis holds");
    let more = workloads::envelopes(&weather_spec, 6, (0..4).map(|i| weather("mixco", "rainy", 21 + i, 80)).collect());
    workloads::count(&mut redis, &weather_spec, &more).await;
    node.say("weather 10 6").await;
    assert_eq!(node.next_line().await.as_deref(), Some("moved weather"), "the weather view moved without a reload");

    assert_eq!(node.next_line().await.as_deref(), Some("ready ballots"), "the ballots view showed what Redis holds");
    let more = workloads::envelopes(&ballots_spec, 9, (0..3).map(|_| ballot("EORM 2", "Villa Nueva", "Guatemala", "presidente", "UNE")).collect());
    workloads::count(&mut redis, &ballots_spec, &more).await;
    node.say("ballots 12 6").await;
    node.finish().await;
    for name in ["workload-weather.png", "workload-ballots.png"] {
        assert!(artifacts.join(name).is_file(), "{name}");
    }
    println!("screenshots of the workload views: {}", artifacts.display());
}
