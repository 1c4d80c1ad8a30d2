"""Cross-references inside each rendered overlay: Services select pods that exist and target
ports those pods expose, probes name exposed ports, every ConfigMap, Secret, PVC and service
account referenced is defined, autoscalers, budgets, policies, Ingresses and Gateway API routes
point at things that exist (and the entry points reach both producers), the services reach Kafka, Redis and MongoDB by names that exist, and our images share one tag."""

import pytest

import deploylib
from deploylib import by_kind, container_ports, containers, matches, pod_templates


def pods(docs):
    return [(owner, template) for owner, template in pod_templates(docs)]


def test_services_select_pods_and_target_exposed_ports(docs, overlay):
    for name, service in by_kind(docs, "Service").items():
        selected = [t for _, t in pods(docs) if matches(service["spec"].get("selector"), t["metadata"].get("labels"))]
        assert selected, f"{overlay}: Service {name} selects no pod"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for template in selected:
                exposed = [container_ports(c) for c in containers(template["spec"])]
                assert any(target in (names if isinstance(target, str) else numbers) for names, numbers in exposed), (
                    f"{overlay}: Service {name} targets port {target!r}, which its pods do not expose"
                )


def probe_port(probe):
    for kind in ("httpGet", "tcpSocket", "grpc"):
        if kind in probe:
            return probe[kind]["port"]
    return None


def test_probes_name_exposed_ports(docs, overlay):
    probed = 0
    for owner, template in pods(docs):
        for container in containers(template["spec"]):
            names, numbers = container_ports(container)
            for kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                port = probe_port(container.get(kind) or {})
                if port is None:
                    continue
                probed += 1
                assert port in (names if isinstance(port, str) else numbers), (
                    f"{overlay}: {owner['metadata']['name']}/{container['name']} {kind} uses port {port!r}, not one it exposes {names | numbers}"
                )
    assert probed >= 10, probed


def operator_secrets(docs) -> set[tuple[str, str]]:
    """The Secret keys an operator writes for a resource of the overlay: the RabbitMQ Cluster
    Operator's `<cluster>-default-user` (username, password)."""
    return {(f"{name}-default-user", key) for name in by_kind(docs, "RabbitmqCluster") for key in ("username", "password")}


def test_configmaps_secrets_pvcs_and_accounts_are_defined(docs, overlay):
    config_maps, secrets, claims = by_kind(docs, "ConfigMap"), by_kind(docs, "Secret"), by_kind(docs, "PersistentVolumeClaim")
    accounts = set(by_kind(docs, "ServiceAccount")) | {"default"}
    for owner, template in pods(docs):
        where = f"{overlay}: {owner['kind']} {owner['metadata']['name']}"
        spec = template["spec"]
        templated_claims = {t["metadata"]["name"] for t in owner["spec"].get("volumeClaimTemplates", [])}
        volume_names = set(templated_claims)
        for volume in spec.get("volumes", []) or []:
            volume_names.add(volume["name"])
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, f"{where}: ConfigMap {volume['configMap']['name']} is not defined"
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, f"{where}: Secret {volume['secret']['secretName']} is not defined"
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, f"{where}: PVC {volume['persistentVolumeClaim']['claimName']} is not defined"
        assert spec.get("serviceAccountName", "default") in accounts, f"{where}: service account {spec.get('serviceAccountName')} is not defined"
        for container in containers(spec):
            for mount in container.get("volumeMounts", []) or []:
                assert mount["name"] in volume_names, f"{where}: volume {mount['name']} is mounted but not declared"
            for entry in container.get("env", []) or []:
                source = entry.get("valueFrom", {})
                if "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    made_by_operator = (ref["name"], ref["key"]) in operator_secrets(docs)
                    assert made_by_operator or deploylib.secret_value(docs, ref["name"], ref["key"]) is not None, f"{where}: Secret {ref['name']} key {ref['key']} is not defined"
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    assert ref["key"] in (config_maps.get(ref["name"], {}).get("data") or {}), f"{where}: ConfigMap {ref['name']} key {ref['key']} is not defined"
            for source in container.get("envFrom", []) or []:
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, where
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, where
    for name, binding in by_kind(docs, "RoleBinding").items():
        assert binding["roleRef"]["name"] in by_kind(docs, binding["roleRef"]["kind"]), f"{overlay}: RoleBinding {name}"
        assert all(s["name"] in accounts for s in binding["subjects"] if s["kind"] == "ServiceAccount"), f"{overlay}: RoleBinding {name}"


