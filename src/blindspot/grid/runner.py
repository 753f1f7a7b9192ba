"""Run a whole experiment from one YAML config: cached, resumable, then the results and report.

    blindspot run configs/demo.yaml                  # everything; ends with a summary of what it found
    blindspot run configs/demo.yaml --dry-run        # the plan: each stage, cached or to run
    blindspot run configs/demo.yaml --set seeds=[0,1] --out runs/demo-2seeds
    blindspot run configs/demo.yaml -q               # errors only; -v adds library messages

On a terminal progress is one live display (blindspot.grid.display); in a pipe, one line per stage.
Everything logged, the libraries' messages included, goes to RUN/run.log.

The config expands into a graph of stages (blindspot.grid.plan; nothing runs there). An
executor (blindspot.grid.executors: in this process, or on Ray) runs the stages that are not done
through the store (blindspot.grid.store: lock, status log, DONE last); stages read only their spec
and their input directories, so every executor runs the same graph.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Literal

from blindspot.config import ExperimentConfig, load_config
from blindspot.errors import BlindspotError, ConfigError
from blindspot.grid.executors import ExecutorName
from blindspot.grid.plan import Plan, build_plan, print_plan, stage_work
from blindspot.storage import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
RUN_LOG = "run.log"


def execute(plan: Plan, store: Path, display: Literal["live", "plain", "off"] = "off",
            executor: ExecutorName = "local", ray_address: str | None = None,
            resources: dict | None = None, device: str = "auto") -> dict[str, str]:
    """Run every stage that is not done, inputs first; returns {stage label: reason} of failures.

    A stage that fails with a BlindspotError (bad data, too few synthetic examples, ...) is
    logged and left without DONE; the stages that need it are skipped and everything else
    still runs (blindspot.grid.executors). `executor` is where stages run: 'local' (this process)
    or 'ray' (a cluster at `ray_address`, or one started here); `display` is how progress shows
    (blindspot.grid.display); the stages' own progress bars feed it.
    """
    from blindspot.grid.display import RunDisplay
    from blindspot.progress import use_sink

    todo = [s for s in plan.stages if not s.done(store)]
    log.info("%d of %d stages to run (%d cached) with the %s executor", len(todo), len(plan.stages),
             len(plan.stages) - len(todo), executor)
    shown = RunDisplay(todo, len(plan.stages) - len(todo), lambda st: stage_work(st, store), display, store)
    with shown.running(), use_sink(shown):
        shown.print(f"{len(plan.stages)} stages: {len(plan.stages) - len(todo)} cached, {len(todo)} to run")
        if executor == "ray":
            from blindspot.grid.executors.ray_cluster import run_ray

            failed = run_ray(todo, store, shown, ray_address, resources or {}, device, plan.groups)
        else:
            from blindspot.grid.executors.local import run_local

            failed = run_local(todo, store, shown, plan.groups)
    labels = {s.dirname: s.label for s in todo}
    return {labels[d]: reason for d, reason in failed.items()}


def write_outputs(cfg: ExperimentConfig, plan: Plan, run_dir: Path, store: Path) -> Path:
    """results/index.json, the results tables, audit.md, timings, and the report."""
    from blindspot.report import write_report
    from blindspot.results import ResultEntry, RunIndex, load_results, write_index, write_results
    from blindspot.rounds import write_rounds

    pool = json.loads((plan.stages[0].path(store) / "sets.json").read_text())["pool"]["n"]
    done = [c for c in plan.conditions if c["eval"].done(store)]
    entries = [ResultEntry(start_size=pool if c["start_size"] == "all" else c["start_size"], source=c["source"],
                           aug_size=c["aug_size"], seed=c["seed"], round=c["round"],
                           eval_dir=os.path.relpath(c["eval"].path(store), run_dir))
               for c in done]
    missing = [c["eval"].label.removeprefix("evaluate ") for c in plan.conditions if c not in done]
    write_index(run_dir, RunIndex(name=cfg.name, config=cfg.model_dump(mode="json"), conditions=entries,
                                  missing=missing))
    write_results(load_results(run_dir), run_dir)
    if plan.audit is not None and plan.audit.done(store):
        shutil.copyfile(plan.audit.path(store) / "audit.md", run_dir / "audit.md")
    write_rounds(cfg, plan.rounds, plan.audit, run_dir, store)  # repeated generations (blindspot.rounds)
    timings = [{**(json.loads((s.path(store) / "timing.json").read_text()) if (s.path(store) / "timing.json").exists()
                  else {"label": s.label, "wall_s": None}), "dir": os.path.relpath(s.path(store), run_dir)}
               for s in plan.stages]
    atomic_write_json(run_dir / "results" / "timings.json", timings)
    return write_report(run_dir)


def run(config: str | Path | ExperimentConfig, out: str | Path | None = None, store: str | Path | None = None,
        overrides: list[str] | None = None, dry_run: bool = False,
        display: Literal["live", "plain", "off"] = "plain", executor: ExecutorName = "local",
        ray_address: str | None = None) -> Path:
    """Run (or, with dry_run, plan) an experiment; returns the run directory.

    Everything logged meanwhile, libraries included, is appended to RUN/run.log; `display`
    is how progress and the closing summary show (blindspot.grid.display; 'off' prints nothing).
    `executor` 'ray' runs the stages as tasks of the Ray cluster at `ray_address` (None: one
    started on this machine for the run).
    """
    from blindspot.logsetup import log_to_file

    cfg = config if isinstance(config, ExperimentConfig) else load_config(config, overrides)
    run_dir = Path(out) if out else Path("runs") / cfg.name
    store = Path(store) if store else run_dir / "stages"
    try:
        plan = build_plan(cfg)
    except ConfigError as e:  # a data path that is not there: name the config file too
        raise ConfigError(f"{config}: {e}" if not isinstance(config, ExperimentConfig) else str(e)) from None
    if dry_run:
        print_plan(plan, store)
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", cfg.model_dump_json(indent=2))
    with log_to_file(run_dir / RUN_LOG):
        log.info("=== blindspot run %s -> %s (store %s)", cfg.name, run_dir, store)
        try:
            _run_plan(cfg, plan, run_dir, store, display, executor, ray_address)
        except BlindspotError as e:
            log.info("run %s stopped: %s", cfg.name, e)
            raise
        except BaseException:
            log.debug("run %s stopped by an exception", cfg.name, exc_info=True)  # the traceback, in run.log
            raise
    return run_dir


def _run_plan(cfg: ExperimentConfig, plan: Plan, run_dir: Path, store: Path, display, executor: ExecutorName,
              ray_address: str | None) -> None:
    """execute, write the results and report, print the summary; BlindspotError if anything failed."""
    from blindspot.grid.display import say
    from blindspot.grid.summary import run_summary

    t0 = time.time()
    resources = {kind: r.model_dump(exclude_none=True) for kind, r in cfg.resources.items()}
    failures = execute(plan, store, display, executor, ray_address, resources, cfg.device)
    if not plan.stages[0].done(store) or not any(c["eval"].done(store) for c in plan.conditions):
        raise BlindspotError(_failure_text(failures, "no condition finished, so there is no report"))
    report = write_outputs(cfg, plan, run_dir, store)
    log.info("run %s finished in %.1f s; report: %s", cfg.name, time.time() - t0, report / "report.html")
    for line in run_summary(run_dir):
        say(line, display)
    if failures:
        raise BlindspotError(_failure_text(failures, f"the report in {report} covers only the conditions that "
                                           "finished and lists the missing ones"))


def _failure_text(failures: dict[str, str], outcome: str) -> str:
    """One line: how many stages failed, the first real failure, what is left, how to resume."""
    first = next(((k, v) for k, v in failures.items() if not v.startswith("skipped")), next(iter(failures.items())))
    skipped = sum(v.startswith("skipped") for v in failures.values())
    return (f"{len(failures) - skipped} stage(s) failed and {skipped} were skipped; first: {first[0]}: {first[1]}; "
            f"{outcome}; fix the cause and run again: finished stages are kept")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML (see configs/)")
    parser.add_argument("--out", help="run directory (default runs/<name>)")
    parser.add_argument("--store", help="stage store shared between runs (default RUN/stages)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set seeds=[0,1] --set generation.per_label=200")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (cached / to run, and how many "
                        "stages can run at once at each depth of the graph) and exit")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="where stages run: local (this process, one at a time) or ray (a Ray cluster: every "
                        "stage whose inputs are done runs as a task with its resource request)")
    parser.add_argument("--ray-address", metavar="ADDR", default=None,
                        help="with --executor ray: the cluster to join, e.g. HEAD_IP:6379 or auto (default: start "
                        "a Ray instance on this machine for the run)")
    parser.add_argument("--estimate", action="store_true", help="calibrate on this machine and model, print "
                        "each stage kind's rate, work and projected hours, write RUN/estimate.md (blindspot.grid.estimate)")
    parser.add_argument("--gpus", type=int, metavar="N", help="with --estimate: also the wall time on N devices")
    parser.add_argument("--assume", action="append", default=[], metavar="KEY=N",
                        help="with --estimate: sizes or rates that cannot be measured here, e.g. pool=391722, "
                        "valid=0.5, or tokens=80,mfu=0.3,peak=989e12 for a model that cannot run here")


def main(args: argparse.Namespace) -> int:
    """The CLI: a live display on a terminal, plain lines otherwise, nothing but errors with -q."""
    from blindspot.grid.display import choose_mode

    if args.ray_address and args.executor != "ray":
        raise ConfigError("--ray-address: needs --executor ray")
    if args.estimate:
        from blindspot.grid.estimate import run_estimate

        run_estimate(args.config, args.out, args.store, args.overrides, args.gpus, args.assume)
        return 0
    if args.gpus is not None or args.assume:
        raise ConfigError("--gpus and --assume go with --estimate")
    run(args.config, args.out, args.store, args.overrides, args.dry_run,
        display=choose_mode(quiet=getattr(args, "verbosity", 0) < 0), executor=args.executor,
        ray_address=args.ray_address)
    return 0
