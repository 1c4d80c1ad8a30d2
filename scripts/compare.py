"""`make compare`: measures the three producer paths of a running stack (`make up`) and writes
`docs/comparison.md` with its plots in `docs/comparison/`.

It runs, one after the other on the same stack:
1. `votectl bench --json`: rotating rounds at 64 in flight on wasm REST (a fresh instance per
   request, the default), wasm REST with instance reuse (a second host), native REST and gRPC, a
   concurrency sweep (1, 8, 64, 256), open loop at half of each path's measured throughput
   (latency from the scheduled send time), CPU per vote of every process, peak RSS;
2. `scripts/loadtest.py`: Locust on each path and the mixed scenario, same users and duration;
3. the wasm host's resident memory with 1,000 open keep-alive connections, and where it is
   (`/proc/<pid>/smaps`: the instance pool, the fiber stacks, the heap, code).
Then it writes the report: the machine and versions, the figures, the seeds' two claims answered
with the numbers, and when to choose which path. The raw results stay in `reports/compare/`.
"""

import argparse
import json
import os
import platform
import re
import resource
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = {
    "rest": "wasm REST",
    "rest-wasi-http": "wasm REST through wasi:http",
    "rest-reuse": "wasm REST, instance reuse",
    "native": "native REST",
    "grpc": "gRPC",
}
# The paths in the order the report lists them; `rest-wasi-http` and `rest-reuse` are wasm hosts
# the bench starts beside the stack's.
ORDER = ("rest", "rest-wasi-http", "rest-reuse", "native", "grpc")


def say(message):
    print(f"[compare] {message}", file=sys.stderr, flush=True)


def run_json(command, **kwargs):
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed (exit {done.returncode}):\n{done.stderr.split(chr(10) + 'stack backtrace')[0][:4000]}")
    return json.loads(done.stdout)


def output_of(command):
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def lock_version(package):
    text = (ROOT / "Cargo.lock").read_text()
    found = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(package), text)
    return found.group(1) if found else "?"


