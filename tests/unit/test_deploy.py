"""Offline structural checks of the deployment files: Dockerfile, compose.yaml and deploy/k8s.

No Docker, kubectl or cluster needed. Names that also live in code (environment variables, streams,
durable consumers, service modules) are checked against the code, the one source of truth.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings
from shared.streams import Topology

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"

DOCUMENTED_ENV = frozenset(
    {
        "NATS_URL",
        "DATABASE_URL",
        "REDIS_URL",
        "ASU_API_URL",
        "EMAIL_BACKEND",
        "RESEND_API_KEY",
        "RESEND_API_URL",
        "EMAIL_FROM",
        "CHECK_INTERVAL_SECONDS",
        "GATEWAY_PORT",
        "SITE_URL",
        "SECRET_KEY",
        "NAMESPACE",
        "LOG_FORMAT",
        "LOG_LEVEL",
    }
)
SECRET_ENV = frozenset({"DATABASE_URL", "RESEND_API_KEY", "SECRET_KEY"})
SERVICES = ("scheduler", "scraper", "detector", "notifier", "gateway")
TOPOLOGY = Topology("pmc")
# KEDA-scaled Deployment -> the durable consumer it drains.
SCALED = {"pmc-scraper": TOPOLOGY.scraper, "pmc-notifier": TOPOLOGY.notifier}


Doc = dict[str, Any]


@cache
def yaml_docs(path: Path) -> tuple[Doc, ...]:
    with path.open(encoding="utf-8") as fh:
        return tuple(doc for doc in yaml.safe_load_all(fh) if doc is not None)


@cache
def kustomization() -> Doc:
    (doc,) = yaml_docs(K8S / "kustomization.yaml")
    return doc


@cache
def k8s_objects() -> tuple[Doc, ...]:
    """Every object of the kustomization's resources (what `kubectl kustomize` would render)."""
    return tuple(doc for name in kustomization()["resources"] for doc in yaml_docs(K8S / name))


def of_kind(kind: str) -> list[Doc]:
    return [doc for doc in k8s_objects() if doc["kind"] == kind]


def by_name(kind: str) -> dict[str, Doc]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(kind)}


@cache
def compose() -> Doc:
    (doc,) = yaml_docs(ROOT / "compose.yaml")
    return doc


def module_of(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], f"expected `python -m <module>`, got {command}"
    return command[2]


def module_exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


def workload_pods() -> list[tuple[str, Doc]]:
    return [
        (doc["metadata"]["name"], doc["spec"]["template"]["spec"])
        for doc in of_kind("Deployment") + of_kind("Job")
    ]


# -- the documented variables ---------------------------------------------------------------------------


def test_documented_env_matches_settings() -> None:
    assert {name.upper() for name in Settings.__struct_fields__} == DOCUMENTED_ENV


# -- every YAML file parses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [ROOT / "compose.yaml", *sorted(K8S.rglob("*.yaml"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_yaml_parses(path: Path) -> None:
    docs = yaml_docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict)


# -- kustomize base -------------------------------------------------------------------------------------


def test_kustomization_resources() -> None:
    kust = kustomization()
    assert kust["namespace"] == "pickmyclass"
    resources = kust["resources"]
    assert len(resources) == len(set(resources))
    for name in resources:
        assert (K8S / name).is_file(), name
    assert "secret.example.yaml" not in resources, "the Secret is a template, never applied by the base"
    assert (K8S / "secret.example.yaml").is_file()
    assert not of_kind("Secret"), "no Secret in the base"
    assert (K8S / "README.md").is_file()


def test_deployments_run_the_five_services() -> None:
    deployments = by_name("Deployment")
    assert set(deployments) == {f"pmc-{name}" for name in SERVICES}
    for name, dep in deployments.items():
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        module = module_of(container["command"])
        assert module == f"services.{name.removeprefix('pmc-')}"
        assert (ROOT / "services" / module.split(".")[1] / "__main__.py").is_file(), module
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_setup_job_runs_shared_setup() -> None:
    (job,) = of_kind("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert module_of(container["command"]) == "shared.setup"
    assert module_exists("shared.setup")
    assert job["spec"]["template"]["spec"]["restartPolicy"] in {"Never", "OnFailure"}


def test_env_is_documented_and_secrets_stay_secret() -> None:
    (config,) = of_kind("ConfigMap")
    config_keys = set(config["data"])
    (secret,) = yaml_docs(K8S / "secret.example.yaml")
    assert secret["kind"] == "Secret"
    secret_keys = set(secret["stringData"])
    assert config_keys <= DOCUMENTED_ENV
    assert secret_keys <= DOCUMENTED_ENV
    assert not config_keys & SECRET_ENV, "secrets belong in the Secret, not the ConfigMap"
    assert config_keys | secret_keys == DOCUMENTED_ENV, "every setting is configured somewhere"
    assert config["data"]["LOG_FORMAT"] == "json"
    assert config["data"]["NAMESPACE"] == TOPOLOGY.namespace
    for name, pod in workload_pods():
        for container in pod["containers"]:
            inline = {env["name"] for env in container.get("env", [])}
            assert inline <= DOCUMENTED_ENV, (name, inline - DOCUMENTED_ENV)
            refs = {
                (kind, source[kind]["name"])
                for source in container["envFrom"]
                for kind in ("configMapRef", "secretRef")
                if kind in source
            }
            assert refs == {
                ("configMapRef", config["metadata"]["name"]),
                ("secretRef", secret["metadata"]["name"]),
            }


def test_pods_are_locked_down_and_sized() -> None:
    for name, pod in workload_pods():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            assert container["image"] == "pickmyclass", name  # rewritten by kustomize `images:`
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)


