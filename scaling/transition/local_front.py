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
RECORD = "front_door"  # key of the source state's summary
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


def _save_record(run: LocalRun, record: dict[str, Any] | None) -> None:
    """Set (or clear) the front-door record in the run's state file, re-read first so that
    whatever another step saved meanwhile is kept."""
    fresh = RunState.load(Path(run.state.state_dir))
    for state in (fresh, run.state):
        if record is None:
            state.summary.pop(RECORD, None)
        else:
            state.summary[RECORD] = record
    fresh.save()


def fronted_stack(run: LocalRun) -> str | None:
    """The stack whose gateways this run's Nginx proxies to now (None: its own)."""
    record = run.summary.get(RECORD)
    return str(record["fronts"]) if record else None


def switch_front_door(source: LocalRun, target: LocalRun) -> dict[str, Any]:
    """Point the source's Nginx at the target's gateways and drain the source's gateways.
    Returns the step's measurements; raises StepFailed (with the source's upstream put back
    when the reload had happened)."""
    nginx = _nginx(source)
    target_nginx = _nginx(target)
    front = _front_url(source)
    if fronted_stack(source) == target.state.stack:
        return {"already_switched": True, "front_door": front}
    targets = [str(g["health_url"]) for g in target.summary.get("gateways", [])]
    if not targets:
        raise StepFailed(STEP, f"the target {target.state.stack!r} has no gateway")
    try:
        health.wait_until(
            f"the gateways of {target.state.stack} answer /healthz",
            lambda: all(health.http_ok(u) for u in targets),
            CHECK_TIMEOUT,
            processes=_gateways(target),
        )
    except (health.HealthTimeout, health.ProcessDied) as error:
        raise StepFailed(STEP, f"{error}; the front door was left as it was") from None

    conf = _conf_path(nginx)
    current = conf.read_text()
    try:
        own_block = upstream_block(current)
        target_block = upstream_block(_conf_path(target_nginx).read_text())
    except ValueError as error:
        raise StepFailed(STEP, f"{conf}: {error}") from None
    switched = replace_upstream_block(current, target_block)
    target_ids = {str(g["id"]) for g in target.summary["gateways"]}

    measurements = _reload(nginx, conf, switched, STEP, lambda: _answered_by(front) in target_ids)
    # Recorded as soon as the upstream is switched: a crash from here on is resumed forward.
    record = {
        "fronts": target.state.stack,
        "target_state_dir": target.state.state_dir,
        "upstreams": list(upstream_servers(target_block)),
        "own_upstream_block": own_block,
        "switched_at": time.time(),
        "gateways_drained": [],
    }
    _save_record(source, record)

    gateways = _gateways(source)
    held = open_connections(source)
    started = time.monotonic()
    results = _drain(gateways)
    drain_seconds = time.monotonic() - started
    left = [name for name, result in results.items() if result not in ("stopped", "not running")]
    record["gateways_drained"] = sorted(results)
    _save_record(source, record)
    old = measurements.pop("old_workers")
    master = procs.process_of(nginx)
    old_workers_seconds, old_workers_left = (
        _wait_old_workers(master, old, 10.0) if master is not None else (0.0, 0)
    )
    measurements.update(
        {
            "front_door": front,
            "upstreams": record["upstreams"],
            "source_gateways": {name: results.get(name, "not running") for name in held},
            "connections_drained": sum(held.values()),
            "drain_seconds": round(drain_seconds, 3),
            "old_workers_at_drain": len(old),
            "old_workers_exit_seconds": round(old_workers_seconds, 3),
            "old_workers_left": old_workers_left,
        }
    )
    if left:
        # The upstream already points at the target: this is only a report of what the drain
        # could not do gracefully (the gateways were killed after their drain period).
        measurements["killed_gateways"] = left
    return measurements


def restore_front_door(source: LocalRun) -> dict[str, Any]:
    """Undo switch_front_door: start the source gateways again, put the source's own
    upstream back, reload gracefully, clear the record. Nothing to do when not switched."""
    record = source.summary.get(RECORD)
    if not record:
        return {"restored": False, "reason": "the front door was never switched"}
    nginx = _nginx(source)
    started_again = []
    for entry in _gateways(source):
        if not procs.alive(entry):
            source.start_process(entry.name)
            started_again.append(entry.name)
    own = [str(g["health_url"]) for g in source.summary.get("gateways", [])]
    try:
        health.wait_until(
            f"the gateways of {source.state.stack} answer /healthz",
            lambda: all(health.http_ok(u) for u in own),
            CHECK_TIMEOUT,
            processes=_gateways(source),
        )
    except (health.HealthTimeout, health.ProcessDied) as error:
        raise StepFailed(RESTORE, str(error)) from None
    conf = _conf_path(nginx)
    try:
        restored = replace_upstream_block(conf.read_text(), str(record["own_upstream_block"]))
    except ValueError as error:
        raise StepFailed(RESTORE, f"{conf}: {error}") from None
    own_ids = {str(g["id"]) for g in source.summary["gateways"]}
    front = _front_url(source)
    measurements = _reload(nginx, conf, restored, RESTORE, lambda: _answered_by(front) in own_ids)
    _save_record(source, None)
    measurements.pop("old_workers")
    measurements.update({"restored": True, "gateways_started": started_again})
    return measurements
