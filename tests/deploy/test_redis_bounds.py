"""Redis refuses instead of dying or evicting in every deploy flavour: `maxmemory` set, below the
container's memory limit where one is set, with `noeviction` (the consumer refuses any other
policy, and waits with "redis is full" in its readiness at the bound)."""

import re

import deploylib

UNITS = {"kb": 1000, "k": 1000, "mb": 1000**2, "m": 1000**2, "gb": 1000**3, "g": 1000**3, "b": 1}
K8S_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "": 1}


def redis_bytes(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([a-zA-Z]*)", value).groups()
    return int(number) * UNITS[unit.lower() or "b"]


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def check(where: str, args: list[str], limit_bytes: int | None):
    assert flag(args, "--maxmemory-policy") == "noeviction", f"{where}: redis must run with --maxmemory-policy noeviction"
    maxmemory = flag(args, "--maxmemory")
    assert maxmemory, f"{where}: redis has no --maxmemory: it would grow until the kernel kills it"
    if limit_bytes is not None:
        assert redis_bytes(maxmemory) <= 0.8 * limit_bytes, f"{where}: --maxmemory {maxmemory} leaves no room below the memory limit"


def test_k8s_redis_has_a_memory_bound_below_its_limit(overlay, docs):
    found = 0
    for owner, template in deploylib.pod_templates(docs):
        for container in deploylib.containers(template["spec"]):
            if container["image"].startswith("redis:"):
                limit = container.get("resources", {}).get("limits", {}).get("memory")
                number, unit = re.fullmatch(r"(\d+)([KMG]i)?", limit).groups() if limit else (None, None)
                limit_bytes = int(number) * K8S_UNITS[unit or ""] if limit else None
                check(f"{overlay}/{owner['metadata']['name']}", container.get("args", []), limit_bytes)
                found += 1
    assert found, f"{overlay}: no redis container found"


def test_compose_redis_has_a_memory_bound(compose):
    service = compose["services"]["redis"]
    check("compose.yaml redis", [str(word) for word in service["command"]], None)
