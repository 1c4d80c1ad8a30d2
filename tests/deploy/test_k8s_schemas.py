"""Every overlay renders with `kubectl kustomize`; built-in kinds validate strictly against a
current Kubernetes version (kubernetes-validate); every custom resource validates against its CRD
from ../shared/schemas, found by apiVersion and kind."""

import jsonschema
import kubernetes_validate
import pytest

import deploylib
from deploylib import group_is_custom

KUBERNETES_VERSION = kubernetes_validate.latest_version()


def test_there_are_overlays():
    assert {"dev", "prod"} <= {p.name for p in deploylib.SYSTEM_OVERLAYS}, deploylib.SYSTEM_OVERLAYS
    assert {"spinkube"} <= {p.name for p in deploylib.ADDON_OVERLAYS}, deploylib.ADDON_OVERLAYS


def test_overlay_renders(docs, overlay):
    kinds = {doc["kind"] for doc in docs}
    assert {"Deployment", "Service", "Kafka", "KafkaNodePool", "KafkaTopic"} <= kinds, (overlay, kinds)
    names = [(doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]) for doc in docs]
    assert len(names) == len(set(names)), f"{overlay}: duplicate resources"
    assert all(doc["metadata"].get("namespace") == "votes" for doc in docs if doc["kind"] != "Namespace"), overlay


def validate_builtins(docs, overlay) -> int:
    """Validates every built-in kind strictly; returns how many were checked."""
    checked = 0
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            checked += 1
        except kubernetes_validate.SchemaNotFoundError:
            assert group_is_custom(doc), f"{overlay}: no built-in schema for {doc['apiVersion']} {doc['kind']}"
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{overlay}: {doc['kind']}/{doc['metadata']['name']} is not valid for Kubernetes {KUBERNETES_VERSION}: {error.message} at {list(error.path)}")
    return checked


def test_builtin_kinds_validate_strictly(docs, overlay):
    checked = validate_builtins(docs, overlay)
    assert checked > 20, checked


def test_custom_resources_validate_against_their_crds(docs, overlay, crds):
    validate_custom(docs, overlay, crds)


def validate_custom(docs, overlay, crds):
    """Validates every custom resource against its CRD; there must be some."""
    custom = [doc for doc in docs if group_is_custom(doc)]
    assert custom, f"{overlay} has no custom resources (the Strimzi Kafka at least)"
    for doc in custom:
        group, version = deploylib.group_version(doc)
        schema = crds.get((group, version, doc["kind"]))
        assert schema is not None, f"{overlay}: no CRD in {deploylib.SCHEMAS} for {doc['apiVersion']} {doc['kind']}"
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{overlay}: {doc['kind']}/{doc['metadata']['name']}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_the_crd_check_catches_a_mistake(crds):
    """The converted CRD schemas are strict: an unknown field and a wrong type are errors."""
    schema = crds[("kafka.strimzi.io", "v1", "KafkaTopic")]
    good = {"apiVersion": "kafka.strimzi.io/v1", "kind": "KafkaTopic", "metadata": {"name": "t"}, "spec": {"partitions": 6, "replicas": 1}}
    assert not list(jsonschema.Draft7Validator(schema).iter_errors(good))
    for bad_spec in ({"partitions": "six"}, {"partitons": 6}):
        bad = {**good, "spec": bad_spec}
        assert list(jsonschema.Draft7Validator(schema).iter_errors(bad)), bad_spec
