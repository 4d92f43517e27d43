"""Checks of deploy/ that run without a Docker engine or a cluster.

Every YAML file parses; every container command is a real `backfill` verb with options it
accepts; every environment variable handed to a container is one the code reads; compose and
Kubernetes run the same components with the same verbs; the properties the deployment relies on
(probes, grace periods, noeviction, secrets by reference, autoscaling arithmetic) hold; every
metric the dashboard and the autoscaler read is one the code defines, scraped where it is
served.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from scheduler.cli import app
from shared import metrics
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
HPA_COMPONENT = K8S / "components" / "hpa-instead-of-keda"
APP_COMPONENTS = {"migrate", "api", "scheduler", "worker", "flower"}
APP_IMAGE = "postcall-backfill"

# Values that must reach containers by reference (compose: `${…}` from the environment;
# Kubernetes: secretKeyRef), never as literals in a file.
SECRET_NAMES = {"DATABASE_URL", "BROKER_URL", "ANTHROPIC_API_KEY", "FLOWER_BASIC_AUTH",
                "POSTGRES_PASSWORD", "REDIS_PASSWORD", "REDISCLI_AUTH", "BACKFILL_SECRET_KEY"}
# Read by third-party images, not by our code: the official postgres image's entrypoint
# creates the database and its owner from these; our redis command line expands
# REDIS_PASSWORD, and redis-cli (its health check) authenticates with REDISCLI_AUTH.
THIRD_PARTY_ENV = {
    "postgres": {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"},
    "redis": {"REDIS_PASSWORD", "REDISCLI_AUTH"},
    "prometheus": set(),
}
# Compose interpolation only, never seen by a container: which image to run, where to publish
# ports, and the servers' sizes. Kept out of the BACKFILL_ namespace, which is the settings'.
COMPOSE_ONLY_ENV = {"APP_IMAGE", "PUBLISH_ADDRESS", "POSTGRES_MAX_CONNECTIONS",
                    "REDIS_MAXMEMORY"}
# The Dockerfile's ENV: the interpreter's, pip's and the shell's own variables.
IMAGE_RUNTIME_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PIP_NO_CACHE_DIR",
                     "PIP_DISABLE_PIP_VERSION_CHECK"}
_INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


# ---------------------------------------------------------------- loading


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


def load_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def manifests(directory: Path) -> list[dict[str, Any]]:
    """The objects a kustomization lists (its own files, not other kustomizations)."""
    found: list[dict[str, Any]] = []
    for entry in kustomization(directory).get("resources", []):
        path = directory / entry
        if path.is_file():
            found += load_documents(path)
    return found


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def kustomization(directory: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return document


def pod_spec(manifest: Mapping[str, Any]) -> dict[str, Any] | None:
    if manifest.get("kind") not in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
        return None
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


def containers(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(manifest) or {}
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def component(manifest: Mapping[str, Any]) -> str:
    return str(manifest["metadata"]["labels"]["app.kubernetes.io/component"])


def workloads(directory: Path) -> dict[str, dict[str, Any]]:
    return {component(m): m for m in manifests(directory) if pod_spec(m) is not None}


def config_literals(directory: Path) -> dict[str, str]:
    literals: dict[str, str] = {}
    for generator in kustomization(directory).get("configMapGenerator", []):
        for literal in generator.get("literals", []):
            key, _, value = literal.partition("=")
            literals[key] = value
    return literals


def app_services() -> dict[str, dict[str, Any]]:
    """Compose services built from our image that always run (profiles are optional extras)."""
    return {name: service for name, service in compose()["services"].items()
            if "build" in service and not service.get("profiles")}


# ---------------------------------------------------------------- checkers


def interpolate(value: str) -> str:
    """Compose interpolation with defaults taken, required values shown as a placeholder."""
    def replace(match: re.Match[str]) -> str:
        return match.group(3) if match.group(2) in {"-", ":-"} else "VALUE"
    return _INTERPOLATION.sub(replace, value).replace("$$", "$")


def interpolated_names(text: str) -> set[str]:
    return {match.group(1) for match in _INTERPOLATION.finditer(text)}


def strings_in(value: Any) -> list[str]:
    """Every key and scalar of a parsed document, as text (comments are gone by then)."""
    if isinstance(value, Mapping):
        return [text for k, v in value.items() for text in (str(k), *strings_in(v))]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return [] if value is None else [str(value)]


def backfill_argv_problem(argv: list[str]) -> str | None:
    """None if `backfill ARGV` names a real verb (or group and subcommand) and its options
    parse; else what is wrong. Nothing runs: click only parses."""
    # Typer bundles its own click: groups are recognised by their `commands`, and its
    # usage errors derive from typer.TyperException.
    command: Any = typer.main.get_command(app)
    args = list(argv)
    path = "backfill"
    while isinstance(getattr(command, "commands", None), dict):
        if not args:
            return f"{path}: no verb"
        name = args.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            return f"{path}: unknown verb {name!r}"
        command, path = sub, f"{path} {name}"
    try:
        context = command.make_context(path, args)
    except typer.TyperException as exc:
        return f"{path}: {exc}"
    # `worker` and `flower` hand unknown options on to celery, where a typo would surface
    # only at start-up: deploy files use declared options only.
    if context.args:
        return f"{path}: options it does not declare: {context.args}"
    return None


def settings_env_names() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add((field.alias or name).upper())
    return names


def direct_env_reads(root: Path = REPO) -> set[str]:
    """Names the code reads with os.environ.get / os.environ[...] / os.getenv (not writes)."""
    names: set[str] = set()
    for package in ("shared", "worker", "scheduler"):
        for path in (root / package).rglob("*.py"):
            names |= env_reads_in(ast.parse(path.read_text(encoding="utf-8")))
    return names


def env_reads_in(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_env_getter(node.func) and node.args:
            names |= _literal(node.args[0])
        elif (isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load)
              and ast.unparse(node.value) == "os.environ"):
            names |= _literal(node.slice)
    return names


def _is_env_getter(func: ast.expr) -> bool:
    return ast.unparse(func) in {"os.environ.get", "os.getenv", "environ.get", "getenv"}


def _literal(node: ast.expr) -> set[str]:
    return {node.value} if isinstance(node, ast.Constant) and isinstance(node.value, str) else set()


def code_env_names() -> set[str]:
    return settings_env_names() | direct_env_reads()


def unknown_names(used: set[str], known: set[str]) -> list[str]:
    return sorted(used - known)


def compose_env(service: Mapping[str, Any]) -> dict[str, Any]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return dict(environment)


def k8s_env_names(manifest: Mapping[str, Any], config: Mapping[str, str]) -> set[str]:
    names: set[str] = set()
    for container in containers(manifest):
        names |= {entry["name"] for entry in container.get("env", [])}
        if any("configMapRef" in source for source in container.get("envFrom", [])):
            names |= set(config)
    return names


def topology_differences(compose_side: Mapping[str, list[str]],
                         k8s_side: Mapping[str, list[str]]) -> list[str]:
    """What differs between two {component: argv} maps: missing components or other verbs."""
    problems = [f"{name}: only in compose" for name in sorted(set(compose_side) - set(k8s_side))]
    problems += [f"{name}: only in k8s" for name in sorted(set(k8s_side) - set(compose_side))]
    for name in sorted(set(compose_side) & set(k8s_side)):
        if verb_of(compose_side[name]) != verb_of(k8s_side[name]):
            problems.append(f"{name}: compose runs {compose_side[name]}, "
                            f"k8s runs {k8s_side[name]}")
    return problems


def verb_of(argv: list[str]) -> list[str]:
    """The verb words: `db upgrade` is two, `worker --pool threads` one."""
    return list(argv[:2]) if argv[:1] == ["db"] else list(argv[:1])


def longest_task_s(config: Mapping[str, str]) -> float:
    """One LLM call plus the claim before it and the write after it, each statement-bounded."""
    defaults = Settings()
    llm = float(config.get("BACKFILL_LLM_TIMEOUT_S", defaults.llm_timeout_s))
    statement_ms = float(config.get("BACKFILL_DB_STATEMENT_TIMEOUT_MS",
                                    defaults.db_statement_timeout_ms))
    return llm + 2 * statement_ms / 1000


def duration_s(value: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", value))


def dockerfile_stages() -> list[list[str]]:
    """Instruction lines per stage, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[str]] = [[]]
    for line in (raw.strip() for raw in text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def dockerfile_env_names() -> set[str]:
    names: set[str] = set()
    for stage in dockerfile_stages():
        for line in stage:
            if line.upper().startswith("ENV "):
                names |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", line[4:]))
    return names


def kubectl_kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# ---------------------------------------------------------------- checkers fail when they should


def test_verb_checker_refuses_misspelt_verbs_and_options() -> None:
    assert backfill_argv_problem(["worker", "--pool", "threads"]) is None
    assert backfill_argv_problem(["db", "upgrade"]) is None
    assert "unknown verb 'wroker'" in (backfill_argv_problem(["wroker"]) or "")
    assert "unknown verb 'upgrad'" in (backfill_argv_problem(["db", "upgrad"]) or "")
    assert "no verb" in (backfill_argv_problem(["db"]) or "")
    assert "--hots" in (backfill_argv_problem(["scheduler", "--hots", "x"]) or "")
    assert "--adress" in (backfill_argv_problem(["flower", "--adress", "x"]) or "")


def test_env_checker_sees_names_nothing_reads() -> None:
    known = code_env_names()
    assert {"DATABASE_URL", "BACKFILL_WORKER_CONCURRENCY", "BACKFILL_LEADER_LOCK_KEY"} <= known
    assert unknown_names({"BACKFILL_WORKER_CONCURENCY", "DATABASE_URL"}, known) == [
        "BACKFILL_WORKER_CONCURENCY"]


def test_direct_reads_are_found_and_writes_are_not() -> None:
    tree = ast.parse("import os\nos.environ.get('A')\nos.environ['B']\nos.getenv('C')\n"
                     "os.environ['D'] = 'x'\n")
    assert env_reads_in(tree) == {"A", "B", "C"}


def test_topology_checker_sees_missing_components_and_other_verbs() -> None:
    compose_side = {"api": ["api"], "worker": ["worker"], "migrate": ["db", "upgrade"]}
    k8s_side = {"api": ["api", "--port", "1"], "worker": ["scheduler"], "flower": ["flower"]}
    assert topology_differences(compose_side, k8s_side) == [
        "migrate: only in compose", "flower: only in k8s",
        "worker: compose runs ['worker'], k8s runs ['scheduler']"]


def test_interpolation_takes_defaults() -> None:
    assert interpolate("${A:-32}/${B:?say}/${C}/$$HOME") == "32/VALUE/VALUE/$HOME"
    assert interpolated_names("${A:-1} $${NOT} ${B:?x}") == {"A", "B"}


# ---------------------------------------------------------------- every file


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_parses_into_mappings(path: Path) -> None:
    documents = load_documents(path)
    assert documents, f"{path} is empty"
    assert all(isinstance(doc, dict) for doc in documents)


def test_every_kubernetes_file_is_in_a_kustomization() -> None:
    listed = {(path.parent / entry).resolve() for path in K8S.rglob("kustomization.yaml")
              for entry in kustomization(path.parent).get("resources", [])}
    assert all(path.exists() for path in listed)
    for path in K8S.rglob("*.yaml"):
        if path.name != "kustomization.yaml":
            assert path.resolve() in listed, f"{path} is in no kustomization"


# ---------------------------------------------------------------- verbs


def test_compose_commands_are_backfill_verbs() -> None:
    for name, service in compose()["services"].items():
        if "build" not in service:
            continue
        argv = [interpolate(str(arg)) for arg in service["command"]]
        assert backfill_argv_problem(argv) is None, (name, backfill_argv_problem(argv))


def test_compose_health_checks_that_call_backfill_are_verbs() -> None:
    for name, service in compose()["services"].items():
        test = service.get("healthcheck", {}).get("test", [])
        if test[1:2] == ["backfill"]:
            assert backfill_argv_problem(test[2:]) is None, (name, test)


def test_kubernetes_commands_and_exec_probes_are_backfill_verbs() -> None:
    for manifest in manifests(BASE):
        for container in containers(manifest):
            assert "command" not in container, "the image's entry point is `backfill`"
            assert backfill_argv_problem(container["args"]) is None, container["args"]
            for probe in _probes(container):
                command = probe.get("exec", {}).get("command", [])
                if command:
                    assert command[0] == "backfill", command
                    assert backfill_argv_problem(command[1:]) is None, command


def _probes(container: Mapping[str, Any]) -> list[dict[str, Any]]:
    kinds = ("startupProbe", "readinessProbe", "livenessProbe")
    return [container[kind] for kind in kinds if kind in container]


def test_dockerfile_entry_point_is_the_backfill_script() -> None:
    assert 'ENTRYPOINT ["backfill"]' in dockerfile_stages()[-1]
    assert pyproject()["project"]["scripts"]["backfill"] == "scheduler.cli:app"


# ---------------------------------------------------------------- environment variables


def test_app_containers_in_compose_get_only_variables_the_code_reads() -> None:
    known = code_env_names()
    for name, service in compose()["services"].items():
        allowed = known if "build" in service else THIRD_PARTY_ENV[name]
        assert unknown_names(set(compose_env(service)), allowed) == [], name


def test_compose_interpolates_only_known_variables() -> None:
    known = code_env_names() | COMPOSE_ONLY_ENV | set().union(*THIRD_PARTY_ENV.values())
    used = interpolated_names("\n".join(strings_in(compose())))
    assert unknown_names(used, known) == []
    assert not {n for n in COMPOSE_ONLY_ENV if n.startswith("BACKFILL_")}


def test_env_example_names_only_known_variables() -> None:
    known = code_env_names() | COMPOSE_ONLY_ENV | set().union(*THIRD_PARTY_ENV.values())
    text = (DEPLOY / "env.example").read_text()
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))
    assert names and unknown_names(names, known) == []
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


