"""Locust users for the votes platform, the seeds' load tool pointed at both producers.

Users (pick them by class name on the command line; with none named, Locust runs all the vote
users, split evenly, which is the mixed scenario of seed 004: traffic spread over both endpoints):

- ``RestVoter``: ``POST /votes`` with the seeds' JSON records to the wasm host (FastHttpUser).
- ``NativeRestVoter``: the same requests to the host's native baseline (``votes-host --native``).
- ``GrpcVoter``: ``votes.v1.VoteService/Cast`` to the gRPC producer, through grpcio with an
  interceptor that reports every call to Locust's request events.

The workloads' users run only when named:

- ``WeatherUser``: ``POST /tweets`` with seed 003's weather reports (``VOTES_WEATHER_DATA``,
  ``data/weather.json`` by default).
- ``BallotUser``: ``POST /ballots`` with seed 004's election ballots (``VOTES_BALLOTS_DATA``,
  ``data/ballots.json`` by default).

The vote users take records from the same data: ``VOTES_DATA`` (a JSON array of
``{"name","album","year","rank"}``, the seeds' traffic format), ``data/bands.json`` by default.
Where each producer is: ``VOTES_REST_URL`` (default ``http://127.0.0.1:8080``),
``VOTES_NATIVE_URL`` (``http://127.0.0.1:8082``), ``VOTES_GRPC_ADDR`` (``127.0.0.1:50051``),
``VOTES_WORKLOAD_URL`` (the host serving the workloads' routes, ``VOTES_REST_URL`` by default);
``scripts/loadtest.py`` reads them from ``votectl status``. A 202 (REST) or OK (gRPC) is a
success; anything else is a failure with the producer's reason. ``VOTES_LOCUST_REQUESTS``, when
set above 0, ends the run after that many requests (as the seeds ran a fixed number).

The gRPC stubs are generated from ``proto/votes.proto`` with grpcio-tools when this file is
loaded, into ``VOTES_LOCUST_STUBS`` (default ``locust/.generated``, ignored by git); nothing
generated is checked in.
"""

import itertools
import json
import os
import random
import sys
import threading
import time
from pathlib import Path

import gevent
import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import FastHttpUser, User, between, constant, events, task
from locust.exception import StopUser

# grpcio blocks its caller; under Locust's gevent every user would wait for every other user's
# call unless grpcio cooperates with gevent.
grpc_gevent.init_gevent()

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
STUBS_DIR = Path(os.environ.get("VOTES_LOCUST_STUBS", ROOT / "locust" / ".generated"))
DATA = Path(os.environ.get("VOTES_DATA", ROOT / "data" / "bands.json"))
REST_URL = os.environ.get("VOTES_REST_URL", "http://127.0.0.1:8080")
NATIVE_URL = os.environ.get("VOTES_NATIVE_URL", "http://127.0.0.1:8082")
GRPC_ADDR = os.environ.get("VOTES_GRPC_ADDR", "127.0.0.1:50051")
WORKLOAD_URL = os.environ.get("VOTES_WORKLOAD_URL") or REST_URL
WEATHER_DATA = Path(os.environ.get("VOTES_WEATHER_DATA", ROOT / "data" / "weather.json"))
BALLOTS_DATA = Path(os.environ.get("VOTES_BALLOTS_DATA", ROOT / "data" / "ballots.json"))
# Seconds each user waits between votes (0: as fast as the producer answers, closed loop).
WAIT = float(os.environ.get("VOTES_LOCUST_WAIT", "0"))
# Requests the whole run may send (0: no limit, the run time ends it).
REQUESTS = int(os.environ.get("VOTES_LOCUST_REQUESTS") or "0")


def generate_stubs():
    """Generates votes_pb2 and votes_pb2_grpc from proto/votes.proto (once per content) and
    makes them importable."""
    from grpc_tools import protoc
    import importlib.resources

    STUBS_DIR.mkdir(parents=True, exist_ok=True)
    proto = PROTO_DIR / "votes.proto"
    stamp = STUBS_DIR / "votes.proto.stamp"
    source = proto.read_bytes()
    if not stamp.exists() or stamp.read_bytes() != source or not (STUBS_DIR / "votes_pb2_grpc.py").exists():
        well_known = str(importlib.resources.files("grpc_tools") / "_proto")
        code = protoc.main([
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={STUBS_DIR}",
            f"--grpc_python_out={STUBS_DIR}",
            str(proto),
        ])
        if code != 0:
            raise RuntimeError(f"grpc_tools.protoc failed on {proto} (exit {code})")
        stamp.write_bytes(source)
    if str(STUBS_DIR) not in sys.path:
        sys.path.insert(0, str(STUBS_DIR))


generate_stubs()
import votes_pb2  # noqa: E402  (generated above)
import votes_pb2_grpc  # noqa: E402


class Records:
    """The records of a JSON array file, handed out in a cycle from a random start (shared by
    all users of this process)."""

    def __init__(self, path, what):
        records = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(records, list) or not records:
            raise ValueError(f"{path} must hold a non-empty JSON array of {what}")
        self.records = records
        self._next = itertools.count(random.randrange(len(records)))
        self._lock = threading.Lock()

    def next(self):
        with self._lock:
            return self.records[next(self._next) % len(self.records)]


VOTES = Records(DATA, "votes")
_sent = itertools.count()


def next_record():
    """The next vote, cycling through the data."""
    return VOTES.next()


