"""The local executor: every stage that is not done, one after another, in this process.

    blindspot run configs/smoke.yaml --executor local      # the default

Stages run in the plan's order. A stage that another process holds (a second `blindspot run`
on the same `--store`) is stepped over and tried again later, so two drivers on one store share
the work instead of queueing behind each other; when nothing else is runnable the driver polls
until the other one finishes or frees it. A group (Plan.groups) is one job: its members are trained
together, here, under their own locks; members another driver holds stay pending.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

from blindspot.grid.artifacts import StageSpec
from blindspot.grid.executors import Job, inputs_done, jobs, report_outcome, skip_failed_inputs
from blindspot.grid.store import mark_skipped, mark_waiting, run_group, run_stage

log = logging.getLogger(__name__)
POLL_S = 1.0  # how often a driver looks again at stages another driver holds


def run_local(todo: list[StageSpec], store: Path, shown, groups: list[list[StageSpec]] | None = None
              ) -> dict[str, str]:
    """Run `todo` (topological order) here, each of `groups` as one job; returns {dirname: reason} of
    failed and skipped stages."""
    run_id = uuid.uuid4().hex[:8]
    for st in todo:
        mark_waiting(st, store, run_id)
    pending, failed = jobs(todo, groups), {}
    while pending:
        job = _next_job(pending, store, failed, shown, run_id)
        if job is None:
            time.sleep(POLL_S)  # everything left is held (or waits on what is held) by another driver
    return failed


def _next_job(pending: list[Job], store: Path, failed: dict[str, str], shown, run_id: str) -> Job | None:
    """Run (or skip) the first pending job that can go now; None if all are held elsewhere."""
    for job in pending:
        for st, reason in skip_failed_inputs(job, failed):
            failed[st.dirname] = f"skipped: {reason}"
            mark_skipped(st, store, reason, run_id)
            shown.failed_stage(st, reason, skipped=True)
        if job and not all(inputs_done(st, store) for st in job):
            continue
        if len(job) == 1:
            outcomes = {job[0].dirname: run_stage(job[0], store, run_id, wait=False, on_start=shown.started)}
        else:
            outcomes = run_group(job, store, run_id, wait=False, on_start=shown.started) if job else {}
        if job and all(o.status == "locked" for o in outcomes.values()):
            continue
        for st in list(job):
            outcome = outcomes[st.dirname]
            if outcome.status == "locked":
                continue  # another driver holds it: it stays pending
            job.remove(st)
            if outcome.status == "done" and len(outcomes) > 1:
                shown.started(st)  # a group member: its own share of the group's time
            report_outcome(st, outcome, failed, shown, store)
        if not job:
            pending.remove(job)
        return job
    return None
