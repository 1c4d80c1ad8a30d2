"""A cluster that really starts and stops: what an admission webhook, the kubelet and the operators
would refuse or get wrong, checked offline in every whole-system overlay. Ingress paths pass
ingress-nginx's strict path validation; Grafana's datasource interval is Prometheus' scrape
interval in every flavour; no pod gets service-link variables; liveness never depends on a store;
autoscaled Deployments leave their count to the autoscaler; serving pods pause before they stop
and outlast their drain; the Kafka version is pinned; and the namespace and the Strimzi operator
live outside the overlays, installed and removed in the order docs/deploy.md gives."""

import re

import jsonschema
import pytest
import yaml

import deploylib
from deploylib import by_kind, containers, pod_templates

# ingress-nginx >= 1.12 (strict-validate-path-type, on by default) admits a `Prefix` or `Exact`
# path only if it is made of these characters.
STRICT_PATH = re.compile(r"^/[A-Za-z0-9/_-]*$")


def test_ingress_paths_pass_strict_validation(docs, overlay):
    checked = 0
    for name, ingress in by_kind(docs, "Ingress").items():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                checked += 1
                where = f"{overlay}: Ingress {name} path {path['path']!r} ({path['pathType']})"
                # A dot is refused in Prefix/Exact paths and is a wildcard in regex ones.
                assert "." not in path["path"], f"{where}: a dotted path (a gRPC service name?): route gRPC on a host of its own with `/`"
                if path["pathType"] in ("Prefix", "Exact"):
                    assert STRICT_PATH.match(path["path"]), f"{where}: ingress-nginx refuses it (letters, digits, /, _ and - only)"
    assert checked or by_kind(docs, "HTTPRoute"), f"{overlay}: no entry point at all"


def test_the_path_check_catches_the_dotted_grpc_prefix():
    assert not STRICT_PATH.match("/votes.v1.VoteService")
    assert STRICT_PATH.match("/") and STRICT_PATH.match("/rust/insert")


def test_the_gateway_overlay_routes_through_the_gateway_api():
    docs = deploylib.render(deploylib.REPO / "k8s" / "overlays" / "gateway")
    assert not by_kind(docs, "Ingress"), "the Gateway API overlay still carries Ingress objects"
    assert {"Gateway", "HTTPRoute", "GRPCRoute"} <= {d["kind"] for d in docs}
    (grpc,) = by_kind(docs, "GRPCRoute").values()
    services = {m["method"]["service"] for rule in grpc["spec"]["rules"] for m in rule["matches"]}
    assert "votes.v1.VoteService" in services, services


def test_the_gateway_crd_check_catches_a_mistake(crds):
    schema = crds[("gateway.networking.k8s.io", "v1", "HTTPRoute")]
    good = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"},
            "spec": {"parentRefs": [{"name": "votes"}], "rules": [{"backendRefs": [{"name": "votes-host", "port": 8080}]}]}}
    assert not list(jsonschema.Draft7Validator(schema).iter_errors(good))
    for bad_rule in ({"backendRefs": [{"name": "votes-host", "port": "http"}]}, {"backendRef": [{"name": "votes-host", "port": 8080}]}):
        bad = {**good, "spec": {**good["spec"], "rules": [bad_rule]}}
        assert list(jsonschema.Draft7Validator(schema).iter_errors(bad)), bad_rule


# --- Grafana's interval and Prometheus' scrape interval ------------------------------------------

