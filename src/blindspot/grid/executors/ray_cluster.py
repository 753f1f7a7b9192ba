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
group of stages trained together (Plan.groups: a starting point's augmentations) is one task
with the resource request of its kind (`augment`), which holds each member's lock (run_group). A
stage's log goes to its directory (`stage.log`), the workers' own output to Ray's session logs,
never to the driver's screen.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from blindspot.grid.artifacts import StageSpec
from blindspot.errors import ConfigError
from blindspot.grid.executors import inputs_done, jobs, report_outcome, skip_failed_inputs
from blindspot.grid.store import Outcome, mark_skipped, mark_waiting, run_group, run_stage

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


def _run_on_worker(job: list[StageSpec], store: str, run_id: str, threads: int) -> dict[str, Outcome]:
    """The task: run_stage (a group: run_group) on the worker with the task's CPUs as torch threads,
    the log in each stage directory, no progress bars; {dirname: Outcome}."""
    from contextlib import ExitStack

    from blindspot.logsetup import log_to_file
    from blindspot.progress import NullSink, use_sink

    with ExitStack() as stack:
        for st in job:
            stack.enter_context(log_to_file(Path(store) / st.dirname / STAGE_LOG))
        stack.enter_context(use_sink(NullSink()))
        if len(job) == 1:
            return {job[0].dirname: run_stage(job[0], Path(store), run_id, wait=True, threads=threads)}
        return run_group(job, Path(store), run_id, wait=True, threads=threads)


def run_ray(todo: list[StageSpec], store: Path, shown, address: str | None, resources: dict[str, dict],
            device: str = "auto", groups: list[list[StageSpec]] | None = None) -> dict[str, str]:
    """Submit `todo` to Ray as its inputs finish, each of `groups` as one task with its kind's resource
    request; returns {dirname: reason} of failed and skipped stages."""
    import ray

    started_here = not ray.is_initialized()  # else the caller's own ray.init (tests, a notebook)
    connect(address)
    gpus = device.startswith("cuda") or (device == "auto" and ray.cluster_resources().get("GPU", 0) > 0)
    task = ray.remote(_run_on_worker)
    run_id, store = uuid.uuid4().hex[:8], store.resolve()
    for st in todo:
        mark_waiting(st, store, run_id)
    pending, running, failed = jobs(todo, groups), {}, {}
    shown.parallel = True

    def counts() -> tuple[int, int]:  # stages running, stages waiting
        return sum(len(j) for j in running.values()), sum(len(j) for j in pending)

    try:
        while pending or running:
            for job in list(pending):
                for st, reason in skip_failed_inputs(job, failed):
                    failed[st.dirname] = f"skipped: {reason}"
                    mark_skipped(st, store, reason, run_id)
                    shown.grid_counts = counts()
                    shown.failed_stage(st, reason, skipped=True)
                if not job:
                    pending.remove(job)
                elif all(inputs_done(st, store) for st in job):
                    pending.remove(job)
                    options = stage_resources(job[0].stage, resources, gpus)  # a group: as one of its stages
                    name = job[0].label if len(job) == 1 else f"{job[0].label} (+{len(job) - 1} together)"
                    running[task.options(**options, max_retries=MAX_RETRIES, retry_exceptions=False,
                                         name=name).remote(job, str(store), run_id,
                                                           max(1, int(options["num_cpus"])))] = job
                    log.info("ray: submitted %s %s", name, options)
            shown.grid_counts = counts()
            if not running:
                time.sleep(1.0)  # what is left waits on stages another driver holds
                continue
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in ready:
                job = running.pop(ref)
                _finished(job, ref, store, failed, shown, counts())
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()  # disconnects; stops the instance if this run started it
    return failed


def _finished(job: list[StageSpec], ref, store: Path, failed: dict[str, str], shown, counts: tuple[int, int]) -> None:
    import ray

    try:
        outcomes = ray.get(ref)
    except ray.exceptions.RayError as e:  # the stage raised something unexpected, or its worker kept dying
        cause = getattr(e, "cause", None) or e
        error = f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1]}"
        outcomes = {st.dirname: Outcome("failed", error=error) for st in job}
        log.error("ray: %s failed: %s", job[0].label, e)
    shown.grid_counts = counts
    for st in job:
        outcome = outcomes[st.dirname]
        if outcome.status == "done":
            log.info("ray: %s done on %s in %.1f s", st.label, outcome.host, outcome.wall_s)
        report_outcome(st, outcome, failed, shown, store)
