"""`make loadtest`: Locust, headless, against each producer of a running stack in turn, with the
same users, spawn rate and duration per path, then a check that every vote Locust saw accepted
was counted exactly once in Redis. The workload paths (`weather`, `ballots`; `make
loadtest-weather`) post the shipped sample reports or ballots to the wasm host and check the
workload's own total the same way; they run only when named in `--paths`.

Where the producers are comes from `votectl status --json` (so a stack on other ports works);
`--rest-url`, `--native-url`, `--grpc-addr` override it. For each path P it keeps, under
`--reports` (default `reports/`, ignored by git): `P_stats.csv`, `P_stats_history.csv`,
`P_failures.csv`, `P_exceptions.csv`, `P.html` (as Locust writes them) and `P.json` (the run's
final figures, written by the locustfile when Locust quits); `loadtest.json` holds them all.
Exit status 1 if a path had failures, made no request, or the counts do not match.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "locust" / "locustfile.py"
# The consumer's total in Redis (crates/vote-store/src/keys.rs).
TOTAL_KEY = "{votes}:total"
# Locust user classes per path; `mixed` splits the users evenly between the two producers the
# seeds compare (seed 004 spreads its traffic over both endpoints).
PATHS = {
    "rest": ["RestVoter"],
    "native": ["NativeRestVoter"],
    "grpc": ["GrpcVoter"],
    "mixed": ["RestVoter", "GrpcVoter"],
    "weather": ["WeatherUser"],
    "ballots": ["BallotUser"],
}
DEFAULT_PATHS = "rest,native,grpc,mixed"
# The workload each workload path counts into (its total: `{votes}:w:<workload>:total`,
# WorkloadSpec::total_key in crates/vote-platform).
WORKLOADS = {"weather": "weather", "ballots": "ballots"}
# The producers each path needs an address for (the workloads are served by the wasm host).
NEEDS = {"mixed": ["rest", "grpc"], "weather": ["rest"], "ballots": ["rest"]}
# The request names each path must report.
REQUEST_NAMES = {
    "rest": ["POST /votes"],
    "native": ["POST /votes"],
    "grpc": ["/votes.v1.VoteService/Cast"],
    "mixed": ["POST /votes", "/votes.v1.VoteService/Cast"],
    "weather": ["POST /tweets"],
    "ballots": ["POST /ballots"],
}


def say(message):
    print(f"[loadtest] {message}", file=sys.stderr, flush=True)


def votectl_json(votectl, *args):
    """Runs `votectl ARGS --json` and returns its JSON (status exits 1 when a part is unhealthy
    but still prints the report)."""
    done = subprocess.run([votectl, *args, "--json"], capture_output=True, text=True)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        sys.exit(f"`{votectl} {' '.join(args)} --json` failed (is the stack up? `make up`): {done.stderr.strip()}")


def endpoints(args):
    """The URL of each producer: from the flags, else from `votectl status`."""
    found = {}
    if not (args.rest_url and args.grpc_addr and args.native_url):
        for part in votectl_json(args.votectl, "status"):
            address = part["address"]
            if part["part"] == "wasm-host":
                found["rest"] = address.removesuffix("/votes")
            elif part["part"] == "native-host":
                found["native"] = address.removesuffix("/votes")
            elif part["part"] == "grpc-producer":
                found["grpc"] = urlparse(address).netloc
    return {
        "rest": args.rest_url or found.get("rest"),
        "native": args.native_url or found.get("native"),
        "grpc": args.grpc_addr or found.get("grpc"),
    }


def counted(args, path):
    """The total `path` counts into (Redis' `{votes}:total`, or the workload's), through
    `votectl results` or the stack's Redis directly."""
    workload = WORKLOADS.get(path)
    if args.redis_url:
        import socket
        url = urlparse(args.redis_url)
        with socket.create_connection((url.hostname, url.port or 6379), timeout=5) as sock:
            key = (f"{{votes}}:w:{workload}:total" if workload else TOTAL_KEY).encode()
            sock.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
            reply = sock.recv(256).split(b"\r\n")
            return 0 if reply[0] == b"$-1" else int(reply[1])
    if workload:
        return int(votectl_json(args.votectl, "results", "--workload", workload)["total"])
    return int(votectl_json(args.votectl, "results")["total"])