def take_request(user):
    """Takes one request from the run's budget (``VOTES_LOCUST_REQUESTS``); once it is spent the
    user stops, and the first to find it spent has the runner quit (the requests in flight
    finish within Locust's stop timeout)."""
    if REQUESTS <= 0:
        return
    sent = next(_sent)
    if sent < REQUESTS:
        return
    if sent == REQUESTS:
        gevent.spawn(user.environment.runner.quit)
    raise StopUser()


def wait_time_of():
    return constant(0) if WAIT <= 0 else between(WAIT / 2, WAIT * 1.5)


class _RestVoter(FastHttpUser):
    abstract = True
    wait_time = wait_time_of()
    # Requests leave on one keep-alive connection per user, as a browser or service would.
    concurrency = 1

    @task
    def cast(self):
        take_request(self)
        post_json(self.client, "/votes", next_record())


def post_json(client, path, record):
    """``POST path`` with one JSON record: a 202 is a success, anything else a failure with the
    producer's reason."""
    with client.post(path, json=record, name=f"POST {path}", catch_response=True) as response:
        if response.status_code == 202:
            response.success()
        else:
            response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")


class RestVoter(_RestVoter):
    """POST /votes to the wasm REST producer (the component in votes-host)."""

    host = REST_URL


class NativeRestVoter(_RestVoter):
    """POST /votes to the host's native baseline (votes-host --native)."""

    host = NATIVE_URL


class _WorkloadUser(FastHttpUser):
    """Posts one record of its workload's sample data at a time to the host serving the
    workloads' routes."""

    abstract = True
    host = WORKLOAD_URL
    wait_time = wait_time_of()
    concurrency = 1
    path = ""
    records = None

    @task
    def post(self):
        take_request(self)
        post_json(self.client, self.path, self.records.next())


class WeatherUser(_WorkloadUser):
    """POST /tweets: seed 003's weather reports to the weather-rest component."""

    path = "/tweets"
    records = Records(WEATHER_DATA, "weather reports")


class BallotUser(_WorkloadUser):
    """POST /ballots: seed 004's election ballots to the ballot-rest component."""

    path = "/ballots"
    records = Records(BALLOTS_DATA, "ballots")


# Users that run only when named on the command line.
WORKLOAD_USERS = (WeatherUser, BallotUser)


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Reports every unary call to Locust's request events: type ``grpc``, the method's full
    name, the time to the reply, the reply's size, and the status as the exception."""

    def __init__(self, environment):
        self.environment = environment

    def intercept_unary_unary(self, continuation, client_call_details, request):
        started = time.perf_counter()
        exception, length = None, 0
        call = continuation(client_call_details, request)
        try:
            reply = call.result()
            length = reply.ByteSize()
        except grpc.RpcError as error:
            exception = error
        self.environment.events.request.fire(
            request_type="grpc",
            name=client_call_details.method,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length,
            exception=exception,
            context={},
        )
        return call


class GrpcVoter(User):
    """votes.v1.VoteService/Cast to the native gRPC producer, one channel (one HTTP/2
    connection) per user."""

    host = GRPC_ADDR
    wait_time = wait_time_of()

    def __init__(self, environment):
        super().__init__(environment)
        target = self.host.removeprefix("http://")
        self.channel = grpc.intercept_channel(grpc.insecure_channel(target), LocustInterceptor(environment))
        self.stub = votes_pb2_grpc.VoteServiceStub(self.channel)

    def on_stop(self):
        self.channel.close()

    @task
    def cast(self):
        take_request(self)
        record = next_record()
        vote = votes_pb2.Vote(name=str(record["name"]), album=str(record["album"]), year=str(record["year"]), rank=str(record["rank"]))
        try:
            self.stub.Cast(vote, timeout=10)
        except grpc.RpcError:
            pass  # already reported as a failure by the interceptor


def _figures(entry):
    """One stats entry's final figures (latency in ms)."""
    percentile = lambda q: entry.get_response_time_percentile(q) if entry.num_requests else None  # noqa: E731
    return {
        "name": entry.name,
        "method": entry.method,
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "requests_per_second": entry.total_rps,
        "mean_ms": entry.avg_response_time,
        "p50_ms": percentile(0.50),
        "p90_ms": percentile(0.90),
        "p99_ms": percentile(0.99),
        "p99_9_ms": percentile(0.999),
        "max_ms": entry.max_response_time,
    }


@events.quitting.add_listener
def _write_summary(environment, **_kwargs):
    """With VOTES_LOCUST_SUMMARY set, writes the final figures there as JSON when Locust quits:
    its CSV files are rewritten once a second and may miss the last second of a short run."""
    target = os.environ.get("VOTES_LOCUST_SUMMARY")
    if not target:
        return
    stats = environment.stats
    summary = {
        "total": _figures(stats.total),
        "entries": [_figures(entry) for entry in stats.entries.values()],
        "errors": {f"{error.method} {error.name}: {error.error}": error.occurrences for error in stats.errors.values()},
    }
    Path(target).write_text(json.dumps(summary, indent=2))


@events.init.add_listener
def _vote_users_by_default(environment, **_kwargs):
    """With no user class named, Locust would run every class: keep the vote users only (the
    mixed scenario), so the workloads' users run when named."""
    options = environment.parsed_options
    if options is not None and not getattr(options, "user_classes", None):
        environment.user_classes = [user for user in environment.user_classes if user not in WORKLOAD_USERS]


@events.init_command_line_parser.add_listener
def _describe(parser):
    parser.epilog = (
        "Users: RestVoter, NativeRestVoter, GrpcVoter (none named: these three, the mixed scenario); "
        "WeatherUser, BallotUser (run when named)."
    )
