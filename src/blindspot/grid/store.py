"""The stage store: one lock per stage, a status log per stage directory, and the one writer of DONE.

    cat RUN/stages/start-3f2a9c1d0e4b/status.jsonl     # what happened to a stage, on which host, when

A store is a directory of stage directories (artifacts.py names them). Several drivers (two
`blindspot run` on one `--store`, or the workers of a Ray cluster) may share it: `run_stage`
takes the stage's lock (`filelock`, an OS-level `flock` on `<stage>/.lock`) before it writes
anything, so one stage never runs twice at once; the OS drops the lock of a process that dies,
so a killed run leaves nothing to clean up. Under the lock it checks DONE again (another driver
may have finished the stage meanwhile), writes `stage.json`, runs the stage, writes
`timing.json`, then `DONE` last: the stage modules never write DONE into a grid's directory.

`status.jsonl` gets one JSON line per event, each with a UTC timestamp, host and pid:
`waiting` (planned, inputs not done yet), `locked` (another process holds the stage),
`running`, `success` (with wall_s), `failed` (with the error), `skipped` (an input failed),
`cached` (found done once the lock was taken); a member of a group trained together
(`run_group`: a starting point's augmentations, one job) has `group` in its `running` line and
`grouped_with` in its timing.json. So a person can read what happened on a cluster
after the fact; tests count the `running` lines to check that a stage ran once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from filelock import FileLock, Timeout

from blindspot.grid.artifacts import StageSpec, write_spec
from blindspot.errors import BlindspotError
from blindspot.storage import atomic_write_json, mark_done

log = logging.getLogger(__name__)

LOCK = ".lock"
STATUS = "status.jsonl"
Event = Literal["waiting", "locked", "running", "success", "failed", "skipped", "cached"]


@dataclass(frozen=True)
class Outcome:
    """What `run_stage` did: ran it (done), found it done (cached), failed, or found it locked."""

    status: Literal["done", "cached", "failed", "locked"]
    wall_s: float = 0.0
    error: str | None = None
    host: str = ""


def where() -> str:
    """'host:pid' of this process, as the status logs name it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def append_status(stage_dir: Path, event: Event, **detail) -> None:
    """Append one event line to the stage's status.jsonl (small O_APPEND writes do not interleave)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    row = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event,
           "host": socket.gethostname(), "pid": os.getpid(), **detail}
    with open(stage_dir / STATUS, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_status(stage_dir: Path) -> list[dict]:
    """The stage's status events, oldest first ([] if it has none)."""
    path = Path(stage_dir) / STATUS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def stage_lock(stage_dir: Path) -> FileLock:
    """The stage's inter-process lock (not thread-local: one Ray worker thread takes and drops it)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(stage_dir / LOCK), thread_local=False)


def run_stage(stage: StageSpec, store: Path, run_id: str = "", wait: bool = True,
              on_start: Callable[[StageSpec], None] | None = None, threads: int | None = None) -> Outcome:
    """Run one stage into its store directory under its lock; DONE last. Inputs must be done.

    `wait` False returns Outcome('locked') at once if another process holds the stage;
    `on_start(stage)` is called once the lock is held and the stage is about to run. `threads`
    sets torch's CPU threads for the stage (None: as they are); timing.json records them, because
    CPU float results depend on them (parallel reductions add in another order). A
    BlindspotError from the stage is an Outcome('failed'); any other exception is logged in the
    status log and raised.
    """
    out = stage.path(store)
    if stage.done(store):
        return Outcome("cached")
    lock = stage_lock(out)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            return Outcome("locked")
        append_status(out, "locked", run=run_id)
        log.info("stage %s is locked by another process; waiting for it", stage.label)
        lock.acquire()
    try:
        return _run_held(stage, store, run_id, on_start, threads)
    finally:
        lock.release()


def _run_held(stage: StageSpec, store: Path, run_id: str, on_start, threads: int | None) -> Outcome:
    """run_stage's part under the stage's lock: done meanwhile? stage.json, run, timing.json, DONE."""
    from blindspot.stages import STAGES

    out = stage.path(store)
    if stage.done(store):
        append_status(out, "cached", run=run_id)
        return Outcome("cached")
    write_spec(stage, store)
    append_status(out, "running", run=run_id, label=stage.label)
    log.info("stage %s -> %s (%s)", stage.label, out, where())
    if on_start is not None:
        on_start(stage)
    t0 = time.time()
    try:
        module = STAGES[stage.stage]
        spec = module.Spec.model_validate(stage.spec)
        runtime = resolve_runtime(spec, threads)
        module.run(spec, {k: v.path(store) for k, v in stage.inputs.items()}, out, runtime)
    except BlindspotError as e:
        append_status(out, "failed", run=run_id, error=str(e))
        return Outcome("failed", time.time() - t0, str(e), where())
    except BaseException as e:
        append_status(out, "failed", run=run_id, error=f"{type(e).__name__}: {e}")
        raise
    wall = round(time.time() - t0, 3)
    _finish(stage, store, run_id, wall, runtime)
    return Outcome("done", wall, None, where())


def _finish(stage: StageSpec, store: Path, run_id: str, wall: float, runtime, **timing) -> None:
    """timing.json, then DONE (last), then the status line."""
    out = stage.path(store)
    atomic_write_json(out / "timing.json", {"label": stage.label, "wall_s": wall, "host": where(),
                                            "runtime": runtime.__dict__, "threads": runtime.threads, **timing})
    mark_done(out)
    append_status(out, "success", run=run_id, wall_s=wall)


def run_group(stages: list[StageSpec], store: Path, run_id: str = "", wait: bool = True,
              on_start: Callable[[StageSpec], None] | None = None, threads: int | None = None) -> dict[str, Outcome]:
    """Run stages that their kind trains together (`stages.<kind>.run_group`) as one job, each
    member under its own lock, with its own stage.json, status log, timing.json and DONE (last).

    Members done already are 'cached'. Members another process holds are left to it: with `wait`
    False they come back 'locked' (the executor tries them again), with `wait` True they are
    waited for one by one after the group (run_stage: cached, or run alone if that process died).
    A group that holds one member runs it as a stage alone. Returns {dirname: Outcome}.
    """
    outcomes: dict[str, Outcome] = {}
    held: list[tuple[StageSpec, FileLock]] = []
    elsewhere: list[StageSpec] = []
    try:
        for st in stages:
            if st.done(store):
                outcomes[st.dirname] = Outcome("cached")
                continue
            lock = stage_lock(st.path(store))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                elsewhere.append(st)
                continue
            held.append((st, lock))
        members = [st for st, _ in held]
        if len(members) == 1:
            outcomes[members[0].dirname] = _run_held(members[0], store, run_id, on_start, threads)
        elif members:
            outcomes.update(_run_group_held(members, store, run_id, on_start, threads))
    finally:
        for _, lock in held:
            lock.release()
    for st in elsewhere:
        if wait:
            outcomes[st.dirname] = run_stage(st, store, run_id, wait=True, on_start=on_start, threads=threads)
        else:
            outcomes[st.dirname] = Outcome("locked")
    return outcomes


def _run_group_held(members: list[StageSpec], store: Path, run_id: str, on_start,
                    threads: int | None) -> dict[str, Outcome]:
    """run_group's part under the members' locks (every member not done, of one kind)."""
    from blindspot.stages import STAGES

    outcomes: dict[str, Outcome] = {}
    for st in [m for m in members if m.done(store)]:  # finished by another process before we locked it
        append_status(st.path(store), "cached", run=run_id)
        outcomes[st.dirname] = Outcome("cached")
    members = [m for m in members if m.dirname not in outcomes]
    if len(members) <= 1:
        return outcomes | {m.dirname: _run_held(m, store, run_id, on_start, threads) for m in members}
    names = [m.dirname for m in members]
    for st in members:
        write_spec(st, store)
        append_status(st.path(store), "running", run=run_id, label=st.label, group=names)
    log.info("stages %s -> one job (%s)", ", ".join(m.label for m in members), where())
    if on_start is not None:
        on_start(members[0])
    module = STAGES[members[0].stage]
    t0 = time.time()
    try:
        specs = [module.Spec.model_validate(st.spec) for st in members]
        runtime = resolve_runtime(specs[0], threads)
        errors = module.run_group(specs, [{k: v.path(store) for k, v in st.inputs.items()} for st in members],
                                  [st.path(store) for st in members], runtime)
    except BlindspotError as e:
        errors = [str(e)] * len(members)
    except BaseException as e:
        for st in members:
            append_status(st.path(store), "failed", run=run_id, error=f"{type(e).__name__}: {e}")
        raise
    wall = time.time() - t0
    for st, error, share in zip(members, errors, _shares(members, store, errors, wall)):
        if error is not None:
            append_status(st.path(store), "failed", run=run_id, error=error)
            outcomes[st.dirname] = Outcome("failed", share, error, where())
        else:
            _finish(st, store, run_id, share, runtime, grouped_with=len(members) - 1, group_wall_s=round(wall, 3))
            outcomes[st.dirname] = Outcome("done", share, None, where())
    return outcomes


def _shares(members: list[StageSpec], store: Path, errors: list[str | None], wall: float) -> list[float]:
    """Each member's part of the group's wall time: its meta.json wall_s (its share of loading and
    training, blindspot.training.group_runs) plus an equal part of the rest; equal parts without meta."""
    own = []
    for st, error in zip(members, errors):
        meta = st.path(store) / "meta.json"
        own.append(json.loads(meta.read_text()).get("wall_s", 0.0) if error is None and meta.is_file() else 0.0)
    rest = max(wall - sum(own), 0.0) / len(members)
    return [round(o + rest, 3) for o in own]


def resolve_runtime(spec, threads: int | None = None):
    """How this machine runs the stage: its device and dtype (a spec's 'auto' resolved here, where
    the stage runs, not on the driver), the model cache ($BLINDSPOT_CACHE or the default) and torch's
    CPU threads (`threads`, else as they are)."""
    import torch

    from blindspot.models.resolve import cache_root, detect_device
    from blindspot.stages import Runtime

    if threads is not None:
        torch.set_num_threads(threads)
    device, dtype = torch.device("cpu"), torch.float32
    if hasattr(spec, "device"):
        device, dtype = detect_device(spec.device, spec.dtype)
    elif hasattr(spec, "model"):  # a built base model: the fastest device here, in fp32
        device, _ = detect_device("auto", "float32")
    return Runtime(device=str(device), dtype=str(dtype).removeprefix("torch."), cache_dir=str(cache_root()),
                   threads=torch.get_num_threads())


def mark_skipped(stage: StageSpec, store: Path, reason: str, run_id: str = "") -> None:
    append_status(stage.path(store), "skipped", run=run_id, reason=reason)


def mark_waiting(stage: StageSpec, store: Path, run_id: str = "") -> None:
    append_status(stage.path(store), "waiting", run=run_id, label=stage.label,
                  inputs=[v.dirname for v in stage.inputs.values()])
