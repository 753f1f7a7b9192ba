"""Train (or continue training) an LLM + sequence-classification head + LoRA NLI classifier.

    blindspot train-classifier --model smollm2-135m --data ../shared/data/mnli-subset/multinli_1.0_train.jsonl.gz \
        --n 2000 --template short --out runs/start-2000
    blindspot train-classifier --init-from runs/start-2000 --data synthetic.jsonl --n 1000 --out runs/aug
    blindspot train-classifier --config classifier.yaml

A saved classifier directory holds the peft adapter (safetensors, including the fully trained
`score` head), the tokenizer, `classifier.json` (spec, labels, template, base model identity),
`train_log.jsonl`, `meta.json` and, written last, `DONE`. `load_classifier` reloads it.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from pydantic import ConfigDict, Field, ValidationError

from blindspot.data.example import MNLI_LABELS, NLIExample
from blindspot.errors import ConfigError, DataError
from blindspot.training.loop import (FitResult, LoraSpec, RunSettings, OptimSpec, add_lora, fit, log_trainable,
                                     prepare_4bit_for_training, upcast_trainable)
from blindspot.models.checkpoints import (attach_adapter, base_identity, open_adapter_dir, read_adapter_info,
                                         save_adapter_dir)
from blindspot.models.load import load_base_model, load_tokenizer
from blindspot.models.resolve import detect_device, resolve_model
from blindspot.mfu import training_mfu
from blindspot.runmeta import Facts, finish_standalone, now
from blindspot.storage import is_done
from blindspot.templates import CLASSIFIER_TEMPLATES, encode_classifier_inputs

log = logging.getLogger(__name__)

SORT_CHUNK_BATCHES = 50  # batches are length-sorted within chunks of this many (less padding)


class ClassifierSpec(RunSettings):
    """Everything that determines a trained classifier, apart from its training examples."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("smollm2-135m", description="Base model: smollm2-135m, tiny-llama, a local "
                       "checkpoint directory or a hub id. Ignored with init_from (the base is carried over).")
    init_from: str | None = Field(None, description="A saved classifier directory to continue training "
                                  "(augmentation); None starts from the base model with a fresh head.")
    template: str | None = Field(None, description="Prompt template: 'paper', 'short' or a format string "
                                 "with {premise} and {hypothesis}; None = 'paper', or init_from's template.")
    labels: tuple[str, ...] = Field(MNLI_LABELS, min_length=2, description="Label order of the head.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (ignored with init_from).")
    optim: OptimSpec = Field(default_factory=OptimSpec, description="Optimisation hyperparameters.")
    max_length: int = Field(512, ge=8, description="Longest input in tokens (premise truncated from the left).")
    seed: int = Field(0, description="Seed of the head initialisation, LoRA init, dropout and batch order.")


@dataclass
class Classifier:
    """A loaded classifier, ready for inference."""

    model: torch.nn.Module
    tokenizer: object
    template: str  # the format string, with {premise} and {hypothesis}
    labels: tuple[str, ...]
    spec: dict
    path: Path
    device: torch.device


# --- batches ---------------------------------------------------------------------------------

def classifier_batches(tokenizer, template: str, examples: list[NLIExample], labels: tuple[str, ...],
                       batch_size: int, max_length: int, seed: int,
                       group_by_length: bool = True) -> Callable[[int], list[dict]]:
    """Tokenise once; per epoch, shuffle with the seed, then (group_by_length) sort by length within
    chunks of SORT_CHUNK_BATCHES batches (less padding) and shuffle the order of the batches."""
    label_ids = {lab: i for i, lab in enumerate(labels)}
    bad = next((e for e in examples if e.label not in label_ids), None)
    if bad is not None:
        raise DataError(f"example {bad.id}: label {bad.label!r} is not one of {', '.join(labels)}")
    prefix, suffixes = encode_classifier_inputs(tokenizer, template, [(e.premise, e.hypothesis) for e in examples],
                                                max_length)
    encoded = [(prefix + s, label_ids[e.label]) for s, e in zip(suffixes, examples)]
    pad = tokenizer.pad_token_id

    def collate(items: list[tuple[list[int], int]]) -> dict:
        width = max(len(ids) for ids, _ in items)
        input_ids = torch.full((len(items), width), pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (ids, _) in enumerate(items):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "labels": torch.tensor([lab for _, lab in items], dtype=torch.long)}

    def for_epoch(epoch: int) -> list[dict]:
        rng = random.Random(f"{seed}:{epoch}")
        order = list(range(len(encoded)))
        rng.shuffle(order)
        chunk = SORT_CHUNK_BATCHES * batch_size
        groups: list[list[int]] = []
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            if group_by_length:
                part = sorted(part, key=lambda j: len(encoded[j][0]))
            groups += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
        rng.shuffle(groups)
        return [collate([encoded[j] for j in g]) for g in groups]

    return for_epoch


