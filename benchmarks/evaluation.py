"""What evaluating each stack under Pulumi's mock engine costs, against a floor program that
registers the same resources with nothing to compute.

    python -m benchmarks.evaluation [--repeats 7] [--sweep-repeats 3] [--no-cold]

For each stack (and growth/launch on Kubernetes) it first evaluates the real program once to
learn what it registers, then builds the floor program: the same StackReference read, the
same resources (the same provider classes, names and parents, in the order the real program
registered them), each custom resource given only its required inputs (placeholders), each
component registering no outputs, and no exports.
Both run in this process under the same mocks and stack config (``run_stack``), alternating
real and floor, ``--repeats`` rounds after a warm-up round; it prints min/median/max seconds
of each, the ratio of their medians, the ratio of their minima (the least disturbed by other
work on the machine) and the range of the per-round ratios. A sweep then
grows one size (growth: gateway replicas, Patroni read replicas; scale: Citus shards) and
prints seconds and seconds per resource, which stay flat when the cost is linear.

Import time is not in the ratio: both programs import pulumi and the same providers, which
a warm process has already imported. It is measured apart in fresh interpreters
(``--no-cold`` skips it): the providers' import, the program's own modules (the model, the
topology and the renderers), and a cold evaluation (one fresh process per program) of each.
Prints figures only; it asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import pickle
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import pulumi_docker  # noqa: F401  (the floor imports what the program does)
import pulumi_kubernetes as k8s
import pulumi_random  # noqa: F401
from pulumi.runtime.sync_await import _sync_await

from components.offline_preview import Registered, run_stack

# (label, stack, overrides)
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("launch", "launch", {}),
    ("growth", "growth", {}),
    ("scale", "scale", {}),
    ("launch/kubernetes", "launch", {"sikka:platform": "kubernetes"}),
    ("growth/kubernetes", "growth", {"sikka:platform": "kubernetes"}),
    # Citus (StackGres) and the HPAs need Kubernetes: on Docker, scale replicates instead.
    (
        "scale/docker",
        "scale",
        {
            "sikka:platform": "docker",
            "sikka:autoscaling": {"enabled": False},
            "sikka:postgres": {"mode": "replicated"},
        },
    ),
]

SWEEPS: list[tuple[str, str, Callable[[int], dict[str, Any]], tuple[int, ...]]] = [
    (
        "growth gateway.replicas",
        "growth",
        lambda n: {"sikka:gateway": {"replicas": n, "maxReplicas": n}},
        (2, 4, 8, 16),
    ),
    (
        "growth postgres.readReplicas",
        "growth",
        lambda n: {"sikka:postgres": {"readReplicas": n}},
        (1, 2, 4, 8, 15),
    ),
    ("scale postgres.shards", "scale", lambda n: {"sikka:postgres": {"shards": n}}, (1, 4, 16, 64)),
]


def resource_class(token: str) -> type[pulumi.CustomResource] | None:
    """The provider's class for a type token (``docker:index/container:Container`` →
    ``pulumi_docker.Container``, ``kubernetes:networking.k8s.io/v1:NetworkPolicy`` →
    ``pulumi_kubernetes.networking.v1.NetworkPolicy``); None for a custom resource kind."""
    package, module, name = token.split(":")
    path = [f"pulumi_{package}"]
    if not module.startswith("index"):  # index/container: the package's top level
        group, version = module.split("/")
        path += [group.split(".")[0], version]
    try:
        found: Any = importlib.import_module(".".join(path))
    except ModuleNotFoundError:
        return None
    found = getattr(found, name, None)
    if not (isinstance(found, type) and issubclass(found, pulumi.CustomResource)):
        return None
    if getattr(found, "pulumi_type", token) != token:  # older providers do not carry it
        return None
    return found


def _floor_resource(entry: Registered, opts: pulumi.ResourceOptions) -> pulumi.Resource:
    """``entry``'s type with trivial inputs: only its required ones, each a placeholder."""
    if not entry.custom:
        component = pulumi.ComponentResource(entry.type, entry.name, None, opts)
        component.register_outputs({})
        return component
    cls = resource_class(entry.type)
    if cls is None:  # a kind without a class of its own: registered as the program does
        _, group_version, kind = entry.type.split(":")
        return k8s.apiextensions.CustomResource(
            entry.name, api_version=group_version, kind=kind, opts=opts
        )
    required: dict[str, Any] = {}
    while True:
        try:
            return cls(entry.name, opts=opts, **required)
        except TypeError as error:  # "Missing required property 'image'"
            missing = re.fullmatch(r"Missing required property '(\w+)'", str(error))
            if missing is None:
                raise
            required[missing.group(1)] = 1 if missing.group(1) in ("min", "max", "length") else "x"