def test_kubernetes_containers_get_only_variables_the_code_reads() -> None:
    known = code_env_names()
    for directory in (BASE, OVERLAY):
        config = {**config_literals(BASE), **config_literals(directory)}
        assert unknown_names(set(config), known) == [], directory
        for manifest in manifests(BASE):
            assert unknown_names(k8s_env_names(manifest, config), known) == []


def test_dockerfile_sets_only_runtime_or_settings_variables() -> None:
    assert unknown_names(dockerfile_env_names(), IMAGE_RUNTIME_ENV | code_env_names()) == []


# ---------------------------------------------------------------- secrets


def test_compose_secrets_come_from_the_environment() -> None:
    for name, service in compose()["services"].items():
        for key, value in compose_env(service).items():
            if key in SECRET_NAMES:
                assert value is None or str(value).startswith("${"), (name, key)


def test_kubernetes_secrets_are_referenced_never_inlined() -> None:
    for directory in (BASE, OVERLAY):
        assert "secretGenerator" not in kustomization(directory)
        for manifest in manifests(directory):
            assert manifest.get("kind") != "Secret", manifest["metadata"]
            for container in containers(manifest):
                assert not any("secretRef" in s for s in container.get("envFrom", []))
                for entry in container.get("env", []):
                    if entry["name"] in SECRET_NAMES:
                        assert "value" not in entry, entry
                        assert entry["valueFrom"]["secretKeyRef"]["name"] == "backfill-secrets"