def operator_pod_labels(docs) -> list[dict]:
    """The labels of pods an operator makes for a resource of the overlay: the RabbitMQ Cluster
    Operator labels a cluster's pods with `app.kubernetes.io/name: <cluster>`."""
    return [{"app.kubernetes.io/name": name, "app.kubernetes.io/component": "rabbitmq", "app.kubernetes.io/part-of": "rabbitmq"} for name in by_kind(docs, "RabbitmqCluster")]


def test_autoscalers_budgets_and_policies_point_at_workloads(docs, overlay):
    for name, hpa in by_kind(docs, "HorizontalPodAutoscaler").items():
        target = hpa["spec"]["scaleTargetRef"]
        assert target["name"] in by_kind(docs, target["kind"]), f"{overlay}: HPA {name} targets a missing {target['kind']} {target['name']}"
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"], name
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for name, doc in by_kind(docs, kind).items():
            labels = [t["metadata"].get("labels") for _, t in pods(docs)] + operator_pod_labels(docs)
            assert any(matches(doc["spec"]["podSelector" if kind == "NetworkPolicy" else "selector"], pod_labels) for pod_labels in labels), (
                f"{overlay}: {kind} {name} selects no pod"
            )
    for name, policy in by_kind(docs, "NetworkPolicy").items():
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "podSelector" in peer:
                    labels = [t["metadata"].get("labels") for _, t in pods(docs)] + operator_pod_labels(docs)
                    assert any(matches(peer["podSelector"], pod_labels) for pod_labels in labels), f"{overlay}: NetworkPolicy {name} admits pods that do not exist"


def test_kafka_listener_admits_the_kafka_clients(docs, overlay):
    (kafka,) = by_kind(docs, "Kafka").values()
    peers = [peer for listener in kafka["spec"]["kafka"]["listeners"] for peer in listener.get("networkPolicyPeers", [])]
    assert peers, f"{overlay}: the Kafka listener admits every pod"
    admitted = {o["metadata"]["name"] for o, t in pods(docs) if any(matches(p["podSelector"], t["metadata"].get("labels")) for p in peers)}
    assert admitted == {"votes-host", "grpc-producer", "consumer"}, f"{overlay}: Kafka admits {admitted}"


def service_port(docs, overlay, where, name, port):
    """Asserts that Service `name` exists and has `port` (a name or a number)."""
    service = by_kind(docs, "Service").get(name)
    assert service is not None, f"{overlay}: {where} routes to a missing Service {name}"
    assert any(port in (p.get("name"), p["port"]) for p in service["spec"]["ports"]), f"{overlay}: {where}: {name} has no port {port}"


