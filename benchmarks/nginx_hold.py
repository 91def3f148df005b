"""Does a phase, run locally, hold its promised WebSockets through Nginx? Held and refused,
per gateway, and Nginx's connections per worker.

    python -m benchmarks.nginx_hold [--stack scale] [--count N] [--sources 60]

It starts the phase with the local runner, opens ``--count`` WebSockets (default: the
phase's gateway.maxConnections) through its Nginx, each with its own client_id and token
and one of ``--sources`` loopback source addresses (127.0.0.2, ...) so that neither the
per-address connection limit nor the upgrade rate limit is what is measured, holds them
all, prints the figures, closes them and stops the phase, whatever happens. Asserts
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from gateway.auth import mint_token
from gateway.server import BEARER_PREFIX, SUBPROTOCOL
from scaling.local.runner import PROJECT_DIR, LocalRun, load_spec, up
from scaling.model import PhaseSpec


def _token(run: LocalRun, spec: PhaseSpec, sub: str) -> str:
    auth = spec.gateway.auth
    return mint_token(
        run.secrets["gateway-jwt-secret"],
        sub=sub,
        role="rider",
        trips=(),
        ttl=3600,
        issuer=auth.issuer,
        audience=auth.audience,
    )


async def _open(
    url: str, source: str, token: str, opened: list[ClientConnection]
) -> tuple[str, float]:
    started = time.monotonic()
    try:
        ws = await connect(
            url,
            local_addr=(source, 0),
            open_timeout=30,
            close_timeout=1,
            compression=None,
            subprotocols=[Subprotocol(SUBPROTOCOL), Subprotocol(BEARER_PREFIX + token)],
        )
    except InvalidStatus as error:
        return f"http {error.response.status_code}", 0.0
    except (OSError, TimeoutError, InvalidHandshake) as error:
        return f"error: {type(error).__name__}", 0.0
    try:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
    except ConnectionClosed as closed:
        return f"closed {closed.rcvd.code if closed.rcvd else None}", 0.0
    except TimeoutError:
        await ws.close()
        return "error: no welcome", 0.0
    opened.append(ws)
    return str(welcome.get("gateway")), time.monotonic() - started


async def hold(
    run: LocalRun, spec: PhaseSpec, count: int, sources: int, parallel: int
) -> dict[str, object]:
    base = run.state.summary["nginx"]["ws_url"]
    gate = asyncio.Semaphore(parallel)
    opened: list[ClientConnection] = []

    async def one(index: int) -> tuple[str, float]:
        client = f"rider-{uuid.uuid4().hex[:12]}"
        async with gate:
            return await _open(
                f"{base}?client_id={client}",
                f"127.0.0.{2 + index % sources}",
                _token(run, spec, client),
                opened,
            )

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(count)))
    seconds = time.monotonic() - started
    await asyncio.sleep(5)  # anything closed right after its welcome shows now
    still_open = sum(1 for ws in opened if ws.close_code is None)
    nginx = next(p for p in run.state.processes if p.tier == "nginx")
    workers = psutil.Process(nginx.pid).children() if nginx.pid else []
    per_worker = sorted(
        sum(1 for c in w.net_connections("tcp") if c.status == psutil.CONN_ESTABLISHED)
        for w in workers
    )
    await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)
    outcomes = Counter(name for name, _ in results)
    opening = sorted(s for _, s in results if s)
    return {
        "wanted": count,
        "held_after_5s": still_open,
        "outcomes": dict(sorted(outcomes.items())),
        "open_seconds": round(seconds, 1),
        "open_p99_seconds": round(opening[int(0.99 * (len(opening) - 1))], 2) if opening else None,
        "nginx_established_per_worker": per_worker,
    }


def log_summary(run: LocalRun, tiers: tuple[str, ...] = ("nginx", "gateway")) -> dict[str, int]:
    """Distinct warning and error lines of the Nginx and gateway logs, counted (times,
    pids, addresses and ports blanked)."""
    counts: Counter[str] = Counter()
    for entry in run.state.processes:
        if entry.tier not in tiers or not Path(entry.log).is_file():
            continue
        for line in Path(entry.log).read_text(errors="replace").splitlines():
            if not re.search(r"\b(warn|error|crit|alert|emerg|WARNING|ERROR)\b", line):
                continue
            shape = re.sub(r"\d+", "N", line)[:160]
            counts[f"{entry.name.rstrip('0123456789')}: {shape}"] += 1
    return dict(counts.most_common(8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="scale")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--sources", type=int, default=60)
    parser.add_argument("--parallel", type=int, default=50)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec = load_spec(PROJECT_DIR / f"Pulumi.{args.stack}.yaml")
    count = args.count or spec.gateway.max_connections
    with tempfile.TemporaryDirectory(prefix=f"nginx-hold-{args.stack}-") as tmp:
        run = up(spec, stack=args.stack, state_dir=Path(tmp) / "state")
        try:
            figures = asyncio.run(hold(run, spec, count, args.sources, args.parallel))
            figures["log_lines"] = log_summary(run)
        finally:
            run.down()
    print(f"{args.stack}: {json.dumps(figures)}")


if __name__ == "__main__":
    main()
