"""Settings for the whole suite."""

from __future__ import annotations

import signal

# A shell starts its background jobs with SIGINT ignored, and a child inherits that: a suite
# started in the background (CI under `cmd &`, nohup) would then run every process the tests
# interrupt with SIGINT (the local runner, the PgBouncer supervisor) unable to receive it.
# Python's own handler is not inherited across exec, so the children start with the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
