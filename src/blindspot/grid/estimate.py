"""What a grid costs before it runs: a short calibration on this machine and model, then a projection.

    blindspot run configs/smoke.yaml --estimate             # calibrate here, print the table, write RUN/estimate.md
    blindspot run configs/demo.yaml --estimate --gpus 4     # also the wall time on 4 devices
    blindspot run configs/paper.yaml --estimate --assume pool=391722 --assume tokens=80 --assume mfu=0.3

Calibration (blindspot.grid.calibrate) measures, on the config's model, device, dtype and data: a few
optimiser steps of classifier training alone and of a starting point's augmentations grouped
(blindspot.training.grouped), a few of generator training, a few evaluation batches and a few generation
batches, and the time to load a model. Each stage's time is then its load plus its work (examples,
from the plan: stage_examples) at its kind's rate; a group of augmentations is one job at the
grouped rate. `--gpus N` list-schedules the stage graph (a group is one task) on N devices.

Where the model or data cannot be read here (a hub model offline), nothing is measured: the table
shows the work and its model FLOPs (blindspot.mfu, on a model of the config's shape built on the
meta device), and hours only at an assumed MFU and peak (`--assume mfu=0.3,peak=989e12`): a
projection with no rate measured behind it, and the table says so.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from blindspot.grid.artifacts import StageSpec
from blindspot.config import ExperimentConfig
from blindspot.errors import ConfigError
from blindspot.storage import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

TRAIN_KINDS = ("base", "start", "augment", "generator")
ASSUMABLE = ("pool", "tokens", "gen_tokens", "valid", "mfu", "peak")  # plus evaluation set names


@dataclass
class Rates:
    """Measured (or assumed) rates: examples/s per stage kind, seconds to load a model, FLOP/s."""

    per_kind: dict[str, float] = field(default_factory=dict)   # start/augment (alone), group, generator, ...
    load_s: float = 0.0
    flops_per_s: dict[str, float] = field(default_factory=dict)
    mfu: dict[str, float | None] = field(default_factory=dict)
    measured: bool = True
    notes: list[str] = field(default_factory=list)


def parse_assumptions(items: list[str]) -> dict[str, float]:
    """--assume KEY=VALUE[,KEY=VALUE] -> {key: number}; one clear error for a bad one."""
    out: dict[str, float] = {}
    for item in items:
        for part in filter(None, item.split(",")):
            key, sep, value = part.partition("=")
            try:
                out[key.strip()] = float(value)
            except ValueError:
                raise ConfigError(f"--assume {part!r}: expected KEY=NUMBER, e.g. pool=391722 or mfu=0.3") from None
            if not sep:
                raise ConfigError(f"--assume {part!r}: expected KEY=NUMBER")
    return out


def stage_examples(stage: StageSpec, sets: dict | None, assume: dict[str, float]) -> float:
    """A stage's work in examples (trained, predicted or sampled), from prepare's set sizes or --assume."""
    from blindspot.grid import plan as grid

    if sets is None:  # prepare not run here: the sizes the user gave
        missing = [k for k in ["pool"] + (stage.spec.get("sets") or []) if k not in assume]
        if missing:
            raise ConfigError(f"--estimate: the sizes of {', '.join(missing)} are not known here (prepare cannot "
                              f"read the data); give them, e.g. --assume {missing[0]}=N")
        sets = {"pool": {"n": int(assume["pool"]), "labels": ["entailment", "neutral", "contradiction"]},
                **{k: {"n": int(v), "labels": ["entailment", "non-entailment"] if "hans" in k else
                       ["entailment", "neutral", "contradiction"], "format": "hans" if "hans" in k else "mnli"}
                   for k, v in assume.items() if k not in ASSUMABLE}}
    spec, kind = stage.spec, stage.stage
    pool = sets["pool"]["n"]
    if kind in ("start", "augment"):
        n = spec["n"] if kind == "start" else spec["m"]
        return (pool if n == "all" else n) * spec["classifier"]["optim"]["epochs"]
    if kind == "generator":  # round 1: the pool sample; later rounds: what blindspot.rounds trains them on
        from blindspot.rounds import generator_examples

        return generator_examples(spec, pool) * spec["generator"]["optim"]["epochs"]
    if kind == "base":
        return min(spec["pretrain_examples"], pool) * spec["epochs"]
    if kind == "generate":  # rows sampled: whole batches per label, until enough are valid or attempts run out
        g = spec["generation"]
        wanted = list(g["per_label"].values()) if isinstance(g["per_label"], dict) else [g["per_label"]] * 3
        bs, valid = g["batch_size"], assume.get("valid", 1.0)
        return sum(min(math.ceil(n / valid / bs), math.ceil(g["max_attempts_factor"] * n / bs)) * bs for n in wanted)
    if kind == "evaluate":
        return grid._eval_examples(spec, sets)
    return 0.0


def stage_seconds(item: StageSpec | list[StageSpec], sets, assume, rates: Rates) -> float | None:
    """Projected seconds of one stage, or of a group of augmentations run as one job."""
    if isinstance(item, list):
        rate = rates.per_kind.get("group")
        work = sum(stage_examples(s, sets, assume) for s in item)
        return None if not rate else rates.load_s + work / rate
    rate = rates.per_kind.get(item.stage)
    work = stage_examples(item, sets, assume)
    if not work:
        return 1.0  # prepare, filter, audit: seconds
    return None if not rate else rates.load_s + work / rate


def list_schedule(items: list, seconds: list[float], gpus: int) -> float:
    """Makespan of the stage graph on `gpus` devices: each item, in plan order, starts on the device
    that frees first once its inputs are done (a greedy list schedule)."""
    finish: dict[str, float] = {}
    free = [0.0] * gpus
    for item, s in zip(items, seconds):
        members = item if isinstance(item, list) else [item]
        ready = max([finish.get(d.dirname, 0.0) for m in members for d in m.inputs.values()] + [0.0])
        dev = min(range(gpus), key=lambda i: max(free[i], ready))
        start = max(free[dev], ready)
        free[dev] = start + s
        for m in members:
            finish[m.dirname] = free[dev]
    return max(free) if free else 0.0


def estimate(cfg: ExperimentConfig, plan, store: Path, run_dir: Path, gpus: int | None = None,
             assume: dict[str, float] | None = None) -> dict:
    """Calibrate (where the model can run here), project every stage, print and write the table."""
    from blindspot.training.group_runs import schedule

    from blindspot.grid.display import RunDisplay
    from blindspot.progress import use_sink

    assume = assume or {}
    sets = _sets(plan, store, assume)
    group_size = max((len(g) for g in plan.groups), default=1)
    with use_sink(RunDisplay([], 0, lambda _s: ("stage", 0), "off", store)):  # bars counted, not shown
        rates = _rates(cfg, plan, store, sets, assume, group_size)
    items = schedule(list(plan.stages), plan.groups)
    seconds = [stage_seconds(it, sets, assume, rates) for it in items]
    kinds: dict[str, dict] = {}
    for it, s in zip(items, seconds):
        members = it if isinstance(it, list) else [it]
        kind = "augment (grouped)" if isinstance(it, list) else it.stage
        row = kinds.setdefault(kind, {"stages": 0, "examples": 0.0, "seconds": 0.0, "unknown": 0})
        row["stages"] += len(members)
        row["examples"] += sum(stage_examples(m, sets, assume) for m in members)
        if s is None:
            row["unknown"] += 1
        else:
            row["seconds"] += s
    total = sum(s for s in seconds if s is not None)
    done = sum(s for it, s in zip(items, seconds) if s is not None and all(
        m.done(store) for m in (it if isinstance(it, list) else [it])))
    actual = _actual_by_kind(run_dir)
    for kind, row in kinds.items():
        row["actual_s"] = actual.get("augment" if kind.startswith("augment") else kind)
    result = {"config": cfg.name, "measured": rates.measured, "load_s": rates.load_s, "rates": rates.per_kind,
              "mfu": rates.mfu, "kinds": kinds, "total_s": total, "cached_s": done, "notes": rates.notes,
              "group_size": group_size, "gpus": gpus, "actual_s": sum(actual.values()) or None,
              "wall_s_on_gpus": list_schedule(items, [s or 0.0 for s in seconds], gpus) if gpus else None}
    text = format_estimate(result)
    print(text)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "estimate.md", text + "\n")
    atomic_write_json(run_dir / "estimate.json", result)
    print(f"\nwritten: {run_dir / 'estimate.md'} and estimate.json")
    return result


def _actual_by_kind(run_dir: Path) -> dict[str, float]:
    """Wall seconds per stage kind of a finished run in run_dir (results/timings.json), for comparison."""
    try:
        timings = json.loads((run_dir / "results" / "timings.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    out: dict[str, float] = {}
    for t in timings:
        if t.get("wall_s") is not None:
            kind = Path(t["dir"]).name.rsplit("-", 1)[0]
            out[kind] = out.get(kind, 0.0) + t["wall_s"]
    return out


def _sets(plan, store: Path, assume: dict) -> dict | None:
    """prepare's set sizes: from the store, else by running prepare here (cheap, and cached as the
    run's own prepare stage), else None (the sizes come from --assume)."""
    from blindspot.grid.store import run_stage

    prepare = plan.stages[0]
    if not prepare.done(store):
        if "pool" in assume:
            return None
        try:
            outcome = run_stage(prepare, store)  # through the store: its lock, records and DONE
        except OSError as e:
            outcome = None
            log.info("prepare cannot run here (%s)", e)
        if outcome is None or outcome.status == "failed":  # hub data offline, a missing file: --assume
            if outcome is not None:
                log.info("prepare cannot run here (%s)", outcome.error)
            return None
    return json.loads((prepare.path(store) / "sets.json").read_text())


