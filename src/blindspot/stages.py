"""The grid's stage runners: each is `run_<stage>(spec, out, inputs) -> None`.

A runner takes everything from its JSON spec and its input stage directories (never from
process state), writes its outputs into `out`, and returns; the executor in grid.py writes
`DONE` last. So any executor (in-process, or one worker per stage on a cluster) can run them.

    prepare    clean the general task, hold out validation, write pool + evaluation sets
    start      train a starting point on n pool examples (n = 0: untrained, fresh head)
    generator  train the generator (causal LM + LoRA) on pool examples written label-first
    generate   sample synthetic examples per label (resumable)
    filter     keep synthetic pairs on which a heuristic always (or never) works
    augment    continue a starting point on m label-balanced examples of one source
    evaluate   score a classifier on every evaluation set
    audit      heuristic features, lengths, diversity of pool vs synthetic vs filtered
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Callable

import torch

from blindspot.data.example import NLIExample, NLISet, load_examples, save_examples
from blindspot.errors import ConfigError
from blindspot.runmeta import run_metadata
from blindspot.storage import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

Inputs = dict[str, Path]


def cache_dir() -> str | None:
    """Where converted base models are cached ($BLINDSPOT_CACHE; models.py decides the default)."""
    return os.environ.get("BLINDSPOT_CACHE")


# --- data ---------------------------------------------------------------------------------------

def run_prepare(spec: dict, out: Path, inputs: Inputs) -> None:
    """Load + clean the training data, hold out validation, write pool and full evaluation sets."""
    from blindspot.data.cleaning import clean_mnli, split_validation
    from blindspot.data.sources import DataSource, load_source

    t0 = time.time()
    train = load_source(DataSource.model_validate(spec["train"]))
    report: dict = {"train_loaded": len(train)}
    if spec["clean"]:
        train, report["cleaning"] = clean_mnli(train)
    validation, pool = split_validation(train, spec["validation_per_label"], spec["split_seed"],
                                        spec["validation_mode"])
    save_examples(out / "pool.jsonl", pool.examples)
    save_examples(out / "validation.jsonl", validation.examples)
    sets = {"pool": {"labels": list(pool.labels), "format": "mnli", "n": len(pool), "source": train.source}}
    for name, raw in spec["eval"].items():
        s = load_source(DataSource.model_validate(raw))
        save_examples(out / "eval" / f"{name}.jsonl", s.examples)
        fmt = s.meta.get("format") if isinstance(s.meta, dict) else None
        sets[name] = {"labels": list(s.labels), "format": fmt, "n": len(s), "source": s.source}
    report |= {"pool": len(pool), "validation": len(validation), "sets": sets}
    atomic_write_json(out / "sets.json", sets)
    atomic_write_json(out / "report.json", report)
    atomic_write_json(out / "meta.json", run_metadata(stage="prepare", wall_s=round(time.time() - t0, 3)))
    log.info("prepare: pool %d, validation %d, evaluation sets %s", len(pool), len(validation),
             {k: v["n"] for k, v in sets.items() if k != "pool"})


def load_prepared(prepare_dir: Path, name: str) -> NLISet:
    """A set written by `run_prepare` ('pool' or an evaluation set name), with its label space."""
    info = json.loads((prepare_dir / "sets.json").read_text())[name]
    path = prepare_dir / ("pool.jsonl" if name == "pool" else f"eval/{name}.jsonl")
    meta = {"format": info["format"]} if info.get("format") else {}
    return NLISet(name, tuple(info["labels"]), load_examples(path), info.get("source", ""), meta)


def source_examples(inputs: Inputs) -> list[NLIExample]:
    """The candidate examples of an augmentation: the pool, synthetic.jsonl, or a filter's kept.jsonl."""
    data = inputs["data"]
    for name in ("kept.jsonl", "synthetic.jsonl", "pool.jsonl"):
        if (data / name).is_file():
            return load_examples(data / name)
    raise FileNotFoundError(f"{data}: no kept.jsonl, synthetic.jsonl or pool.jsonl")