# --- train / save / load ----------------------------------------------------------------------

def train_classifier(spec: ClassifierSpec, train_examples: list[NLIExample] | None, out_dir: str | Path,
                     cache_dir: str | Path | None = None) -> Path:
    """Train a classifier on `train_examples` (None or [] = untrained, fresh seeded head) into the
    directory this call owns: its files, meta.json, DONE. A finished one with this spec is kept."""
    out_dir = Path(out_dir)
    if is_done(out_dir):
        if _read_info(out_dir).get("spec") != spec.model_dump(mode="json"):
            raise ConfigError(f"{out_dir}: already holds a different finished classifier (choose another output)")
        log.info("%s is done already; nothing to do", out_dir)
        return out_dir
    started = now()
    finish_standalone(out_dir, train_classifier_into(spec, train_examples, out_dir, cache_dir), started)
    return out_dir


def train_classifier_into(spec: ClassifierSpec, train_examples: list[NLIExample] | None, out_dir: str | Path,
                          cache_dir: str | Path | None = None) -> Facts:
    """Train a classifier and save it into `out_dir` (adapter, tokenizer, classifier.json,
    train_log.jsonl); returns its facts for meta.json (device, dtype, wall_s, throughput, MFU). No
    meta.json, no DONE: the directory's owner writes them (the grid's store, or train_classifier)."""
    out_dir, examples = Path(out_dir), list(train_examples or [])
    t0 = time.time()
    device, dtype = detect_device(spec.device, spec.dtype)
    torch.manual_seed(spec.seed)  # head init, LoRA init, dropout
    if spec.init_from:
        clf = _load(Path(spec.init_from), device, dtype, spec.quantize, trainable=True)
        model, tokenizer, template, base = clf.model, clf.tokenizer, clf.template, clf.spec["base"]
        if spec.template is not None and _format(spec.template) != template:
            raise ConfigError(f"template: {spec.template!r} differs from init_from's template {template!r}")
        if tuple(clf.labels) != spec.labels:
            raise ConfigError(f"labels: {spec.labels} differ from init_from's labels {clf.labels}")
        lora = clf.spec["lora"]
    else:
        texts = [f"{e.premise} {e.hypothesis}" for e in examples] + list(CLASSIFIER_TEMPLATES.values())
        base_path = resolve_model(spec.model, cache_dir, texts=texts)
        torch.manual_seed(spec.seed)  # again: building a tiny-llama on the first call draws random numbers
        base = base_identity(spec.model, base_path)
        tokenizer, template = load_tokenizer(base_path), _format(spec.template or "paper")
        model = load_base_model(base_path, "classification", len(spec.labels), device, dtype, spec.quantize,
                                pad_token_id=tokenizer.pad_token_id)
        model = add_lora(model, spec.lora, "classification")
        lora = spec.lora.model_dump(mode="json")
    result, mfu = FitResult(0, 0, 0.0, 0.0, []), None
    if examples:
        batches = classifier_batches(tokenizer, template, examples, spec.labels, spec.optim.batch_size,
                                     spec.max_length, spec.seed, spec.optim.group_by_length)
        result = fit(model, batches, spec.optim, device, desc="train-classifier",
                     checkpoint_dir=out_dir)
        mfu = training_mfu(model, batches, spec.optim.epochs, result.seconds, device, dtype, cache_dir)
    info = {"spec": spec.model_dump(mode="json"), "labels": list(spec.labels), "template": template,
            "base": base, "lora": lora, "max_length": spec.max_length,
            "train": {"examples": len(examples), "steps": result.steps,
                      "label_counts": {lab: sum(e.label == lab for e in examples) for lab in spec.labels}}}
    save_adapter_dir(model, tokenizer, out_dir, "classifier.json", info, result.log)
    return {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "wall_s": time.time() - t0,
            "train_seconds": result.seconds, "train_examples_per_s": result.examples_per_s, "mfu": mfu}


