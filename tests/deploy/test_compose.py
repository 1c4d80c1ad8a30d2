"""compose.yaml: valid against the compose specification (../shared/schemas), and built as the
issue asks: Kafka in KRaft from the official image, Redis with AOF and noeviction, MongoDB 7,
Prometheus, Grafana with grafana/ and the Redis plugin, two consumers that start only once the
topics exist, health checks behind every start condition, a volume for every store, and the
host's admin API unpublished."""

import json

import jsonschema
import pytest

import deploylib


def test_compose_matches_the_specification(compose):
    spec_path = deploylib.SCHEMAS / "compose" / "compose-spec.json"
    if not spec_path.is_file():
        pytest.skip(f"{spec_path} is missing (a clone without ../shared): the compose schema check needs it")
    spec = json.loads(spec_path.read_text())
    validator = jsonschema.Draft7Validator(spec)  # the spec says draft-07 (its $schema URL lacks the "#")
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_backing_services(compose):
    services = compose["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft"
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis
    assert services["mongodb"]["image"].startswith("mongo:7")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    grafana = services["grafana"]
    assert "redis-datasource" in grafana["environment"]["GF_PLUGINS_PREINSTALL_SYNC"]
    assert any(v.startswith("./grafana/provisioning:/etc/grafana/provisioning") for v in grafana["volumes"])
    assert any(v.startswith("./grafana/dashboards:") for v in grafana["volumes"])


def test_rabbitmq_is_the_official_image_with_streams_for_the_host_and_the_consumers(compose):
    services = compose["services"]
    rabbitmq = services["rabbitmq"]
    assert rabbitmq["image"].startswith("rabbitmq:3."), rabbitmq["image"]
    assert "rabbitmq_stream" in " ".join(rabbitmq["command"]), "the stream plugin is enabled"
    assert rabbitmq["hostname"] == "rabbitmq", "streams send clients to the node's host name"
    assert rabbitmq["profiles"] == ["rabbitmq"], "started only when a topic is bound to it"
    assert "5552" in " ".join(rabbitmq["healthcheck"]["test"])
    password = rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"]
    for name, service in services.items():
        image = deploylib.our_image(service.get("image", ""))
        if image and image[0] in ("votes-host", "votes-consumer"):
            env = service["environment"]
            assert env["VOTES_RABBITMQ"] == "rabbitmq:5552", name
            assert env["VOTES_RABBITMQ_USERNAME"] == rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"], name
            assert env["VOTES_RABBITMQ_PASSWORD"] == password, name


def test_the_rabbitmq_overlay_runs_a_stream_cluster_its_clients_may_reach():
    overlay = deploylib.REPO / "k8s" / "overlays" / "rabbitmq"
    docs = deploylib.render(overlay)
    clusters = deploylib.by_kind(docs, "RabbitmqCluster")
    assert list(clusters) == ["votes-rabbitmq"], list(clusters)
    assert "rabbitmq_stream" in clusters["votes-rabbitmq"]["spec"]["rabbitmq"]["additionalPlugins"]
    policy = deploylib.by_kind(docs, "NetworkPolicy")["votes-rabbitmq"]
    admitted = [rule["from"][0]["podSelector"]["matchLabels"] for rule in policy["spec"]["ingress"] if any(p.get("port") == 5552 for p in rule.get("ports", []))]
    for name in ("votes-host", "consumer"):
        template = deploylib.by_kind(docs, "Deployment")[name]["spec"]["template"]
        assert any(deploylib.matches({"matchLabels": labels}, template["metadata"]["labels"]) for labels in admitted), f"{name} may not reach the stream port"
        env = deploylib.container_env(template["spec"]["containers"][0], docs)
        assert env.get("VOTES_RABBITMQ") == "votes-rabbitmq:5552", name


def test_stores_keep_their_data_in_volumes(compose):
    declared = set(compose.get("volumes") or {})
    for name in ("kafka", "rabbitmq", "redis", "mongodb", "prometheus", "grafana"):
        named = {v.split(":")[0] for v in compose["services"][name].get("volumes", []) if not v.startswith(".")}
        assert named and named <= declared, f"{name}: {named} not all declared in {declared}"


def test_consumers_start_after_the_topics_and_the_stores(compose):
    services = compose["services"]
    consumers = [n for n, s in services.items() if deploylib.our_image(s.get("image", "")) and deploylib.our_image(s["image"])[0] == "votes-consumer"]
    assert len(consumers) == 2, consumers
    topics = services["topics"]
    script = " ".join(topics["command"])
    assert "--topic votes --partitions 6" in script and "votes.dlq" in script and "votes.components" in script
    assert topics["restart"] == "no"
    for name in consumers + ["host", "grpc-producer"]:
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully", name


def test_every_start_condition_has_a_health_check(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on a missing {dependency}"
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits for {dependency} to be healthy, which has no health check"
        if deploylib.our_image(service.get("image", "")):
            assert "healthcheck" in service, name


def test_admin_api_is_not_published(compose):
    host = compose["services"]["host"]
    env = deploylib.compose_env(host)
    assert "VOTES_DEPLOY_PUBLIC_KEY" in env, "the fleet hosts need the deploy public key"
    assert env["VOTES_HOST_ADMIN_ADDR"].startswith("127.0.0.1:")
    admin_port = env["VOTES_HOST_ADMIN_ADDR"].rsplit(":", 1)[1]
    for service in compose["services"].values():
        for port in service.get("ports", []):
            assert not str(port).endswith(f":{admin_port}"), port
