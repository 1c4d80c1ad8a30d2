//! `make loadtest` in small: Locust from the project venv drives the wasm REST producer, the
//! native REST baseline, the gRPC producer and the mixed scenario for a few seconds each, with
//! no failed request, and every vote Locust saw accepted is counted exactly once.

use std::process::Command;

use e2e::{component, venv_program, TestStack};

#[tokio::test(flavor = "multi_thread")]
async fn locust_drives_every_path_and_each_accepted_vote_is_counted_once() {
    let python = venv_program("python");
    let locust = venv_program("locust");
    let stack = TestStack::start().await;
    stack.start_consumer("consumer", &[]).await;
    stack.start_producer(&[]).await;
    stack.start_host(&component("vote_rest"), &[]).await;
    stack.start_native_host(&[]).await;
    let work = tempfile::tempdir().unwrap();
    let reports = work.path().join("reports");
    let config = &stack.config;
    let script = vote_stack::config::repo_root().join("scripts/loadtest.py");
    let output = tokio::task::spawn_blocking({
        let (config, reports) = (config.clone(), reports.clone());
        let stubs = work.path().join("stubs");
        move || {
            Command::new(python)
                .arg(script)
                .args(["--paths", "rest,native,grpc,mixed", "--users", "4", "--spawn-rate", "4", "--run-time", "2s", "--settle", "0.5"])
                .args(["--locust", &locust.display().to_string(), "--reports", &reports.display().to_string()])
                .args(["--rest-url", &config.host_url(), "--native-url", &config.native_url()])
                .args(["--grpc-addr", &format!("{}:{}", config.host, config.grpc_port), "--redis-url", &config.redis_url()])
                .env("VOTES_LOCUST_STUBS", stubs)
                .output()
                .expect("running scripts/loadtest.py")
        }
    })
    .await
    .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "scripts/loadtest.py failed:\n{log}");

    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(reports.join("loadtest.json")).expect("loadtest.json written")).unwrap();
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 4, "{summary:#}");
    let mut accepted = 0;
    for run in runs {
        let path = run["path"].as_str().unwrap();
        assert!(run["requests"].as_u64().unwrap() > 0, "{path}: no request\n{log}");
        assert_eq!(run["failures"], 0, "{path}: {run:#}");
        assert_eq!(run["counted"], run["accepted"], "{path}: {run:#}");
        accepted += run["accepted"].as_u64().unwrap();
        for file in [format!("{path}_stats.csv"), format!("{path}.html"), format!("{path}.json")] {
            assert!(reports.join(&file).is_file(), "{file} missing in the reports");
        }
    }
    let mixed = runs.iter().find(|r| r["path"] == "mixed").unwrap();
    assert!(mixed["by_name"]["POST /votes"]["requests"].as_u64().unwrap() > 0, "{mixed:#}");
    assert!(mixed["by_name"]["/votes.v1.VoteService/Cast"]["requests"].as_u64().unwrap() > 0, "{mixed:#}");
    assert_eq!(stack.total().await, accepted);
    let paths = stack.counts(vote_store::keys::PATHS).await;
    for path in ["wasm", "native", "grpc"] {
        assert!(paths.get(path).copied().unwrap_or(0) > 0, "no vote counted on path {path}: {paths:?}");
    }
}