# --- classifiers --------------------------------------------------------------------------------

def run_base(spec: dict, out: Path, inputs: Inputs) -> None:
    """Build the experiment's tiny-llama once and pretrain all its weights on pool examples.

    A random tiny Llama cannot learn the generator's template through LoRA alone (its frozen
    output layer caps the logits), so, like a real base model, it first learns the data's
    language: a few epochs of causal-LM training on label-first pool examples.
    """
    from transformers import AutoModelForCausalLM

    from blindspot.data.cleaning import sample_examples
    from blindspot.generator import GeneratorSpec, generator_batches
    from blindspot.models import build_tiny_llama, load_tokenizer
    from blindspot.templates import CLASSIFIER_TEMPLATES
    from blindspot.train import OptimSpec, fit

    pool = load_prepared(inputs["prepare"], "pool")
    examples = sample_examples(pool, min(spec["pretrain_examples"], len(pool)), spec["seed"])
    pre = GeneratorSpec(model="tiny-llama", max_length=spec["max_length"], seed=spec["seed"],
                        optim=OptimSpec(batch_size=16, lr=1e-2, epochs=spec["epochs"], warmup_ratio=0.05,
                                        max_grad_norm=1.0))
    texts = [pre.template().full_text(e.label, e.premise, e.hypothesis) for e in pool.examples]
    path = build_tiny_llama(out / "model", texts + list(CLASSIFIER_TEMPLATES.values()),
                            vocab_size=spec["vocab_size"], seed=spec["seed"])
    torch.manual_seed(spec["seed"])
    model = AutoModelForCausalLM.from_pretrained(path)
    fit(model, generator_batches(load_tokenizer(path), pre, examples), pre.optim, torch.device("cpu"),
        desc="pretrain tiny-llama")
    model.save_pretrained(path)


def base_model(spec: dict, inputs: Inputs) -> str:
    """The model to start from: a built base stage's checkpoint, else the configured name."""
    return str(inputs["base"] / "model") if "base" in inputs else spec["model"]


def _classifier_spec(spec: dict, inputs: Inputs, init_from: Path | None = None):
    from blindspot.train import ClassifierSpec

    c = spec["classifier"]
    return ClassifierSpec(model=base_model(spec, inputs), init_from=str(init_from) if init_from else None,
                          template=c["template"], lora=c["lora"], optim=c["optim"], max_length=c["max_length"],
                          seed=spec["seed"], device=spec["device"], dtype=spec["dtype"], quantize=spec["quantize"])


def run_start(spec: dict, out: Path, inputs: Inputs) -> None:
    """Train a starting point on n pool examples sampled with the condition's seed."""
    from blindspot.data.cleaning import sample_examples
    from blindspot.train import train_classifier

    pool = load_prepared(inputs["prepare"], "pool")
    n = len(pool) if spec["n"] == "all" else spec["n"]
    examples = sample_examples(pool, n, spec["seed"], method=spec["sampling"])
    atomic_write_json(out / "train_ids.json", [e.id for e in examples])
    train_classifier(_classifier_spec(spec, inputs), examples, out, cache_dir())


def run_augment(spec: dict, out: Path, inputs: Inputs) -> None:
    """Continue a starting point on m label-balanced examples of one source."""
    from blindspot.train import train_classifier

    train_classifier(*augment_job(spec, out, inputs), out, cache_dir())


def augment_job(spec: dict, out: Path, inputs: Inputs):
    """(ClassifierSpec, examples) of an augmentation; writes train_ids.json (blindspot.group_runs
    trains a starting point's jobs together)."""
    from blindspot.data.cleaning import sample_balanced

    exclude: list[str] = []
    if spec["exclude_seen"] and spec["source"] == "original":
        exclude = json.loads((inputs["start"] / "train_ids.json").read_text())
    candidates = source_examples(inputs)
    try:
        examples = sample_balanced(candidates, spec["m"], spec["seed"], spec["labels"], exclude)
    except ConfigError as e:
        raise ConfigError(f"augment {spec['source']} m={spec['m']}: {e} in {inputs['data']} "
                          "(raise generation.per_label, or lower augment.sizes)") from None
    atomic_write_json(out / "train_ids.json", [e.id for e in examples])
    return _classifier_spec(spec, inputs, init_from=inputs["start"]), examples