def seconds(interval: str) -> float:
    """A Prometheus/Grafana duration such as `5s`, `1m` or `500ms`, in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", interval)
    assert parts and "".join(n + u for n, u in parts) == interval, f"not a duration: {interval!r}"
    return sum(float(n) * units[u] for n, u in parts)


def scrape_intervals(config: dict) -> set[float]:
    """Every scrape interval a Prometheus configuration uses: the global one (Prometheus' default
    is 1m) and any a job sets for itself."""
    default = config.get("global", {}).get("scrape_interval", "1m")
    return {seconds(job.get("scrape_interval", default)) for job in config.get("scrape_configs", [])} | {seconds(default)}


def datasource_interval() -> float:
    provisioning = yaml.safe_load((deploylib.GRAFANA / "provisioning" / "datasources" / "votes.yaml").read_text())
    (prometheus,) = [d for d in provisioning["datasources"] if d["type"] == "prometheus"]
    return seconds(prometheus["jsonData"]["timeInterval"])


def test_grafana_interval_is_the_k8s_scrape_interval(docs, overlay):
    (config,) = [c for n, c in by_kind(docs, "ConfigMap").items() if n.startswith("prometheus-config")]
    intervals = scrape_intervals(yaml.safe_load(config["data"]["prometheus.yml"]))
    assert intervals == {datasource_interval()}, (
        f"{overlay}: Prometheus scrapes every {intervals} s, the Grafana datasource says {datasource_interval()} s: "
        "$__rate_interval windows then hold too few samples and panels show No data"
    )


def test_grafana_interval_is_the_compose_scrape_interval(compose):
    config = yaml.safe_load(compose["configs"]["prometheus"]["content"])
    intervals = scrape_intervals(config)
    assert intervals == {datasource_interval()}, f"compose: Prometheus scrapes every {intervals} s, the Grafana datasource says {datasource_interval()} s"


def test_grafana_installs_its_plugin_with_the_current_variable(docs, overlay, compose):
    (grafana,) = by_kind(docs, "Deployment")["grafana"]["spec"]["template"]["spec"]["containers"]
    for where, env in ((overlay, {e["name"]: e.get("value", "") for e in grafana["env"]}), ("compose", deploylib.compose_env(compose["services"]["grafana"]))):
        assert "GF_INSTALL_PLUGINS" not in env, f"{where}: GF_INSTALL_PLUGINS is deprecated; use GF_PLUGINS_PREINSTALL_SYNC"
        assert "redis-datasource" in env.get("GF_PLUGINS_PREINSTALL_SYNC", "").split(","), where


# --- pods ------------------------------------------------------------------------------------------

def test_no_pod_gets_service_links(docs, overlay):
    owners = list(pod_templates(docs))
    assert len(owners) >= 8, owners
    for owner, template in owners:
        assert template["spec"].get("enableServiceLinks") is False, (
            f"{overlay}: {owner['kind']} {owner['metadata']['name']} gets a VOTES_HOST_PORT=tcp://... variable per Service: "
            "set enableServiceLinks: false"
        )


# What each of our binaries answers without asking a store (liveness) and after asking them
# (readiness). The consumer and results check Redis and MongoDB on /readyz (and on /healthz);
# the host's /healthz and the gRPC producer's /healthz answer while the process serves.
LIVENESS = {"votes-host": "/healthz", "grpc-producer": "/healthz", "consumer": "/livez", "results": "/livez"}
READINESS = {"votes-host": "/readyz", "consumer": "/readyz", "results": "/readyz"}
STORE_DEPENDENT = {"/readyz"}


def test_liveness_never_waits_for_a_store(docs, overlay):
    """A liveness probe that checks Redis or MongoDB restarts every pod during a store outage."""
    for owner, template in pod_templates(docs):
        store_client = template["metadata"].get("labels", {}).get("votes.dev/store-client") == "true"
        for container in containers(template["spec"]):
            where = f"{overlay}: {owner['metadata']['name']}/{container['name']}"
            live = (container.get("livenessProbe") or {}).get("httpGet", {}).get("path")
            ready = (container.get("readinessProbe") or {}).get("httpGet", {}).get("path")
            assert live not in STORE_DEPENDENT, f"{where}: liveness on {live}, which checks the stores"
            if store_client:
                assert live and live != ready, f"{where}: a store client's liveness ({live}) must not be its readiness check ({ready})"
            name = owner["metadata"]["name"]
            if name in LIVENESS and deploylib.our_image(container["image"]):
                assert live == LIVENESS[name], f"{where}: liveness {live}, expected {LIVENESS[name]}"
                if name in READINESS:
                    assert ready == READINESS[name], f"{where}: readiness {ready}, expected {READINESS[name]}"


def test_autoscaled_deployments_leave_the_count_to_the_autoscaler(docs, overlay):
    scaled = [h["spec"]["scaleTargetRef"] for h in by_kind(docs, "HorizontalPodAutoscaler").values()]
    assert len(scaled) >= 3, scaled
    for target in scaled:
        workload = by_kind(docs, target["kind"])[target["name"]]
        assert "replicas" not in workload["spec"], f"{overlay}: {target['name']} sets replicas, which every apply resets under its HPA"


# How long each serving binary may take to drain on SIGTERM: the host's --drain-timeout-ms
# (default 10 s, docs/limits.md), the gRPC producer's in-flight calls (each bounded by the
# publish timeout, 5 s, plus its grace), results' open event streams (closed at once).
DRAIN_SECONDS = {"votes-host": 10, "grpc-producer": 6, "results": 1}


def test_serving_pods_pause_before_they_stop_and_outlast_their_drain(docs, overlay):
    deployments = by_kind(docs, "Deployment")
    for name, drain in DRAIN_SECONDS.items():
        spec = deployments[name]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if name == "votes-host" and "VOTES_HOST_DRAIN_TIMEOUT_MS" in env:
            drain = int(env["VOTES_HOST_DRAIN_TIMEOUT_MS"]) / 1000
        pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert pause >= 3, f"{overlay}: {name} stops serving before endpoints drop it: add a preStop sleep"
        grace = spec.get("terminationGracePeriodSeconds", 30)
        assert grace > pause + drain, f"{overlay}: {name}: grace {grace} s does not cover the pause ({pause} s) and the drain ({drain} s)"


def test_the_kafka_version_is_pinned(docs, overlay):
    (kafka,) = by_kind(docs, "Kafka").values()
    version = kafka["spec"]["kafka"].get("version")
    assert version and re.fullmatch(r"\d+\.\d+\.\d+", str(version)), f"{overlay}: Kafka version {version!r}: pin one the operator supports"


# --- install and teardown order ---------------------------------------------------------------------

def test_overlays_leave_the_namespace_alone(docs, overlay):
    """`kubectl delete -k` of an overlay must not delete the namespace: KafkaTopics in it need the
    topic operator to clear their finalizers first."""
    assert not by_kind(docs, "Namespace"), f"{overlay} contains the namespace; it belongs to k8s/namespace"


def test_the_namespace_has_a_kustomization_of_its_own():
    docs = deploylib.render(deploylib.REPO / "k8s" / "namespace")
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("Namespace", "votes")]


def test_no_overlay_carries_an_operator():
    """The Strimzi operator lives in its own namespace, installed apart (docs/deploy.md): were it
    in the votes namespace, deleting that namespace would remove it before the KafkaTopics."""
    for overlay in deploylib.OVERLAYS:
        docs = deploylib.render(overlay)
        kinds = {d["kind"] for d in docs}
        assert not kinds & {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}, f"{overlay.name}: {kinds}"
        images = [c["image"] for _, t in pod_templates(docs) for c in containers(t["spec"])]
        assert not [i for i in images if "strimzi" in i], f"{overlay.name}: {images}"


def deploy_commands() -> list[str]:
    """The commands of docs/deploy.md's shell blocks, in order (continued lines joined, comments cut)."""
    text = (deploylib.REPO / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", text, flags=re.S)
    joined = [block.replace("\\\n", " ") for block in blocks]
    return [line.split(" #", 1)[0].strip() for block in joined for line in block.splitlines() if not line.lstrip().startswith("#") and line.split(" #", 1)[0].strip()]


def first(lines: list[str], pattern: str) -> int:
    found = [i for i, line in enumerate(lines) if re.search(pattern, line)]
    assert found, f"docs/deploy.md runs no command matching {pattern!r}"
    return found[0]


def test_the_documented_install_and_teardown_orders_work():
    lines = deploy_commands()
    namespace = first(lines, r"kubectl apply -k k8s/namespace")
    operator = first(lines, r"helm (upgrade --install|install) .*strimzi")
    assert re.search(r"(-n|--namespace) strimzi\b", lines[operator]) and "watchNamespaces" in lines[operator], lines[operator]
    platform = first(lines, r"kubectl apply -k k8s/overlays/")
    assert namespace < operator < platform, "install: the namespace, then the operator (watching it), then an overlay"
    topics = first(lines, r"kubectl -n votes delete kafkatopics?\b")
    remove = first(lines, r"kubectl delete -k k8s/overlays/")
    uninstall = first(lines, r"helm uninstall .*(-n|--namespace) strimzi")
    drop = first(lines, r"kubectl delete -k k8s/namespace")
    assert platform < topics < remove < uninstall < drop, (
        "teardown: the KafkaTopics while the topic operator runs, then the overlay, then the operator, then the namespace"
    )
