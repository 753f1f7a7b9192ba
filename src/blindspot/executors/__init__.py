"""Executors: run the stages of a plan that are not done, in this process or on a Ray cluster.

    blindspot run configs/smoke.yaml                           # local: stages one after another, here
    blindspot run configs/smoke.yaml --executor ray            # a Ray cluster started on this machine
    blindspot run configs/paper.yaml --executor ray --ray-address HEAD:6379   # an existing cluster

Both run each stage through `blindspot.store.run_stage` (its lock, status log, DONE last) and
keep one set of semantics: a stage runs once its inputs are DONE; a stage that fails leaves no
DONE and its dependants are skipped with the reason; everything else still runs; the result is
{stage label: reason} of what failed or was skipped, and a rerun resumes. Local (`local.py`)
runs one stage at a time and steps over a stage that another driver holds, coming back to it;
Ray (`ray_cluster.py`) submits every ready stage as a task with its resource request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from blindspot.artifacts import StageSpec

ExecutorName = Literal["local", "ray"]


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
