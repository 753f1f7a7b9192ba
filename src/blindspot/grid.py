"""Run a whole experiment from one YAML config: cached, resumable, then the results and report.

    blindspot run configs/demo.yaml                  # everything; ends with a summary of what it found
    blindspot run configs/demo.yaml --dry-run        # the plan: each stage, cached or to run
    blindspot run configs/demo.yaml --set seeds=[0,1] --out runs/demo-2seeds
    blindspot run configs/demo.yaml -q               # errors only; -v adds library messages

On a terminal progress is one live display (blindspot.display); in a pipe, one line per stage.
Everything logged, the libraries' messages included, goes to RUN/run.log.

The config expands into a graph of stages (see stages.py). Each stage's output directory is
`RUN/stages/<stage>-<hash>` where the hash covers its spec, its inputs' hashes and the code
version (artifacts.py), so a rerun does nothing that is done, a killed run resumes, and
changing one value reruns only what depends on it. Stages run in-process, in dependency
order; they read only their spec and their input directories, so a cluster executor (Ray)
can run the same graph.
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

from blindspot.artifacts import StageSpec, file_fingerprint, topological_order, write_spec
from blindspot.config import ExperimentConfig, load_config
from blindspot.data.example import MNLI_LABELS
from blindspot.data.sources import DataSource, source_format
from blindspot.errors import BlindspotError, ConfigError
from blindspot.group_runs import group_plan, run_group, schedule
from blindspot.storage import DONE, atomic_write_json, atomic_write_text, mark_done

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


def _model_spec(cfg: ExperimentConfig) -> dict:
    return {"model": cfg.model, "device": cfg.device, "dtype": cfg.dtype, "quantize": cfg.quantize}


def _per_label_text(per_label: int | dict[str, int]) -> str:
    """'200/label' or '150 entailment, 40 neutral, 40 contradiction'."""
    if isinstance(per_label, int):
        return f"{per_label}/label"
    return ", ".join(f"{n} {label}" for label, n in per_label.items())


def build_plan(cfg: ExperimentConfig) -> Plan:
    """Expand a config into stage specs (nothing runs; data files are hashed)."""
    d = cfg.data
    prepare = StageSpec("prepare", {
        "train": d.train.model_dump(mode="json"), "eval": {k: v.model_dump(mode="json") for k, v in d.eval.items()},
        "clean": d.clean, "validation_per_label": d.validation_per_label, "split_seed": d.split_seed,
        "validation_mode": d.validation_mode,
        "content": {"train": _source_fingerprint(d.train, "data.train"),
                    "eval": {k: _source_fingerprint(v, f"data.eval.{k}") for k, v in d.eval.items()}},
    }, label="prepare data")
    # tiny-llama is built from the data (its tokenizer is trained on the pool): once per experiment.
    model_inputs = {"prepare": prepare}
    if cfg.model == "tiny-llama":
        model_inputs["base"] = StageSpec("base", {"model": "tiny-llama", "vocab_size": 8000, "seed": 0, "pretrain_examples": 400, "epochs": 3, "max_length": 160}, {"prepare": prepare},
                                         label="build tiny-llama")
    classifier = cfg.classifier.model_dump(mode="json", exclude={"group_augmentations"})  # how, not what
    evaluation = {"sets": sorted(d.eval), "per_label": d.eval_per_label, "per_subcase": d.eval_per_subcase,
                  "seed": d.eval_seed, "batch_size": cfg.evaluation.batch_size,
                  "max_length": cfg.classifier.max_length, "device": cfg.device, "dtype": cfg.dtype,
                  "overlap_rule": cfg.overlap_rule}
    data_inputs: dict[str, StageSpec] = {"original": prepare}
    audit_inputs: dict[str, StageSpec] = {"prepare": prepare}
    if cfg.needs_synthetic():
        generator = StageSpec("generator", {**_model_spec(cfg), "generator": cfg.generator.model_dump(mode="json")},
                              model_inputs, label="train generator")
        generate = StageSpec("generate", {"generation": cfg.generation.model_dump(mode="json"), "sets": sorted(d.eval),
                                          "device": cfg.device, "dtype": cfg.dtype},
                             {"generator": generator, "prepare": prepare},
                             label=f"generate {_per_label_text(cfg.generation.per_label)}")
        data_inputs["synthetic"] = audit_inputs["synthetic"] = generate
        for name in cfg.filters():
            data_inputs[name] = audit_inputs[name] = StageSpec(
                "filter", {"filter": name, "overlap_rule": cfg.overlap_rule}, {"data": generate},
                label=f"filter {name}")

    for source in cfg.augment.sources:  # "original+FILTER": the original pool through a filter
        if source.startswith("original+"):
            data_inputs[source] = audit_inputs[source] = StageSpec(
                "filter", {"filter": source.removeprefix("original+"), "input": "pool", "overlap_rule": cfg.overlap_rule},
                {"data": prepare},
                label=f"filter pool {source.removeprefix('original+')}")

    stages: list[StageSpec] = [prepare]
    plan = Plan(stages)
    for seed in cfg.seeds:
        for n in cfg.start_sizes:
            start = StageSpec("start", {**_model_spec(cfg), "n": n, "seed": seed, "classifier": classifier,
                                        "sampling": d.start_sampling},
                              model_inputs, label=f"start n={n} seed={seed}")
            _add_condition(plan, start, n, "start", 0, seed, evaluation, prepare)
            for source in cfg.augment.sources:
                for m in cfg.augment.sizes:
                    aug = StageSpec("augment", {
                        **_model_spec(cfg), "source": source, "m": m, "seed": seed, "labels": list(MNLI_LABELS),
                        "exclude_seen": cfg.augment.exclude_seen, "classifier": classifier},
                        {"start": start, "data": data_inputs[source]},
                        label=f"augment n={n} +{m} {source} seed={seed}")
                    _add_condition(plan, aug, n, source, m, seed, evaluation, prepare)
    if cfg.needs_synthetic():
        plan.audit = StageSpec("audit", {"seed": d.split_seed, "overlap_rule": cfg.overlap_rule}, audit_inputs,
                               label="audit data")
    targets = [c["eval"] for c in plan.conditions] + ([plan.audit] if plan.audit else [])
    plan.stages = topological_order(targets)
    plan.groups = group_plan(plan.stages, cfg.classifier.group_augmentations)
    return plan


def _add_condition(plan: Plan, classifier: StageSpec, n, source: str, m: int, seed: int, evaluation: dict,
                   prepare: StageSpec) -> None:
    ev = StageSpec("evaluate", evaluation, {"classifier": classifier, "prepare": prepare},
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
        status = "cached" if done else ("partial" if st.path(store).exists() else "to run")
        print(f"{st.label:<44} {status:<8} {_work(st):<44} {st.dirname}")
    print(f"\n{len(plan.stages)} stages: {len(plan.stages) - todo} cached, {todo} to run")
    return todo


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


def execute(plan: Plan, store: Path, display: Literal["live", "plain", "off"] = "off") -> dict[str, str]:
    """Run every stage that is not done, inputs first, in this process; returns failures.

    A stage that fails with a BlindspotError (bad data, too few synthetic examples, ...) is
    logged and left without DONE; the stages that need it are skipped and everything else
    still runs. Returns {stage label: reason} of what failed or was skipped. `display` is how
    progress shows (blindspot.display); the stages' own progress bars feed it.
    """
    from blindspot.display import RunDisplay
    from blindspot.progress import use_sink
    from blindspot.stages import RUNNERS

    items = schedule([s for s in plan.stages if not s.done(store)], plan.groups)
    todo = [s for item in items for s in (item if isinstance(item, list) else [item])]
    log.info("%d of %d stages to run (%d cached)", len(todo), len(plan.stages), len(plan.stages) - len(todo))
    failed: dict[str, str] = {}  # dirname -> reason
    labels: dict[str, str] = {}
    shown = RunDisplay(todo, len(plan.stages) - len(todo), lambda st: stage_work(st, store), display, store)
    with shown.running(), use_sink(shown):
        shown.print(f"{len(plan.stages)} stages: {len(plan.stages) - len(todo)} cached, {len(todo)} to run")
        for st in items:
            if isinstance(st, list):  # a starting point's augmentations, trained together
                run_group(st, store, shown, failed, labels)
                continue
            bad = [v for v in st.inputs.values() if v.dirname in failed]
            if bad:
                failed[st.dirname], labels[st.dirname] = f"skipped: needs {bad[0].label}, which failed", st.label
                shown.failed_stage(st, f"needs {bad[0].label}, which failed", skipped=True)
                continue
            out = write_spec(st, store)
            t0 = time.time()
            log.info("stage %s -> %s", st.label, out)
            shown.started(st)
            try:
                RUNNERS[st.stage](st.spec, out, {k: v.path(store) for k, v in st.inputs.items()})
            except BlindspotError as e:
                failed[st.dirname], labels[st.dirname] = str(e), st.label
                shown.failed_stage(st, str(e))
                continue
            atomic_write_json(out / "timing.json", {"label": st.label, "wall_s": round(time.time() - t0, 3)})
            if not (out / DONE).exists():
                mark_done(out)
            shown.done(st, time.time() - t0, out)
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
        display: Literal["live", "plain", "off"] = "plain") -> Path:
    """Run (or, with dry_run, plan) an experiment; returns the run directory.

    Everything logged meanwhile, libraries included, is appended to RUN/run.log; `display`
    is how progress and the closing summary show (blindspot.display; 'off' prints nothing).
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
            _run_plan(cfg, plan, run_dir, store, display)
        except BlindspotError as e:
            log.info("run %s stopped: %s", cfg.name, e)
            raise
        except BaseException:
            log.debug("run %s stopped by an exception", cfg.name, exc_info=True)  # the traceback, in run.log
            raise
    return run_dir


