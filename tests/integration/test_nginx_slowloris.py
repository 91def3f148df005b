"""One client must not take Nginx down: the launch phase's real Nginx (local runner, the
reference gateway behind it) under a slowloris from a second loopback address.

The attacker binds to 127.0.0.2 (Linux routes all of 127/8 on lo), the legitimate clients
use 127.0.0.1, so the per-address limits meet the attacker only, as they would on a real
network. Figures are printed (-s); assertions are on outcomes only, never on timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from local_helpers import (
    Phase,
    new_marker,
    open_client,
    run_async,
    send_location,
    subscribe,
    wait_location,
)
from websockets.asyncio.client import ClientConnection

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.2"
SOCKETS = 1100  # more than the launch phase's 1,024 worker connections
# The start of a request whose headers never end (no blank line).
PARTIAL_REQUEST = b"GET /?client_id=slow HTTP/1.1\r\nHost: sikka\r\nUser-Agent: slowloris\r\n"


@pytest.fixture(scope="module")
def phase(launch_phase: Phase) -> Iterator[Phase]:
    """The session's launch phase (conftest.py); this process opens the attacker's sockets
    (Nginx's own open-file limit is the runner's to raise, scaling/local/limits.py)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = SOCKETS + 1024
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    try:
        yield launch_phase
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Slowloris:
    """Half-open requests from ATTACKER: a partial request, then one more header line per
    round, never the blank line that would end the headers."""

    def __init__(self, port: int, size: int) -> None:
        self.port, self.size = port, size
        self.open: dict[socket.socket, float] = {}  # socket -> when it connected
        self.attempts = 0
        self.refused = 0  # closed by Nginx before the request could even be sent
        self.lifetimes: list[float] = []  # of the sockets Nginx closed, once open
        self.responses: list[bytes] = []  # anything Nginx answered (expected: nothing)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def fill(self) -> None:
        """Open sockets until `size` are open (at most `size` attempts per call)."""
        for _ in range(self.size - len(self.open)):
            self.attempts += 1
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((ATTACKER, 0))
                sock.settimeout(2)
                sock.connect(("127.0.0.1", self.port))
                sock.sendall(PARTIAL_REQUEST)
            except OSError:
                sock.close()
                self.refused += 1
                continue
            sock.setblocking(False)
            self.open[sock] = time.monotonic()

    def reap(self) -> None:
        """Forget the sockets Nginx has closed."""
        now = time.monotonic()
        for sock in list(self.open):
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                self.responses.append(data)
            self.lifetimes.append(now - self.open.pop(sock))
            sock.close()

    def trickle(self) -> None:
        for sock in list(self.open):
            with contextlib.suppress(OSError):
                sock.send(b"X-Slow: 1\r\n")

    def _sustain(self) -> None:
        while not self._stop.wait(0.5):
            self.reap()
            self.fill()
            self.trickle()

    def start(self) -> None:
        """Keep the attack going in the background: reopen whatever Nginx closes."""
        self._thread = threading.Thread(target=self._sustain, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def close(self) -> None:
        self.stop()
        for sock in self.open:
            sock.close()
        self.open.clear()


def _port(phase: Phase) -> int:
    return int(phase.summary["nginx"]["url"].rsplit(":", 1)[1])


def _timed_get(url: str) -> float:
    started = time.monotonic()
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, (url, response.status_code)
    return time.monotonic() - started


async def _legit_websockets(phase: Phase, count: int) -> list[float]:
    """`count` riders connect through Nginx (welcome from the gateway), each with a token for
    the trip; the trip's driver's location reaches one of them. Returns each connection's
    time to welcome."""
    times: list[float] = []
    marker = new_marker()[:8]
    trip = f"trip-{marker}"

    async def connect(client_id: str, token: str) -> ClientConnection:
        started = time.monotonic()
        ws, _gateway = await open_client(phase.nginx_ws, client_id, token)
        times.append(time.monotonic() - started)
        return ws

    riders = await asyncio.gather(
        *(connect(f"rider-{marker}-{i}", phase.token("rider", trip)) for i in range(count))
    )
    driver = await connect(f"driver-{marker}", phase.token("driver", trip))
    try:
        await subscribe(riders[0], trip)
        await send_location(driver, trip)
        frame = await wait_location(riders[0], trip, 10)
        assert frame["trip_id"] == trip
    finally:
        for ws in [*riders, driver]:
            await ws.close()
    return times


def _ms(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


def test_slowloris_from_one_address_leaves_nginx_serving(phase: Phase) -> None:
    nginx = phase.spec.nginx
    per_client = nginx.per_client_connections
    assert nginx.worker_connections < SOCKETS  # the attack that took Nginx down before
    url = phase.summary["nginx"]["url"]
    status_url = phase.summary["nginx"]["status_url"]
    status_health = status_url.replace("/nginx_status", "/healthz")
    # The same requests without an attack, for comparison.
    quiet = [_timed_get(f"{url}/healthz") for _ in range(20)]
    quiet_sockets = run_async(_legit_websockets(phase, 20))
    print(
        f"\n[slowloris] without an attack: 20 public /healthz {_ms(quiet)}; "
        f"21 WebSockets to welcome {_ms(quiet_sockets)}"
    )
    attack = Slowloris(_port(phase), SOCKETS)
    try:
        # 1. Open everything at once. A request from 127.0.0.1 behind them in the accept
        #    queue is answered only once Nginx has accepted (and judged) every one of them.
        attack.fill()
        first = _timed_get(f"{url}/healthz")
        attack.reap()
        time.sleep(0.3)
        attack.reap()
        held = len(attack.open)
        print(
            f"[slowloris] {attack.attempts} half-open requests from {ATTACKER}: {held} held "
            f"(limit {per_client} per address), {attack.attempts - held} closed at once "
            f"(worker connections: {nginx.worker_connections} per worker, x2 in nginx.conf for "
            f"the accept gate); /healthz from 127.0.0.1 meanwhile: {first * 1000:.0f} ms"
        )
        assert 0 < held <= per_client

        # 2. Keep it up (reopen whatever is closed, one more header line each round) while
        #    legitimate riders connect and the health checks are asked.
        attack.start()
        public = [_timed_get(f"{url}/healthz") for _ in range(20)]
        internal = [_timed_get(status_health) for _ in range(5)] + [_timed_get(status_url)]
        sockets = run_async(_legit_websockets(phase, 20))
        attack.stop()
        print(
            f"[slowloris] under a sustained attack ({attack.attempts} connection attempts so "
            f"far): 20 public /healthz {_ms(public)}; status listener {_ms(internal)}; "
            f"21 WebSockets to welcome {_ms(sockets)}, a location fanned out"
        )

        # 3. Whatever the attacker still holds is closed by Nginx, unanswered, although
        #    it keeps sending header lines: the header timeout counts from the first byte.
        deadline = time.monotonic() + nginx.client_timeout_seconds + 30
        while attack.open and time.monotonic() < deadline:
            attack.trickle()
            time.sleep(0.5)
            attack.reap()
        longest = max(attack.lifetimes)
        print(
            f"[slowloris] every attacker connection closed; the longest lived "
            f"{longest:.1f} s (client timeout {nginx.client_timeout_seconds} s); "
            f"{attack.refused} refused before their request was sent"
        )
        assert not attack.open, f"{len(attack.open)} attacker connections still open"
        assert attack.responses == []
    finally:
        attack.close()


def _upgrade_status(port: int, source: str) -> int:
    """One WebSocket upgrade request (incomplete: the gateway refuses the handshake, so no
    WebSocket stays open) on a new connection from ``source``; the response's status."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        s.sendall(
            b"GET /?client_id=flood HTTP/1.1\r\nHost: sikka\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n\r\n"
        )
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(1024)
            if not chunk:
                break
            head += chunk
    return int(head.split()[1])


def test_upgrade_flood_gets_429_and_others_still_connect(phase: Phase) -> None:
    nginx = phase.spec.nginx
    burst = nginx.per_client_connections
    port = _port(phase)
    # Three bursts' worth, back to back: far more than the burst plus the refill.
    statuses = [_upgrade_status(port, ATTACKER) for _ in range(3 * burst)]
    limited = statuses.count(429)
    print(
        f"\n[upgrade flood] {len(statuses)} upgrades from {ATTACKER}: {limited} answered 429 "
        f"(burst {burst}), the others reached the gateway ({sorted(set(statuses) - {429})})"
    )
    assert statuses[0] != 429
    assert limited > 0
    # Another address is not affected, and plain requests from the flooder are not either.
    times = run_async(_legit_websockets(phase, 3))
    assert len(times) == 4
    with httpx.Client(transport=httpx.HTTPTransport(local_address=ATTACKER)) as flooder:
        assert flooder.get(phase.summary["nginx"]["url"] + "/healthz").status_code == 200
