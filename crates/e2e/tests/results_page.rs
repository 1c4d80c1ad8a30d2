//! The results page in a real headless Chromium over a real stack: it shows what Redis holds,
//! moves without a reload when votes arrive over both paths, finds a vote just cast, and shows
//! a band named like markup as text. The browser is driven by `tests/browser/results-page.mjs`
//! (playwright-core with Debian's chromium), which this test talks to line by line.

use std::time::Duration;

use e2e::browser::{self, Node};
use e2e::{component, valid_votes, TestStack};
use vote_core::proto::Vote;
use vote_store::keys;

/// A band name that would run a script if the page treated names as markup.
const XSS_BAND: &str = "<script>alert(1)</script>";

#[tokio::test]
async fn results_page_shows_live_counts_search_and_markup_as_text() {
    let script = browser::script("results-page.mjs");
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
    let results_url = format!("{}/", stack.config.results_url());
    let host_url = stack.config.host_url();
    let args = [results_url.as_ref(), host_url.as_ref(), screenshot.as_os_str()];
    let mut node = Node::spawn(&script, &args, &[("EXPECTED", &expected.to_string()), ("XSS_BAND", XSS_BAND)]);

    assert_eq!(node.next_line().await.as_deref(), Some("ready"), "the page showed what Redis holds");
    stack.cast_all(valid_votes(7)).await;
    node.say("grpc 7").await;
    node.finish().await;
    assert!(screenshot.is_file());
    println!("screenshot of the results page: {}", screenshot.display());
    // The page's own server agrees with the page: 19 + 7 gRPC + 5 REST.
    assert_eq!(stack.total().await, 31);
}
