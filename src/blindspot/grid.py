"""Run a whole experiment from one YAML config: cached, resumable, then the results and report.

    blindspot run configs/demo.yaml                  # everything; ends with a summary of what it found
    blindspot run configs/demo.yaml --dry-run        # the plan: each stage, cached or to run
    blindspot run configs/demo.yaml --set seeds=[0,1] --out runs/demo-2seeds
    blindspot run configs/demo.yaml -q               # errors only; -v adds library messages

On a terminal progress is one live display (blindspot.display); in a pipe, one line per stage.
Everything logged, the libraries' messages included, goes to RUN/run.log.

The config expands into a graph of stages (blindspot.stages: one module per kind with its typed
spec and its `run`). Each stage's output directory is `STORE/<stage>-<hash>` where the hash covers
its spec, its inputs' hashes and its kind's code version (artifacts.py, stage_versions.py), so a
rerun does nothing that is done, a killed run resumes, and changing one value reruns only what
depends on it. An executor (blindspot.executors: in this process, or on Ray) runs the stages that
are not done through the store (blindspot.store: lock, status log, DONE last); stages read only
their spec and their input directories, so every executor runs the same graph.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from blindspot.artifacts import StageSpec, file_fingerprint, topological_order
from blindspot.config import ExperimentConfig, load_config
from blindspot.crossmodel import generator_choice, models_record
from blindspot.data.example import MNLI_LABELS
from blindspot.data.sources import DataSource, source_format
from blindspot.errors import BlindspotError, ConfigError
from blindspot.executors import ExecutorName, graph_depths
from blindspot.group_runs import group_plan
from blindspot.mixture import augment_conditions
from blindspot.stages import StageModel, spec_json
from blindspot.stages import audit as audit_stage
from blindspot.stages import augment as augment_stage
from blindspot.stages import base as base_stage
from blindspot.stages import evaluate as evaluate_stage
from blindspot.stages import filter as filter_stage
from blindspot.stages import generate as generate_stage
from blindspot.stages import generator as generator_stage
from blindspot.stages import prepare as prepare_stage
from blindspot.stages import start as start_stage
from blindspot.storage import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
RUN_LOG = "run.log"
HANS_SUBCASES = 30  # 3 heuristics x 2 gold labels x 5 subcases (McCoy et al. 2019)


@dataclass
class Plan:
    """The stage graph of one experiment and the conditions that the results table lists."""

    stages: list[StageSpec]
    conditions: list[dict] = field(default_factory=list)  # {start_size, source, aug_size, seed, eval: StageSpec}
    audit: StageSpec | None = None
    groups: list[list[StageSpec]] = field(default_factory=list)  # augmentations trained together (group_runs)


def _source_fingerprint(src: DataSource, field: str) -> dict:
    """What identifies a data source's content: a file's sha256, or a hub id + split.

    `field` is the config field of the source (data.train), named when its file is missing.
    """
    raw = src.model_dump(mode="json", exclude_none=True)
    if src.path:
        from blindspot.data.readers import resolve_path

        try:
            path = resolve_path(src.path)
        except BlindspotError as e:
            raise ConfigError(f"field '{field}.path': {e}") from None
        if not path.is_file():
            what = "is a directory, expected a data file" if path.is_dir() else "no such file"
            raise ConfigError(f"field '{field}.path': {path}: {what}")
        raw["sha256"] = file_fingerprint(path)
        raw.pop("path")  # the same bytes at another path are the same data
    try:
        source_format(src)  # a hub id without split, columns of no known format: fail before anything runs
    except BlindspotError as e:
        raise ConfigError(f"field '{field}': {e}") from None
    return raw


def _per_label_text(per_label: int | dict[str, int]) -> str:
    """'200/label' or '150 entailment, 40 neutral, 40 contradiction'."""
    if isinstance(per_label, int):
        return f"{per_label}/label"
    return ", ".join(f"{n} {label}" for label, n in per_label.items())


def build_plan(cfg: ExperimentConfig) -> Plan:
    """Expand a config into stage specs (nothing runs; data files are hashed)."""
    d = cfg.data
    prepare = _stage("prepare", prepare_stage.Spec(
        train=d.train, eval=dict(d.eval), clean=d.clean, validation_per_label=d.validation_per_label,
        split_seed=d.split_seed, validation_mode=d.validation_mode,
        content={"train": _source_fingerprint(d.train, "data.train"),
                 "eval": {k: _source_fingerprint(v, f"data.eval.{k}") for k, v in d.eval.items()}}),
        label="prepare data")
    model_inputs = _model_inputs(cfg.model, prepare)
    model = {"model": cfg.model, "device": cfg.device, "dtype": cfg.dtype, "quantize": cfg.quantize}
    record = models_record(cfg)  # both models, in the stages that involve synthetic data (not hashed)
    evaluation = evaluate_stage.Spec(sets=sorted(d.eval), per_label=d.eval_per_label, per_subcase=d.eval_per_subcase,
                                     seed=d.eval_seed, batch_size=cfg.evaluation.batch_size,
                                     max_length=cfg.classifier.max_length, device=cfg.device, dtype=cfg.dtype,
                                     overlap_rule=cfg.overlap_rule)
    data_inputs: dict[str, StageSpec] = {"original": prepare}
    audit_inputs: dict[str, StageSpec] = {"prepare": prepare}
    if cfg.needs_synthetic():
        gen = generator_choice(cfg)  # generator.model (another model's data) or the classifier's
        generator = _stage("generator", generator_stage.Spec(**gen, generator=cfg.generator.training(),
                                                             models_record=record),
                           _model_inputs(gen["model"], prepare),
                           label="train generator" + (f" ({gen['model']})" if gen["model"] != cfg.model else ""))
        generate = _stage("generate", generate_stage.Spec(generation=cfg.generation, sets=sorted(d.eval),
                                                          device=cfg.device, dtype=gen["dtype"], models_record=record),
                          {"generator": generator, "prepare": prepare},
                          label=f"generate {_per_label_text(cfg.generation.per_label)}")
        data_inputs["synthetic"] = audit_inputs["synthetic"] = generate
        for name in cfg.filters():
            data_inputs[name] = audit_inputs[name] = _stage(
                "filter", filter_stage.Spec(filter=name, overlap_rule=cfg.overlap_rule), {"data": generate},
                label=f"filter {name}")

    for source in cfg.augment.sources:  # "original+FILTER": the original pool through a filter
        if source.startswith("original+"):
            name = source.removeprefix("original+")
            data_inputs[source] = audit_inputs[source] = _stage(
                "filter", filter_stage.Spec(filter=name, input="pool", overlap_rule=cfg.overlap_rule),
                {"data": prepare}, label=f"filter pool {name}")

    plan = Plan([prepare])
    training = cfg.classifier.training()  # the hashed part: group_augmentations is how, not what
    for seed in cfg.seeds:
        for n in cfg.start_sizes:
            start = _stage("start", start_stage.Spec(**model, n=n, seed=seed, classifier=training,
                                                     sampling=d.start_sampling),
                           model_inputs, label=f"start n={n} seed={seed}")
            _add_condition(plan, start, n, "start", 0, seed, evaluation, prepare)
            # the sources x sizes, then the mixtures of augment.synthetic_fraction (blindspot.mixture)
            for source, m, data, fraction in augment_conditions(cfg.augment):
                inputs = {"start": start, "data": data_inputs[data]} | ({"original": prepare} if fraction else {})
                synthetic = data != "original" and not data.startswith("original+")
                aug = _stage("augment", augment_stage.Spec(
                    **model, source=data, m=m, seed=seed, labels=list(MNLI_LABELS),
                    exclude_seen=cfg.augment.exclude_seen, classifier=training, synthetic_fraction=fraction,
                    models_record=record if synthetic else None),
                    inputs, label=f"augment n={n} +{m} {source} seed={seed}")
                _add_condition(plan, aug, n, source, m, seed, evaluation, prepare)
    if cfg.needs_synthetic():
        plan.audit = _stage("audit", audit_stage.Spec(seed=d.split_seed, overlap_rule=cfg.overlap_rule), audit_inputs,
                            label="audit data")
    targets = [c["eval"] for c in plan.conditions] + ([plan.audit] if plan.audit else [])
    plan.stages = topological_order(targets)
    plan.groups = group_plan(plan.stages, cfg.classifier.group_augmentations)
    return plan


def _model_inputs(model: str, prepare: StageSpec) -> dict[str, StageSpec]:
    """A model's stage inputs: prepare, and the base stage that builds it if it is made from the data
    (tiny-llama; built once per experiment and model)."""
    built = base_stage.spec_for(model)
    if built is None:
        return {"prepare": prepare}
    return {"prepare": prepare, "base": _stage("base", built, {"prepare": prepare}, label=f"build {model}")}


def _stage(kind: str, spec: StageModel, inputs: dict[str, StageSpec] | None = None, label: str = "") -> StageSpec:
    """A graph node: the stage kind, its typed spec as JSON (what is hashed), its inputs."""
    return StageSpec(kind, spec_json(spec), inputs or {}, label)


def _add_condition(plan: Plan, classifier: StageSpec, n, source: str, m: int, seed: int,
                   evaluation: evaluate_stage.Spec, prepare: StageSpec) -> None:
    ev = _stage("evaluate", evaluation, {"classifier": classifier, "prepare": prepare},
                label=f"evaluate {classifier.label.split(' ', 1)[1]}")
    plan.conditions.append({"start_size": n, "source": source, "aug_size": m, "seed": seed, "eval": ev})


def _work(stage: StageSpec) -> str:
    """A short estimate of a stage's work, in examples."""
    s = stage.spec
    return {"start": lambda: f"train {s['n']} examples", "augment": lambda: f"train {s['m']} examples",
            "generator": lambda: f"train {s['generator']['train_size'] or 'all pool'} examples",
            "generate": lambda: f"sample {_per_label_text(s['generation']['per_label'])} valid examples",
            "evaluate": lambda: "predict " + (f"{s['per_label']}/label (3-way sets), " if s['per_label'] else "all, ")
            + (f"{s['per_subcase']}/subcase (HANS)" if s['per_subcase'] else "all HANS"),
            }.get(stage.stage, lambda: "")()


