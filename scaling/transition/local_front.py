"""The front door of a transition on `local up` processes: the source's Nginx keeps the
clients' URL and proxies to the target's gateways from then on.

switch_front_door(source, target):
  1. the target's gateways answer /healthz (else nothing is touched);
  2. the source's nginx.conf gets the target's ``upstream gateways`` block (the one the same
     renderer wrote into the target's own nginx.conf: its servers, balancing, max_conns);
     the new file is checked with ``nginx -t`` before it replaces the running one;
  3. graceful reload: SIGHUP to the master; new workers take every new connection, the old
     ones keep the WebSockets they proxy until those close;
  4. wait until the new workers serve: the master has a full set of new workers and a
     request through the front door is answered by a target gateway;
  5. the source gateways drain (SIGTERM: each closes its WebSockets with 1001 "going away"
     and exits); the clients reconnect through the same URL and land on the target;
  6. the source's state records that its Nginx fronts the target now (``front_door``), so
     `status`, a later resume and restore_front_door know it.
Any failure after the reload puts the source's own upstream back (restore_front_door).

restore_front_door(source): the reverse, for a rollback: the source gateways are started
again (if they were drained), the source's own upstream block goes back, ``nginx -t``,
SIGHUP, and the record is cleared.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from scaling.local import health, procs
from scaling.local.runner import LocalRun
from scaling.local.state import ProcessEntry, RunState
from scaling.render.nginx import replace_upstream_block, upstream_block, upstream_servers
from scaling.transition.errors import StepFailed

STEP = "switch-front-door"
RESTORE = "restore-front-door"
RECORD = "front_door"  # key of a door's summary: whom its Nginx fronts now
FRONTED_BY = "fronted_by"  # key of a target's summary: the doors switched to it
CHECK_TIMEOUT = 20.0
RELOAD_TIMEOUT = 30.0
WORKER_TITLE = "nginx: worker process"
SHUTTING_DOWN = "is shutting down"


def _nginx(run: LocalRun) -> ProcessEntry:
    for entry in run.state.processes:
        if entry.tier == "nginx":
            return entry
    raise StepFailed(STEP, f"the run of {run.state.stack!r} has no Nginx")


def _gateways(run: LocalRun) -> list[ProcessEntry]:
    return [e for e in run.state.processes if e.tier == "gateway"]


def _conf_path(entry: ProcessEntry) -> Path:
    argv = entry.argv
    if "-c" not in argv:
        raise StepFailed(STEP, f"{entry.name} was not started with -c <nginx.conf>: {argv}")
    return Path(argv[argv.index("-c") + 1])


def _front_url(run: LocalRun) -> str:
    return str(run.summary["nginx"]["url"])


def _metrics_urls(run: LocalRun) -> dict[str, list[str]]:
    """gateway name -> every worker's /metrics URL (from the run's summary)."""
    return {
        str(g["id"]): [str(u) for u in g.get("worker_metrics_urls") or [g["metrics_url"]]]
        for g in run.summary.get("gateways", [])
    }


def open_connections(run: LocalRun) -> dict[str, int]:
    """gateway name -> WebSockets it holds now (gateway_open_connections over its workers);
    a gateway that does not answer counts 0."""
    counts: dict[str, int] = {}
    for name, urls in _metrics_urls(run).items():
        total = 0.0
        for url in urls:
            with contextlib.suppress(httpx.HTTPError):
                for line in httpx.get(url, timeout=2).text.splitlines():
                    if line.startswith("gateway_open_connections "):
                        total += float(line.split()[1])
        counts[name] = int(total)
    return counts


def _workers(master: psutil.Process) -> tuple[set[int], set[int]]:
    """(serving workers, workers shutting down) of an Nginx master, by their titles."""
    serving: set[int] = set()
    leaving: set[int] = set()
    for child in master.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            title = " ".join(child.cmdline())
            if WORKER_TITLE in title:
                (leaving if SHUTTING_DOWN in title else serving).add(child.pid)
    return serving, leaving


def _config_test(entry: ProcessEntry, conf: Path, step: str) -> float:
    """``nginx -t`` on ``conf`` with the running master's prefix; seconds it took."""
    argv = entry.argv
    prefix = argv[argv.index("-p") + 1] if "-p" in argv else str(conf.parent)
    started = time.monotonic()
    result = subprocess.run(
        [argv[0], "-t", "-q", "-p", prefix, "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise StepFailed(step, f"nginx -t refused {conf}: {result.stderr.strip()[-800:]}")
    return time.monotonic() - started


def _answered_by(front_url: str) -> str | None:
    """The gateway that answers /livez through the front door (None: no answer)."""
    with contextlib.suppress(httpx.HTTPError, ValueError):
        response = httpx.get(f"{front_url}/livez", timeout=2)
        if response.status_code == 200:
            return str(response.json().get("gateway"))
    return None


def _reload(
    nginx: ProcessEntry,
    conf: Path,
    text: str,
    step: str,
    ready: Any,
) -> dict[str, Any]:
    """Test ``text`` as the new nginx.conf, put it in place, SIGHUP the master and wait until
    a full set of new workers serves and ``ready()`` is true. Returns measurements."""
    master = procs.process_of(nginx)
    if master is None:
        raise StepFailed(step, f"{nginx.name} is not running")
    candidate = conf.with_name(conf.name + ".next")
    candidate.write_text(text)
    try:
        test_seconds = _config_test(nginx, candidate, step)
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    before, _ = _workers(master)
    expected = max(1, len(before))
    previous = conf.read_text()
    candidate.replace(conf)
    started = time.monotonic()
    os.kill(master.pid, signal.SIGHUP)

    def new_workers_serve() -> bool:
        serving, _ = _workers(master)
        fresh = serving - before
        return len(fresh) >= expected and bool(ready())

    try:
        health.wait_until(
            f"{nginx.name} serves with its new configuration",
            new_workers_serve,
            RELOAD_TIMEOUT,
            process=nginx,
            interval=0.05,
        )
    except (health.HealthTimeout, health.ProcessDied) as error:
        conf.write_text(previous)
        with contextlib.suppress(ProcessLookupError):
            os.kill(master.pid, signal.SIGHUP)
        raise StepFailed(step, f"{error}; its previous configuration was put back") from None
    reload_seconds = time.monotonic() - started
    old = [pid for pid in before if psutil.pid_exists(pid)]
    return {
        "config_test_seconds": round(test_seconds, 3),
        "reload_seconds": round(reload_seconds, 3),
        "workers": expected,
        # Old workers still holding proxied connections (WebSockets) when the new ones serve.
        "old_workers": old,
    }


def _wait_old_workers(master: psutil.Process, old: list[int], timeout: float) -> tuple[float, int]:
    """After the drain, the old workers' proxied WebSockets are closed and they exit:
    (seconds waited, how many are left)."""
    started = time.monotonic()

    def left() -> list[int]:
        children = {c.pid for c in master.children()} if master.is_running() else set()
        return [pid for pid in old if pid in children]

    while left() and time.monotonic() - started < timeout:
        time.sleep(0.05)
    return time.monotonic() - started, len(left())


def _drain(gateways: list[ProcessEntry]) -> dict[str, str]:
    """SIGTERM every gateway at once (each drains its clients with 1001) and wait for all."""
    live = [g for g in gateways if procs.alive(g)]
    if not live:
        return {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(live)) as pool:
        results = dict(zip([g.name for g in live], pool.map(procs.stop, live), strict=True))
    return results


def _save_summary(run: LocalRun, key: str, value: Any) -> None:
    """Set (or, for None, remove) one key of the run's summary in its state file, re-read
    first so that whatever another step saved meanwhile is kept."""
    fresh = RunState.load(Path(run.state.state_dir))
    for state in (fresh, run.state):
        if value is None:
            state.summary.pop(key, None)
        else:
            state.summary[key] = value
    fresh.save()


def fronted_stack(run: LocalRun) -> str | None:
    """The stack whose gateways this run's Nginx proxies to now (None: its own)."""
    record = run.summary.get(RECORD)
    return str(record["fronts"]) if record else None


def front_doors(run: LocalRun) -> list[LocalRun]:
    """The Nginx front doors that proxy to ``run``'s gateways: its own, then those of the
    earlier phases that were moved to it and still run (their clients' URL is theirs)."""
    doors = [run]
    for item in run.summary.get(FRONTED_BY, []):
        with contextlib.suppress(OSError, ValueError, KeyError):
            earlier = LocalRun.open(Path(item["state_dir"]))
            if procs.alive(_nginx(earlier)) and fronted_stack(earlier) == run.state.stack:
                doors.append(earlier)
    return doors


def _wait_healthy(run: LocalRun, step: str, note: str = "") -> None:
    urls = [str(g["health_url"]) for g in run.summary.get("gateways", [])]
    if not urls:
        raise StepFailed(step, f"the run of {run.state.stack!r} has no gateway")
    try:
        health.wait_until(
            f"the gateways of {run.state.stack} answer /healthz",
            lambda: all(health.http_ok(u) for u in urls),
            CHECK_TIMEOUT,
            processes=_gateways(run),
        )
    except (health.HealthTimeout, health.ProcessDied) as error:
        raise StepFailed(step, f"{error}{note}") from None


def _own_block(run: LocalRun) -> str:
    """The ``upstream gateways`` block of the run's own gateways: its nginx.conf's, or, while
    its Nginx fronts another phase, the block it had before (kept in its record)."""
    record = run.summary.get(RECORD) or {}
    if record.get("own_upstream_block"):
        return str(record["own_upstream_block"])
    return upstream_block(_conf_path(_nginx(run)).read_text())


def _point(door: LocalRun, to: LocalRun, step: str) -> dict[str, Any]:
    """Reload ``door``'s Nginx with the upstream block of ``to``'s own nginx.conf; returns
    the reload's measurements. The door's state records whom it fronts (cleared when
    ``to`` is the door itself)."""
    nginx = _nginx(door)
    conf = _conf_path(nginx)
    current = conf.read_text()
    previous = door.summary.get(RECORD) or {}
    # ``to`` is the door's own run (opened once or twice): its own upstream goes back, as
    # when a phase moved away from is moved back to.
    itself = Path(to.state.state_dir).resolve() == Path(door.state.state_dir).resolve()
    try:
        own_block = str(previous.get("own_upstream_block") or upstream_block(current))
        block = own_block if itself else _own_block(to)
        text = replace_upstream_block(current, block)
    except ValueError as error:
        raise StepFailed(step, f"{conf}: {error}") from None
    ids = {str(g["id"]) for g in to.summary.get("gateways", [])}
    front = _front_url(door)
    measurements = _reload(nginx, conf, text, step, lambda: _answered_by(front) in ids)
    record = None
    if not itself:
        # Recorded as soon as the upstream is switched: a crash from here on is resumed.
        record = {
            "fronts": to.state.stack,
            "target_state_dir": to.state.state_dir,
            "front_door": front,
            "upstreams": list(upstream_servers(block)),
            "own_upstream_block": own_block,
            "switched_at": time.time(),
        }
    _save_summary(door, RECORD, record)
    return measurements


def switch_front_door(source: LocalRun, target: LocalRun) -> dict[str, Any]:
    """Point the source's Nginx (and the earlier phases' Nginx that front the source) at the
    target's gateways, then drain the source's gateways. Returns the step's measurements;
    raises StepFailed (a door whose new workers do not serve gets its configuration back).
    Run again after an interruption, it goes on where it stopped."""
    _wait_healthy(target, STEP, "; the front door was left as it was")
    doors = front_doors(source)
    reloads: dict[str, dict[str, Any]] = {}
    old_workers: dict[str, list[int]] = {}
    for door in doors:
        if fronted_stack(door) == target.state.stack:
            continue  # an earlier run of this step switched it already
        reloads[door.state.stack] = _point(door, target, STEP)
        old_workers[door.state.stack] = reloads[door.state.stack].pop("old_workers")
        if door.state.state_dir == target.state.state_dir:
            target.state.summary.pop(RECORD, None)  # its own door serves it again
    # The target's gateways are these doors' upstream now: a later transition from the
    # target switches them too.
    _save_summary(
        target,
        FRONTED_BY,
        [
            {"stack": d.state.stack, "state_dir": d.state.state_dir, "url": _front_url(d)}
            for d in doors
        ],
    )

    held = open_connections(source)
    started = time.monotonic()
    results = _drain(_gateways(source))
    drain_seconds = time.monotonic() - started
    left = [name for name, result in results.items() if result not in ("stopped", "not running")]
    exits: dict[str, Any] = {}
    for door in doors:
        master = procs.process_of(_nginx(door))
        old = old_workers.get(door.state.stack, [])
        waited, remaining = _wait_old_workers(master, old, 10.0) if master else (0.0, 0)
        exits[door.state.stack] = {
            "old_workers_at_drain": len(old),
            "old_workers_exit_seconds": round(waited, 3),
            "old_workers_left": remaining,
        }
    own = reloads.get(source.state.stack, {})
    measurements: dict[str, Any] = {
        "front_door": _front_url(source),
        "front_doors": [_front_url(d) for d in doors],
        "upstreams": (source.summary.get(RECORD) or {}).get("upstreams", []),
        "reload_seconds": own.get("reload_seconds"),
        "config_test_seconds": own.get("config_test_seconds"),
        "reloads": reloads,
        "source_gateways": {name: results.get(name, "not running") for name in held},
        "connections_drained": sum(held.values()),
        "drain_seconds": round(drain_seconds, 3),
        "old_workers": exits,
        "old_workers_left": sum(e["old_workers_left"] for e in exits.values()),
    }
    if left:
        # The upstreams point at the target already: this only reports what the drain could
        # not do gracefully (those gateways were killed after their drain period).
        measurements["killed_gateways"] = left
    return measurements


def restore_front_door(source: LocalRun) -> dict[str, Any]:
    """Undo switch_front_door for a rollback: start the source's gateways again, put the
    source's own upstream back (and point the earlier phases' doors that followed the switch
    back at the source), reload gracefully, update the records. Nothing to do when the
    front door was never switched."""
    doors = [d for d in front_doors_recorded(source) if fronted_stack(d) != source.state.stack]
    if fronted_stack(source) is None and not doors:
        return {"restored": False, "reason": "the front door was never switched"}
    started_again = []
    for entry in _gateways(source):
        if not procs.alive(entry):
            source.start_process(entry.name)
            started_again.append(entry.name)
    _wait_healthy(source, RESTORE)
    reloads: dict[str, dict[str, Any]] = {}
    if fronted_stack(source) is not None:
        reloads[source.state.stack] = _point(source, source, RESTORE)
    for door in doors:
        reloads[door.state.stack] = _point(door, source, RESTORE)
    for figures in reloads.values():
        figures.pop("old_workers")
    own = reloads.get(source.state.stack, {})
    return {
        "restored": True,
        "reload_seconds": own.get("reload_seconds"),
        "reloads": reloads,
        "gateways_started": started_again,
    }


def front_doors_recorded(run: LocalRun) -> list[LocalRun]:
    """The earlier phases' doors recorded as fronting ``run`` (alive or not checked by
    whom they front now): restore_front_door points them back at ``run``."""
    doors = []
    for item in run.summary.get(FRONTED_BY, []):
        with contextlib.suppress(OSError, ValueError, KeyError):
            earlier = LocalRun.open(Path(item["state_dir"]))
            if earlier.state.stack != run.state.stack and procs.alive(_nginx(earlier)):
                doors.append(earlier)
    return doors
