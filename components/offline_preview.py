"""Evaluates the Pulumi program under Pulumi's mock engine, the way `pulumi preview` would,
and records every registered resource with its inputs (secrets still marked).

Serves the tests and `sikka-scaling preview`, which shows what a stack would register on a
machine without the Pulumi CLI, its plugins or credentials.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import runpy
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks, rpc

from components.config import STACK_FILE
from scaling.stackconfig import parse, read_stack_document

ROOT = Path(__file__).resolve().parents[1]
SECRET_SIG = rpc._special_sig_key
SECRET_OUTPUTS = ("transition_secrets",)


@dataclass
class Registered:
    type: str
    name: str
    # The inputs as the mock engine deserialized them (secrets still wrapped) and as they
    # were sent (a protobuf Struct); ``inputs`` and ``raw`` are derived on first use.
    engine_inputs: dict[str, Any] = field(repr=False)
    engine_object: Any = field(repr=False)
    protect: bool = False
    retain_on_delete: bool = False
    delete_before_replace: bool = False
    urn: str = ""
    parent: str = ""  # the parent's URN ("" for none)
    custom: bool = True  # False for a ComponentResource
    depends_on: tuple[str, ...] = ()  # URNs of the resources it was registered to wait for

    @cached_property
    def inputs(self) -> dict[str, Any]:
        """The inputs with every secret unwrapped."""
        return _plain(self.engine_inputs)

    @cached_property
    def raw(self) -> dict[str, Any]:
        """The inputs as sent to the engine, secrets still wrapped."""
        return _struct_to_dict(self.engine_object)

    def secret_paths(self) -> set[str]:
        found: set[str] = set()

        def walk(value: Any, path: str) -> None:
            if isinstance(value, dict):
                if value.get(SECRET_SIG) == rpc._special_secret_sig:
                    found.add(path)
                    return
                for key, item in value.items():
                    walk(item, f"{path}.{key}" if path else key)
            elif isinstance(value, list):
                for index, item in enumerate(value):
                    walk(item, f"{path}[{index}]")

        walk(self.raw, "")
        return found


@dataclass
class Recorder(pulumi.runtime.Mocks):
    resources: list[Registered] = field(default_factory=list)
    # What a StackReference to the stack itself reads: its last update's outputs.
    previous_outputs: dict[str, Any] = field(default_factory=dict)
    # What a StackReference to another stack reads, by its full name ("org/project/stack"):
    # a transition's source (components.transition); its outputs named in SECRET_OUTPUTS
    # are secret, as `pulumi stack output` keeps them.
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Objects read from the cluster (``Resource.get``), by type token and id: their state.
    reads: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # The inputs of the resource this thread is registering, as the mock engine deserialized
    # them, handed to RecordingMonitor so that it need not deserialize them again.
    handoff: threading.local = field(default_factory=threading.local, repr=False)

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.handoff.inputs = args.inputs
        if args.typ == "pulumi:pulumi:StackReference":
            if args.name in self.references:
                outputs = dict(self.references[args.name])
                secret = [name for name in SECRET_OUTPUTS if name in outputs]
                return args.name, {
                    "name": args.name,
                    "outputs": outputs,
                    "secretOutputNames": secret,
                }
            outputs = dict(self.previous_outputs)
            return args.name, {"name": args.name, "outputs": outputs, "secretOutputNames": []}
        read = (args.typ, args.resource_id or "")
        if read in self.reads:  # Resource.get of an object
            return read[1], {**args.inputs, **self.reads[read]}
        state = dict(args.inputs)
        if args.typ == "random:index/randomPassword:RandomPassword":
            state["result"] = f"generated-{args.name}"
        if args.typ == "random:index/randomBytes:RandomBytes":
            drawn = hashlib.sha256(args.name.encode()).digest()[: int(args.inputs["length"])]
            state["base64"], state["hex"] = base64.b64encode(drawn).decode(), drawn.hex()
        if args.typ == "random:index/randomInteger:RandomInteger":
            # Drawn anew when its keepers change (as pulumi-random does), fixed otherwise.
            keepers = json.dumps(args.inputs.get("keepers"), sort_keys=True)
            state["result"] = 1 + zlib.crc32(keepers.encode()) % (2**31 - 1)
        return f"{args.name}-id", state

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        return {}, []


class RecordingMonitor(mocks.MockMonitor):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__(recorder)
        self.recorder = recorder

    def RegisterResource(self, request: Any) -> Any:
        self.recorder.handoff.inputs = None
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            last = self.recorder.resources[-1] if self.recorder.resources else None
            inputs = self.recorder.handoff.inputs
            if inputs is None:
                inputs = rpc.deserialize_properties(request.object)
            entry = Registered(
                request.type,
                request.name,
                inputs,
                request.object,
                protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                delete_before_replace=bool(request.deleteBeforeReplace),
                urn=response.urn,
                parent=request.parent,
                custom=bool(request.custom),
                depends_on=tuple(request.dependencies),
            )
            if last is None or (last.type, last.name) != (entry.type, entry.name):
                self.recorder.resources.append(entry)
        return response


def _struct_to_dict(struct: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(struct)


def _known(value: Any) -> bool:
    """Whether ``value`` is plain data: no Output, awaitable or input type at any depth."""
    if isinstance(value, dict):
        return all(_known(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_known(v) for v in value)
    return isinstance(value, str | int | float | bool | type(None))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == rpc._special_secret_sig:
            return _plain(value.get("value"))
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class StackRun:
    resources: list[Registered]
    outputs: dict[str, Any]  # the program's module namespace
    exports: dict[str, Any] = field(default_factory=dict)  # `pulumi stack output` values
    secret_exports: set[str] = field(default_factory=set)

    def of_type(self, token: str) -> list[Registered]:
        return [r for r in self.resources if r.type == token]

    def named(self, name: str) -> Registered:
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"{name}: {len(matches)} resources"
        return matches[0]


def stack_config(
    stack: str, overrides: Mapping[str, Any] | None = None, stack_file: Path | None = None
) -> tuple[dict, set]:
    """The config `pulumi preview` would pass: the stack file's values as JSON text.

    ``stack_file``: the file to read (default: the project's Pulumi.<stack>.yaml); raises
    ConfigError for any problem reading it, before the program runs."""
    document = read_stack_document(stack_file or ROOT / f"Pulumi.{stack}.yaml")
    values = {**document.config, **(overrides or {})}
    if document.issues:  # reported with everything else wrong in the file, as `validate` does
        parse(values, stack=stack, secret_keys=document.secret_keys, found=document.issues)
    secret_keys = document.secret_keys
    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    return encoded, secret_keys


def _ensure_event_loop() -> None:
    """Pulumi's runtime drives the thread's current event loop; asyncio.run() (used by
    other code in the same process) leaves none behind, so set one up when it is missing."""
    policy = asyncio.get_event_loop_policy()
    try:
        if not policy.get_event_loop().is_closed():
            return
    except RuntimeError:
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())


def run_stack(
    stack: str,
    overrides: Mapping[str, Any] | None = None,
    secret_values: Mapping[str, str] | None = None,
    previous_outputs: Mapping[str, Any] | None = None,
    stack_file: Path | None = None,
    program: Callable[[], None] | None = None,
    references: Mapping[str, Mapping[str, Any]] | None = None,
    reads: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> StackRun:
    """Runs __main__.py for ``stack``; raises what the program raises (ConfigError, ...).

    ``previous_outputs``: the outputs of the stack's last update (what a StackReference to
    itself reads), e.g. the ``exports`` of an earlier run; none means a first deployment.
    ``stack_file``: the stack file to evaluate (default: the project's Pulumi.<stack>.yaml);
    the program reads that file and no other.
    ``program``: evaluated instead of __main__.py (a benchmark's floor program), under the
    same mocks and config.
    ``references``: other stacks' outputs by full name, e.g. a transition's source's
    ``exports``; ``reads``: the state of objects the program reads (``Resource.get``), by
    (type token, id)."""
    recorder = Recorder(
        previous_outputs=dict(previous_outputs or {}),
        references={name: dict(outputs) for name, outputs in (references or {}).items()},
        reads={key: dict(state) for key, state in (reads or {}).items()},
    )
    _ensure_event_loop()
    pulumi.runtime.set_mocks(
        recorder,
        project="sikka-scaling",
        stack=stack,
        preview=True,
        monitor=RecordingMonitor(recorder),
    )
    config, secret_keys = stack_config(stack, overrides, stack_file)
    config.update(secret_values or {})
    pulumi.runtime.set_all_config(config, [*secret_keys, *(secret_values or {})])
    outputs: dict[str, Any] = {}

    exported: dict[str, Any] = {}
    exports: dict[str, Any] = {}
    secret_exports: set[str] = set()

    async def resolve_exports() -> None:
        for name, value in exported.items():
            if _known(value):  # what Output.from_input would resolve it to, without Outputs
                exports[name] = copy.deepcopy(value)
                continue
            output = pulumi.Output.from_input(value)
            exports[name] = await output.future()
            if await output.is_secret():
                secret_exports.add(name)

    @pulumi.runtime.test
    def evaluate() -> pulumi.Output[None]:
        real_export = pulumi.export

        def capture(name: str, value: Any) -> None:
            exported[name] = value
            real_export(name, value)

        pulumi.export = capture
        try:
            if program is None:
                namespace = runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")
            else:
                program()
                namespace = {}
        finally:
            pulumi.export = real_export
        outputs.update(namespace)
        return pulumi.Output.from_input(resolve_exports())

    token = STACK_FILE.set(stack_file)
    try:
        evaluate()
    except Exception as error:
        error.registered = recorder.resources  # type: ignore[attr-defined]
        raise
    finally:
        STACK_FILE.reset(token)
    return StackRun(recorder.resources, outputs, exports, secret_exports)