def print_plan(plan: Plan, store: Path) -> int:
    """Print every stage with its status; returns how many are left to run."""
    todo = 0
    print(f"{'stage':<44} {'status':<8} {'work':<44} directory")
    for st in plan.stages:
        done = st.done(store)
        todo += not done
        status = "cached" if done else ("partial" if (st.path(store) / "stage.json").exists() else "to run")
        print(f"{st.label:<44} {status:<8} {_work(st):<44} {st.dirname}")
    print(f"\n{len(plan.stages)} stages: {len(plan.stages) - todo} cached, {todo} to run")
    print(parallelism_text(plan.stages))
    return todo


def parallelism_text(stages: list[StageSpec]) -> str:
    """How many stages can run at once at each depth of the graph, and the longest chain."""
    depths = graph_depths(stages)
    per_depth = [sum(d == k for d in depths.values()) for k in range(max(depths.values()) + 1)]
    kinds = [sorted({s.stage for s in stages if depths[s.dirname] == k}) for k in range(len(per_depth))]
    lines = [f"at once, by depth of the graph (longest chain: {len(per_depth)} stages; "
             f"widest: {max(per_depth)} stages):"]
    lines += [f"  depth {k}: {n:>4} stage{'s' * (n != 1)}  ({', '.join(kinds[k])})" for k, n in enumerate(per_depth)]
    return "\n".join(lines)


