"""The planner: an experiment config -> the graph of stages (nothing runs), and what `--dry-run` prints.

    blindspot run configs/demo.yaml --dry-run        # the plan: each stage, cached or to run

The config expands into a graph of stages (blindspot.stages: one module per kind with its typed
spec and its `run`). Each stage's output directory is `STORE/<stage>-<hash>` where the hash covers
its spec, its inputs' hashes and its kind's code version (artifacts.py, stage_versions.py), so a
rerun does nothing that is done, a killed run resumes, and changing one value reruns only what
depends on it. Running the plan is blindspot.grid.runner.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from blindspot.grid.artifacts import StageSpec, file_fingerprint, topological_order
from blindspot.config import ExperimentConfig
from blindspot.crossmodel import generator_choice, models_record
from blindspot.data.example import MNLI_LABELS
from blindspot.data.sources import DataSource, source_format
from blindspot.errors import BlindspotError, ConfigError
from blindspot.grid.executors import graph_depths
from blindspot.mixture import augment_conditions
from blindspot.rounds import generator_examples, plan_rounds
from blindspot.training.group_runs import group_plan
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

log = logging.getLogger(__name__)
HANS_SUBCASES = 30  # 3 heuristics x 2 gold labels x 5 subcases (McCoy et al. 2019)


@dataclass
class Plan:
    """The stage graph of one experiment and the conditions that the results table lists."""

    stages: list[StageSpec]
    conditions: list[dict] = field(default_factory=list)  # {start_size, source, aug_size, seed, eval: StageSpec}
    audit: StageSpec | None = None
    rounds: list[dict] = field(default_factory=list)  # repeated generations (blindspot.rounds.plan_rounds)
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
    rounds: list[dict] = []
    if cfg.needs_synthetic():
        gen = generator_choice(cfg)  # generator.model (another model's data) or the classifier's
        gen_inputs = _model_inputs(gen["model"], prepare)
        by = f" ({gen['model']})" if gen["model"] != cfg.model else ""  # another model writes the data
        generator = _stage("generator", generator_stage.Spec(**gen, generator=cfg.generator.training(),
                                                             models_record=record),
                           gen_inputs, label="train generator" + by)
        generate = _stage("generate", generate_stage.Spec(generation=cfg.generation, sets=sorted(d.eval),
                                                          device=cfg.device, dtype=gen["dtype"], models_record=record),
                          {"generator": generator, "prepare": prepare},
                          label=f"generate {_per_label_text(cfg.generation.per_label)}{by}")
        data_inputs["synthetic"] = audit_inputs["synthetic"] = generate
        for name in cfg.filters():
            data_inputs[name] = audit_inputs[name] = _stage(
                "filter", filter_stage.Spec(filter=name, overlap_rule=cfg.overlap_rule), {"data": generate},
                label=f"filter {name}")
        rounds = plan_rounds(cfg, gen, gen_inputs, record, prepare, generator, generate)
        data_inputs |= {r["source"]: r["generate"] for r in rounds[1:]}

    for source in cfg.augment.sources:  # "original+FILTER": the original pool through a filter
        if source.startswith("original+"):
            name = source.removeprefix("original+")
            data_inputs[source] = audit_inputs[source] = _stage(
                "filter", filter_stage.Spec(filter=name, input="pool", overlap_rule=cfg.overlap_rule),
                {"data": prepare}, label=f"filter pool {name}")

    plan = Plan([prepare], rounds=rounds)
    # the sources x sizes, the mixtures of augment.synthetic_fraction (blindspot.mixture), then every
    # later round's data, augmenting as 'synthetic' does
    conditions = augment_conditions(cfg.augment) + [(r["source"], m, r["source"], None)
                                                    for r in rounds[1:] for m in cfg.augment.sizes]
    round_of = {r["source"]: r["round"] for r in rounds}
    training = cfg.classifier.training()  # the hashed part: group_augmentations is how, not what
    for seed in cfg.seeds:
        for n in cfg.start_sizes:
            start = _stage("start", start_stage.Spec(**model, n=n, seed=seed, classifier=training,
                                                     sampling=d.start_sampling),
                           model_inputs, label=f"start n={n} seed={seed}")
            _add_condition(plan, start, n, "start", 0, seed, evaluation, prepare)
            for source, m, data, fraction in conditions:
                inputs = {"start": start, "data": data_inputs[data]} | ({"original": prepare} if fraction else {})
                synthetic = data != "original" and not data.startswith("original+")
                aug = _stage("augment", augment_stage.Spec(
                    **model, source=data, m=m, seed=seed, labels=list(MNLI_LABELS),
                    exclude_seen=cfg.augment.exclude_seen, classifier=training, synthetic_fraction=fraction,
                    models_record=record if synthetic else None),
                    inputs, label=f"augment n={n} +{m} {source} seed={seed}")
                _add_condition(plan, aug, n, source, m, seed, evaluation, prepare, round_of.get(data))
    if cfg.needs_synthetic():
        plan.audit = _stage("audit", audit_stage.Spec(seed=d.split_seed, overlap_rule=cfg.overlap_rule), audit_inputs,
                            label="audit data")
    # round by round (round 1: everything of the paper's grid, in its order), so that a run stopped
    # early has whole rounds, every seed of them, and their audits
    in_round = lambda t: [c["eval"] for c in plan.conditions if (c["round"] or 1) == t]  # noqa: E731
    audits = lambda t: [a for r in rounds if r["round"] == t for a in (r["audit"], r["next_audit"]) if a]  # noqa: E731
    targets = in_round(1) + ([plan.audit] if plan.audit else []) + audits(1)
    for t in range(2, cfg.generations.rounds + 1):
        targets += in_round(t) + audits(t)
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
                   evaluation: evaluate_stage.Spec, prepare: StageSpec, round_: int | None = None) -> None:
    ev = _stage("evaluate", evaluation, {"classifier": classifier, "prepare": prepare},
                label=f"evaluate {classifier.label.split(' ', 1)[1]}")
    plan.conditions.append({"start_size": n, "source": source, "aug_size": m, "seed": seed, "eval": ev,
                            "round": round_})


def _work(stage: StageSpec) -> str:
    """A short estimate of a stage's work, in examples."""
    s = stage.spec
    return {"start": lambda: f"train {s['n']} examples", "augment": lambda: f"train {s['m']} examples",
            "generator": lambda: f"train {generator_examples(s, None) or 'all pool'} examples",
            "generate": lambda: f"sample {_per_label_text(s['generation']['per_label'])} valid examples",
            "evaluate": lambda: "predict " + (f"{s['per_label']}/label (3-way sets), " if s['per_label'] else "all, ")
            + (f"{s['per_subcase']}/subcase (HANS)" if s['per_subcase'] else "all HANS"),
            }.get(stage.stage, lambda: "")()


