"""Offline checks of the development deployment files: compose.yaml and the Dockerfile, and the settings'
documentation. (The Kubernetes manifests: test_manifests.py.)

No Docker needed. compose.yaml is validated against the Compose Specification's JSON schema (vendored
in check-jsonschema); names that also live in code (settings, service modules) are checked against the
code, the one source of truth.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

try:
    import jsonschema
except ImportError as exc:  # pragma: no cover - a broken environment
    raise ImportError(
        f"{exc.name} is missing: install the development tools (`make install`, pyproject's dev extra)"
    ) from exc

from shared.settings import Settings
from shared.streams import Topology

ROOT = Path(__file__).resolve().parents[2]

SERVICES = ("scheduler", "scraper", "detector", "notifier", "gateway")
WORKERS = ("scheduler", "scraper", "detector", "notifier")
INFRA = ("nats", "postgres", "redis", "setup", "catalog-sim")
# Host ports of the workers' HEALTH_PORT (compose header, README).
HEALTH_HOST_PORTS = {"scheduler": 9101, "scraper": 9102, "detector": 9103, "notifier": 9104}
CONTAINER_HEALTH_PORT = 9100
TOPOLOGY = Topology("pmc")

Doc = dict[str, Any]


def settings_env() -> frozenset[str]:
    return frozenset(name.upper() for name in Settings.__struct_fields__)


@cache
def compose() -> Doc:
    with (ROOT / "compose.yaml").open(encoding="utf-8") as fh:
        doc = yaml.safe_load(fh)
    assert isinstance(doc, dict)
    return doc


def services() -> dict[str, Doc]:
    found: dict[str, Doc] = compose()["services"]
    return found


def compose_header() -> str:
    lines = (ROOT / "compose.yaml").read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines:
        if not line.startswith("#"):
            break
        header.append(line)
    return "\n".join(header)


def module_of(command: list[str]) -> str:
    assert command[:2] == ["python", "-m"], f"expected `python -m <module>`, got {command}"
    return command[2]


def module_exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return (path / "__main__.py").is_file() or path.with_suffix(".py").is_file()


def published(port: str) -> tuple[str, str, str]:
    """(host address, host port with its ${...:-default}, container port) of a short port syntax."""
    match = re.fullmatch(r"(127\.0\.0\.1):(\$\{[A-Z_]+:-\d+\}|\d+):(\d+)", port)
    assert match, f"publish as 127.0.0.1:<host>:<container>, got {port!r}"
    return match.group(1), match.group(2), match.group(3)


def default_of(host_port: str) -> int:
    return int(host_port.rsplit("-", 1)[-1].rstrip("}")) if host_port.startswith("${") else int(host_port)


# -- settings are documented ----------------------------------------------------------------------------


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", readme, re.MULTILINE))
    missing = settings_env() - documented
    assert not missing, f"README.md's configuration table lacks {sorted(missing)}"


# -- compose --------------------------------------------------------------------------------------------


def test_compose_matches_the_compose_specification() -> None:
    try:
        vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        pytest.fail("check-jsonschema is missing (its vendored Compose schema): install the dev extra")
    schema = json.loads((vendor / "compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [
        f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(compose())
    ]
    assert not errors, "compose.yaml:\n" + "\n".join(errors)


def test_compose_commands_and_env() -> None:
    svcs = services()
    for name in SERVICES:
        assert module_of(svcs[name]["command"]) == f"services.{name}"
    assert module_of(svcs["setup"]["command"]) == "shared.setup"
    for name, svc in svcs.items():
        command = svc.get("command")
        if command and command[0] == "python":
            assert module_exists(module_of(command)), f"compose service {name}: no module {command[2]}"
        if svc.get("build", {}).get("target") != "runtime":
            continue  # third-party images and the dev fakes have their own options
        env = svc["environment"]
        assert set(env) <= settings_env(), (name, set(env) - settings_env())
        assert env["NAMESPACE"] == TOPOLOGY.namespace
        # Explicit, never inferred from RESEND_API_KEY: outbox unless the developer asks for resend.
        assert env["EMAIL_BACKEND"] == "${EMAIL_BACKEND:-outbox}"
        assert env["HEALTH_PORT"] == str(CONTAINER_HEALTH_PORT)
        assert env["NATS_STREAM_REPLICAS"] == "1", "one NATS server in compose"


def enabled(profiles: set[str]) -> set[str]:
    """Services in the model with these profiles active (no `profiles:` = always)."""
    return {
        name for name, svc in services().items() if not svc.get("profiles") or profiles & set(svc["profiles"])
    }


def startable(profiles: set[str], targets: set[str]) -> None:
    """`docker compose [--profile ...] up [targets]` resolves: every dependency is in the model."""
    # Naming a service on the command line activates its profiles.
    active = profiles | {p for name in targets for p in services()[name].get("profiles", [])}
    model = enabled(active)
    todo, seen = list(targets or model), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in model, f"profiles {sorted(active)}: {name} is needed but not enabled"
        todo += list(services()[name].get("depends_on", {}))


def test_compose_profiles() -> None:
    svcs = services()
    assert enabled(set()) == set(), "plain `docker compose up` starts nothing: a profile says what"
    assert enabled({"infra"}) == set(INFRA)
    assert enabled({"all"}) == set(INFRA) | set(SERVICES)
    assert enabled({"all", "resend"}) == set(INFRA) | set(SERVICES) | {"resend-fake"}
    for name in SERVICES:
        assert name in svcs[name]["profiles"], f"{name} has its own profile"
        assert "infra" not in svcs[name]["profiles"]
    startable({"infra"}, set())
    startable({"all"}, set())
    startable({"all", "resend"}, set())
    for name in SERVICES:
        startable(set(), {name})  # `docker compose up scraper`
        startable({"infra", name}, set())  # `docker compose --profile infra --profile scraper up`


def test_compose_ordering_and_exposure() -> None:
    svcs = services()
    for name in SERVICES:
        deps = svcs[name]["depends_on"]
        assert deps["setup"]["condition"] == "service_completed_successfully", name
        assert svcs[name]["build"]["target"] == "runtime", name
    assert svcs["setup"]["build"]["target"] == "runtime"
    for name in ("nats", "postgres", "redis", *SERVICES):
        assert "healthcheck" in svcs[name], name
    for name in ("catalog-sim", "resend-fake"):
        assert svcs[name]["build"]["target"] == "dev"
    for svc in svcs.values():
        for port in svc.get("ports", []):
            published(str(port))  # every published port is bound to 127.0.0.1
    nats_ports = {published(str(port))[2]: published(str(port))[1] for port in svcs["nats"]["ports"]}
    assert "8222" in nats_ports, "NATS monitoring on 127.0.0.1:8222"
    for name in ("scraper", "notifier"):
        assert svcs[name]["stop_grace_period"] == "60s", name


def test_compose_health_ports() -> None:
    svcs = services()
    for name, host_port in HEALTH_HOST_PORTS.items():
        ports = [published(str(port)) for port in svcs[name]["ports"]]
        assert [(default_of(host), int(container)) for _, host, container in ports] == [
            (host_port, CONTAINER_HEALTH_PORT)
        ], name
        check = " ".join(svcs[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{CONTAINER_HEALTH_PORT}/readyz" in check, name
    gateway = [published(str(port)) for port in svcs["gateway"]["ports"]]
    assert [(default_of(host), int(container)) for _, host, container in gateway] == [(8000, 8000)]
    assert "http://127.0.0.1:8000/readyz" in " ".join(svcs["gateway"]["healthcheck"]["test"])


def test_compose_header_is_accurate() -> None:
    header = compose_header()
    profiles = {p for svc in services().values() for p in svc.get("profiles", [])}
    for profile in profiles - set(SERVICES):
        assert f"--profile {profile}" in header, f"the header does not show the {profile} profile"
    for name, port in HEALTH_HOST_PORTS.items():
        assert re.search(rf"{name}\s+:{port}\b", header), f"the header does not list {name}'s :{port}"
    assert "127.0.0.1:8222" in header
    for svc in services().values():
        for port in svc.get("ports", []):
            variable = re.match(r"\$\{([A-Z_]+):-", published(str(port))[1])
            if variable:
                assert variable.group(1) in header, f"the header does not name {variable.group(1)}"
    for command in re.findall(r"python -m (\S+)", header):
        assert module_exists(command), f"the header runs a missing module {command}"


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


@pytest.mark.parametrize("path", [ROOT / "compose.yaml", *sorted((ROOT / "deploy").rglob("*.yaml"))])
def test_yaml_parses(path: Path) -> None:
    with path.open(encoding="utf-8") as fh:
        docs = [doc for doc in yaml.safe_load_all(fh) if doc is not None]
    assert docs, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in docs), path
