"""The local executor: every stage that is not done, one after another, in this process.

    blindspot run configs/smoke.yaml --executor local      # the default

Stages run in the plan's order. A stage that another process holds (a second `blindspot run`
on the same `--store`) is stepped over and tried again later, so two drivers on one store share
the work instead of queueing behind each other; when nothing else is runnable the driver polls
until the other one finishes or frees it.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

from blindspot.artifacts import StageSpec
from blindspot.executors import failed_input, inputs_done
from blindspot.store import mark_skipped, mark_waiting, run_stage

log = logging.getLogger(__name__)
POLL_S = 1.0  # how often a driver looks again at stages another driver holds


def run_local(todo: list[StageSpec], store: Path, shown) -> dict[str, str]:
    """Run `todo` (topological order) here; returns {dirname: reason} of failed and skipped stages."""
    run_id = uuid.uuid4().hex[:8]
    for st in todo:
        mark_waiting(st, store, run_id)
    pending, failed = list(todo), {}
    while pending:
        st = _next_stage(pending, store, failed, shown, run_id)
        if st is None:
            time.sleep(POLL_S)  # everything left is held (or waits on what is held) by another driver
    return failed


def _next_stage(pending: list[StageSpec], store: Path, failed: dict[str, str], shown, run_id: str) -> StageSpec | None:
    """Run (or skip) the first pending stage that can go now; None if all are held elsewhere."""
    for st in pending:
        bad = failed_input(st, failed)
        if bad is not None:
            reason = f"needs {bad.label}, which failed"
            failed[st.dirname] = f"skipped: {reason}"
            mark_skipped(st, store, reason, run_id)
            shown.failed_stage(st, reason, skipped=True)
        elif not inputs_done(st, store):
            continue
        else:
            outcome = run_stage(st, store, run_id, wait=False, on_start=shown.started)
            if outcome.status == "locked":
                continue
            if outcome.status == "failed":
                failed[st.dirname] = outcome.error or "failed"
                shown.failed_stage(st, outcome.error or "failed")
            elif outcome.status == "cached":
                shown.done_elsewhere(st)
            else:
                shown.done(st, outcome.wall_s, st.path(store))
        pending.remove(st)
        return st
    return None