# ---------------------------------------------------------------- topology


def test_compose_and_kubernetes_run_the_same_components_with_the_same_verbs() -> None:
    compose_side = {name: [str(a) for a in s["command"]] for name, s in app_services().items()}
    k8s_side = {name: m["spec"]["template"]["spec"]["containers"][0]["args"]
                for name, m in workloads(BASE).items()}
    assert topology_differences(compose_side, k8s_side) == []
    assert set(compose_side) == APP_COMPONENTS


def test_the_llm_stand_in_is_an_optional_compose_profile() -> None:
    stub = compose()["services"]["llm-stub"]
    assert stub["profiles"] == ["stub"]
    assert stub["command"][0] == "llm-stub"


# ---------------------------------------------------------------- compose properties


def test_every_long_running_compose_service_has_a_health_check() -> None:
    services = compose()["services"]
    for name, service in services.items():
        if service.get("restart") == "no":
            _assert_awaited_to_completion(name, services)
        else:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"


def _assert_awaited_to_completion(one_shot: str, services: Mapping[str, Any]) -> None:
    waiting = [name for name, s in services.items()
               if (s.get("depends_on") or {}).get(one_shot, {}).get("condition")
               == "service_completed_successfully"]
    assert waiting, f"{one_shot} is a one-shot nobody waits for"


