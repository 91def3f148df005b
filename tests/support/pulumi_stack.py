"""The mock-engine harness lives in the package (it also backs `sikka-scaling preview`)."""

from components.offline_preview import Registered, StackRun, run_stack

__all__ = ["Registered", "StackRun", "run_stack"]
