"""The transitions the API starts and reports, through ``scaling.transition.service``.

The service module is imported when first used, not when the API is (it brings the local
runner with it); the API's own tests give the app a stand-in (FastAPI dependency
``get_transition_service``).

An executing transition runs in a thread of the server (it takes minutes); the request
that starts it answers 202 at once, and ``GET /api/scaling/transitions`` reads its
progress from the log. One at a time per server; the service's own lock on the target
stack (``TransitionBusy``) keeps a second server or the CLI out too.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("sikka.api")


class TransitionService(Protocol):
    """What the API needs of ``scaling.transition.service``: prepare, execute, transitions,
    is_running, and its errors TransitionBusy and TransitionRefused."""

    @property
    def busy_error(self) -> type[Exception]: ...

    @property
    def refused_error(self) -> type[Exception]: ...

    def prepare(
        self, to_stack: str, *, from_stack: str | None, force: bool, local: bool,
        state_root: Path | None,
    ) -> Any: ...  # fmt: skip

    def execute(
        self, to_stack: str, *, from_stack: str | None, force: bool, local: bool,
        state_root: Path | None, retire: bool,
    ) -> Any: ...  # fmt: skip

    def transitions(self, stack: str, *, state_root: Path | None) -> list[dict[str, Any]]: ...

    def is_running(self, to_stack: str, state_root: Path | None = None) -> bool: ...


class ModuleService:
    """``scaling.transition.service`` itself, imported on first use."""

    def _module(self) -> Any:
        from scaling.transition import service

        return service

    @property
    def busy_error(self) -> type[Exception]:
        return self._module().TransitionBusy

    @property
    def refused_error(self) -> type[Exception]:
        return self._module().TransitionRefused

    def prepare(
        self, to_stack: str, *, from_stack: str | None, force: bool, local: bool,
        state_root: Path | None,
    ) -> Any:  # fmt: skip
        return self._module().prepare(
            to_stack, from_stack=from_stack, force=force, local=local, state_root=state_root
        )

    def execute(
        self, to_stack: str, *, from_stack: str | None, force: bool, local: bool,
        state_root: Path | None, retire: bool,
    ) -> Any:  # fmt: skip
        return self._module().execute(
            to_stack,
            from_stack=from_stack,
            force=force,
            local=local,
            state_root=state_root,
            retire=retire,
        )

    def transitions(self, stack: str, *, state_root: Path | None) -> list[dict[str, Any]]:
        return list(self._module().transitions(stack, state_root=state_root))

    def is_running(self, to_stack: str, state_root: Path | None = None) -> bool:
        return bool(self._module().is_running(to_stack, state_root=state_root))


def result_dict(result: Any) -> dict[str, Any]:
    """The seed's result shape {success, message, actions, nextSteps} (extras kept)."""
    if isinstance(result, dict):
        return result
    return result.as_dict()


class Background:
    """The one transition this server is executing, if any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.last: dict[str, Any] | None = None

    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, name: str, run: Any) -> bool:
        """Run ``run()`` in a thread; False when one is running already."""
        with self._lock:
            if self.running():
                return False

            def target() -> None:
                try:
                    self.last = {"transition": name, **result_dict(run())}
                except Exception as error:  # reported in the log and here, never raised
                    message = f"{type(error).__name__}: {error}"
                    log.error("transition %s failed: %s", name, message)
                    self.last = {"transition": name, "success": False, "message": message}

            # Not a daemon: a server stopping waits for the transition (see the app's lifespan).
            self._thread = threading.Thread(target=target, name=f"transition-{name}")
            self._thread.start()
            return True

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
