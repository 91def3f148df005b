"""The gateway image: gateway/ is its one build context (Pulumi stack, compose, README), and
the stack pins containers to the built image's id rather than its tag.

No Docker engine is needed: the Dockerfile is parsed and every COPY is resolved against the
build context with its .dockerignore applied, as the builder would.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pulumi
import pytest
from pulumi.runtime import mocks

from components.images import built_image

ROOT = Path(__file__).resolve().parents[2]
CONTEXT = ROOT / "gateway"
CONTEXT_NAME = "gateway"  # the folder, relative to the repository root

# --- a tiny Dockerfile / .dockerignore reader -------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # the rest of the logical line, continuations joined
    line: int  # where it starts, 1-based


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: comments and blank lines dropped, ``\\`` continuations joined
    (comment lines inside a continuation are skipped, as Docker does)."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not parts):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        keyword, _, args = " ".join(p for p in parts if p).partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        parts = []
    assert not parts, "Dockerfile ends inside a line continuation"
    return instructions


def copy_operands(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """(flags, sources, destination) of a COPY/ADD, shell or JSON (exec) form."""
    args = instruction.args
    flags: dict[str, str] = {}
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        args = args.strip()
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    assert len(words) >= 2, f"line {instruction.line}: {instruction.keyword} needs a source"
    return flags, words[:-1], words[-1]


def read_dockerignore(context: Path) -> list[str]:
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's matcher: filepath.Match syntax plus ``**`` for any number of folders."""
    pattern = str(PurePosixPath("/" + pattern.strip("/")))[1:] or "."
    out = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out += "(?:.*/)?"
            index += 3
            continue
        if pattern.startswith("**", index):
            out += ".*"
            index += 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", index)
            body = pattern[index + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("^") else re.escape(body)) + "]"
            index = end
        else:
            out += re.escape(char)
        index += 1
    # A pattern naming a folder excludes everything in it.
    return re.compile(f"{out}(?:/.*)?")


def is_ignored(relative: str, patterns: list[str]) -> bool:
    """Whether ``relative`` (a path inside the context) is left out; the last match wins."""
    relative = str(PurePosixPath(relative))
    if relative == ".":
        return False
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if _pattern_regex(pattern.lstrip("!")).fullmatch(relative):
            ignored = not negate
    return ignored


def context_files(context: Path, patterns: list[str]) -> Iterator[str]:
    for path in sorted(context.rglob("*")):
        relative = path.relative_to(context).as_posix()
        if path.is_file() and not is_ignored(relative, patterns):
            yield relative


@dataclass
class Image:
    """What the Dockerfile puts in the image from the context, and the problems found."""

    files: dict[str, str]  # path in the image → path in the context
    problems: list[str]
    instructions: list[Instruction]
    before: dict[int, frozenset[str]]  # instruction line → image paths copied by then


def resolve(context: Path, dockerfile: Path | None = None) -> Image:
    """Resolve every COPY/ADD of ``dockerfile`` (default: the context's own) against
    ``context``, the way ``docker build <context>`` would."""
    dockerfile = dockerfile or context / "Dockerfile"
    instructions = parse_dockerfile(dockerfile.read_text())
    patterns = read_dockerignore(context)
    files: dict[str, str] = {}
    problems: list[str] = []
    before: dict[int, frozenset[str]] = {}
    workdir = PurePosixPath("/")
    for instruction in instructions:
        before[instruction.line] = frozenset(files)
        if instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.args
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        flags, sources, destination = copy_operands(instruction)
        if "from" in flags:  # another stage or image, not the context
            continue
        target = workdir / destination
        for source in sources:
            where = f"line {instruction.line}: {instruction.keyword} {source}"
            if PurePosixPath(source).is_absolute() or ".." in PurePosixPath(source).parts:
                problems.append(f"{where}: leaves the build context {context}")
                continue
            path = context / source
            if not path.exists():
                problems.append(f"{where}: {path} does not exist in the build context")
                continue
            relative = path.relative_to(context).as_posix()
            if is_ignored(relative, patterns):
                problems.append(f"{where}: {relative} is excluded by .dockerignore")
                continue
            if path.is_dir():
                for name in context_files(path, patterns):
                    files[str(target / name)] = (path / name).relative_to(context).as_posix()
            elif destination.endswith("/") or len(sources) > 1:
                files[str(target / path.name)] = relative
            else:
                files[str(target)] = relative
    return Image(files, problems, instructions, before)


def build_commands(text: str) -> list[list[str]]:
    """The words of every ``docker build`` command in ``text``: inline code spans, fenced
    blocks and ``#`` comments, a command ending at ``&&``, ``;``, or the span's end."""
    candidates = re.findall(r"```.*?```|`[^`]+`", text, flags=re.S)
    candidates += re.findall(r"^#\s*(docker build.*)$", text, flags=re.M)
    commands = []
    for candidate in candidates:
        flat = " ".join(candidate.strip("`").replace("\\\n", " ").split())
        for found in re.finditer(r"docker build\b[^&;`]*", flat):
            commands.append(shlex.split(found.group(0))[2:])
    return commands


