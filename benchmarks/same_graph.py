"""Whether this tree registers exactly what another commit registers, stack by stack.

    python -m benchmarks.same_graph [--against 256948b]

A change meant to make the program cheaper must not change what `pulumi up` would do: the
same resources (type, name, parent, hence URN), the same inputs, the same options (protect,
retain on delete, delete before replace, dependencies, aliases, the provider's plugin
version, secret outputs, ...) and the same stack outputs. For every stack the evaluation
benchmark measures, and a few sizes of its sweep, this evaluates the program of both trees
under the mock engine (components.offline_preview.run_stack, one fresh interpreter per tree)
and compares the complete RegisterResource request of every resource (all of its fields
but the source position and the Python stack trace, which name lines of code; the tree's own
folder, in the images' build contexts, reads ``<project>``), the outputs each component
registers, and the exports, resolved, with which of them are secret. The order of
registration is not compared: the engine's calls run concurrently, and it varies from one
evaluation to the next. ``--against`` is exported with ``git archive`` into a temporary
folder; the working tree is not touched.

Prints each difference and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

from benchmarks.evaluation import CASES, SWEEPS

ROOT = Path(__file__).resolve().parents[1]

# Every stack the evaluation benchmark measures, and its sweep's smallest and largest sizes.
RUNS: list[tuple[str, str, dict[str, Any]]] = [
    *CASES,
    *(
        (f"{label} = {size}", stack, make(size))
        for label, stack, make, sizes in SWEEPS
        for size in (sizes[0], sizes[-1])
    ),
]

# Runs in the tree being described (this one or the exported commit), so it relies on
# nothing but run_stack and the monitor it records through. Writes JSON to stdout.
DESCRIBE = r"""
import json, sys
from google.protobuf import json_format
from components import offline_preview

requests = []
record = offline_preview.RecordingMonitor.RegisterResource

def recording(self, request):
    response = record(self, request)
    if request.type != "pulumi:pulumi:Stack":
        fields = json_format.MessageToDict(request, preserving_proto_field_name=True)
        fields.pop("sourcePosition", None)
        fields.pop("source_position", None)
        fields.pop("stackTrace", None)
        fields.pop("stack_trace", None)
        fields["urn"] = response.urn
        requests.append(fields)
    return response

outputs = {}
record_outputs = offline_preview.RecordingMonitor.RegisterResourceOutputs

def recording_outputs(self, request):
    fields = json_format.MessageToDict(request, preserving_proto_field_name=True)
    outputs[fields.pop("urn")] = fields
    return record_outputs(self, request)

offline_preview.RecordingMonitor.RegisterResource = recording
offline_preview.RecordingMonitor.RegisterResourceOutputs = recording_outputs
described = {}
for label, stack, overrides in json.loads(sys.stdin.read()):
    requests.clear()
    outputs.clear()
    run = offline_preview.run_stack(stack, overrides)
    described[label] = {
        "requests": list(requests),
        "component_outputs": dict(outputs),
        "exports": run.exports,
        "secret_exports": sorted(run.secret_exports),
    }
text = json.dumps(described, sort_keys=True, default=repr)
sys.stdout.write(text.replace(json.dumps(sys.argv[1])[1:-1], "<project>"))
"""


def describe(tree: Path) -> dict[str, Any]:
    """What the program in ``tree`` registers and exports for each of ``RUNS``."""
    done = subprocess.run(
        [sys.executable, "-c", DESCRIBE, str(tree)],
        input=json.dumps([list(run) for run in RUNS]).encode(),
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    described: dict[str, Any] = json.loads(done.stdout)
    return described


def _canonical(request: dict[str, Any]) -> dict[str, Any]:
    """The request with the lists whose order carries no meaning sorted."""
    fields = dict(request)
    if "dependencies" in fields:
        fields["dependencies"] = sorted(fields["dependencies"])
    if "propertyDependencies" in fields:
        fields["propertyDependencies"] = {
            key: {"urns": sorted(value.get("urns", []))}
            for key, value in fields["propertyDependencies"].items()
        }
    return fields


def _differences(path: str, old: Any, new: Any) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            if key not in old:
                found.append(f"{path}.{key}: added {new[key]!r:.200}")
            elif key not in new:
                found.append(f"{path}.{key}: removed (was {old[key]!r:.200})")
            else:
                found += _differences(f"{path}.{key}", old[key], new[key])
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            d
            for i, (a, b) in enumerate(zip(old, new, strict=True))
            for d in _differences(f"{path}[{i}]", a, b)
        ]
    if old != new or type(old) is not type(new):
        return [f"{path}: {old!r:.200} -> {new!r:.200}"]
    return []


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every difference between two descriptions, one line each."""
    found: list[str] = []
    for label in sorted(set(old) | set(new)):
        if label not in old or label not in new:
            found.append(f"{label}: described on one side only")
            continue
        before = {r["urn"]: _canonical(r) for r in old[label]["requests"]}
        after = {r["urn"]: _canonical(r) for r in new[label]["requests"]}
        for urn in sorted(set(before) | set(after)):
            if urn not in after:
                found.append(f"{label}: {urn} no longer registered")
            elif urn not in before:
                found.append(f"{label}: {urn} newly registered")
            else:
                found += [f"{label}: {d}" for d in _differences(urn, before[urn], after[urn])]
        for key in ("component_outputs", "exports", "secret_exports"):
            found += [f"{label}: {d}" for d in _differences(key, old[label][key], new[label][key])]
    return found


def export_commit(commit: str, into: Path) -> None:
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="HEAD", help="the commit to compare with")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="same-graph-") as folder:
        export_commit(args.against, Path(folder))
        old = describe(Path(folder))
    new = describe(ROOT)
    differences = compare(old, new)
    resources = sum(len(run["requests"]) for run in new.values())
    for line in differences:
        print(line)
    print(
        f"{len(RUNS)} evaluations, {resources} registrations compared with {args.against}: "
        + (f"{len(differences)} differences" if differences else "identical")
    )
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
