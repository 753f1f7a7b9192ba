"""The Ray executor: every stage whose inputs are DONE runs as a Ray task, independent ones at once.

    pip install 'blindspot[ray]'
    blindspot run configs/smoke.yaml --executor ray                          # Ray started on this machine
    ray start --head --port 6379                                             # or: a cluster (README, "On a cluster")
    blindspot run configs/paper.yaml --executor ray --ray-address HEAD_IP:6379 --store /shared/blindspot-store

The driver (this process) plans, submits and watches; workers run `store.run_stage` on the
shared store, so the stage lock, the status log and DONE-last hold on a cluster as they do
locally. Each task asks for the resources of its stage kind: training (base, start, augment,
generator), generation and evaluation one GPU when the config's device is CUDA (or, with device
auto, when the cluster has GPUs), every stage one CPU; `resources:` in the config overrides
this per kind. A worker that dies mid-stage (killed, node lost) drops its lock with it and Ray
runs the task again (MAX_RETRIES); a training stage then resumes from its last checkpoint. A
stage's log goes to its directory (`stage.log`), the workers' own output to Ray's session logs,
never to the driver's screen.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from blindspot.artifacts import StageSpec
from blindspot.errors import ConfigError
from blindspot.executors import failed_input, inputs_done
from blindspot.store import Outcome, mark_skipped, mark_waiting, run_stage

log = logging.getLogger(__name__)
GPU_KINDS = ("base", "start", "augment", "generator", "generate", "evaluate")
MAX_RETRIES = 2  # reruns of a task whose worker died (not of a stage that failed: that is final)
# the driver's environment that workers need: where the data is, the model cache, offline hub
FORWARDED_ENV = ("BLINDSPOT_DATA", "BLINDSPOT_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                 "TOKENIZERS_PARALLELISM")
STAGE_LOG = "stage.log"


def stage_resources(kind: str, overrides: dict[str, dict], gpus: bool) -> dict:
    """Ray's options for a stage of `kind`: num_cpus, num_gpus (and memory, bytes) after the overrides."""
    r = overrides.get(kind, {})
    options = {"num_cpus": r.get("num_cpus", 1), "num_gpus": r.get("num_gpus", 1 if gpus and kind in GPU_KINDS else 0)}
    if r.get("memory_gb"):
        options["memory"] = int(r["memory_gb"] * 2**30)
    return options


def connect(address: str | None) -> None:
    """ray.init quietly: its banner and its workers' output go to Ray's logs, not the screen."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray: Ray is not installed (pip install 'blindspot[ray]')") from None
    quiet_ray_loggers()
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    t0 = time.time()
    # "local": a new instance here, never the cluster that /tmp/ray/ray_current_cluster names (a
    # `ray start` on this machine, perhaps long dead), which ray.init() without an address would join
    ray.init(address=address or "local", log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING,
             configure_logging=False, runtime_env={"env_vars": env}, ignore_reinit_error=True)
    log.info("ray: connected to %s in %.1f s; resources %s", address or "a new local instance", time.time() - t0,
             ray.cluster_resources())


def quiet_ray_loggers() -> None:
    """Ray's loggers write to stderr through their own handlers: send them to ours (run.log) instead."""
    for name in ("ray", "ray.data", "ray.tune", "ray.train", "ray.serve"):
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.propagate = True


def _run_on_worker(stage: StageSpec, store: str, run_id: str, threads: int) -> Outcome:
    """The task: run_stage on the worker with the task's CPUs as torch threads, its log in the stage
    directory, no progress bars."""
    from blindspot.logsetup import log_to_file
    from blindspot.progress import NullSink, use_sink

    with log_to_file(Path(store) / stage.dirname / STAGE_LOG), use_sink(NullSink()):
        return run_stage(stage, Path(store), run_id, wait=True, threads=threads)


def run_ray(todo: list[StageSpec], store: Path, shown, address: str | None, resources: dict[str, dict],
            device: str = "auto") -> dict[str, str]:
    """Submit `todo` to Ray as its inputs finish; returns {dirname: reason} of failed and skipped stages."""
    import ray

    started_here = not ray.is_initialized()  # else the caller's own ray.init (tests, a notebook)
    connect(address)
    gpus = device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    task = ray.remote(_run_on_worker)
    run_id, store = uuid.uuid4().hex[:8], store.resolve()
    for st in todo:
        mark_waiting(st, store, run_id)
    pending, running, failed = list(todo), {}, {}
    shown.parallel = True
    try:
        while pending or running:
            for st in list(pending):
                bad = failed_input(st, failed)
                if bad is not None:
                    pending.remove(st)
                    failed[st.dirname] = f"skipped: needs {bad.label}, which failed"
                    mark_skipped(st, store, f"needs {bad.label}, which failed", run_id)
                    shown.grid_counts = (len(running), len(pending))
                    shown.failed_stage(st, f"needs {bad.label}, which failed", skipped=True)
                elif inputs_done(st, store):
                    pending.remove(st)
                    options = stage_resources(st.stage, resources, gpus)
                    running[task.options(**options, max_retries=MAX_RETRIES, retry_exceptions=False,
                                         name=st.label).remote(st, str(store), run_id,
                                                               max(1, int(options["num_cpus"])))] = st
                    log.info("ray: submitted %s %s", st.label, options)
            shown.grid_counts = (len(running), len(pending))
            if not running:
                time.sleep(1.0)  # what is left waits on stages another driver holds
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                _finished(running.pop(ref), ref, store, failed, shown, len(running), len(pending))
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()  # disconnects; stops the instance if this run started it
    return failed


def _finished(st: StageSpec, ref, store: Path, failed: dict[str, str], shown, running: int, waiting: int) -> None:
    import ray

    try:
        outcome = ray.get(ref)
    except ray.exceptions.RayError as e:  # the stage raised something unexpected, or its worker kept dying
        cause = getattr(e, "cause", None) or e
        outcome = Outcome("failed", error=f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1]}")
        log.error("ray: %s failed: %s", st.label, e)
    shown.grid_counts = (running, waiting)
    if outcome.status == "failed":
        failed[st.dirname] = outcome.error or "failed"
        shown.failed_stage(st, outcome.error or "failed")
    elif outcome.status == "cached":
        shown.done_elsewhere(st)
    else:
        log.info("ray: %s done on %s in %.1f s", st.label, outcome.host, outcome.wall_s)
        shown.done(st, outcome.wall_s, st.path(store))