def _prepared_sets(stage: StageSpec, store: Path) -> dict | None:
    """prepare's sets.json (pool and evaluation set sizes) once prepare is done, else None."""
    prepare = stage.inputs.get("prepare")
    path = prepare.path(store) / "sets.json" if prepare is not None else None
    return json.loads(path.read_text()) if path is not None and prepare.done(store) else None


def _eval_examples(s: dict, sets: dict) -> int:
    """How many examples an evaluation predicts: each set, or its per-label / per-subcase subsample."""
    total = 0
    for name in s["sets"]:
        info = sets[name]
        two_way = info.get("format") == "hans" or set(info["labels"]) <= {"entailment", "non-entailment"}
        if two_way and s["per_subcase"]:
            total += min(info["n"], s["per_subcase"] * HANS_SUBCASES)
        elif not two_way and s["per_label"]:
            total += min(info["n"], s["per_label"] * len(info["labels"]))
        else:
            total += info["n"]
    return total


def stage_work(stage: StageSpec, store: Path) -> tuple[str, float | None]:
    """(verb, examples) of a stage for the ETA: train / predict / sample examples, or 'stage' (0).

    None while the number depends on a prepare stage that has not run yet.
    """
    s, kind = stage.spec, stage.stage
    sets = _prepared_sets(stage, store)
    pool = sets["pool"]["n"] if sets else None
    if kind in ("start", "augment"):
        n = s["n"] if kind == "start" else s["m"]
        n = pool if n == "all" else n
        return "train", None if n is None else n * s["classifier"]["optim"]["epochs"]
    if kind == "generator":
        g = s["generator"]
        n = pool if g["train_size"] is None or pool is None else min(g["train_size"], pool)
        return "train", None if n is None else n * g["optim"]["epochs"]
    if kind == "base":
        return "train", None if pool is None else min(s["pretrain_examples"], pool) * s["epochs"]
    if kind == "generate":
        per_label, labels = s["generation"]["per_label"], s["generation"].get("labels") or MNLI_LABELS
        return "sample", sum(per_label.values()) if isinstance(per_label, dict) else per_label * len(labels)
    if kind == "evaluate":
        return "predict", None if sets is None else _eval_examples(s, sets)
    return "stage", 0