def print_plan(plan: Plan, store: Path) -> int:
    """Print every stage with its status; returns how many are left to run."""
    todo = 0
    works = [_work(st) for st in plan.stages]
    wide = max([len("stage")] + [len(st.label) for st in plan.stages])  # columns as wide as their longest entry
    wide_work = max([len("work")] + [len(w) for w in works])
    print(f"{'stage':<{wide}} {'status':<8} {'work':<{wide_work}} directory")
    for st, work in zip(plan.stages, works):
        done = st.done(store)
        todo += not done
        status = "cached" if done else ("partial" if (st.path(store) / "stage.json").exists() else "to run")
        print(f"{st.label:<{wide}} {status:<8} {work:<{wide_work}} {st.dirname}")
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
        n = generator_examples(s, pool)
        return "train", None if n is None else n * s["generator"]["optim"]["epochs"]
    if kind == "base":
        return "train", None if pool is None else min(s["pretrain_examples"], pool) * s["epochs"]
    if kind == "generate":
        per_label, labels = s["generation"]["per_label"], s["generation"].get("labels") or MNLI_LABELS
        return "sample", sum(per_label.values()) if isinstance(per_label, dict) else per_label * len(labels)
    if kind == "evaluate":
        return "predict", None if sets is None else _eval_examples(s, sets)
    return "stage", 0