def _format(template: str) -> str:
    """A template name or format string -> the format string."""
    fmt = CLASSIFIER_TEMPLATES.get(template, template)
    if "{premise}" not in fmt or "{hypothesis}" not in fmt:
        raise ConfigError(f"template: {template!r} is neither {' nor '.join(CLASSIFIER_TEMPLATES)} nor a "
                          "format string with {premise} and {hypothesis}")
    return fmt


_INFO_KEYS = ("spec", "labels", "template", "base", "lora")  # of classifier.json, that loading needs


def _read_info(path: Path) -> dict:
    """classifier.json, checked for the keys load_classifier needs."""
    return read_adapter_info(path, "classifier.json", _INFO_KEYS, "classifier")


def _load(path: Path, device, dtype, quantize: str, trainable: bool) -> Classifier:
    info, base_path = open_adapter_dir(path, "classifier", _INFO_KEYS)
    dev, dt = detect_device(device, dtype)
    tokenizer = load_tokenizer(path)
    base = load_base_model(base_path, "classification", len(info["labels"]), dev, dt, quantize,
                           pad_token_id=tokenizer.pad_token_id)
    if trainable and quantize == "4bit":  # continuing QLoRA training
        base = prepare_4bit_for_training(base, info["lora"].get("gradient_checkpointing", True))
    base.config.id2label = dict(enumerate(info["labels"]))
    base.config.label2id = {lab: i for i, lab in enumerate(info["labels"])}
    model = attach_adapter(base, path, base_path, trainable)
    if trainable:
        upcast_trainable(model)
        log_trainable(model)
    else:
        model.eval()
    return Classifier(model, tokenizer, info["template"], tuple(info["labels"]), info, path, dev)


def load_classifier(path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                    quantize: str | None = None) -> Classifier:
    """Reload a saved classifier for inference (eval mode); quantize None = as trained.

    A classifier trained on a 4-bit base is loaded on a 4-bit base wherever bitsandbytes can run
    it (CUDA, or its CPU backend); where it cannot, it is loaded unquantised and a warning says so.
    """
    from blindspot.models.load import four_bit_available

    path = Path(path)
    dev, dt = detect_device(device, dtype)
    if quantize is None:
        quantize = _read_info(path)["spec"].get("quantize", "none") if path.is_dir() else "none"
        ok, why = four_bit_available(dev) if quantize == "4bit" else (True, "")
        if not ok:
            log.warning("%s was trained on a 4-bit NF4 base, but %s: loading it on the unquantised base "
                        "(predictions can differ slightly from the 4-bit model's)", path, why)
            quantize = "none"
    return _load(path, dev, dt, quantize, trainable=False)


# --- command line -----------------------------------------------------------------------------

def load_training_examples(data: str, n: int | None, seed: int, labels: tuple[str, ...],
                           pool_per_label: int | None = None) -> list[NLIExample]:
    """Read a data source (path or hub:ID, see blindspot.data.sources); n sampled with the seed (None = all).

    With `pool_per_label`, sample from the training pool as the grid does: the paper's cleaning,
    then `pool_per_label` examples per label held out for validation (split seed 0).
    """
    from blindspot.data.cleaning import clean_mnli, sample_examples, split_validation
    from blindspot.data.sources import load_source

    examples = load_source(data).examples if pool_per_label is None else \
        split_validation(clean_mnli(load_source(data))[0], pool_per_label, 0)[1].examples
    bad = next((e for e in examples if e.label not in labels), None)
    if bad is not None:
        raise DataError(f"{data}: example {bad.id} has label {bad.label!r} (expected one of {', '.join(labels)})")
    if n is not None and n > len(examples):
        raise DataError(f"{data}: --n {n} asked for but the source has only {len(examples)} examples")
    return list(examples) if n is None else sample_examples(examples, n, seed)