def _run_plan(cfg: ExperimentConfig, plan: Plan, run_dir: Path, store: Path, display) -> None:
    """execute, write the results and report, print the summary; BlindspotError if anything failed."""
    from blindspot.display import say
    from blindspot.summary import run_summary

    t0 = time.time()
    failures = execute(plan, store, display)
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
    parser.add_argument("--dry-run", action="store_true", help="print the plan (cached / to run) and exit")
    parser.add_argument("--estimate", action="store_true", help="calibrate on this machine and model, print "
                        "each stage kind's rate, work and projected hours, write RUN/estimate.md (blindspot.estimate)")
    parser.add_argument("--gpus", type=int, metavar="N", help="with --estimate: also the wall time on N devices")
    parser.add_argument("--assume", action="append", default=[], metavar="KEY=N",
                        help="with --estimate: sizes or rates that cannot be measured here, e.g. pool=391722, "
                        "valid=0.5, or tokens=80,mfu=0.3,peak=989e12 for a model that cannot run here")


def main(args: argparse.Namespace) -> int:
    """The CLI: a live display on a terminal, plain lines otherwise, nothing but errors with -q."""
    from blindspot.display import choose_mode

    if args.estimate:
        from blindspot.estimate import run_estimate

        run_estimate(args.config, args.out, args.store, args.overrides, args.gpus, args.assume)
        return 0
    if args.gpus is not None or args.assume:
        raise ConfigError("--gpus and --assume go with --estimate")
    run(args.config, args.out, args.store, args.overrides, args.dry_run,
        display=choose_mode(quiet=getattr(args, "verbosity", 0) < 0))
    return 0
