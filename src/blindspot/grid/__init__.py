"""The grid: the planner, the store it runs stages into, and the executors beside it.

    plan.py             config -> the stage graph (nothing runs); what --dry-run prints
    runner.py           `blindspot run`: execute the plan, write results, report and summary
    artifacts.py        a stage's directory name: the hash of its spec, its inputs and its code version
    stage_versions.py   per-stage code versions (+ stage_code.json, the code each one covers)
    store.py            one stage run into its directory: lock, status log, runtime, DONE last
    executors/          where stages run: local (this process) or ray (a cluster)
    display.py          the live display / plain lines of a run, with the ETA
    summary.py          a run's closing lines
    estimate.py         `blindspot run --estimate`: projected hours (calibrate.py measures the rates)

What the CLI and the tests use is importable from here (`from blindspot.grid import build_plan,
run`); it loads on first use, so `python -m blindspot.grid.stage_versions` imports no planner.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Plan": "plan", "build_plan": "plan", "print_plan": "plan", "parallelism_text": "plan", "stage_work": "plan",
    "execute": "runner", "write_outputs": "runner", "run": "runner", "add_arguments": "runner", "main": "runner",
    "RUN_LOG": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
