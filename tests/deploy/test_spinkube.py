"""The SpinKube add-on overlay (k8s/overlays/spinkube), applied beside a whole-system overlay: it
renders, its kinds validate (built-in strictly, SpinApp, SpinAppExecutor and KafkaBridge against
their CRDs), and its references hold against the base: the bridge reaches the base's Kafka and is
admitted by its listener, the SpinApp reaches the bridge, the HPA scales the SpinApp's Deployment,
its image carries our one tag, and only the Spin app's pods reach the bridge."""

import tomllib

import pytest

import deploylib
from deploylib import by_kind, matches
from test_k8s_schemas import validate_builtins, validate_custom

SPINKUBE = deploylib.REPO / "k8s" / "overlays" / "spinkube"


@pytest.fixture(scope="module")
def spin_docs():
    return deploylib.render(SPINKUBE)


@pytest.fixture(scope="module")
def base_docs():
    return deploylib.render(deploylib.REPO / "k8s" / "overlays" / "dev")


def only(docs, kind):
    (found,) = by_kind(docs, kind).values()
    return found


def test_spinkube_renders_its_kinds_in_the_votes_namespace(spin_docs):
    assert {doc["kind"] for doc in spin_docs} == {"SpinApp", "SpinAppExecutor", "KafkaBridge", "HorizontalPodAutoscaler", "NetworkPolicy"}
    assert all(doc["metadata"].get("namespace") == "votes" for doc in spin_docs)


def test_only_the_spinapp_reaches_the_bridge(spin_docs):
    """Whoever reaches the Strimzi bridge publishes to Kafka: its NetworkPolicy selects the
    bridge's pods and admits only the SpinApp's, on the bridge's HTTP port."""
    bridge, app, policy = only(spin_docs, "KafkaBridge"), only(spin_docs, "SpinApp"), only(spin_docs, "NetworkPolicy")
    assert matches(policy["spec"]["podSelector"], bridge["spec"]["template"]["pod"]["metadata"]["labels"]), "the policy selects the bridge's pods"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [bridge["spec"]["http"]["port"]]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"} and matches(peer["podSelector"], app["spec"]["podLabels"]), "only the SpinApp's pods are admitted"


def test_spinkube_validates(spin_docs, crds):
    assert validate_builtins(spin_docs, "spinkube") >= 1
    validate_custom(spin_docs, "spinkube", crds)


def test_the_bridge_reaches_and_is_admitted_by_the_base_kafka(spin_docs, base_docs):
    bridge, kafka = only(spin_docs, "KafkaBridge"), only(base_docs, "Kafka")
    plain = [l for l in kafka["spec"]["kafka"]["listeners"] if not l.get("tls")]
    addresses = {f"{kafka['metadata']['name']}-kafka-bootstrap:{l['port']}" for l in plain}
    assert bridge["spec"]["bootstrapServers"] in addresses, (bridge["spec"]["bootstrapServers"], addresses)
    labels = bridge["spec"]["template"]["pod"]["metadata"]["labels"]
    peers = [p for l in plain for p in l.get("networkPolicyPeers", [])]
    assert any(matches(p["podSelector"], labels) for p in peers), f"the Kafka listener does not admit the bridge's pods {labels}"
    assert bridge["spec"]["producer"]["config"]["acks"] == "all"


def test_the_spinapp_reaches_the_bridge_under_the_manifest_variable(spin_docs):
    app, bridge, executor = only(spin_docs, "SpinApp"), only(spin_docs, "KafkaBridge"), only(spin_docs, "SpinAppExecutor")
    assert app["spec"]["executor"] == executor["metadata"]["name"]
    manifest = tomllib.loads((deploylib.REPO / "spin.toml").read_text())
    variables = {v["name"]: v["value"] for v in app["spec"]["variables"]}
    assert set(variables) <= set(manifest["variables"]), f"the SpinApp sets variables spin.toml does not declare: {set(variables) - set(manifest['variables'])}"
    # Strimzi names the bridge's Service <name>-bridge-service, on the bridge's HTTP port.
    assert variables["kafka_bridge_host"] == f"{bridge['metadata']['name']}-bridge-service:{bridge['spec']['http']['port']}"


def test_the_autoscaler_scales_the_spinapp(spin_docs):
    app, hpa = only(spin_docs, "SpinApp"), only(spin_docs, "HorizontalPodAutoscaler")
    assert app["spec"]["enableAutoscaling"] is True, "with an HPA the SpinApp must leave its replica count alone"
    # The SpinKube operator runs a SpinApp as a Deployment of the same name.
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": app["metadata"]["name"]}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_the_spin_image_carries_our_one_tag(spin_docs, base_docs):
    image = only(spin_docs, "SpinApp")["spec"]["image"]
    assert image.startswith(deploylib.IMAGE_PREFIX), image
    base_tags = {deploylib.our_image(c["image"])[1] for _, t in deploylib.pod_templates(base_docs) for c in deploylib.containers(t["spec"]) if deploylib.our_image(c["image"])}
    assert base_tags == {image.rsplit(":", 1)[1]}, (image, base_tags)


def test_only_the_spin_app_reaches_the_bridge(spin_docs, base_docs):
    """The bridge writes to Kafka for anyone who reaches it: a NetworkPolicy selects its pods and
    admits, on its HTTP port, the SpinApp's pods and no pod of the base."""
    bridge, app = only(spin_docs, "KafkaBridge"), only(spin_docs, "SpinApp")
    bridge_labels = bridge["spec"]["template"]["pod"]["metadata"]["labels"]
    policies = [p for p in by_kind(spin_docs, "NetworkPolicy").values() if matches(p["spec"]["podSelector"], bridge_labels)]
    assert policies, f"no NetworkPolicy selects the bridge's pods {bridge_labels}"
    app_labels = app["spec"].get("podLabels", {})
    base_pods = [(o["metadata"]["name"], t["metadata"].get("labels")) for o, t in deploylib.pod_templates(base_docs)]
    for policy in policies:
        assert "Ingress" in policy["spec"]["policyTypes"]
        for rule in policy["spec"]["ingress"]:
            peers = rule.get("from")
            assert peers, f"{policy['metadata']['name']}: a rule with no `from` admits every pod"
            assert all(set(p) == {"podSelector"} for p in peers), f"{policy['metadata']['name']}: only pod selectors of this namespace"
            assert all(matches(p["podSelector"], app_labels) for p in peers), f"{policy['metadata']['name']} admits pods other than the SpinApp's {app_labels}"
            admitted = [name for name, labels in base_pods if any(matches(p["podSelector"], labels) for p in peers)]
            assert not admitted, f"{policy['metadata']['name']} admits pods of the base: {admitted}"
            assert [p["port"] for p in rule["ports"]] == [bridge["spec"]["http"]["port"]]


def test_the_bridge_gets_no_service_links(spin_docs):
    assert only(spin_docs, "KafkaBridge")["spec"]["template"]["pod"]["enableServiceLinks"] is False