def test_redis_never_evicts_messages() -> None:
    command = " ".join(compose()["services"]["redis"]["command"])
    assert "--maxmemory-policy noeviction" in command


def test_worker_uses_threads_and_concurrency_from_the_environment() -> None:
    worker = compose()["services"]["worker"]
    assert worker["command"][:3] == ["worker", "--pool", "threads"]
    assert "--concurrency" not in worker["command"]
    assert compose_env(worker)["BACKFILL_WORKER_CONCURRENCY"].startswith(
        "${BACKFILL_WORKER_CONCURRENCY")


def test_compose_worker_grace_covers_the_longest_task() -> None:
    worker = compose()["services"]["worker"]
    assert duration_s(worker["stop_grace_period"]) >= longest_task_s({})


def test_flower_basic_auth_comes_from_the_environment() -> None:
    flower = compose()["services"]["flower"]
    assert compose_env(flower)["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


# ---------------------------------------------------------------- kubernetes properties


def test_deployments_have_probes_resources_and_a_non_root_user() -> None:
    for name, manifest in workloads(BASE).items():
        spec = pod_spec(manifest) or {}
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["enableServiceLinks"] is False, name
        for container in containers(manifest):
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), name
            if manifest["kind"] == "Deployment":
                assert {"readinessProbe", "livenessProbe"} <= set(container), name