def execute(plan: Plan, store: Path, display: Literal["live", "plain", "off"] = "off",
            executor: ExecutorName = "local", ray_address: str | None = None,
            resources: dict | None = None, device: str = "auto") -> dict[str, str]:
    """Run every stage that is not done, inputs first; returns {stage label: reason} of failures.

    A stage that fails with a BlindspotError (bad data, too few synthetic examples, ...) is
    logged and left without DONE; the stages that need it are skipped and everything else
    still runs (blindspot.executors). `executor` is where stages run: 'local' (this process)
    or 'ray' (a cluster at `ray_address`, or one started here); `display` is how progress shows
    (blindspot.display); the stages' own progress bars feed it.
    """
    from blindspot.display import RunDisplay
    from blindspot.progress import use_sink

    todo = [s for s in plan.stages if not s.done(store)]
    log.info("%d of %d stages to run (%d cached) with the %s executor", len(todo), len(plan.stages),
             len(plan.stages) - len(todo), executor)
    shown = RunDisplay(todo, len(plan.stages) - len(todo), lambda st: stage_work(st, store), display, store)
    with shown.running(), use_sink(shown):
        shown.print(f"{len(plan.stages)} stages: {len(plan.stages) - len(todo)} cached, {len(todo)} to run")
        if executor == "ray":
            from blindspot.executors.ray_cluster import run_ray

            failed = run_ray(todo, store, shown, ray_address, resources or {}, device, plan.groups)
        else:
            from blindspot.executors.local import run_local

            failed = run_local(todo, store, shown, plan.groups)
    labels = {s.dirname: s.label for s in todo}
    return {labels[d]: reason for d, reason in failed.items()}


def write_outputs(cfg: ExperimentConfig, plan: Plan, run_dir: Path, store: Path) -> Path:
    """results/index.json, the results tables, audit.md, timings, and the report."""
    from blindspot.report import write_report
    from blindspot.results import ResultEntry, RunIndex, load_results, write_index, write_results

    pool = json.loads((plan.stages[0].path(store) / "sets.json").read_text())["pool"]["n"]
    done = [c for c in plan.conditions if c["eval"].done(store)]
    entries = [ResultEntry(start_size=pool if c["start_size"] == "all" else c["start_size"], source=c["source"],
                           aug_size=c["aug_size"], seed=c["seed"],
                           eval_dir=os.path.relpath(c["eval"].path(store), run_dir))
               for c in done]
    missing = [c["eval"].label.removeprefix("evaluate ") for c in plan.conditions if c not in done]
    write_index(run_dir, RunIndex(name=cfg.name, config=cfg.model_dump(mode="json"), conditions=entries,
                                  missing=missing))
    write_results(load_results(run_dir), run_dir)
    if plan.audit is not None and plan.audit.done(store):
        shutil.copyfile(plan.audit.path(store) / "audit.md", run_dir / "audit.md")
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
    is how progress and the closing summary show (blindspot.display; 'off' prints nothing).
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
    from blindspot.display import say
    from blindspot.summary import run_summary

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
                        "each stage kind's rate, work and projected hours, write RUN/estimate.md (blindspot.estimate)")
    parser.add_argument("--gpus", type=int, metavar="N", help="with --estimate: also the wall time on N devices")
    parser.add_argument("--assume", action="append", default=[], metavar="KEY=N",
                        help="with --estimate: sizes or rates that cannot be measured here, e.g. pool=391722, "
                        "valid=0.5, or tokens=80,mfu=0.3,peak=989e12 for a model that cannot run here")


def main(args: argparse.Namespace) -> int:
    """The CLI: a live display on a terminal, plain lines otherwise, nothing but errors with -q."""
    from blindspot.display import choose_mode

    if args.ray_address and args.executor != "ray":
        raise ConfigError("--ray-address: needs --executor ray")
    if args.estimate:
        from blindspot.estimate import run_estimate

        run_estimate(args.config, args.out, args.store, args.overrides, args.gpus, args.assume)
        return 0
    if args.gpus is not None or args.assume:
        raise ConfigError("--gpus and --assume go with --estimate")
    run(args.config, args.out, args.store, args.overrides, args.dry_run,
        display=choose_mode(quiet=getattr(args, "verbosity", 0) < 0), executor=args.executor,
        ray_address=args.ray_address)
    return 0