def build_context_of(words: list[str]) -> tuple[str, str | None]:
    """(context, -f file) of ``docker build`` arguments."""
    takes_value = {"-t", "--tag", "-f", "--file", "--build-arg", "--target", "--platform"}
    positional: list[str] = []
    dockerfile = None
    index = 0
    while index < len(words):
        word = words[index]
        if word in takes_value:
            if word in ("-f", "--file"):
                dockerfile = words[index + 1]
            index += 2
            continue
        if not word.startswith("-"):
            positional.append(word)
        index += 1
    assert len(positional) == 1, f"docker build {' '.join(words)}: context is {positional}"
    return positional[0], dockerfile


def pins(lines: list[str]) -> dict[str, str]:
    """Normalised project name → version of every ``name==version`` requirement."""
    found = {}
    for line in lines:
        requirement = line.split("#", 1)[0].strip()
        if not requirement:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?\s*==\s*([^\s;]+)", requirement)
        assert match, f"{requirement!r} is not pinned with =="
        found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


# --- the build context ---------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> Image:
    return resolve(CONTEXT)


def test_every_copy_source_is_inside_the_gateway_context(image: Image) -> None:
    copies = [i for i in image.instructions if i.keyword in ("COPY", "ADD")]
    assert copies, "gateway/Dockerfile copies nothing"
    assert image.problems == []


def test_the_package_lands_where_python_m_gateway_finds_it(image: Image) -> None:
    workdirs = [i.args for i in image.instructions if i.keyword == "WORKDIR"]
    assert workdirs[-1] == "/app"
    cmd = [i for i in image.instructions if i.keyword == "CMD"][-1]
    assert json.loads(cmd.args) == ["python", "-m", "gateway"]  # exec form
    for module in ("__init__.py", "__main__.py"):
        assert f"/app/gateway/{module}" in image.files, sorted(image.files)


