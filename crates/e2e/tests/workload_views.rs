//! The weather and ballots views of the results page in a real headless Chromium, on counts
//! written straight into Redis with the keys of the shipped specs: each view shows what Redis
//! holds, moves without a reload when more is counted, searches its logs, and shows a polling
//! place named like markup as text. The browser is driven by `tests/browser/workload-views.mjs`
//! (playwright-core with Debian's chromium), which this test talks to line by line.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use e2e::workloads::{self, ballot, weather};
use e2e::TestStack;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};
use vote_stack::Part;

const XSS_SEDE: &str = "<img src=x onerror=alert(1)>";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Fails with how to install what the browser test needs.
fn browser_script() -> std::path::PathBuf {
    let dir = vote_stack::config::repo_root().join("tests/browser");
    assert!(Path::new(CHROMIUM).is_file(), "the browser test needs {CHROMIUM} (Debian packages chromium and chromium-driver): `make setup` installs them");
    assert!(
        dir.join("node_modules/playwright-core/package.json").is_file(),
        "the browser test needs {}/node_modules/playwright-core (npm ci in tests/browser): `make setup` installs it",
        dir.display()
    );
    dir.join("workload-views.mjs")
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await.expect("the browser script answers in time").expect("reading the script's output")
}

async fn say(stdin: &mut ChildStdin, line: &str) {
    stdin.write_all(format!("{line}\n").as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
}

#[tokio::test]
async fn weather_and_ballot_views_update_live_in_chromium() {
    let script = browser_script();
    let stack = TestStack::start_parts(&[Part::Redis, Part::Mongo]).await;
    let (weather_spec, ballots_spec) = (workloads::spec("weather"), workloads::spec("ballots"));
    let mut redis = stack.redis().await;
    let reports = workloads::envelopes(
        &weather_spec,
        0,
        vec![
            weather("guatemala", "cloudy", 18, 65),
            weather("mixco", "sunny", 20, 60),
            weather("guatemala", "cloudy", 17, 70),
            weather("mixco", "sunny", 22, 70),
            weather("guatemala", "foggy", 19, 90),
            weather("amatitlan", "sunny", 30, 40),
        ],
    );
    workloads::count(&mut redis, &weather_spec, &reports).await;
    let cast = workloads::envelopes(
        &ballots_spec,
        0,
        vec![
            ballot("EORM 1", "Guatemala", "Guatemala", "presidente", "UNE"),
            ballot("EORM 1", "Guatemala", "Guatemala", "presidente", "VAMOS"),
            ballot(XSS_SEDE, "Mixco", "Guatemala", "presidente", "UNE"),
            ballot("Escuela Central", "Sololá", "Sololá", "presidente", "Semilla"),
            ballot("Escuela Central", "Sololá", "Sololá", "diputados", "UNE"),
            ballot("Instituto Quetzal", "Quetzaltenango", "Quetzaltenango", "presidente", "Semilla"),
            ballot("Escuela Petén", "Flores", "Petén", "presidente", "VAMOS"),
        ],
    );
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
            "total": 7,
            "polling_place": { "EORM 1": 2, "Escuela Central": 2, XSS_SEDE: 1, "Instituto Quetzal": 1, "Escuela Petén": 1 },
            "shares": { "Guatemala · UNE": "66.7%", "Sololá · UNE": "50.0%", "Petén · VAMOS": "100.0%" },
            "search": { "departamento": "Sololá", "rows": 2 },
        },
        "xss": XSS_SEDE,
    });
    let artifacts = e2e::artifacts_dir();
    let mut node = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("{}/", stack.config.results_url()))
        .arg(&artifacts)
        .env("EXPECTED", expected.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting node");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();

    assert_eq!(next_line(&mut lines).await.as_deref(), Some("ready weather"), "the weather view showed what Redis holds");
    let more = workloads::envelopes(&weather_spec, 6, (0..4).map(|i| weather("mixco", "rainy", 21 + i, 80)).collect());
    workloads::count(&mut redis, &weather_spec, &more).await;
    say(&mut stdin, "weather 10 6").await;
    assert_eq!(next_line(&mut lines).await.as_deref(), Some("moved weather"), "the weather view moved without a reload");

    assert_eq!(next_line(&mut lines).await.as_deref(), Some("ready ballots"), "the ballots view showed what Redis holds");
    let more = workloads::envelopes(&ballots_spec, 7, (0..3).map(|_| ballot("EORM 2", "Villa Nueva", "Guatemala", "presidente", "UNE")).collect());
    workloads::count(&mut redis, &ballots_spec, &more).await;
    say(&mut stdin, "ballots 10 6").await;
    drop(stdin);

    let mut said = Vec::new();
    while let Some(line) = next_line(&mut lines).await {
        said.push(line);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), node.wait()).await.expect("node exits").unwrap();
    assert!(status.success(), "the browser script failed (its error is above): {said:?}");
    assert_eq!(said.last().map(String::as_str), Some("ok"), "{said:?}");
    for name in ["workload-weather.png", "workload-ballots.png"] {
        assert!(artifacts.join(name).is_file(), "{name}");
    }
    println!("screenshots of the workload views: {}", artifacts.display());
}
