"""The local transition's steps in order, as the issue and the README name them: the
contract the plan, the runner's wiring and the end-to-end run are each checked against."""

LOCAL_STEPS = [
    "validate-target",
    "check-source",
    "prepare-source",
    "start-target",
    "catch-up",
    "freeze-source",
    "final-sync",
    "promote-target",
    "switch-front-door",
    "validate-target-live",
    "retire-source",
]
