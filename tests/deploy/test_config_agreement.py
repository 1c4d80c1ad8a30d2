"""Manifests agree with the binaries: every container of ours in every rendered overlay and in
compose.yaml is run through its real binary (`--check-config`, debug build) with exactly the
flags and environment the manifest gives it; a flag or variable the binary does not accept, or a
value it refuses, fails the test."""

import pytest

import deploylib


def our_containers_k8s(docs):
    for owner, template in deploylib.pod_templates(docs):
        for container in deploylib.containers(template["spec"]):
            ours = deploylib.our_image(container["image"])
            if ours:
                yield f"{owner['metadata']['name']}/{container['name']}", ours[0], container.get("args", []), deploylib.container_env(container, docs)


def our_containers_compose(compose):
    for name, service in compose["services"].items():
        ours = deploylib.our_image(service.get("image", ""))
        if ours:
            yield name, ours[0], deploylib.compose_args(service), deploylib.compose_env(service)


def run_through_binary(where, image, args, env):
    assert image in deploylib.BINARIES, f"{where}: image {image} runs no binary this test knows"
    unexpected = [name for name in env if not name.startswith("VOTES_") and name not in deploylib.OTHER_ENV]
    assert not unexpected, f"{where}: sets {unexpected}, which no binary of ours reads"
    binary = deploylib.BINARIES[image]
    done = deploylib.check_config(binary, args, env)
    assert done.returncode == 0, f"{where}: {binary} refuses its configuration:\n{done.stderr}{done.stdout}"
    assert "configuration ok" in done.stdout, done.stdout


def check_all(containers, at_least):
    assert len(containers) >= at_least, f"only {len(containers)} containers of ours"
    for container in containers:
        run_through_binary(*container)


def test_k8s_containers_agree_with_their_binaries(docs, overlay):
    check_all([(f"{overlay} {where}", image, args, env) for where, image, args, env in our_containers_k8s(docs)], 4)


def test_compose_services_agree_with_their_binaries(compose):
    check_all(list(our_containers_compose(compose)), 5)


@pytest.mark.parametrize(
    "binary, env, says",
    [
        ("votes-host", {"VOTES_HOST_COMPONENT": "/x.wasm", "VOTES_HOST_FLEET_TOPK": "votes.components"}, "VOTES_HOST_FLEET_TOPK"),
        ("votes-host", {"VOTES_HOST_COMPONENT": "/x.wasm", "VOTES_HOST_FLEET_TOPIC": "votes"}, "fleet-topic"),
        ("grpc-producer", {"VOTES_KAFKA_BROKERS": "kafka"}, "brokers"),
        ("consumer", {"VOTES_MONGO_URL": "http://mongodb"}, "mongo-url"),
        ("consumer", {"VOTES_CONSUMER_METRICS_ADDR": "nine-one-oh-one"}, "metrics-addr"),
    ],
)
def test_the_check_refuses_what_a_binary_does_not_accept(binary, env, says):
    done = deploylib.check_config(binary, [], env)
    assert done.returncode != 0, f"{binary} accepted {env}:\n{done.stdout}"
    assert says in done.stderr, done.stderr
