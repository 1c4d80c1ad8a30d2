//! `make compare-brokers` at tiny counts: the script brings up a stack per broker (Kafka, then
//! RabbitMQ, each on its own state directory and free ports), runs `votectl bench-broker` on the
//! weather workload, takes the stack down, and writes the report; every acknowledged event was
//! counted once on both (bench-broker fails otherwise).

use e2e::{binary, venv_program};

#[test]
fn compare_brokers_runs_end_to_end_at_small_counts() {
    let root = vote_stack::config::repo_root();
    let python = venv_program("python");
    let done = std::process::Command::new(&python)
        .arg(root.join("scripts/compare_brokers.py"))
        .args(["--smoke", "--votectl"])
        .arg(binary("votectl"))
        .output()
        .unwrap_or_else(|e| panic!("running {} scripts/compare_brokers.py: {e} (make setup creates the venv)", python.display()));
    let (stdout, stderr) = (String::from_utf8_lossy(&done.stdout), String::from_utf8_lossy(&done.stderr));
    assert!(done.status.success(), "compare_brokers.py --smoke failed:\n{stderr}\n{stdout}");
    for expected in ["# Kafka or RabbitMQ", "| 1 |", "| 8 |", "Kafka (Tansu)", "RabbitMQ streams", "The seed's two claims, checked"] {
        assert!(stdout.contains(expected), "the report lacks {expected:?}:\n{stdout}");
    }
}