def run_locust(args, path, urls):
    """Runs Locust headless for one path; returns the final figures the locustfile wrote."""
    prefix = Path(args.reports) / path
    summary = Path(f"{prefix}.locust.json")
    summary.unlink(missing_ok=True)
    env = dict(os.environ)
    env.update({
        "VOTES_REST_URL": urls["rest"] or "",
        "VOTES_NATIVE_URL": urls["native"] or "",
        "VOTES_GRPC_ADDR": urls["grpc"] or "",
        "VOTES_LOCUST_SUMMARY": str(summary),
        "VOTES_LOCUST_REQUESTS": str(args.requests),
    })
    command = [
        args.locust, "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.run_time,
        "--stop-timeout", "10", "--exit-code-on-error", "0",
        "--csv", str(prefix), "--csv-full-history", "--html", f"{prefix}.html",
        "--loglevel", "WARNING", *PATHS[path],
    ]
    budget = f", at most {args.requests} requests" if args.requests else ""
    say(f"{path}: {args.users} users, spawn rate {args.spawn_rate}/s, for {args.run_time}{budget} ({' '.join(PATHS[path])})")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0 or not summary.exists():
        sys.exit(f"locust failed on {path} (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(summary.read_text())


def summarise(path, figures):
    """Requests, failures, throughput and latency percentiles (ms) of one run."""
    total = figures["total"]
    run = {key: total[key] for key in ("requests", "failures", "requests_per_second", "mean_ms", "p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms")}
    run.update({
        "path": path,
        "accepted": total["requests"] - total["failures"],
        "by_name": {e["name"]: {"requests": e["requests"], "failures": e["failures"]} for e in figures["entries"]},
        "failure_reasons": figures["errors"],
    })
    return run


def wait_counted(args, path, expected, deadline_s):
    """Waits until the total reaches `expected`, then a moment more to see any overshoot."""
    deadline = time.time() + deadline_s
    total = counted(args, path)
    while total < expected and time.time() < deadline:
        time.sleep(0.25)
        total = counted(args, path)
    time.sleep(args.settle)
    return counted(args, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", default=DEFAULT_PATHS, help=f"comma-separated, of {', '.join(PATHS)} (default {DEFAULT_PATHS})")
    parser.add_argument("--users", type=int, default=64, help="Locust users per path")
    parser.add_argument("--spawn-rate", type=float, default=16, help="users started per second")
    parser.add_argument("--run-time", default="30s", help="duration per path (Locust syntax: 30s, 2m)")
    parser.add_argument("--requests", type=int, default=0, help="stop each path after this many requests (0: run for --run-time)")
    parser.add_argument("--reports", default=str(ROOT / "reports"), help="where the CSV, HTML and JSON reports go")
    parser.add_argument("--votectl", default=os.environ.get("VOTECTL", str(ROOT / "target" / "release" / "votectl")))
    parser.add_argument("--locust", default=str(ROOT / ".venv" / "bin" / "locust"))
    parser.add_argument("--rest-url"), parser.add_argument("--native-url"), parser.add_argument("--grpc-addr")
    parser.add_argument("--redis-url", help="read the total from this Redis instead of `votectl results`")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds to watch for overcounting after the total is reached")
    parser.add_argument("--no-count-check", action="store_true", help="skip the exactly-once check (other traffic on the stack)")
    args = parser.parse_args()

    if not Path(args.locust).is_file():
        sys.exit(f"locust is missing at {args.locust}: run `make setup` (it installs locust, grpcio and grpcio-tools into .venv)")
    Path(args.reports).mkdir(parents=True, exist_ok=True)
    urls = endpoints(args)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    for path in paths:
        if path not in PATHS:
            sys.exit(f"unknown path {path!r}: choose from {', '.join(PATHS)}")
        missing = [name for name in NEEDS.get(path, [path]) if not urls[name]]
        if missing:
            sys.exit(f"no address for {', '.join(missing)}: is it running? (`votectl status`)")

    problems, runs = [], []
    for path in paths:
        before = None if args.no_count_check else counted(args, path)
        run = summarise(path, run_locust(args, path, urls))
        if not args.no_count_check:
            total = wait_counted(args, path, before + run["accepted"], 60)
            run["counted"] = total - before
            if run["counted"] != run["accepted"]:
                problems.append(f"{path}: Locust saw {run['accepted']} {WORKLOADS.get(path, 'vote')} events accepted, the consumer counted {run['counted']}")
        if run["requests"] == 0:
            problems.append(f"{path}: Locust made no request")
        if run["failures"]:
            problems.append(f"{path}: {run['failures']} failed requests: {run['failure_reasons']}")
        names = set(run["by_name"])
        for expected in REQUEST_NAMES[path]:
            if expected not in names:
                problems.append(f"{path}: no request named {expected} was reported")
        say(
            f"{path}: {run['requests']} requests, {run['failures']} failed, {run['requests_per_second']:.0f} req/s, "
            f"p50 {run.get('p50_ms')} ms, p99 {run.get('p99_ms')} ms"
            + ("" if args.no_count_check else f", counted {run['counted']} of {run['accepted']} accepted")
        )
        (Path(args.reports) / f"{path}.json").write_text(json.dumps(run, indent=2))
        runs.append(run)
    summary = {"users": args.users, "spawn_rate": args.spawn_rate, "run_time": args.run_time, "requests": args.requests, "endpoints": urls, "runs": runs, "problems": problems}
    (Path(args.reports) / "loadtest.json").write_text(json.dumps(summary, indent=2))
    say(f"reports in {args.reports}")
    if problems:
        for problem in problems:
            say(f"FAILED: {problem}")
        sys.exit(1)


if __name__ == "__main__":
    main()