def _read_deployed_shape(stack: str) -> None:
    """The StackReference read the real program makes first (its own last outputs)."""
    organization = pulumi.get_organization() or "organization"
    reference = pulumi.StackReference(f"{organization}/sikka-scaling/{stack}")
    _sync_await(reference.get_output_details("deployedShape"))


def floor_program(stack: str, resources: list[Registered]) -> Callable[[], None]:
    """A program registering ``resources`` (same classes, names and parents, in the same
    order) with trivial inputs, after the same StackReference read."""

    def program() -> None:
        _read_deployed_shape(stack)
        by_urn: dict[str, pulumi.Resource] = {}
        for entry in resources:
            opts = pulumi.ResourceOptions(parent=by_urn.get(entry.parent))
            by_urn[entry.urn] = _floor_resource(entry, opts)

    return program


def inputs_program(stack: str, resources: list[Registered]) -> Callable[[], None]:
    """The floor again, but each custom resource a bare ``CustomResource`` given exactly the
    inputs the program registered (secrets unwrapped): what moving the program's data costs
    the SDK and the mocks, without the providers' classes or any code of ours."""

    def program() -> None:
        _read_deployed_shape(stack)
        by_urn: dict[str, pulumi.Resource] = {}
        for entry in resources:
            opts = pulumi.ResourceOptions(parent=by_urn.get(entry.parent))
            if entry.custom:
                by_urn[entry.urn] = pulumi.CustomResource(
                    entry.type, entry.name, dict(entry.inputs), opts
                )
            else:
                by_urn[entry.urn] = _floor_resource(entry, opts)

    return program


