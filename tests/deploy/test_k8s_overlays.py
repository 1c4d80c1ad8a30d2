"""What the dev and prod overlays must hold: Strimzi Kafka in KRaft with its topics, the stores
as StatefulSets with volumes, probed and autoscaled producers, the consumer, results, Prometheus
scraping every pod, Grafana with the provisioned dashboards, and the differences between dev
(one of everything) and prod (three replicated brokers)."""

import pytest
import yaml

import deploylib
from deploylib import by_kind, containers

_cache = {}


def rendered(name):
    if name not in _cache:
        _cache[name] = deploylib.render(deploylib.REPO / "k8s" / "overlays" / name)
    return _cache[name]


def container(docs, kind, name):
    (first, *_) = by_kind(docs, kind)[name]["spec"]["template"]["spec"]["containers"]
    return first


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_kafka_topics_and_stores(name):
    docs = rendered(name)
    (kafka,) = by_kind(docs, "Kafka").values()
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1" and "zookeeper" not in kafka["spec"]
    (pool,) = by_kind(docs, "KafkaNodePool").values()
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}, "KRaft: the nodes are controllers and brokers"
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    topics = {t["spec"]["topicName"]: t["spec"] for t in by_kind(docs, "KafkaTopic").values()}
    assert topics["votes"]["partitions"] == 6
    assert "votes.dlq" in topics
    assert topics["votes.components"]["partitions"] == 1 and topics["votes.components"]["config"]["cleanup.policy"] == "compact"
    stateful = by_kind(docs, "StatefulSet")
    for store in ("redis", "mongodb"):
        assert stateful[store]["spec"]["volumeClaimTemplates"], store
    redis_args = " ".join(container(docs, "StatefulSet", "redis")["args"])
    assert "--appendonly yes" in redis_args and "--maxmemory-policy noeviction" in redis_args
    assert container(docs, "StatefulSet", "mongodb")["image"].startswith("mongo:7")


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_producers_are_probed_sized_and_autoscaled(name):
    docs = rendered(name)
    host, grpc = container(docs, "Deployment", "votes-host"), container(docs, "Deployment", "grpc-producer")
    assert host["readinessProbe"]["httpGet"]["path"] == "/readyz" and host["livenessProbe"]
    assert "grpc" in grpc["readinessProbe"] and grpc["livenessProbe"]
    hpas, budgets = by_kind(docs, "HorizontalPodAutoscaler"), by_kind(docs, "PodDisruptionBudget")
    for deployment in ("votes-host", "grpc-producer", "consumer", "results"):
        resources = container(docs, "Deployment", deployment)["resources"]
        assert resources["requests"]["cpu"] and resources["limits"]["memory"], deployment
        assert deployment in budgets, deployment
    for deployment in ("votes-host", "grpc-producer", "consumer"):
        spec = hpas[deployment]["spec"]
        assert spec["maxReplicas"] == 5 and spec["metrics"][0]["resource"]["name"] == "cpu", deployment
    env = {e["name"]: e.get("value") for e in host["env"]}
    assert env["VOTES_HOST_ADMIN_ADDR"].startswith("127.0.0.1:"), "the admin API stays on the pod's loopback"
    assert env["VOTES_HOST_FLEET_TOPIC"] == "votes.components"
    mounted = {v["secret"]["secretName"] for v in by_kind(docs, "Deployment")["votes-host"]["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    assert any(s.startswith("votes-admin-token") for s in mounted), "the admin token comes from a Secret"
    key_maps = {v["configMap"]["name"] for v in by_kind(docs, "Deployment")["votes-host"]["spec"]["template"]["spec"]["volumes"] if "configMap" in v}
    assert env["VOTES_DEPLOY_PUBLIC_KEY_FILE"].endswith("/deploy-key.pub") and any(m.startswith("votes-deploy-public-key") for m in key_maps), "fleet hosts hold the deploy public key"
    start_timeout_s = int(env["VOTES_HOST_FLEET_START_TIMEOUT_MS"]) / 1000
    probe = host["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] > start_timeout_s, "the startup probe outlasts the wait for Kafka"


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_prometheus_scrapes_every_pod_and_grafana_is_provisioned(name):
    docs = rendered(name)
    config_maps = by_kind(docs, "ConfigMap")
    (prometheus_config,) = [c for n, c in config_maps.items() if n.startswith("prometheus-config")]
    scrape = yaml.safe_load(prometheus_config["data"]["prometheus.yml"])["scrape_configs"]
    assert any(sd["role"] == "pod" for job in scrape for sd in job.get("kubernetes_sd_configs", []))
    for owner, template in deploylib.pod_templates(docs):
        if deploylib.our_image(template["spec"]["containers"][0]["image"]):
            annotations = template["metadata"].get("annotations", {})
            assert annotations.get("prometheus.io/scrape") == "true", owner["metadata"]["name"]
            port = int(annotations["prometheus.io/port"])
            assert port in deploylib.container_ports(template["spec"]["containers"][0])[1], owner["metadata"]["name"]
    grafana = container(docs, "Deployment", "grafana")
    env = {e["name"]: e.get("value") for e in grafana["env"]}
    assert "redis-datasource" in env["GF_PLUGINS_PREINSTALL_SYNC"]
    volumes = by_kind(docs, "Deployment")["grafana"]["spec"]["template"]["spec"]["volumes"]
    mounted_maps = {v["configMap"]["name"].rsplit("-", 1)[0] for v in volumes if "configMap" in v}
    assert mounted_maps == {"grafana-datasources", "grafana-dashboard-providers", "grafana-dashboards"}, mounted_maps


def test_dev_runs_one_of_everything():
    docs = rendered("dev")
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind(docs, "HorizontalPodAutoscaler").values()}
    for kind in ("Deployment", "StatefulSet"):
        for name, doc in by_kind(docs, kind).items():
            if name not in scaled:
                assert doc["spec"]["replicas"] == 1, f"{kind} {name}"
    assert all(h["spec"]["minReplicas"] == 1 for h in by_kind(docs, "HorizontalPodAutoscaler").values())
    (pool,) = by_kind(docs, "KafkaNodePool").values()
    assert pool["spec"]["replicas"] == 1
    assert all(t["spec"]["replicas"] == 1 for t in by_kind(docs, "KafkaTopic").values())


def test_prod_replicates_kafka_three_times():
    docs = rendered("prod")
    (pool,) = by_kind(docs, "KafkaNodePool").values()
    assert pool["spec"]["replicas"] == 3
    (kafka,) = by_kind(docs, "Kafka").values()
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3 and config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3
    for name, topic in by_kind(docs, "KafkaTopic").items():
        assert topic["spec"]["replicas"] == 3 and topic["spec"]["config"]["min.insync.replicas"] == 2, name
    assert all(h["spec"]["minReplicas"] == 2 for h in by_kind(docs, "HorizontalPodAutoscaler").values())
