"""Imports go one way: model → render (text) → topology → views → CLI and components, with
no cycle anywhere, and the pure core never imports Pulumi."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("scaling", "components", "benchmarks")

# Layer of each module prefix (longest prefix wins). A module may import its own layer or
# lower ones only.
LAYERS = {
    "scaling": 0,  # the package's own __init__
    "scaling.model": 0,
    "scaling.defaults": 0,
    "scaling.issues": 0,
    "scaling.rules": 0,
    "scaling.stackconfig": 0,
    "scaling.stackfiles": 0,
    "scaling.metrics.model": 0,
    # What each reading key is in PromQL: the alert rules and the Prometheus check share it.
    "scaling.metrics.queries": 0,  # the records sources produce and the advisor judges
    "scaling.render": 1,
    "scaling.advisor": 1,  # pure decisions over measurements; the alert rules share its table
    "scaling.topology": 2,
    "scaling.docker": 3,
    "scaling.kubernetes": 3,
    "scaling.local": 3,
    "scaling.exports": 3,
    # Sources, endpoints and history of the checker; its command sits with the CLI.
    "scaling.metrics": 3,
    "scaling.metrics.cli": 5,
    "scaling.safety": 3,
    "scaling.bundle": 4,
    "scaling.reference": 4,
    # Transitions: the plan is pure; the steps drive running phases (local runner, checker).
    "scaling.transition": 4,
    "scaling.transition.plan": 1,
    "scaling.transition.cli": 5,
    # The scaling API serves the checker's documents and the transitions over HTTP.
    "scaling.api": 5,
    "scaling.cli": 5,  # the CLI and the Pulumi components are the top: both use views
    "scaling.local.cli": 5,
    "components": 5,
    # Benchmarks run phases with the local runner; `sikka-scaling bench` calls them.
    "benchmarks": 5,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    matches = [p for p in LAYERS if module == p or module.startswith(p + ".")]
    assert matches, f"{module} belongs to no layer: add it to LAYERS"
    return LAYERS[max(matches, key=len)]


def imports_of(path: Path, module: str, modules: set[str] | None = None) -> set[str]:
    """What a module imports; ``from pkg import mod`` counts as importing ``pkg.mod``."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names}
            known = submodules & (modules or set())
            found.update(known or {target})
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for module, path in files.items():
        found = imports_of(path, module, set(files))
        edges[module] = {m for m in found if m in files and m != module}
    return edges


def test_imports_go_one_way() -> None:
    wrong = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in graph().items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    edges = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_the_pure_core_never_imports_pulumi() -> None:
    offenders = [
        module_name(path)
        for path in (ROOT / "scaling").rglob("*.py")
        if any(m.split(".")[0].startswith("pulumi") for m in imports_of(path, module_name(path)))
    ]
    assert not offenders


def test_a_layer_violation_is_caught() -> None:
    # The check itself can fail: the topology importing a view is reported.
    assert layer("scaling.topology.redis") < layer("scaling.docker")
    assert layer("scaling.local.cli") > layer("scaling.local.runner")