def run_evaluate(spec: dict, out: Path, inputs: Inputs) -> None:
    """Score a classifier on every evaluation set (optionally a seeded stratified subsample)."""
    from blindspot.evaluate import evaluate

    sets = {name: load_prepared(inputs["prepare"], name) for name in spec["sets"]}
    evaluate(inputs["classifier"], sets, out, batch_size=spec["batch_size"], per_subcase=spec["per_subcase"],
             per_label=spec["per_label"], seed=spec["seed"], device=spec["device"], max_length=spec["max_length"],
             overlap_rule=spec["overlap_rule"], dtype=spec["dtype"])


# --- synthetic data -----------------------------------------------------------------------------

def run_generator(spec: dict, out: Path, inputs: Inputs) -> None:
    """Train the generator on (a seeded sample of) the pool."""
    from blindspot.data.cleaning import sample_examples
    from blindspot.generator import GeneratorSpec, train_generator

    pool = load_prepared(inputs["prepare"], "pool")
    g = spec["generator"]
    n = len(pool) if g["train_size"] is None else min(g["train_size"], len(pool))
    examples = sample_examples(pool, n, g["seed"])
    gspec = GeneratorSpec(model=base_model(spec, inputs), lora=g["lora"], optim=g["optim"], max_length=g["max_length"],
                          modules_to_save=tuple(g["modules_to_save"]),
                          seed=g["seed"], device=spec["device"], dtype=spec["dtype"], quantize=spec["quantize"])
    train_generator(gspec, examples, out, cache_dir())


def run_generate(spec: dict, out: Path, inputs: Inputs) -> None:
    """Sample per_label valid synthetic examples per label; checks leakage into the evaluation sets."""
    from blindspot.generate import GenerateSpec, generate

    g = dict(spec["generation"])
    eval_files = tuple(str(inputs["prepare"] / "eval" / f"{name}.jsonl") for name in spec["sets"])
    gspec = GenerateSpec(generator=str(inputs["generator"]), n_per_label=g.pop("per_label"),
                         eval_sets=eval_files, device=spec["device"], dtype=spec["dtype"], **g)
    generate(gspec, out)


def run_filter(spec: dict, out: Path, inputs: Inputs) -> None:
    from blindspot.filters import run_filter as apply_filter

    name = "pool.jsonl" if spec.get("input") == "pool" else "synthetic.jsonl"  # original+FILTER: the pool
    apply_filter(str(inputs["data"] / name), spec["filter"], out, keep_dropped=True,
                 overlap_rule=spec["overlap_rule"])


def run_audit(spec: dict, out: Path, inputs: Inputs) -> None:
    """Audit the pool against the synthetic data and each filtered set; JSON and Markdown."""
    from blindspot.audit import audit_markdown, audit_sets

    sets = {"mnli-pool": load_prepared(inputs["prepare"], "pool")}
    for key, path in inputs.items():
        if key != "prepare":
            sets[key] = source_examples({"data": path})
    audit = audit_sets(sets, seed=spec["seed"], overlap_rule=spec["overlap_rule"])
    atomic_write_json(out / "audit.json", audit)
    atomic_write_text(out / "audit.md", audit_markdown(audit))


RUNNERS: dict[str, Callable[[dict, Path, Inputs], None]] = {
    "prepare": run_prepare, "base": run_base, "start": run_start, "generator": run_generator, "generate": run_generate,
    "filter": run_filter, "augment": run_augment, "evaluate": run_evaluate, "audit": run_audit,
}