def machine(votectl):
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "?")
    mem_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    os_name = next((line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines() if line.startswith("PRETTY_NAME=")), "?")
    tansu = Path.home() / ".cargo" / "bin" / "tansu"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "os": os_name,
        "kernel": platform.release(),
        "rustc": output_of(["rustc", "--version"]),
        "wasmtime": lock_version("wasmtime"),
        "tonic": lock_version("tonic"),
        "hyper": lock_version("hyper"),
        "rdkafka": lock_version("rdkafka"),
        "tansu": output_of([str(tansu) if tansu.exists() else "tansu", "--version"]) or "?",
        "redis": output_of(["redis-server", "--version"]).split(" sha=")[0],
        "locust": " ".join(output_of([str(ROOT / ".venv" / "bin" / "locust"), "--version"]).split()[:2]),
        "python": platform.python_version(),
        "votectl": output_of([votectl, "--version"]),
        "git": output_of(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "stack_components": stack_components(votectl),
        "load_before": os.getloadavg(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def stack_components(votectl):
    """Each component of the stack's wasm host with its places in flight (`votectl component
    app`): the host divides its bound among the manifest's components."""
    try:
        app = json.loads(output_of([votectl, "component", "app"]) or "{}")
        return {c["id"]: c["max_in_flight"] for c in app.get("components", [])}
    except (ValueError, KeyError, TypeError):
        return {}


def host_rss_with_connections(url, pid, connections):
    """Opens `connections` keep-alive connections to the wasm host, each having sent one vote,
    and reads the host's resident memory while they are all open (MiB)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, connections + 256)), hard))
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"name": "Alux Nahual", "album": "Conquista", "year": "1986", "rank": "1"}).encode()
    request = b"POST /votes HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (host.encode(), len(body), body)
    rss = lambda: int(next(line.split()[1] for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS"))) / 1024  # noqa: E731
    idle = rss()
    sockets, accepted = [], 0
    try:
        for _ in range(connections):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(request)
            sockets.append(sock)
        for sock in sockets:
            if b" 202 " in sock.recv(4096).split(b"\r\n", 1)[0] + b" ":
                accepted += 1
        time.sleep(0.5)
        held = rss()
        breakdown = smaps_breakdown(pid)
        pss = int(next(line.split()[1] for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines() if line.startswith("Pss:"))) / 1024
    finally:
        for sock in sockets:
            sock.close()
    return {"connections": connections, "rss_idle_mib": idle, "rss_mib": held, "accepted": accepted, "breakdown_mib": breakdown, "pss_mib": pss}


def plots(bench, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}

    def save(fig, ax, name, title, xlabel, ylabel):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        files[name] = out_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(files[name], dpi=110)
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for path in ORDER:
        steps = sorted((s for s in bench["sweep"] if s["path"] == path), key=lambda s: s["concurrency"])
        if steps:
            ax.plot([s["concurrency"] for s in steps], [s["votes_per_second"] for s in steps], marker="o", label=NAMES[path])
    ax.set_xscale("log", base=2)
    save(fig, ax, "throughput", "Throughput against concurrency", "requests in flight (closed loop)", "votes/s accepted (broker-acknowledged)")

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in bench["open_loop"]:
        points = [(ms, q) for ms, q in run["distribution"] if q < 1.0]
        if points:
            ax.plot([1 / (1 - q) for _, q in points], [ms for ms, _ in points], label=f"{NAMES[run['path']]} at {run['achieved_rate']:.0f}/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [1, 2, 10, 100, 1000, 10000]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0", "50%", "90%", "99%", "99.9%", "99.99%"])
    save(fig, ax, "latency", "Latency at half of each path's capacity (open loop)", "percentile", "latency from scheduled send, ms")

    fig, ax = plt.subplots(figsize=(7, 4.2))
    processes = sorted({name for p in bench["paths"] for name in p["cpu_us_per_vote"]})
    bottoms = [0.0] * len(bench["paths"])
    labels = [NAMES[p["path"]] for p in bench["paths"]]
    for process in processes:
        values = [max(p["cpu_us_per_vote"].get(process, 0.0), 0.0) for p in bench["paths"]]
        if sum(values) <= 0:
            continue
        ax.bar(labels, values, bottom=bottoms, label=process)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    save(fig, ax, "cpu", "CPU per vote by process (whole stack)", "path", "CPU µs per vote")
    return files


def pct(x):
    return f"{100 * x:.0f}%"


def goals(rn, rg, open_loop, rss, sweep, sweep_count):
    """The issue's goals as table rows: what was measured and whether it meets the goal."""
    rows = []

    def goal(name, met, shown):
        verdict = {True: "met", False: "**missed**", None: "undecided"}[met]
        rows.append(f"| {name} | {shown} | {verdict} |")

    steps = sorted({c for _, c in sweep})
    if len(steps) >= 2 and 64 in steps:
        top = steps[-1]
        for n in ("rest", "native"):
            high, mid = sweep.get((n, top)), sweep.get((n, 64))
            if high and mid:
                refused = high["failed"] / sweep_count
                goal(f"{NAMES[n]} at {top} in flight: at most 1% refused, at least the votes/s of 64", refused <= 0.01 and high["votes_per_second"] >= mid["votes_per_second"],
                     f"{pct(refused)} refused, {high['votes_per_second']:,.0f} votes/s against {mid['votes_per_second']:,.0f}")
    if rn:
        goal("wasm REST at 90% or more of native REST at 64 in flight (default isolation, median of the rounds)", rn >= 0.9, pct(rn))
    if rg:
        goal("wasm REST at 95% or more of gRPC at 64 in flight", rg >= 0.95, pct(rg))
    if open_loop:
        worst = max(o["latency"]["p99_ms"] for o in open_loop.values())
        goal("p99 at most 10 ms on each path at half capacity (open loop)", worst <= 10,
             ", ".join(f"{NAMES[n]} {o['latency']['p99_ms']:.1f} ms" for n, o in open_loop.items()))
        visible = {n: o["visible_p99_ms"] for n, o in open_loop.items() if o.get("visible_p99_ms") is not None}
        if visible:
            # The histogram's buckets double from 1 ms: an estimate in (64, 128] ms cannot say
            # which side of 100 ms the percentile is on.
            worst_visible = max(visible.values())
            met = True if worst_visible <= 64 else (False if worst_visible > 128 else None)
            goal("vote-to-visible p99 at most 100 ms at that rate", met,
                 ", ".join(f"{NAMES[n]} {ms:.0f} ms" for n, ms in visible.items()) + ("" if met is not None else " (bucket 64-128 ms)"))
    if rss:
        goal(f"host RSS at most 100 MB with {rss['connections']:,} open connections", rss["rss_mib"] * 1.048576 <= 100,
             f"{rss['rss_mib']:.0f} MiB" + (f" (PSS {rss['pss_mib']:.0f} MiB)" if rss.get("pss_mib") else ""))
    return rows


def top_step(sweep, steps):
    """The sweep's highest step in words: what each path accepted and refused there."""
    top = max(steps)
    at_top = {n: sweep[(n, top)] for n in ORDER if (n, top) in sweep}
    if not at_top:
        return ""
    leader = max(at_top, key=lambda n: at_top[n]["votes_per_second"])
    return (
        f" At {top} in flight, above every producer's bound, each queues what is over it rather than refusing it: "
        + ", ".join(f"{NAMES[n]} {s['votes_per_second']:,.0f} votes/s ({s['failed']:,} refused)" for n, s in at_top.items())
        + f"; {NAMES[leader]} accepts the most."
    )


def smaps_breakdown(pid):
    """The process's resident memory by kind of mapping (MiB), from /proc/<pid>/smaps: the
    instance slots' linear memories (mapped from wasmtime's memory images), the allocator's arena
    (mimalloc reserves 1 GiB and commits what the heap uses: connections, stores, tasks, compiled
    component metadata), other anonymous memory (thread and fiber stacks, tables, small heaps) and
    the program's code and libraries."""
    kinds = {}
    name = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and ":" not in fields[0] and len(fields) >= 5:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            path = " ".join(fields[5:])
            if "wasm-memory-image" in path:
                name = "instance slots (linear memories)"
            elif path and not path.startswith("["):
                name = "code and libraries"
            elif end - start >= 512 * 2**20:
                name = "allocator arena (heap)"
            else:
                name = "other anonymous (stacks, tables, small heaps)"
        elif fields[0] == "Rss:" and name:
            kinds[name] = kinds.get(name, 0.0) + int(fields[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}


def share_note(components, swept):
    """Why wasm REST may trail its variants far above 64 in flight: the stack's host gives
    vote-rest only its share of the bound, the hosts the bench starts serve it alone."""
    share = components.get("vote-rest")
    side = [NAMES[n] for n in swept if n in ("rest-wasi-http", "rest-reuse")]
    if not share or len(components) < 2 or not side:
        return ""
    return (f" The stack's host serves the manifest's {len(components)} components and gives vote-rest {share} places"
            f" in flight (each component has its share of the host's bound, docs/platform.md); the hosts the bench starts"
            f" for {' and '.join(side)} serve vote-rest alone with the whole bound, so past {share} in flight wasm REST"
            " queues where they do not yet.")


def report(machine_info, bench, locust, rss, files, args):
    paths = {p["path"]: p for p in bench["paths"]}
    ratios = bench["ratios"]
    sweep = {(s["path"], s["concurrency"]): s for s in bench["sweep"]}
    open_loop = {o["path"]: o for o in bench["open_loop"]}
    runs = {r["path"]: r for r in locust["runs"]}
    rel = lambda f: os.path.relpath(f, ROOT / "docs")  # noqa: E731
    m = machine_info
    lines = [
        "# gRPC or wasm: the three producer paths compared",
        "",
        f"Written by `make compare` on {m['date']} (commit `{m['git']}`), one run, on a running",
        "`make up` stack (release build). Everything shares one machine: the load generators, both",
        "producers, Tansu, the consumer, Redis and NX-27017.",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| CPU | {m['cpu']}, {m['cores']} cores |",
        f"| memory | {m['memory_gib']} GiB |",
        f"| OS | {m['os']}, Linux {m['kernel']} |",
        f"| load average before the run | {', '.join(f'{x:.2f}' for x in m['load_before'])} |",
        f"| toolchain | {m['rustc']} |",
        f"| versions | wasmtime {m['wasmtime']}, hyper {m['hyper']}, tonic {m['tonic']}, rdkafka {m['rdkafka']}, {m['tansu']}, {m['redis']}, {m['locust']}, Python {m['python']} |",
        "",
    ]
    if args.note:
        lines += [f"**Note on this run:** {args.note}", ""]
    lines += [
        "## The three paths",
        "",
        "- **wasm REST**: `POST /votes` (HTTP/1.1, JSON) to `votes-host`, which runs the `vote-rest`",
        "  component in a fresh wasmtime instance per request, entered in one call through its",
        "  `votes:platform/handler` export; the component publishes through the host's",
        "  `votes:platform/publisher` import.",
        "- **wasm REST through wasi:http**: a second `votes-host`, started by the bench for the run,",
        "  serving the same component the same way but through its `wasi:http/incoming-handler`",
        "  export (`--wasi-http-only`), as the host did before the one-call handler.",
        "- **wasm REST, instance reuse**: a second `votes-host`, started by the bench for the run, serving",
        "  the same component with `--instance-reuse 128`: an instance that answered without trapping",
        "  serves up to 128 requests in turn (isolation between requests is weaker; off by default).",
        "- **native REST**: the same host binary with `--native` (same hyper server, limits, Kafka",
        "  publisher and `vote_core::rest` rules), answering in native code: wasm REST against native",
        "  REST is the price of the sandbox.",
        "- **gRPC**: `votes.v1.VoteService/Cast` (HTTP/2, protobuf) to the tonic producer: native REST",
        "  against gRPC is the price of the transport and the serialisation.",
        "",
        "Every path answers only after the broker acknowledged the vote (idempotent producer,",
        "`acks=all`), so every figure includes a Kafka round trip.",
        "",
        f"## Closed loop at {bench['concurrency']} in flight (`votectl bench`)",
        "",
        "```sh",
        f"votectl bench --paths {','.join(p['path'] for p in bench['paths'])} --count {bench['count']} --rounds {bench['rounds']} --concurrency {bench['concurrency']} \\",
        f"  --sweep {','.join(map(str, args.sweep))} --sweep-count {args.sweep_count} --open-loop-fraction 0.5 --open-loop-secs {args.open_loop_secs} --json",
        "```",
        "",
        "| path | median votes/s | p50 ms | p99 ms | CPU µs per vote (whole stack) | producer's own CPU µs per vote |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    own = {"rest": "wasm-host", "rest-wasi-http": "wasi-http-host", "rest-reuse": "reuse-host", "native": "native-host", "grpc": "grpc-producer"}
    swept = [n for n in ORDER if any(p == n for p, _ in sweep)]
    for name in ORDER:
        if name not in paths:
            continue
        p = paths[name]
        mid = sorted(p["runs"], key=lambda r: r["votes_per_second"])[len(p["runs"]) // 2]
        total_cpu = sum(v for v in p["cpu_us_per_vote"].values() if v > 0)
        lines.append(
            f"| {NAMES[name]} | {p['votes_per_second']:,.0f} | {mid['latency_p50_ms']:.1f} | {mid['latency_p99_ms']:.1f} | {total_cpu:,.0f} | {p['cpu_us_per_vote'].get(own[name], 0):,.0f} |"
        )
    lines += [
        "",
        f"Ratios of the median rounds: wasm REST / native REST **{pct(ratios.get('rest/native', 0))}**, "
        f"wasm REST / gRPC **{pct(ratios.get('rest/grpc', 0))}**, native REST / gRPC **{pct(ratios.get('native/grpc', 0))}**"
        + (f"; through wasi:http, wasm REST / native REST **{pct(ratios['rest-wasi-http/native'])}** and one call / wasi:http **{pct(ratios['rest/rest-wasi-http'])}**" if "rest-wasi-http/native" in ratios else "")
        + (f"; with instance reuse, wasm REST / native REST **{pct(ratios['rest-reuse/native'])}** and reuse / fresh instances **{pct(ratios['rest-reuse/rest'])}**." if "rest-reuse/native" in ratios else "."),
        f"Exactly once: the producers accepted {bench['accepted']:,} votes, the consumer counted {bench['counted']:,}.",
        "",
        f"![throughput against concurrency]({rel(files['throughput'])})",
        "",
        "Accepted votes/s at each number of requests in flight. Over its bound (the host's",
        "`--max-in-flight`, the gRPC producer's `--max-concurrent-calls`) a request waits in a bounded",
        "FIFO queue (1,024 requests, 2 s by default) and is refused with a fast 503 or",
        "`RESOURCE_EXHAUSTED` only when the queue is full or the wait runs out."
        + share_note(m.get("stack_components") or {}, swept),
        "",
        "| in flight | " + " | ".join(NAMES[n] for n in swept) + " |",
        "| ---: | " + " | ".join("---:" for _ in swept) + " |",
    ]
    for c in args.sweep:
        cells = []
        for n in swept:
            s = sweep.get((n, c))
            shed = f", {s['failed']:,} of {args.sweep_count:,} shed: {(s.get('first_failure') or '').split(':')[0]}" if s and s["failed"] else ""
            cells.append(f"{s['votes_per_second']:,.0f} (p99 {s['latency_p99_ms']:.1f} ms{shed})" if s else "-")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Open loop at half of each path's throughput",
        "",
        "Votes leave on a fixed schedule whatever the answers; latency runs from each vote's",
        "scheduled send time, so a stall counts for every vote it delayed (no coordinated omission).",
        "Receipt to broker ack is the producer's `vote_ingest_seconds` over the run: where it is close",
        "to the client's latency, the time goes to waiting for the broker's acknowledgement.",
        "Vote-to-visible is the consumer's `vote_visible_seconds` (received at the producer to counted",
        "in Redis) over the same window, estimated from its buckets, which double from 1 ms: a p99",
        "of 127 ms says the 99th percentile lies between 64 and 128 ms, not more precisely.",
        "",
        "| path | rate votes/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | receipt to broker ack p50 / p99 ms | vote-to-visible p50 / p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in ORDER:
        o = open_loop.get(n)
        if not o:
            continue
        lat = o["latency"]
        vis = f"{o['visible_p50_ms']:.0f} / {o['visible_p99_ms']:.0f}" if o.get("visible_p99_ms") is not None else "-"
        ack = f"{o['ingest_p50_ms']:.0f} / {o['ingest_p99_ms']:.0f}" if o.get("ingest_p99_ms") is not None else "-"
        lines.append(f"| {NAMES[n]} | {o['achieved_rate']:,.0f} | {lat['p50_ms']:.2f} | {lat['p90_ms']:.2f} | {lat['p99_ms']:.2f} | {lat['p99_9_ms']:.2f} | {lat['max_ms']:.1f} | {ack} | {vis} |")
    lines += [
        "",
        f"![latency at half capacity]({rel(files['latency'])})",
        "",
        "## CPU per vote by process",
        "",
        "From `/proc/<pid>/stat` of every process of the stack (each part's whole process group),",
        "over each path's closed-loop runs, until the consumer had counted their votes.",
        "",
        "| process | " + " | ".join(NAMES[p["path"]] for p in bench["paths"]) + " |",
        "| --- | " + " | ".join("---:" for _ in bench["paths"]) + " |",
    ]
    processes = sorted({name for p in bench["paths"] for name in p["cpu_us_per_vote"]})
    for process in processes:
        lines.append(f"| {process} | " + " | ".join(f"{max(p['cpu_us_per_vote'].get(process, 0), 0):,.0f}" for p in bench["paths"]) + " |")
    peak = bench.get("peak_rss_mib", {})
    lines += [
        "",
        f"![CPU per vote]({rel(files['cpu'])})",
        "",
        "Peak resident memory since start (`VmHWM`): " + ", ".join(f"{k} {v:.0f} MiB" for k, v in peak.items()) + ".",
    ]
    if rss:
        lines += [
            f"The wasm host with {rss['connections']:,} open keep-alive connections (each having sent one vote at once; "
            f"{rss['accepted']:,} accepted): **{rss['rss_mib']:.0f} MiB** resident "
            f"(before they opened: {rss['rss_idle_mib']:.0f} MiB)."
            + (" Where it is: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in rss["breakdown_mib"].items()) + "." if rss.get("breakdown_mib") else "")
            + (f" RSS counts a page once per mapping: every instance slot ever used maps its component's whole memory image (the guest's data, shared), and the"
               f" code is shared with the other `votes-host` processes; the proportional share (PSS), what the host costs the machine, was"
               f" **{rss['pss_mib']:.0f} MiB**." if rss.get("pss_mib") else ""),
        ]
    lines += [
        "",
        "## Locust (the seeds' tool)",
        "",
        "```sh",
        f"make loadtest LOADTEST_USERS={locust['users']} LOADTEST_SPAWN_RATE={locust['spawn_rate']:g} LOADTEST_RUN_TIME={locust['run_time']}",
        "```",
        "",
        f"{locust['users']} users per path, no wait between votes (each user one connection, one vote at a",
        "time). Locust's figures include its own client's cost on the same two cores: FastHttpUser",
        "(gevent + geventhttpclient) for REST, grpcio under gevent for gRPC. Where the two tools",
        "disagree on the order of the paths, it is the clients that differ: `votectl bench` drives",
        "every path with a Rust client (reqwest, tonic) and measures the producers' capacity.",
        "",
        "| scenario | requests | failures | req/s | p50 ms | p99 ms | votectl bench votes/s at 64 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in (*ORDER, "mixed"):
        r = runs.get(name)
        if not r:
            continue
        label = NAMES.get(name, "mixed (wasm REST + gRPC users)")
        bench_cell = f"{paths[name]['votes_per_second']:,.0f}" if name in paths else "-"
        lines.append(f"| {label} | {r['requests']:,} | {r['failures']} | {r['requests_per_second']:,.0f} | {r['p50_ms'] or 0:.0f} | {r['p99_ms'] or 0:.0f} | {bench_cell} |")

    rn, rg, ng = ratios.get("rest/native", 0), ratios.get("rest/grpc", 0), ratios.get("native/grpc", 0)
    cpu_total = {n: sum(v for v in p["cpu_us_per_vote"].values() if v > 0) for n, p in paths.items()}
    cpu_own = {n: p["cpu_us_per_vote"].get(own[n], 0) for n, p in paths.items()}
    at_1 = {n: sweep.get((n, 1)) for n in ORDER}

    def compare(ratio, a, b, what):
        """`a` against `b` in words, from the throughput ratio a/b."""
        if not ratio:
            return f"{a} against {b}: not measured"
        if ratio >= 1.05:
            return f"{a} carries {ratio:.2f}x {b}'s votes/s, so {what} favours {a}"
        if ratio <= 0.95:
            return f"{a} carries {pct(ratio)} of {b}'s votes/s: {what} costs {a} {pct(1 - ratio)} of its throughput"
        return f"{a} and {b} are within 5% ({pct(ratio)}): {what} makes no measurable difference"

    multiplex = ""
    if at_1["grpc"] and at_1["native"]:
        g1, n1 = at_1["grpc"]["votes_per_second"], at_1["native"]["votes_per_second"]
        multiplex = (
            f" At 1 in flight, where multiplexing cannot help, gRPC does {g1:,.0f} votes/s and native REST {n1:,.0f}"
            f" ({pct(n1 / g1)} of gRPC); at {bench['concurrency']} in flight native REST does {pct(ng)} of gRPC."
        )
    verdict_transport = (
        "The data do not support the claim: with one connection per request in flight, HTTP/1.1 + JSON keeps up with HTTP/2 + protobuf."
        if ng >= 0.95
        else f"gRPC is ahead, by {pct(1 - ng)} of native REST's throughput; the CPU table says where: the producers' own CPU per vote is "
        f"{cpu_own.get('native', 0):,.0f} µs (native REST) against {cpu_own.get('grpc', 0):,.0f} µs (gRPC)."
    )
    cheapest = min(cpu_total, key=cpu_total.get) if cpu_total else None
    lines += [
        "",
        "## The seeds' claims, with numbers",
        "",
        "**\"gRPC was faster because of HTTP/2 multiplexing.\"** "
        + f"{compare(ng, 'native REST', 'gRPC', 'the transport (HTTP/1.1 + JSON against HTTP/2 + protobuf)')}; "
        + f"{compare(rn, 'wasm REST', 'native REST', 'the sandbox')}; wasm REST against gRPC: {pct(rg)}."
        + multiplex
        + " Our REST clients keep one keep-alive connection per request in flight, so no request waits behind"
        " another on a connection: multiplexing saves connections, not waiting. "
        + verdict_transport
        + top_step(sweep, args.sweep),
        "",
        "**\"gRPC has lower overhead.\"** Per vote, over the whole stack: "
        + ", ".join(f"{NAMES[n]} {cpu_total[n]:,.0f} µs" for n in ORDER if n in cpu_total)
        + " of CPU; in the producer alone "
        + ", ".join(f"{NAMES[n]} {cpu_own[n]:,.0f} µs" for n in ORDER if n in cpu_own)
        + ". "
        + (f"The lowest overhead is {NAMES[cheapest]}'s. " if cheapest else "")
        + "The broker, the consumer and the stores do the same work per vote whichever producer it came through"
        " (their rows differ with the rate they ran at, not with the path).",
        "",
        "## The issue's goals, from this run",
        "",
        "| goal | measured | |",
        "| --- | --- | --- |",
        *goals(rn, rg, open_loop, rss, sweep, args.sweep_count),
        "",
        "## When to choose which path",
        "",
        "- **gRPC** for service-to-service traffic you control both ends of: a typed contract,",
        "  streaming (`CastStream`) for bulk loads, deadlines and status codes carried by the protocol,",
        f"  one connection for many calls; {pct(1 / rg) if rg else '?'} of wasm REST's throughput here.",
        "- **wasm REST** for clients that speak plain HTTP and JSON (browsers, the seeds' traffic files,",
        "  curl), and wherever the vote rules must change without a rebuild or restart: a component is",
        "  hot-swapped under load, sandboxed (memory cap, deadline, no ambient authority), and the same",
        f"  artefact runs on Spin. The sandbox's price here: {pct(1 - rn) if rn < 1 else 'nothing measurable'} of native REST's throughput,",
        f"  {max(cpu_own.get('rest', 0) - cpu_own.get('native', 0), 0):,.0f} µs of CPU per vote.",
        "- **native REST** is the baseline that prices the sandbox; choose it in production only if",
        "  that price matters more than hot-swapping and isolation.",
        "",
        "Raw results: `reports/compare/bench.json`, `reports/compare/loadtest.json` and Locust's CSV and",
        "HTML under `reports/compare/` (not committed).",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--votectl", default=os.environ.get("VOTECTL", str(ROOT / "target" / "release" / "votectl")))
    parser.add_argument("--count", type=int, default=20000, help="votes per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sweep", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 64, 256])
    parser.add_argument("--sweep-count", type=int, default=5000)
    parser.add_argument("--open-loop-secs", type=int, default=15)
    parser.add_argument("--locust-users", type=int, default=64)
    parser.add_argument("--locust-run-time", default="30s")
    parser.add_argument("--connections", type=int, default=1000, help="open connections for the host's memory figure")
    parser.add_argument("--out", default=str(ROOT / "docs" / "comparison.md"))
    parser.add_argument("--note", default=os.environ.get("VOTES_COMPARE_NOTE", ""), help="a sentence about the run (e.g. a busy machine)")
    parser.add_argument("--render-only", action="store_true", help="rewrite the report from the last run's results in reports/compare")
    args = parser.parse_args()

    raw = ROOT / "reports" / "compare"
    raw.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        stored = json.loads((raw / "machine.json").read_text())
        bench, locust = json.loads((raw / "bench.json").read_text()), json.loads((raw / "loadtest.json").read_text())
        files = plots(bench, Path(args.out).with_suffix(""))
        Path(args.out).write_text(report(stored["machine"], bench, locust, stored["host_rss"], files, args))
        say(f"rewrote {args.out} from the results stored in {raw}")
        return
    info = machine(args.votectl)
    done = subprocess.run([args.votectl, "status", "--json"], capture_output=True, text=True)
    status = {p["part"]: p for p in json.loads(done.stdout or "[]")}
    for part in ("wasm-host", "native-host", "grpc-producer", "consumer"):
        if not status.get(part, {}).get("healthy"):
            sys.exit(f"{part} is not running: start the stack with `make up` first")

    say("votectl bench (rounds, sweep, open loop): several minutes")
    bench = run_json([
        args.votectl, "bench", "--json", "--paths", ",".join(ORDER), "--count", str(args.count), "--rounds", str(args.rounds), "--concurrency", "64",
        "--sweep", ",".join(map(str, args.sweep)), "--sweep-count", str(args.sweep_count),
        "--open-loop-fraction", "0.5", "--open-loop-secs", str(args.open_loop_secs),
    ])
    (raw / "bench.json").write_text(json.dumps(bench, indent=2))

    say("Locust on each path")
    loadtest = subprocess.run([
        str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "scripts" / "loadtest.py"), "--votectl", args.votectl,
        "--users", str(args.locust_users), "--spawn-rate", "16", "--run-time", args.locust_run_time, "--reports", str(raw),
    ])
    if loadtest.returncode != 0:
        say("the load test reported problems (see above); its figures are reported as measured")
    locust = json.loads((raw / "loadtest.json").read_text())

    say(f"the wasm host's memory with {args.connections} open connections")
    host = status["wasm-host"]
    rss = host_rss_with_connections(host["address"].removesuffix("/votes"), host["pid"], args.connections) if host.get("pid") else None

    info["load_after"] = os.getloadavg()
    files = plots(bench, Path(args.out).with_suffix(""))
    Path(args.out).write_text(report(info, bench, locust, rss, files, args))
    (raw / "machine.json").write_text(json.dumps({"machine": info, "host_rss": rss, "note": args.note}, indent=2))
    say(f"wrote {args.out} and {Path(args.out).with_suffix('')}/*.png")


if __name__ == "__main__":
    main()