def test_every_gateway_module_the_code_imports_is_copied(image: Image) -> None:
    imported: set[str] = set()
    for source in sorted(CONTEXT.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            if isinstance(node, ast.ImportFrom) and node.module == "gateway" and node.level == 0:
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("gateway."):
                    imported.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                imported |= {
                    a.name.split(".")[1] for a in node.names if a.name.startswith("gateway.")
                }
    modules = {name for name in imported if (CONTEXT / f"{name}.py").is_file()}
    assert {"config", "server", "protocol", "fanout", "metrics"} <= modules
    missing = sorted(m for m in modules if f"/app/gateway/{m}.py" not in image.files)
    assert missing == []
    # The whole package is copied, not a hand-kept list of modules.
    assert {f"/app/gateway/{p.name}" for p in CONTEXT.glob("*.py")} <= set(image.files)


def test_requirements_are_copied_before_they_are_installed(image: Image) -> None:
    installs = [i for i in image.instructions if i.keyword == "RUN" and "pip install" in i.args]
    assert len(installs) == 1
    (install,) = installs
    requirements = re.findall(r"-r\s+(\S+)", install.args)
    assert requirements == ["/app/gateway/requirements.txt"]
    assert requirements[0] in image.before[install.line], "copied only after pip install"
    assert image.files["/app/gateway/requirements.txt"] == "requirements.txt"


def test_caches_stay_out_of_the_image(image: Image) -> None:
    patterns = read_dockerignore(CONTEXT)
    for cache in ("__pycache__/server.cpython-312.pyc", "sub/__pycache__/x.pyc", "x.pyc"):
        assert is_ignored(cache, patterns), cache
    assert not any("__pycache__" in path or path.endswith(".pyc") for path in image.files)


def test_runs_as_uid_10001_with_a_healthcheck(image: Image) -> None:
    users = [i.args for i in image.instructions if i.keyword == "USER"]
    assert users[-1] == "10001"
    assert any("--uid 10001" in i.args for i in image.instructions if i.keyword == "RUN")
    (healthcheck,) = [i for i in image.instructions if i.keyword == "HEALTHCHECK"]
    # Liveness: /healthz (readiness) turns 503 while the instance is full or draining.
    assert "/livez" in healthcheck.args


def test_the_checker_rejects_a_dockerfile_written_for_the_repository_root(
    tmp_path: Path,
) -> None:
    """The previous Dockerfile (``COPY gateway/...``) against the gateway/ context."""
    context = tmp_path / "gateway"
    context.mkdir()
    (context / "requirements.txt").write_text("redis==8.1.0\n")
    (context / "__init__.py").write_text("")
    (context / "Dockerfile").write_text(
        "FROM python:3.12-slim\nWORKDIR /app\n"
        "COPY gateway/requirements.txt /app/gateway/requirements.txt\n"
        "COPY gateway/ /app/gateway/\n"
        "COPY --chown=10001 ../secrets /app/\n"
    )
    (context / ".dockerignore").write_text("**/__pycache__\nrequirements.txt\n")
    problems = resolve(context).problems
    assert problems == [
        f"line 3: COPY gateway/requirements.txt: {context}/gateway/requirements.txt does not exist in the build context",
        f"line 4: COPY gateway/: {context}/gateway does not exist in the build context",
        f"line 5: COPY ../secrets: leaves the build context {context}",
    ]
    (context / "Dockerfile").write_text("FROM scratch\nCOPY requirements.txt /r.txt\n")
    assert resolve(context).problems == [
        "line 2: COPY requirements.txt: requirements.txt is excluded by .dockerignore"
    ]


# --- who builds from that context ----------------------------------------------------


def test_the_pulumi_stack_builds_from_the_same_folder() -> None:
    from scaling.model import GatewaySpec

    default = GatewaySpec.model_fields["build_context"].default
    assert default == CONTEXT_NAME
    # components/platform.py and the compose renderer resolve it against the project root.
    assert (ROOT / default / "Dockerfile").is_file()
    for stack_file in sorted(ROOT.glob("Pulumi.*.yaml")):
        assert "buildContext" not in stack_file.read_text(), stack_file.name


def test_the_readme_builds_the_gateway_folder() -> None:
    commands = build_commands((ROOT / "README.md").read_text())
    assert commands, "README.md has no `docker build` command"
    for words in commands:
        context, dockerfile = build_context_of(words)
        assert PurePosixPath(context) == PurePosixPath(CONTEXT_NAME), words
        assert dockerfile in (None, f"{CONTEXT_NAME}/Dockerfile"), words


def test_the_dockerfile_names_the_same_command() -> None:
    (words,) = build_commands((CONTEXT / "Dockerfile").read_text())
    assert build_context_of(words) == ("gateway/", None)


def test_build_command_reader_sees_a_root_context() -> None:
    text = "run `docker build -f gateway/Dockerfile -t x\n.` then `docker push x`"
    assert [build_context_of(w) for w in build_commands(text)] == [(".", "gateway/Dockerfile")]


def test_requirements_pin_what_the_project_pins() -> None:
    image_pins = pins((CONTEXT / "requirements.txt").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    project_pins = pins(project["dependencies"])
    shared = ("websockets", "redis", "prometheus-client", "pyjwt", "cryptography")
    assert {n: image_pins.get(n) for n in shared} == {n: project_pins[n] for n in shared}
    # Nothing else goes into the image unpinned or at another version than the project's.
    assert {n: project_pins.get(n) for n in image_pins} == image_pins


# --- the image the containers run ------------------------------------------------------


class ImageMocks(pulumi.runtime.Mocks):
    """Returns what the provider would: the image's id as ``repoDigest`` of a local build."""

    DIGEST = "sha256:826a130323165bb0ccb0374ae774f885c067a951b51a6ee133577f4e5dbc4119"

    def __init__(self) -> None:
        self.registered: list[mocks.MockResourceArgs] = []

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.registered.append(args)
        state = dict(args.inputs)
        if args.typ == "docker:index/image:Image":
            state |= {"repoDigest": self.DIGEST, "baseImageName": args.inputs["imageName"]}
        return f"{args.name}-id", state

    def call(self, args: mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        return {}, []


def test_gateway_image_resolves_to_the_built_image_id() -> None:
    recorder = ImageMocks()
    # Pulumi drives the thread's current event loop; asyncio.run() elsewhere leaves none.
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.set_mocks(recorder, project="sikka-scaling", stack="test", preview=False)
    tag = "ghcr.io/sikka-scaling/gateway:0.1.0"

    @pulumi.runtime.test
    def check() -> pulumi.Output[None]:
        parent = pulumi.ComponentResource("test:index:Parent", "parent")
        image = built_image("image-gateway", tag, str(CONTEXT), parent)

        async def urns() -> list[str | None]:
            # The resources the returned Output depends on: the Image, under `parent`.
            return [await resource.urn.future() for resource in await image.resources()]

        def verify(resolved: list[Any]) -> None:
            value, (urn,) = resolved
            assert "::test:index:Parent$docker:index/image:Image::image-gateway" in urn
            (built,) = [r for r in recorder.registered if r.typ == "docker:index/image:Image"]
            assert built.name == "image-gateway"
            assert built.inputs["imageName"] == tag
            assert built.inputs["skipPush"] is True
            assert built.inputs["build"]["context"] == str(CONTEXT)
            assert value == ImageMocks.DIGEST != tag

        return pulumi.Output.all(image, urns()).apply(verify)

    check()