def entry_routes(docs, overlay) -> set[tuple[str, str, str]]:
    """(service, path or gRPC service, protocol) for every route into the cluster, from the
    Ingress objects and the Gateway API routes, with each backend checked to exist."""
    routes = set()
    for name, ingress in by_kind(docs, "Ingress").items():
        protocol = ingress["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/backend-protocol", "HTTP")
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                service_port(docs, overlay, f"Ingress {name}", backend["name"], backend["port"].get("name", backend["port"].get("number")))
                # On a gRPC-only host, "/" carries every gRPC service of the backend.
                routes.add((backend["name"], "*" if protocol == "GRPC" and path["path"] == "/" else path["path"], protocol))
    gateways = by_kind(docs, "Gateway")
    for kind, protocol in (("HTTPRoute", "HTTP"), ("GRPCRoute", "GRPC")):
        for name, route in by_kind(docs, kind).items():
            for parent in route["spec"]["parentRefs"]:
                gateway = gateways.get(parent["name"])
                assert gateway is not None, f"{overlay}: {kind} {name} hangs off a missing Gateway {parent['name']}"
                listeners = [l for l in gateway["spec"]["listeners"] if parent.get("sectionName") in (None, l["name"])]
                assert any(kind in {k["kind"] for k in l.get("allowedRoutes", {}).get("kinds", [{"kind": kind}])} for l in listeners), (
                    f"{overlay}: no listener of Gateway {parent['name']} admits {kind} {name}"
                )
            for rule in route["spec"]["rules"]:
                for backend in rule["backendRefs"]:
                    service_port(docs, overlay, f"{kind} {name}", backend["name"], backend["port"])
                    for match in rule.get("matches", []):
                        routes.add((backend["name"], match["path"]["value"] if "path" in match else match["method"]["service"], protocol))
    return routes


def test_entry_points_reach_both_producers(docs, overlay):
    routes = entry_routes(docs, overlay)
    assert any(r[0] == "votes-host" and "/votes" in r[1] for r in routes), routes
    assert any(r[0] == "votes-host" and "/rust/insert" in r[1] for r in routes), routes
    assert any(r[0] == "grpc-producer" and r[2] == "GRPC" and r[1] in ("*", "votes.v1.VoteService") for r in routes), routes


def test_services_reach_kafka_and_stores_by_existing_names(docs, overlay):
    # The operators' Services: Strimzi's bootstrap, the RabbitMQ Cluster Operator's client Service.
    services = set(by_kind(docs, "Service")) | {f"{name}-kafka-bootstrap" for name in by_kind(docs, "Kafka")} | set(by_kind(docs, "RabbitmqCluster"))
    for owner, template in pods(docs):
        for container in containers(template["spec"]):
            env = deploylib.container_env(container, docs)
            for variable in ("VOTES_KAFKA_BROKERS", "VOTES_REDIS_URL", "VOTES_MONGO_URL", "VOTES_RABBITMQ"):
                if variable in env:
                    for address in env[variable].split(","):
                        host = address.split("://")[-1].split("/")[0].rsplit(":", 1)[0]
                        assert host in services, f"{overlay}: {owner['metadata']['name']} {variable} names {host}, which is no Service here"


def test_one_image_tag_everywhere(docs, overlay, compose):
    tags = {}
    for owner, template in pods(docs):
        for container in containers(template["spec"]):
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{overlay}: {image} has no fixed tag"
            ours = deploylib.our_image(image)
            if ours:
                tags.setdefault(ours[1], set()).add(ours[0])
    for service in compose["services"].values():
        ours = deploylib.our_image(service.get("image", ""))
        if ours:
            tags.setdefault(ours[1], set()).add(f"compose {ours[0]}")
    assert len(tags) == 1, f"{overlay}: our images carry several tags: {tags}"
    (images,) = tags.values()
    assert {f"compose {name}" for name in deploylib.BINARIES} | set(deploylib.BINARIES) <= images, images


def test_consumer_never_outnumbers_the_partitions(docs, overlay):
    topics = {t["spec"].get("topicName", name): t for name, t in by_kind(docs, "KafkaTopic").items()}
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["consumer"]
    assert hpa["spec"]["maxReplicas"] <= topics["votes"]["spec"]["partitions"], overlay


def test_grafana_files_are_all_listed():
    """grafana/kustomization.yaml lists every provisioning file and dashboard, and only those."""
    listed = set(deploylib.grafana_generator_files())
    present = {str(p.relative_to(deploylib.GRAFANA)) for p in deploylib.GRAFANA.rglob("*") if p.is_file() and p.suffix in (".json", ".yaml", ".yml") and p.name != "kustomization.yaml"}
    assert listed == present, f"listed but missing: {listed - present}; present but not listed: {present - listed}"