def test_http_components_probe_healthz() -> None:
    api = workloads(BASE)["api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_worker_probes_do_not_depend_on_flower() -> None:
    worker = workloads(BASE)["worker"]["spec"]["template"]["spec"]["containers"][0]
    for probe in _probes(worker):
        assert probe["exec"]["command"][:3] == ["backfill", "probe", "worker"]


def test_worker_grace_period_covers_the_longest_task() -> None:
    config = config_literals(BASE)
    grace = workloads(BASE)["worker"]["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"]
    visibility = float(config.get("BACKFILL_VISIBILITY_TIMEOUT_S",
                                  Settings().visibility_timeout_s))
    assert longest_task_s(config) <= grace < visibility


def test_worker_replicas_belong_to_the_autoscaler() -> None:
    worker = workloads(BASE)["worker"]
    assert "replicas" not in worker["spec"]
    budgets = [m for m in manifests(BASE) if m["kind"] == "PodDisruptionBudget"]
    assert "worker" in {b["spec"]["selector"]["matchLabels"][
        "app.kubernetes.io/component"] for b in budgets}


def test_scheduler_runs_as_two_replicas() -> None:
    assert workloads(BASE)["scheduler"]["spec"]["replicas"] >= 2


def test_scaled_object_watches_the_celery_queue() -> None:
    scaled = next(m for m in manifests(BASE) if m["kind"] == "ScaledObject")
    trigger = scaled["spec"]["triggers"][0]
    queue = config_literals(BASE).get("BACKFILL_QUEUE", Settings().queue_name)
    assert scaled["spec"]["scaleTargetRef"]["name"] == workloads(BASE)["worker"]["metadata"][
        "name"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == queue


def test_dispatch_window_lets_the_queue_show_a_backlog_for_every_replica() -> None:
    _assert_window_covers_replicas(manifests(BASE), config_literals(BASE))


def test_built_overlay_keeps_the_invariants() -> None:
    built = kubectl_kustomize(OVERLAY)
    config = next(m["data"] for m in built if m["kind"] == "ConfigMap")
    _assert_window_covers_replicas(built, config)
    for manifest in built:
        assert manifest["kind"] == "Namespace" or manifest["metadata"]["namespace"] == "backfill"
        for container in containers(manifest):
            assert container["image"].startswith("registry.example.com/"), container["image"]


def test_base_builds_with_kustomize() -> None:
    kinds = {m["kind"] for m in kubectl_kustomize(BASE)}
    assert {"Deployment", "Job", "ScaledObject", "PodDisruptionBudget", "ConfigMap"} <= kinds


def test_hpa_component_replaces_keda_with_the_same_target(tmp_path: Path) -> None:
    overlay = {"resources": [os.path.relpath(BASE, tmp_path)],
               "components": [os.path.relpath(HPA_COMPONENT, tmp_path)]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    built = kubectl_kustomize(tmp_path)
    assert not {"ScaledObject", "TriggerAuthentication"} & {m["kind"] for m in built}
    (hpa,) = [m for m in built if m["kind"] == "HorizontalPodAutoscaler"]
    scaled = next(m for m in manifests(BASE) if m["kind"] == "ScaledObject")
    target = hpa["spec"]["metrics"][0]["external"]["target"]["averageValue"]
    assert target == scaled["spec"]["triggers"][0]["metadata"]["listLength"]
    assert hpa["spec"]["maxReplicas"] == scaled["spec"]["maxReplicaCount"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "backfill-worker"


def _assert_window_covers_replicas(objects: list[dict[str, Any]],
                                   config: Mapping[str, str]) -> None:
    """The list holds W - N×C messages at most (one job, N replicas reserving C each), and
    KEDA asks for N+1 replicas only above N × listLength: W ≥ max × (C + listLength)."""
    scaled = next(m for m in objects if m["kind"] == "ScaledObject")
    target = int(scaled["spec"]["triggers"][0]["metadata"]["listLength"])
    window = int(config.get("BACKFILL_DISPATCH_WINDOW", Settings().dispatch_window))
    concurrency = int(config.get("BACKFILL_WORKER_CONCURRENCY", Settings().worker_concurrency))
    assert window >= scaled["spec"]["maxReplicaCount"] * (concurrency + target)


# ---------------------------------------------------------------- image


def test_image_is_multi_stage_slim_and_non_root_without_build_tools() -> None:
    stages = [stage for stage in dockerfile_stages() if stage and stage[0].startswith("FROM")]
    assert len(stages) >= 2
    preamble = dockerfile_stages()[0]
    assert any(re.search(r"ARG PYTHON_IMAGE=python:[\d.]+-slim", line) for line in preamble)
    final = stages[-1]
    assert any(line.startswith("COPY --from=build") for line in final)
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    forbidden = re.compile(r"apt-get install|build-essential|\bgcc\b|pip install")
    assert not [line for line in final if forbidden.search(line)]


def test_image_copies_every_package_the_project_installs() -> None:
    copied = {line.split()[1].rstrip("/") for stage in dockerfile_stages()
              for line in stage if line.startswith("COPY ") and "--from" not in line}
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    assert packages and packages <= copied
    assert all((REPO / path).exists() for path in copied)
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert all(f"!{path}/" in ignored or f"!{path}" in ignored for path in copied)



# ---------------------------------------------------------------- metrics


DASHBOARD = DEPLOY / "grafana" / "backfill-dashboard.json"
PROMETHEUS = DEPLOY / "prometheus.yml"
_METRIC_NAME = re.compile(r"\bbackfill_[a-z_]+\b")


def exposed_metric_names() -> set[str]:
    """The sample names shared.metrics exposes (a counter `x` as `x_total`, a histogram as
    `x_bucket`, `x_count`, `x_sum`; gauges as themselves)."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, metrics.Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, metrics.Histogram):
            names |= {f"{value._name}_{suffix}" for suffix in ("bucket", "count", "sum")}
        elif isinstance(value, metrics.Gauge):
            names.add(value._name)
        elif isinstance(value, metrics.GaugeSpec):
            names.add(value.name)
    return names


def dashboard_queries() -> list[str]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in document["panels"]
            for target in panel.get("targets", [])]


def metric_port(argv: list[str]) -> int | None:
    return int(argv[argv.index("--metrics-port") + 1]) if "--metrics-port" in argv else None


def test_the_dashboard_queries_only_metrics_the_code_defines() -> None:
    queries = dashboard_queries()
    used = {name for query in queries for name in _METRIC_NAME.findall(query)}
    assert len(queries) >= 12 and used
    assert sorted(used - exposed_metric_names()) == []
    # What the issue asks the dashboard to show.
    for needed in ("backfill_sessions_total", "backfill_llm_requests_total",
                   "backfill_llm_request_duration_seconds_bucket", "backfill_llm_tokens_total",
                   "backfill_llm_cost_usd_total", "backfill_broker_queue_length",
                   "backfill_job_items"):
        assert needed in used, needed


def test_the_dashboard_takes_max_of_gauges_every_scheduler_reports() -> None:
    for query in dashboard_queries():
        for spec in metrics.SCRAPED_GAUGES:
            if spec.name in _METRIC_NAME.findall(query):
                assert re.search(rf"max(?: by \([a-z_, ]+\))? ?\({spec.name}\)", query), query


def test_the_autoscaling_docs_name_real_metrics() -> None:
    hpa = (HPA_COMPONENT / "worker-hpa.yaml").read_text(encoding="utf-8")
    named = set(_METRIC_NAME.findall(hpa))
    adapter_alias = {"backfill_queue_length"}  # prometheus-adapter's name for the series
    assert "backfill_broker_queue_length" in named
    assert sorted(named - adapter_alias - exposed_metric_names()) == []


def test_compose_prometheus_scrapes_the_ports_the_components_serve() -> None:
    services = compose()["services"]
    assert services["prometheus"]["profiles"] == ["metrics"]
    jobs = {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS.read_text())[
        "scrape_configs"]}
    served = {
        "backfill-api": int(services["api"]["command"][services["api"]["command"].index(
            "--port") + 1]),
        "backfill-scheduler": metric_port(services["scheduler"]["command"]),
        "backfill-worker": metric_port(services["worker"]["command"]),
    }
    assert set(jobs) == set(served)
    for name, port in served.items():
        (target,) = jobs[name]["dns_sd_configs"]
        assert target["port"] == port, name
        assert target["names"] == [name.removeprefix("backfill-")], name
    assert jobs["backfill-api"]["metrics_path"] == "/metrics"


def test_the_service_monitor_reaches_the_ports_the_pods_serve() -> None:
    objects = manifests(BASE)
    (monitor,) = [m for m in objects if m["kind"] == "ServiceMonitor"]
    selected = set(monitor["spec"]["selector"]["matchExpressions"][0]["values"])
    ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    pods = workloads(BASE)
    services = [m for m in objects if m["kind"] == "Service"
                and component(m) in selected]
    assert {component(s) for s in services} == selected
    for service in services:
        (port,) = [p for p in service["spec"]["ports"] if p["name"] in ports]
        target = pods[service["spec"]["selector"]["app.kubernetes.io/component"]]
        container = target["spec"]["template"]["spec"]["containers"][0]
        declared = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert port["targetPort"] in declared, service["metadata"]["name"]
        served = metric_port(container["args"])
        if port["targetPort"] == "metrics":
            assert declared["metrics"] == served, service["metadata"]["name"]


def test_the_operator_free_component_drops_only_the_service_monitor(tmp_path: Path) -> None:
    overlay = {"resources": [os.path.relpath(BASE, tmp_path)],
               "components": [os.path.relpath(K8S / "components" / "without-prometheus-operator",
                                              tmp_path)]}
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    built = kubectl_kustomize(tmp_path)
    kinds = [m["kind"] for m in built]
    assert "ServiceMonitor" not in kinds
    assert len(built) == len(kubectl_kustomize(BASE)) - 1
