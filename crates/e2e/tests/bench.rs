//! `votectl bench` (the real binary) at small counts on every path (wasm REST, the same through
//! `wasi:http` and with instance reuse in hosts the bench starts, native REST, gRPC): rounds, a concurrency sweep and open loop, CPU per vote from the stack's processes,
//! and the exactly-once check, which exits 1 when other votes arrive during the bench.

use std::sync::Arc;

use e2e::{component, Load, TestStack};

async fn bench(stack: &TestStack, extra: &[&str]) -> std::process::Output {
    tokio::process::Command::new(e2e::binary("votectl"))
        .args(stack.votectl_args())
        .args(["bench", "--json", "--count", "300", "--concurrency", "8", "--rounds", "1"])
        .args(extra)
        .output()
        .await
        .expect("running votectl bench")
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_measures_every_path_and_fails_on_a_count_mismatch() {
    let stack = Arc::new(TestStack::start().await);
    stack.start_consumer("consumer", &[]).await;
    stack.start_producer(&[]).await;
    stack.start_host(&component("vote_rest"), &[]).await;
    stack.start_native_host(&[]).await;

    let every_path = ["--paths", "rest,rest-wasi-http,rest-reuse,native,grpc"];
    let output = bench(&stack, &[&every_path[..], &["--sweep", "1,8", "--sweep-count", "100", "--open-loop-rate", "100", "--open-loop-secs", "1"]].concat()).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "votectl bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("the bench's JSON report");
    let paths: Vec<&str> = report["paths"].as_array().unwrap().iter().map(|p| p["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["rest", "rest-wasi-http", "rest-reuse", "native", "grpc"], "{report:#}");
    for path in report["paths"].as_array().unwrap() {
        assert!(path["votes_per_second"].as_f64().unwrap() > 0.0, "{path:#}");
        assert_eq!(path["runs"][0]["accepted"], 300, "{path:#}");
        let cpu = &path["cpu_us_per_vote"];
        for process in ["consumer", "grpc-producer", "wasm-host", "wasi-http-host", "reuse-host", "native-host", "kafka"] {
            assert!(cpu[process].is_number(), "no CPU figure for {process}: {cpu:#}");
        }
    }
    for ratio in ["rest/native", "rest/grpc", "native/grpc", "rest-reuse/native", "rest-reuse/rest", "rest-wasi-http/native", "rest/rest-wasi-http"] {
        assert!(report["ratios"][ratio].as_f64().unwrap() > 0.0, "{ratio}: {report:#}");
    }
    assert_eq!(report["sweep"].as_array().unwrap().len(), 10, "{report:#}");
    let open = report["open_loop"].as_array().unwrap();
    assert_eq!(open.len(), 5);
    for run in open {
        assert_eq!(run["accepted"], 100, "{run:#}");
        let latency = &run["latency"];
        assert!(latency["p50_ms"].as_f64().unwrap() > 0.0 && latency["p99_9_ms"].as_f64().unwrap() >= latency["p99_ms"].as_f64().unwrap(), "{run:#}");
        // The producer's own receipt-to-acknowledgement time over the run, read from its /metrics.
        assert!(run["ingest_p50_ms"].as_f64().is_some_and(|ms| ms > 0.0) && run["ingest_p99_ms"].as_f64().is_some(), "{run:#}");
    }
    for producer in ["wasm-host", "wasi-http-host", "reuse-host", "native-host", "grpc-producer"] {
        assert!(report["peak_rss_mib"][producer].as_f64().unwrap() > 1.0, "{report:#}");
    }
    assert_eq!(report["accepted"], report["counted"], "{report:#}");
    // 5 warm-ups of 500, 5 runs of 300, a sweep of 10 x 100, 5 open-loop runs of 100.
    assert_eq!(report["accepted"], 2500 + 1500 + 1000 + 500);
    assert_eq!(stack.total().await, 5500);
    for port in [stack.config.reuse_port, stack.config.wasi_http_port] {
        let side_host = std::net::TcpStream::connect(("127.0.0.1", port));
        assert!(side_host.is_err(), "the bench stops the hosts it started (port {port})");
    }

    // Votes from elsewhere during the bench: the consumer's total moves more than the bench's
    // producers accepted, and the bench says so and exits 1.
    let load = Load::start(&stack, false).await;
    let output = bench(&stack, &["--paths", "grpc,native"]).await;
    let (others, _) = load.stop().await;
    assert!(others > 0, "the extra load sent nothing");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "a mismatch must fail the bench:\n{}\n{stderr}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr.contains("count mismatch"), "{stderr}");
}
