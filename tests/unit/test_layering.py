"""The house's layering: stages depend forward only, steps import no steps, no import cycles, light configs."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]

# The order stages build on each other; a module may import its own stage and earlier ones only.
STAGES = ["data", "train", "export", "compress", "registry", "score", "monitor", "explain"]
# Shared helpers every stage may use; they import no stage.
SHARED = {"tasks.caching", "tasks.errors", "tasks.events", "tasks.forms", "tasks.hashing", "tasks.host", "tasks.tables"}
# The modules allowed to import boto3: the S3 back end of the artifact store, and the s3:// data
# source (the data stage comes before the registry, so it cannot read through the store).
S3_CLIENTS = {"tasks.registry.store", "tasks.data.remote"}


def _module(path: Path) -> str:
    parts = path.relative_to(PROJECT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = sorted((PROJECT / "tasks").rglob("*.py")) + sorted((PROJECT / "flows").rglob("*.py"))
    modules = {_module(f): f for f in files}
    return {
        name: {m for m in _imports(path) if m in modules and m != name}
        for name, path in modules.items()
    }


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tasks" and len(parts) > 2 else None


def test_every_module_of_tasks_belongs_to_a_known_stage_or_is_shared() -> None:
    top = [m for m in _graph() if m.startswith("tasks.") and m.count(".") == 1]
    strays = [m for m in top if m not in SHARED and m.split(".")[1] not in STAGES]
    strays += [m for m in _graph() if _stage(m) and _stage(m) not in STAGES]
    assert strays == []


def test_stages_depend_forward_only() -> None:
    back_edges = []
    for module, imported in _graph().items():
        for target in imported:
            if module in SHARED and target.startswith("tasks."):
                back_edges.append((module, target))
            elif _stage(module) and _stage(target) and STAGES.index(_stage(target)) > STAGES.index(_stage(module)):
                back_edges.append((module, target))
            elif module.startswith("tasks") and target.startswith("flows"):
                back_edges.append((module, target))
    assert back_edges == []


def test_no_steps_module_is_imported_by_tasks() -> None:
    # Flows wire steps; a stage's steps and pure modules use pure modules only.
    offenders = [(m, t) for m, imported in _graph().items() if m.startswith("tasks.") for t in imported if t.endswith(".steps")]
    assert offenders == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target] if target in path else [node, target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_pure_modules_import_neither_prefect_nor_boto3() -> None:
    # Read from the source, function-level imports included; pure modules import no steps (above),
    # so what they reach of this project is pure too.
    files = {_module(f): f for f in (PROJECT / "tasks").rglob("*.py")}
    pure = {m: f for m, f in files.items() if not m.endswith(".steps") and m not in S3_CLIENTS}
    assert len(pure) > 40
    orchestration = ("prefect", "boto3", "botocore")
    offenders = sorted(
        (module, name)
        for module, path in pure.items()
        for name in _imports(path)
        if name.split(".")[0] in orchestration
    )
    assert offenders == []


def test_flow_configs_import_no_heavy_library() -> None:
    # What `prefect deploy` and the UI form need: the configs, not the numerics behind them.
    code = (
        "import sys, flows.config\n"
        "heavy = ('torch', 'lightning', 'numpy', 'pandas', 'prefect', 'onnx', 'openvino', 'evidently', 'PIL', 'sklearn')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PROJECT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_flows_that_use_a_release_import_no_training_library() -> None:
    # Scoring, monitoring, explaining and rolling back run often and start fast: they need ONNX
    # Runtime or OpenVINO when they run a variant, never torch or Lightning to start.
    code = (
        "import sys, flows.score, flows.monitor, flows.feedback, flows.explain, flows.rollback, flows.versions\n"
        "print(sorted(m for m in ('torch', 'lightning', 'torchvision', 'nncf') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PROJECT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_server_uses_pure_modules_only_and_never_a_training_framework() -> None:
    # serve/ builds on the registry and scoring stages' pure modules; it never trains or orchestrates.
    files = {_module(f): f for f in (PROJECT / "serve").rglob("*.py")}
    forbidden = ("prefect", "boto3", "botocore", "torch", "lightning", "torchvision", "nncf", "flows")
    offenders = sorted(
        (module, name)
        for module, path in files.items()
        for name in _imports(path)
        if name.split(".")[0] in forbidden or name.endswith(".steps")
    )
    assert offenders == []
    code = (
        "import sys, serve.app, serve.__main__\n"
        "print(sorted(m for m in ('torch', 'lightning', 'prefect', 'nncf') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PROJECT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
