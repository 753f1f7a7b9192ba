"""Repeated generations: the stages of rounds 2..K, and the per-round summary the report reads.

    generations: {rounds: 3, mode: [replace, accumulate], train_size: 1000}     # config (blindspot.config)

The model-collapse loop of Shumailov et al. (2024) and Gerstgrasser et al. (2024, "Is Model
Collapse Inevitable?"), asked about a heuristic: round 1 is the paper's generator (trained on
`generator.train_size` pool pairs) and its synthetic data; round t+1's generator is trained on
what round t wrote (`replace`), or on round 1's real training sample plus everything written so
far (`accumulate`). Every round's generator is a fresh LoRA on the same base model, as in the
literature (each generation is fine-tuned from the pretrained model, not from the previous one):
`generator.model` when it is set (blindspot.crossmodel), else the classifier's model.

Per round t, every stage is its own cached stage, so raising K reruns only the new rounds:

    generator  round t (mode)      spec.round = {round, mode, train_size, real_fraction}    t >= 2
    generate   round t (mode)      generation.per_label per label: augmentation source
                                   `synthetic-rT-MODE` (round 1: `synthetic`), used exactly as the
                                   paper's synthetic source is                                t >= 2
    audit      round t (mode)      that set against the pool (blindspot.audit)                 t >= 2
    generate   round t, for t+1    the round's contribution to the next round's training set:
                                   ceil(synthetic part / 3) per label (the same stage as the
                                   round's own set when the two sizes agree)                   t < K
    audit      round t, for t+1    that contribution against the pool, when it is a set of its
                                   own (the data the next generator learns from)               t < K

A contribution is `train_size` examples (default: generator.train_size, round 1's size: a SmolLM2
generator trained on 300 examples wrote no valid example of 128, docs/LOG.md), of which
round(real_fraction x train_size) are real pool pairs. The two generate stages of a round share
their batch seeds, so the smaller set is the first examples of the larger (the same ids).
Round 1's stages are today's, with today's hashes; round >= 2 generate specs carry `round` and
`mode` (left out of the JSON while None) and their record ids start `roundT-MODE-`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from blindspot.grid.artifacts import StageSpec
from blindspot.data.example import MNLI_LABELS
from blindspot.stages import audit as audit_stage
from blindspot.stages import generate as generate_stage
from blindspot.stages import generator as generator_stage
from blindspot.stages.common import StageModel, spec_json
from blindspot.storage import atomic_write_json

ROUNDS_JSON = "results/rounds.json"


def source_name(round_: int, mode: str | None) -> str:
    """The augmentation source of a round's synthetic data: 'synthetic' (round 1), 'synthetic-r2-replace'."""
    return "synthetic" if round_ == 1 else f"synthetic-r{round_}-{mode}"


def next_source_name(round_: int, mode: str | None) -> str:
    """The audit's name for a round's data for the next round: 'synthetic-for-r2', 'synthetic-r2-replace-for-r3'."""
    return f"{source_name(round_, mode)}-for-r{round_ + 1}"


def _stage(kind: str, spec: StageModel, inputs: dict[str, StageSpec], label: str) -> StageSpec:
    return StageSpec(kind, spec_json(spec), inputs, label)


def contribution_sizes(cfg) -> tuple[int, int]:
    """(train_size, its synthetic part) of each round's contribution to the next round's training set."""
    g = cfg.generations
    size = g.train_size if g.train_size is not None else cfg.generator.train_size
    return size, size - round(g.real_fraction * size)