def test_grace_periods_allow_draining() -> None:
    deployments = by_name("Deployment")
    for name in ("pmc-scraper", "pmc-notifier"):
        assert deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60


def test_gateway_probes_service_and_pdb() -> None:
    gateway = by_name("Deployment")["pmc-gateway"]
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    (config,) = of_kind("ConfigMap")
    assert str(port) == config["data"]["GATEWAY_PORT"]
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    (service,) = of_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] in {"http", port}
    (pdb,) = of_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_keda_scaledobjects_match_topology() -> None:
    scaled = by_name("ScaledObject")
    deployments = by_name("Deployment")
    targets = {obj["spec"]["scaleTargetRef"]["name"]: obj for obj in scaled.values()}
    assert set(targets) == set(SCALED)
    for target, obj in targets.items():
        assert "replicas" not in deployments[target]["spec"], f"KEDA owns {target}'s replica count"
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "nats-jetstream"
        meta = trigger["metadata"]
        assert all(isinstance(value, str) for value in meta.values()), "KEDA metadata values are strings"
        consumer = SCALED[target]
        assert meta["stream"] == consumer.stream
        assert meta["consumer"] == consumer.durable
        assert meta["account"] == "$G"
        assert meta["natsServerMonitoringEndpoint"].endswith(":8222")
        for key in ("lagThreshold", "activationLagThreshold"):
            assert int(meta[key]) >= 0
        assert 0 <= obj["spec"]["minReplicaCount"] <= obj["spec"]["maxReplicaCount"]


# -- compose --------------------------------------------------------------------------------------------


def test_compose_commands_and_env() -> None:
    services = compose()["services"]
    for name in SERVICES:
        assert module_of(services[name]["command"]) == f"services.{name}"
    for name, svc in services.items():
        command = svc.get("command")
        if command and command[0] == "python":
            module = module_of(command)
            assert module_exists(module), f"compose service {name}: no module {module}"
        if "build" not in svc:
            continue  # third-party images (postgres, ...) have their own variables
        env = svc.get("environment", {})
        assert set(env) <= DOCUMENTED_ENV, (name, set(env) - DOCUMENTED_ENV)
    assert module_of(services["setup"]["command"]) == "shared.setup"
    assert services["setup"]["environment"]["NAMESPACE"] == TOPOLOGY.namespace


def test_compose_ordering_and_exposure() -> None:
    services = compose()["services"]
    for name in SERVICES:
        deps = services[name]["depends_on"]
        assert deps["setup"]["condition"] == "service_completed_successfully", name
        assert services[name]["build"]["target"] == "runtime", name
    for name in ("nats", "postgres", "redis"):
        assert "healthcheck" in services[name], name
    for port in services["nats"]["ports"]:
        if str(port).endswith(":8222"):
            assert str(port).startswith("127.0.0.1:"), "NATS monitoring must not be exposed"
    for name in ("catalog-sim", "resend-fake"):
        assert services[name]["build"]["target"] == "dev"
    assert "resend-fake" in [n for n, s in services.items() if s.get("profiles")]
    assert services["setup"]["environment"]["EMAIL_BACKEND"].startswith("${EMAIL_BACKEND:-outbox")


# -- Dockerfile -----------------------------------------------------------------------------------------


def dockerfile_stages() -> list[tuple[str, list[str]]]:
    """(stage name, instructions) in order; continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    instructions = [
        " ".join(part.strip() for part in item.split("\\\n"))
        for item in re.split(r"(?<!\\)\n", "\n".join(lines))
        if item.strip()
    ]
    stages: list[tuple[str, list[str]]] = []
    for instruction in instructions:
        if instruction.upper().startswith("FROM "):
            match = re.search(r"\bAS\s+(\S+)\s*$", instruction, re.IGNORECASE)
            stages.append((match.group(1) if match else str(len(stages)), [instruction]))
        elif stages:
            stages[-1][1].append(instruction)
    return stages


def test_dockerfile_production_stage_has_no_devtools() -> None:
    stages = dict(dockerfile_stages())
    final_name, final = dockerfile_stages()[-1]
    # Stages the production image is built from: FROM parents and COPY --from sources, transitively.
    needed, todo = set(), [final_name]
    while todo:
        name = todo.pop()
        if name in needed or name not in stages:
            continue
        needed.add(name)
        for instruction in stages[name]:
            todo += re.findall(r"^FROM\s+(\S+)", instruction, re.IGNORECASE)
            todo += re.findall(r"--from=(\S+)", instruction)
    assert "dev" not in needed
    for name in needed:
        for instruction in stages[name]:
            if instruction.upper().startswith(("COPY", "ADD")):
                assert "devtools" not in instruction, instruction
                assert not re.search(r"COPY\s+(--\S+\s+)*\.\s", instruction), (
                    f"copies the whole context: {instruction}"
                )
            assert "[dev]" not in instruction, instruction
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    joined = "\n".join(final)
    assert "LOG_FORMAT=json" in joined
    assert re.search(r"^USER\s+(?!0\b|root\b)", joined, re.MULTILINE), "runs as non-root"
    assert 'CMD ["python", "-m", "services.gateway"]' in joined


def test_dev_stage_carries_devtools() -> None:
    stages = dict(dockerfile_stages())
    assert any("devtools" in instruction for instruction in stages["dev"] if instruction.startswith("COPY"))
