//! The results page in a real headless Chromium over a real stack: it shows what Redis holds,
//! moves without a reload when votes arrive over both paths, finds a vote just cast, and shows
//! a band named like markup as text. The browser is driven by `tests/browser/results-page.mjs`
//! (playwright-core with Debian's chromium), which this test talks to line by line.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use e2e::{component, valid_votes, TestStack};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::ChildStdout;
use vote_core::proto::Vote;
use vote_store::keys;

/// A band name that would run a script if the page treated names as markup.
const XSS_BAND: &str = "<script>alert(1)</script>";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Fails with how to install what the browser test needs.
fn browser_script() -> std::path::PathBuf {
    let dir = vote_stack::config::repo_root().join("tests/browser");
    let missing = if !Path::new(CHROMIUM).is_file() {
        Some(format!("{CHROMIUM} (Debian packages chromium and chromium-driver)"))
    } else if !dir.join("node_modules/playwright-core/package.json").is_file() {
        Some(format!("{}/node_modules/playwright-core (npm ci in tests/browser)", dir.display()))
    } else if std::process::Command::new("node").arg("--version").output().is_err() {
        Some("node (Debian packages nodejs and npm)".to_owned())
    } else {
        None
    };
    if let Some(missing) = missing {
        panic!("the browser test needs {missing}: `make setup` installs them");
    }
    dir.join("results-page.mjs")
}

/// The script's next line of output; it has 90 s for any step.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await.expect("the browser script answers in time").expect("reading the script's output")
}

#[tokio::test]
async fn results_page_shows_live_counts_search_and_markup_as_text() {
    let script = browser_script();
    let stack = TestStack::start().await;
    stack.start_producer(&[]).await;
    stack.start_consumer("consumer", &[]).await;
    stack.start_host(&component("vote_rest"), &[]).await;
    stack.start_results(&[]).await;
    let http = reqwest::Client::new();

    // Votes over both paths, one of them for a band named like markup, before the page opens.
    stack.cast_all(valid_votes(12)).await;
    let mut rest_votes = valid_votes(6);
    rest_votes.push(Vote { name: XSS_BAND.into(), album: "<img src=x onerror=alert(2)>".into(), year: "2001".into(), rank: "1".into() });
    for vote in &rest_votes {
        let (status, _, reply) = stack.post_vote(&http, &e2e::vote_json(vote)).await;
        assert_eq!(status, 202, "{reply}");
    }
    stack.wait_for_counts(19, Duration::from_secs(60)).await;
    let paths = stack.counts(keys::PATHS).await;
    let expected = serde_json::json!({
        "total": stack.total().await,
        "wasm": paths.get("wasm").copied().unwrap_or(0),
        "grpc": paths.get("grpc").copied().unwrap_or(0),
        "bands": stack.counts(keys::BANDS).await,
    });
    assert_eq!(expected["total"], 19);

    let screenshot = e2e::artifacts_dir().join("results.png");
    let mut node = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("{}/", stack.config.results_url()))
        .arg(stack.config.host_url())
        .arg(&screenshot)
        .env("EXPECTED", expected.to_string())
        .env("XSS_BAND", XSS_BAND)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("starting node");
    let mut stdin = node.stdin.take().unwrap();
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();

    assert_eq!(next_line(&mut lines).await.as_deref(), Some("ready"), "the page showed what Redis holds");
    stack.cast_all(valid_votes(7)).await;
    stdin.write_all(b"grpc 7\n").await.unwrap();
    stdin.flush().await.unwrap();
    drop(stdin);
    let mut said = Vec::new();
    while let Some(line) = next_line(&mut lines).await {
        said.push(line);
    }
    let status = tokio::time::timeout(Duration::from_secs(30), node.wait()).await.expect("node exits").unwrap();
    assert!(status.success(), "the browser script failed (its error is above): {said:?}");
    assert_eq!(said.last().map(String::as_str), Some("ok"), "{said:?}");
    assert!(screenshot.is_file());
    println!("screenshot of the results page: {}", screenshot.display());
    // The page's own server agrees with the page: 19 + 7 gRPC + 5 REST.
    assert_eq!(stack.total().await, 31);
}