def _timed(action: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds (this process, every thread) of ``action()``, after a full
    garbage collection (so that no round pays for the garbage of the one before)."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def _spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def compare(stack: str, overrides: Mapping[str, Any], repeats: int) -> dict[str, Any]:
    """Real and floor, alternating, ``repeats`` timed rounds after one warm-up round."""
    shape = run_stack(stack, overrides).resources
    floor = floor_program(stack, shape)
    floor_count = len(run_stack(stack, overrides, program=floor).resources)
    if floor_count != len(shape):
        raise RuntimeError(f"the floor registered {floor_count} resources, not {len(shape)}")
    data = inputs_program(stack, shape)
    run_stack(stack, overrides, program=data)
    real: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    moved: list[tuple[float, float]] = []
    for _ in range(repeats):
        real.append(_timed(lambda: run_stack(stack, overrides)))
        bare.append(_timed(lambda: run_stack(stack, overrides, program=floor)))
        moved.append(_timed(lambda: run_stack(stack, overrides, program=data)))
    figures: dict[str, Any] = {"resources": len(shape)}
    for clock, index in (("wall", 0), ("cpu", 1)):
        r = [t[index] for t in real]
        f = [t[index] for t in bare]
        d = [t[index] for t in moved]
        figures[clock] = {
            "real": r,
            "floor": f,
            "ratio": statistics.median(r) / statistics.median(f),
            "min_ratio": min(r) / min(f),
            "rounds": [a / b for a, b in zip(r, f, strict=True)],
            "inputs_ratio": statistics.median(d) / statistics.median(f),
        }
    return figures


COLD_REAL = """
import time
start = time.perf_counter()
import pulumi, pulumi_docker, pulumi_kubernetes, pulumi_random
providers = time.perf_counter()
from components.offline_preview import run_stack
import components.platform  # what __main__.py imports; each runtime comes with its stack
ours = time.perf_counter()
run_stack({stack!r}, {overrides!r})
done = time.perf_counter()
print(providers - start, ours - providers, done - ours)
"""
COLD_FLOOR = """
import pickle, sys, time
import pulumi, pulumi_docker, pulumi_kubernetes, pulumi_random
from components.offline_preview import run_stack
from benchmarks.evaluation import floor_program
shape = pickle.loads(sys.stdin.buffer.read())
start = time.perf_counter()
run_stack({stack!r}, {overrides!r}, program=floor_program({stack!r}, shape))
print(time.perf_counter() - start)
"""


def _child(code: str, stdin: bytes = b"") -> list[float]:
    done = subprocess.run(
        [sys.executable, "-c", code], input=stdin, check=True, capture_output=True
    )
    return [float(x) for x in done.stdout.decode().split()]


def cold_figures(repeats: int) -> None:
    """A fresh interpreter per evaluation, as `pulumi preview` runs the program."""
    print(f"\nfresh interpreters, {repeats} alternating rounds (wall seconds, min / median / max)")
    for label, stack, overrides in CASES[:3]:
        shape = pickle.dumps(run_stack(stack, overrides).resources)
        rows: list[list[float]] = []
        floors: list[float] = []
        for _ in range(repeats):
            rows.append(_child(COLD_REAL.format(stack=stack, overrides=overrides)))
            floors.append(_child(COLD_FLOOR.format(stack=stack, overrides=overrides), shape)[0])
        providers, ours, first = ([row[i] for row in rows] for i in range(3))
        print(
            f"  {label:<8} import pulumi + providers {_spread(providers)}  "
            f"the program's own modules {_spread(ours)}  "
            f"first evaluation {_spread(first)}  the floor's first evaluation {_spread(floors)}"
        )


def _line(label: str, figures: dict[str, Any], clock: str) -> str:
    f = figures[clock]
    return (
        f"  {label:<18} {figures['resources']:>3} resources  {clock:<4} "
        f"real {_spread(f['real'])}  floor {_spread(f['floor'])}  "
        f"ratio {f['ratio']:.2f} (of minima {f['min_ratio']:.2f}; "
        f"rounds {min(f['rounds']):.2f}-{max(f['rounds']):.2f}); "
        f"bare inputs/floor {f['inputs_ratio']:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sweep-repeats", type=int, default=3)
    parser.add_argument("--no-sweep", action="store_true")
    parser.add_argument("--no-cold", action="store_true")
    args = parser.parse_args(argv)

    print(
        f"evaluation under the mock engine, real vs floor, {args.repeats} alternating rounds "
        "(seconds: min / median / max; cpu: this process's CPU time, less disturbed by "
        "other work on the machine than wall time)"
    )
    for label, stack, overrides in CASES:
        figures = compare(stack, overrides, args.repeats)
        print(_line(label, figures, "cpu"))
        print(_line("", figures, "wall"))

    print(
        f"\nsize sweep (median CPU seconds of {args.sweep_repeats}; per resource; "
        "ratio of medians to its floor)"
    )
    for label, stack, make, sizes in [] if args.no_sweep else SWEEPS:
        for size in sizes:
            figures = compare(stack, make(size), args.sweep_repeats)
            real = statistics.median(figures["cpu"]["real"])
            print(
                f"  {label} = {size:<3} {figures['resources']:>4} resources  "
                f"{real:.3f} s  {1000 * real / figures['resources']:.2f} ms/resource  "
                f"ratio {figures['cpu']['ratio']:.2f}"
            )

    if not args.no_cold:
        cold_figures(max(3, args.sweep_repeats))


if __name__ == "__main__":
    main()
