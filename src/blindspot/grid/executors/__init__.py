"""Executors: run the stages of a plan that are not done, in this process or on a Ray cluster.

    blindspot run configs/smoke.yaml                           # local: stages one after another, here
    blindspot run configs/smoke.yaml --executor ray            # a Ray cluster started on this machine
    blindspot run configs/paper.yaml --executor ray --ray-address HEAD:6379   # an existing cluster

Both run each stage through `blindspot.grid.store.run_stage` (its lock, status log, DONE last) and
keep one set of semantics: a stage runs once its inputs are DONE; a stage that fails leaves no
DONE and its dependants are skipped with the reason; everything else still runs; the result is
{stage label: reason} of what failed or was skipped, and a rerun resumes. Local (`local.py`)
runs one stage at a time and steps over a stage that another driver holds, coming back to it;
Ray (`ray_cluster.py`) submits every ready stage as a task with its resource request.

The unit both run is a job: one stage, or a group of stages that the planner says are trained
together (Plan.groups: a starting point's augmentations, blindspot.training.group_runs). A group runs as
one job (one Ray task, with its kind's resource request) through `store.run_group`, which holds
every member's lock and writes each member's records; a member whose input failed is skipped
alone, and a group is ready once the inputs of all its other members are done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from blindspot.grid.artifacts import StageSpec

ExecutorName = Literal["local", "ray"]
Job = list[StageSpec]  # one stage, or a group trained together


def jobs(todo: list[StageSpec], groups: list[list[StageSpec]] | None = None) -> list[Job]:
    """`todo` (topological order) as jobs: each group's members still to run together, the rest alone."""
    from blindspot.training.group_runs import schedule

    return [list(item) if isinstance(item, list) else [item] for item in schedule(todo, groups or [])]


def skip_failed_inputs(job: Job, failed: dict[str, str]) -> list[tuple[StageSpec, str]]:
    """Take the members whose input failed out of `job`; returns them, each with the reason."""
    out = []
    for st in list(job):
        bad = failed_input(st, failed)
        if bad is not None:
            job.remove(st)
            out.append((st, f"needs {bad.label}, which failed"))
    return out


def failed_input(stage: StageSpec, failed: dict[str, str]) -> StageSpec | None:
    """The first input of `stage` that failed or was skipped in this run, if any."""
    return next((v for v in stage.inputs.values() if v.dirname in failed), None)


def inputs_done(stage: StageSpec, store: Path) -> bool:
    return all(v.done(store) for v in stage.inputs.values())


def graph_depths(stages: list[StageSpec]) -> dict[str, int]:
    """dirname -> depth: 0 for a stage without inputs, else 1 + its deepest input's depth."""
    depth: dict[str, int] = {}
    for st in stages:  # topological order: inputs first
        depth[st.dirname] = 1 + max((depth[v.dirname] for v in st.inputs.values()), default=-1)
    return depth


def report_outcome(stage: StageSpec, outcome, failed: dict[str, str], shown, store: Path) -> None:
    """Show one finished stage (failed, done by another run, or done here) and record a failure."""
    if outcome.status == "failed":
        failed[stage.dirname] = outcome.error or "failed"
        shown.failed_stage(stage, outcome.error or "failed")
    elif outcome.status == "cached":
        shown.done_elsewhere(stage)
    else:
        shown.done(stage, outcome.wall_s, stage.path(store))