def plan_rounds(cfg, gen: dict, gen_inputs: dict[str, StageSpec], record: dict, prepare: StageSpec,
                generator: StageSpec, generate: StageSpec) -> list[dict]:
    """Round entries {round, mode, source, generator, generate, audit, next, next_audit}: round 1
    (today's stages, no audit of its own: the run's audit has it) and, per mode, rounds 2..K with
    their stages; `next` is the round's data for the next round (None in round K) and `next_audit`
    its audit (None when `next` is the round's own set, audited already).

    `gen` is the generator's model choice (crossmodel.generator_choice: generator.model, else the
    classifier's), `gen_inputs` its stage inputs, `record` the run's models (crossmodel.models_record)."""
    g = cfg.generations
    entries = [{"round": 1, "mode": None, "source": "synthetic", "generator": generator, "generate": generate,
                "audit": None, "next": None, "next_audit": None}]
    if g.rounds == 1:
        return entries
    size, n_syn = contribution_sizes(cfg)
    per_label_train = -(-n_syn // len(MNLI_LABELS))
    sets = sorted(cfg.data.eval)
    by = f" ({gen['model']})" if gen["model"] != cfg.model else ""  # as round 1's label names another model

    def generate_spec(per_label: int | None, t: int, mode: str | None) -> generate_stage.Spec:
        generation = cfg.generation if per_label is None else cfg.generation.model_copy(update={"per_label": per_label})
        later = t > 1
        return generate_stage.Spec(generation=generation, sets=sets, device=cfg.device, dtype=gen["dtype"],
                                   round=t if later else None, mode=mode if later else None, models_record=record)

    def audit(name: str, data: StageSpec, label: str) -> StageSpec:
        return _stage("audit", audit_stage.Spec(seed=cfg.data.split_seed, overlap_rule=cfg.overlap_rule),
                      {"prepare": prepare, name: data}, label)

    def with_next(entry: dict, contribution: StageSpec) -> None:
        """The round's data for the next round, audited when it is a set of its own (not the round's own set)."""
        t, mode = entry["round"], entry["mode"]
        entry["next"] = contribution
        if contribution.dirname != entry["generate"].dirname:
            entry["next_audit"] = audit(next_source_name(t, mode), contribution,
                                        f"audit round {t}{f' {mode}' if mode else ''} for round {t + 1}")

    first = _stage("generate", generate_spec(per_label_train, 1, None), {"generator": generator, "prepare": prepare},
                   f"generate round 1 for round 2 {per_label_train}/label{by}")
    with_next(entries[0], first)
    for mode in g.modes():
        contributions = {1: first}
        for t in range(2, g.rounds + 1):
            earlier = range(1, t) if mode == "accumulate" else [t - 1]
            spec = generator_stage.Spec(**gen, generator=cfg.generator.training(), models_record=record,
                                        round=generator_stage.GenerationRound(round=t, mode=mode, train_size=size,
                                                                              real_fraction=g.real_fraction))
            trained = _stage("generator", spec, {**gen_inputs, **{f"synthetic-r{s}": contributions[s] for s in earlier}},
                             f"train generator round {t} {mode}{by}")
            inputs = {"generator": trained, "prepare": prepare}
            name = source_name(t, mode)
            own = _stage("generate", generate_spec(None, t, mode), inputs, f"generate round {t} {mode}{by}")
            entry = {"round": t, "mode": mode, "source": name, "generator": trained, "generate": own,
                     "audit": audit(name, own, f"audit round {t} {mode}"), "next": None, "next_audit": None}
            if t < g.rounds:
                contributions[t] = _stage("generate", generate_spec(per_label_train, t, mode), inputs,
                                          f"generate round {t} {mode} for round {t + 1} {per_label_train}/label{by}")
                with_next(entry, contributions[t])
            entries.append(entry)
    return entries


def generator_examples(spec: dict, pool: int | None) -> int | None:
    """Examples a generator stage trains on (for the ETA); None while the pool size is unknown."""
    g, r = spec["generator"], spec.get("round")
    first = g["train_size"] if pool is None else pool if g["train_size"] is None else min(g["train_size"], pool)
    if r is None:
        return first
    if r["mode"] == "replace":
        return r["train_size"]
    return None if first is None else first + (r["round"] - 1) * r["train_size"]


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _next_round_data(r: dict, run_dir: Path, store: Path) -> dict | None:
    """Where a round's data for the next round is, its generation counts and its audit; None in the
    last round and where that data is the round's own set (audited with it)."""
    if r.get("next_audit") is None:
        return None
    gen, audit_stage_ = r["next"], r["next_audit"]
    report = _read(gen.path(store) / "report.json") if gen.done(store) else None
    audit = _read(audit_stage_.path(store) / "audit.json") if audit_stage_.done(store) else None
    return {"for_round": r["round"] + 1, "generate_dir": os.path.relpath(gen.path(store), run_dir),
            "generation": None if report is None else {k: report[k] for k in ("attempts", "valid",
                                                                              "parse_failure_rate", "rejected",
                                                                              "labels")},
            "audit": None if audit is None else audit["sets"].get(next_source_name(r["round"], r["mode"]))}


def write_rounds(cfg, rounds: list[dict], run_audit: StageSpec | None, run_dir: Path, store: Path) -> Path | None:
    """results/rounds.json: per round, where its stages are, its generation report's counts, its
    audit (blindspot.audit, against the pool) and what its generator trained on; None for one round."""
    if len(rounds) < 2:
        return None
    out = []
    for r in rounds:
        gen_dir, trained_dir = r["generate"].path(store), r["generator"].path(store)
        audit_stage_ = r["audit"] if r["audit"] is not None else run_audit
        audit = _read(audit_stage_.path(store) / "audit.json") if audit_stage_ is not None and audit_stage_.done(store) else None
        report = _read(gen_dir / "report.json") if r["generate"].done(store) else None
        info = _read(trained_dir / "generator.json") if r["generator"].done(store) else None
        out.append({
            "round": r["round"], "mode": r["mode"], "source": r["source"],
            "generate_dir": os.path.relpath(gen_dir, run_dir), "generator_dir": os.path.relpath(trained_dir, run_dir),
            "generation": None if report is None else {k: report[k] for k in ("attempts", "valid", "parse_failure_rate",
                                                                               "rejected", "labels")},
            "audit": None if audit is None else audit["sets"].get(r["source"]),
            "pool_audit": None if audit is None else audit["sets"].get("mnli-pool"),
            "overlap_rule": None if audit is None else audit.get("overlap_rule"),
            "generator_train": None if info is None else {"examples": info["train"]["examples"],
                                                          "sources": _read(trained_dir / "train_sources.json")},
            "next_round_data": _next_round_data(r, run_dir, store),
        })
    g = cfg.generations
    return atomic_write_json(run_dir / ROUNDS_JSON, {"rounds": g.rounds, "modes": g.modes(),
                                                     "real_fraction": g.real_fraction,
                                                     "train_size": contribution_sizes(cfg)[0], "sets": out})