def _rates(cfg, plan, store, sets, assume, group_size) -> Rates:
    from blindspot.grid.calibrate import calibrate, flops_only
    from blindspot.errors import BlindspotError

    why = "prepare cannot read the data here"
    if sets is not None:
        print(f"calibrating on {cfg.model} (a few training, evaluation and generation batches) ...", flush=True)
        try:
            return calibrate(cfg, plan, store, group_size)
        except (OSError, BlindspotError) as e:  # a model that cannot be loaded here
            why = str(e).splitlines()[0]
            log.info("calibration impossible here: %s", why)
    return flops_only(cfg, plan, sets, assume, group_size, why)


def format_estimate(r: dict) -> str:
    """The table: per stage kind, stages, work, rate, projected hours; the total; N devices."""
    head = ("measured here" if r["measured"] else "NOT MEASURED: hours at the assumed MFU and peak below, "
            "a projection with no measured rate behind it")
    lines = [f"# estimate: {r['config']} ({head})", "",
             "| stage kind | stages | examples | rate (ex/s) | MFU | projected h | actual h |",
             "|---|---|---|---|---|---|---|"]
    for kind, row in r["kinds"].items():
        key = "group" if kind.startswith("augment (") else kind
        rate = r["rates"].get(key)
        mfu = r["mfu"].get(key)
        hours = "?" if row["unknown"] else f"{row['seconds'] / 3600:.3f}"
        rate_text = "" if not rate else f"{rate:.3g}"
        mfu_text = "" if mfu is None else f"{100 * mfu:.2g} %"
        actual = "" if row.get("actual_s") is None else f"{row['actual_s'] / 3600:.3f}"
        lines.append(f"| {kind} | {row['stages']} | {row['examples']:,.0f} | {rate_text} | {mfu_text} | {hours} | "
                     f"{actual} |")
    lines += ["", f"model load per stage: {r['load_s']:.1f} s; a group trains {r['group_size']} augmentations together",
              f"total on one device: {r['total_s'] / 3600:.3f} h ({r['total_s']:.0f} s)"
              + (f", of which cached: {r['cached_s']:.0f} s" if r["cached_s"] else "")
              + (f"; actual run in this directory: {r['actual_s'] / 3600:.3f} h ({r['actual_s']:.0f} s)"
                 if r.get("actual_s") else "")]
    if r["gpus"]:
        lines.append(f"wall time on {r['gpus']} devices (list schedule of the stage graph): "
                     f"{r['wall_s_on_gpus'] / 3600:.3f} h")
    lines += [f"- {n}" for n in r["notes"]]
    return "\n".join(lines)


def run_estimate(config: str | Path, out: str | Path | None, store: str | Path | None, overrides: list[str],
                 gpus: int | None, assume_items: list[str]) -> dict:
    """`blindspot run CONFIG --estimate`: plan, calibrate, project; writes RUN/estimate.md and .json."""
    from blindspot.config import load_config
    from blindspot.grid import build_plan

    if gpus is not None and gpus < 1:
        raise ConfigError(f"--gpus {gpus}: expected a number of devices >= 1")
    cfg = load_config(config, overrides)
    run_dir = Path(out) if out else Path("runs") / cfg.name
    try:
        plan = build_plan(cfg)
    except ConfigError as e:
        raise ConfigError(f"{config}: {e}") from None
    return estimate(cfg, plan, Path(store) if store else run_dir / "stages", run_dir, gpus,
                    parse_assumptions(assume_items))
