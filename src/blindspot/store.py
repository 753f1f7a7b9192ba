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
`cached` (found done once the lock was taken). So a person can read what happened on a cluster
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

from blindspot.artifacts import StageSpec, write_spec
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
    from blindspot.stages import STAGES

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
        atomic_write_json(out / "timing.json", {"label": stage.label, "wall_s": wall, "host": where(),
                                                "runtime": runtime.__dict__, "threads": runtime.threads})
        mark_done(out)
        append_status(out, "success", run=run_id, wall_s=wall)
        return Outcome("done", wall, None, where())
    finally:
        lock.release()


def resolve_runtime(spec, threads: int | None = None):
    """How this machine runs the stage: its device and dtype (a spec's 'auto' resolved here, where
    the stage runs, not on the driver), the model cache ($BLINDSPOT_CACHE or the default) and torch's
    CPU threads (`threads`, else as they are)."""
    import torch

    from blindspot.models import cache_root, detect_device
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