def train_classifier_from_source(spec: ClassifierSpec, data: str | None, n: int | None, out_dir: str | Path,
                                 sample_seed: int | None = None, cache_dir: str | Path | None = None,
                                 pool_per_label: int | None = None) -> Path:
    """Sample n examples from `data` (n = 0: untrained) and train a classifier on them."""
    if n == 0:
        return train_classifier(spec, [], out_dir, cache_dir)
    if data is None:
        raise ConfigError("--data: a training data source is needed unless --n 0")
    seed = spec.seed if sample_seed is None else sample_seed
    examples = load_training_examples(data, n, seed, spec.labels, pool_per_label)
    return train_classifier(spec, examples, out_dir, cache_dir)


# CLI option -> the ClassifierSpec field it overrides (section, field); section None = top level
_OVERRIDES = {**{k: (None, k) for k in ("model", "init_from", "template", "seed", "device", "dtype", "quantize",
                                        "max_length")},
              **{k: ("optim", k) for k in ("lr", "batch_size", "grad_accum", "epochs", "warmup_ratio",
                                           "weight_decay", "max_grad_norm", "optimizer")},
              **{f"lora_{k}": ("lora", k) for k in ("r", "alpha", "dropout")}}
_JOB_KEYS = ("data", "n", "sample_seed", "out", "cache_dir", "pool_per_label")  # YAML keys that are not spec fields


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `blindspot train-classifier`; unset options fall back to --config, then defaults."""
    def a(*names, **kw):  # unset options stay absent (no misleading "default: None" in --help)
        parser.add_argument(*names, default=argparse.SUPPRESS, **kw)

    a("--config", help="YAML file of ClassifierSpec fields (plus data, n, sample_seed, out, cache_dir); "
      "options given on the command line override it")
    a("--data", help="training data: a file path or hub:ID[:SPLIT] (see blindspot.data.sources)")
    a("--n", type=int, help="number of training examples sampled from --data (0 = untrained; default all)")
    a("--sample-seed", type=int, help="seed of the sample of --n examples (default: --seed)")
    a("--pool", type=int, metavar="K", dest="pool_per_label",
      help="sample from the training pool as `blindspot run` does: clean --data as the paper, hold out K per "
      "label for validation (e.g. 250), sample --n from the rest")
    a("--out", help="output classifier directory (required here or in --config)")
    a("--cache-dir", help="where converted models are cached (default $BLINDSPOT_CACHE or ~/.cache/blindspot)")
    for opt, (section, key) in _OVERRIDES.items():  # the spec's own field descriptions are the help
        field = {None: ClassifierSpec, "optim": OptimSpec, "lora": LoraSpec}[section].model_fields[key]
        kind = field.annotation if field.annotation in (int, float) else str
        a(f"--{opt.replace('_', '-')}", type=kind, help=f"{field.description} [{field.default}]")


def spec_from_args(args: argparse.Namespace) -> tuple[ClassifierSpec, dict]:
    """Merge --config YAML and command-line options into a ClassifierSpec and the job keys."""
    import yaml

    raw: dict = {}
    config = getattr(args, "config", None)
    if config:
        try:
            raw = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{config}: cannot read YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{config}: expected a mapping of ClassifierSpec fields")
    job = {k: raw.pop(k, None) for k in _JOB_KEYS}
    job |= {k: getattr(args, k) for k in _JOB_KEYS if hasattr(args, k)}
    for opt, (section, key) in _OVERRIDES.items():
        if hasattr(args, opt):
            (raw.setdefault(section, {}) if section else raw)[key] = getattr(args, opt)
    try:
        spec = ClassifierSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise ConfigError(f"{config or 'options'}: field {where}: {err['msg']}") from None
    if not job["out"]:
        raise ConfigError("--out: an output directory is required")
    return spec, job


def main(args: argparse.Namespace) -> int:
    spec, job = spec_from_args(args)
    out = train_classifier_from_source(spec, job["data"], job["n"], job["out"], job["sample_seed"], job["cache_dir"],
                                       job["pool_per_label"])
    print(out)
    return 0
