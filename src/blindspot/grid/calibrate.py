"""The measurements behind `blindspot run CONFIG --estimate` (blindspot.grid.estimate), on the config's own
model, device, dtype and data; nothing here is written to the run's stage store except prepare.

    classifier training   STEPS optimiser steps on pool examples (after one warm-up step), alone
    grouped augmentation  STEPS group steps of K adapters (K = augmentations per starting point)
    generator training    the real train_generator on a few batches (its meta's examples/s)
    evaluation            the real evaluator on a few batches of each evaluation set
    generation            the real sampler on a few batches (rows sampled per second)
    model load            loading the base model + adapter once

For tiny-llama the base is built untrained (same shape and tokenizer size as the grid's `base`
stage, whose pretraining is not timed here). The rates are examples/s; each comes with its MFU
(blindspot.mfu). `flops_only` is the fallback where the model cannot run here.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from blindspot.config import ExperimentConfig
from blindspot.grid.estimate import Rates

log = logging.getLogger(__name__)

STEPS = 3          # timed optimiser steps (after one warm-up step)
EVAL_BATCHES = 2   # timed evaluation batches per set
GEN_BATCHES = 1    # timed generation batches per label (of the first label only)


def _base_path(cfg: ExperimentConfig, plan, store: Path, tmp: Path, pool) -> Path:
    from blindspot.models.resolve import build_tiny_llama, cache_root, resolve_model
    from blindspot.templates import CLASSIFIER_TEMPLATES

    if cfg.model != "tiny-llama":
        return resolve_model(cfg.model, cache_root())
    base = next(s for s in plan.stages if s.stage == "base")
    if base.done(store):
        return base.path(store) / "model"
    texts = [f"{e.premise} {e.hypothesis}" for e in pool.examples] + list(CLASSIFIER_TEMPLATES.values())
    return build_tiny_llama(tmp / "tiny", texts, vocab_size=base.spec["vocab_size"], seed=base.spec["seed"])


def calibrate(cfg: ExperimentConfig, plan, store: Path, group_size: int) -> Rates:
    """Measure every stage kind's rate here (a minute or two on a CPU with a small model)."""
    from blindspot.data.cleaning import sample_examples
    from blindspot.data.example import MNLI_LABELS
    from blindspot.training.loop import add_lora, fit
    from blindspot.mfu import training_mfu
    from blindspot.models.load import load_base_model, load_tokenizer
    from blindspot.models.resolve import detect_device
    from blindspot.stages.common import load_prepared
    from blindspot.training.classifier import _format, classifier_batches

    rates = Rates()
    prepare = plan.stages[0].path(store)
    pool = load_prepared(prepare, "pool")
    device, dtype = detect_device(cfg.device, cfg.dtype)
    c = cfg.classifier
    with tempfile.TemporaryDirectory(prefix="blindspot-calibrate-") as tmp:
        tmp = Path(tmp)
        path = _base_path(cfg, plan, store, tmp, pool)
        tokenizer = load_tokenizer(path)
        t0 = time.time()
        torch.manual_seed(0)
        model = load_base_model(path, "classification", len(MNLI_LABELS), device, dtype, cfg.quantize,
                                pad_token_id=tokenizer.pad_token_id)
        model = add_lora(model, c.lora, "classification")
        rates.load_s = time.time() - t0
        bs = c.optim.batch_size * c.optim.grad_accum
        examples = sample_examples(pool, min(len(pool), bs * (STEPS + 1) * max(group_size, 1)), 0)
        batches = classifier_batches(tokenizer, _format(c.template), examples, MNLI_LABELS, c.optim.batch_size,
                                     c.max_length, 0, c.optim.group_by_length)(0)
        per_step = c.optim.grad_accum
        warm, timed = batches[:per_step], batches[per_step:per_step * (STEPS + 1)]
        fit(model, warm, c.optim, device, desc="calibrate: train (warm-up)")
        result = fit(model, timed, c.optim, device, desc="calibrate: train alone")
        mfu = training_mfu(model, timed, 1, result.seconds, device, dtype)
        for kind in ("start", "augment"):
            rates.per_kind[kind], rates.mfu[kind] = result.examples_per_s, mfu["mfu"]
        rates.flops_per_s["train"] = mfu["achieved_flops_per_s"]
        if group_size > 1:
            rates.per_kind["group"], rates.mfu["group"] = _grouped(model, batches, c.optim, device, dtype, group_size,
                                                                   tokenizer.pad_token_id, per_step)
        eval_rate, eval_mfu = _evaluation(cfg, tmp, model, tokenizer, prepare, plan)
        rates.per_kind["evaluate"], rates.mfu["evaluate"] = eval_rate, eval_mfu
        del model
        gen_rate, gen_mfu, gen_dir = _generator(cfg, plan, path, pool, tmp)
        rates.per_kind["generator"], rates.mfu["generator"] = gen_rate, gen_mfu
        if cfg.model == "tiny-llama":
            rates.per_kind["base"] = _tiny_pretraining(plan, path, pool, device)
        rates.per_kind["generate"], rates.mfu["generate"] = _generation(cfg, gen_dir, tmp)
    rates.notes += [f"rates measured here on {cfg.model} ({device}, {str(dtype).removeprefix('torch.')}): "
                    f"training {STEPS} optimiser steps after a warm-up, grouped {STEPS} steps of {group_size} "
                    f"adapters, {EVAL_BATCHES} evaluation batches per set, {GEN_BATCHES} generation batch",
                    "generate: rows sampled per second; the rows a stage samples assume every row is valid "
                    "(--assume valid=F for a fraction F), in whole batches per label"]
    return rates


def _grouped(model, batches, optim, device, dtype, k, pad, per_step) -> tuple[float, float | None]:
    """Examples/s of k adapters trained together (each on its own rotation of the batches)."""
    from blindspot.training.grouped import AdapterGroup
    from blindspot.mfu import training_mfu

    group = AdapterGroup(model, k, device, pad)
    try:
        lists = [batches[i % len(batches):] + batches[:i % len(batches)] for i in range(k)]
        group.fit([lambda e, b=b: b[:per_step] for b in lists], [optim] * k, desc="calibrate: grouped (warm-up)")
        timed = [b[per_step:per_step * (STEPS + 1)] for b in lists]
        t0 = time.time()
        results = group.fit([lambda e, b=b: b for b in timed], [optim] * k, desc=f"calibrate: {k} grouped")
        seconds = time.time() - t0
    finally:
        group.close()
    flops = sum(training_mfu(model, b, 1, seconds, device, dtype)["model_flops"] for b in timed)
    mfu = training_mfu(model, [x for b in timed for x in b], 1, seconds, device, dtype)["mfu"]
    log.info("calibrate: grouped %d adapters, %.3g model FLOPs in %.1f s", k, flops, seconds)
    return sum(r.examples for r in results) / seconds, mfu


def _tiny_pretraining(plan, path: Path, pool, device) -> float:
    """Examples/s of the base stage's full causal-LM pretraining of tiny-llama (as stages.base.run)."""
    from transformers import AutoModelForCausalLM

    from blindspot.data.cleaning import sample_examples
    from blindspot.training.generator import GeneratorSpec, generator_batches
    from blindspot.training.loop import OptimSpec, fit
    from blindspot.models.load import load_tokenizer

    spec = next(s for s in plan.stages if s.stage == "base").spec
    pre = GeneratorSpec(model="tiny-llama", max_length=spec["max_length"], optim=OptimSpec(batch_size=16, lr=1e-2))
    batches = generator_batches(load_tokenizer(path), pre, sample_examples(pool, min(16 * (STEPS + 1), len(pool)), 0))(0)
    model = AutoModelForCausalLM.from_pretrained(path)
    fit(model, batches[:1], pre.optim, device, desc="calibrate: pretrain (warm-up)")
    return fit(model, batches[1:], pre.optim, device, desc="calibrate: pretrain").examples_per_s


def _evaluation(cfg, tmp: Path, model, tokenizer, prepare: Path, plan) -> tuple[float, float | None]:
    """The real evaluator on EVAL_BATCHES batches of each evaluation set (after loading a saved copy)."""
    import json

    from blindspot.data.example import NLISet
    from blindspot.evaluate import evaluate
    from blindspot.models.checkpoints import base_identity, save_adapter_dir
    from blindspot.stages.common import load_prepared
    from blindspot.storage import mark_done
    from blindspot.training.classifier import _format

    clf = tmp / "classifier"
    info = {"spec": {"quantize": cfg.quantize}, "labels": ["entailment", "neutral", "contradiction"],
            "template": _format(cfg.classifier.template), "base": base_identity(str(model.name_or_path),
                                                                                 Path(model.name_or_path)),
            "lora": cfg.classifier.lora.model_dump(mode="json"), "max_length": cfg.classifier.max_length}
    save_adapter_dir(model, tokenizer, clf, "classifier.json", info, [], {})
    mark_done(clf)  # save_adapter_dir leaves DONE to its caller
    n = cfg.evaluation.batch_size * EVAL_BATCHES
    sets = {}
    for name in cfg.data.eval:
        s = load_prepared(prepare, name)
        sets[name] = NLISet(name, s.labels, s.examples[:: max(1, len(s) // n)][:n], s.source, s.meta)
    evaluate(clf, sets, tmp / "eval", batch_size=cfg.evaluation.batch_size, device=cfg.device, dtype=cfg.dtype,
             max_length=cfg.classifier.max_length, overlap_rule=cfg.overlap_rule)
    meta = json.loads((tmp / "eval" / "meta.json").read_text())
    return meta["examples_per_s"], (meta.get("mfu") or {}).get("mfu")


def _generator(cfg, plan, base: Path, pool, tmp: Path) -> tuple[float, float | None, Path]:
    """The real generator training on STEPS + 1 batches; returns its rate, MFU and directory."""
    import json

    from blindspot.data.cleaning import sample_examples
    from blindspot.training.generator import GeneratorSpec, train_generator

    g = cfg.generator
    n = g.optim.batch_size * g.optim.grad_accum * (STEPS + 1)
    spec = GeneratorSpec(model=str(base), lora=g.lora, optim=g.optim, max_length=g.max_length,
                         modules_to_save=tuple(g.modules_to_save), seed=g.seed, device=cfg.device, dtype=cfg.dtype,
                         quantize=cfg.quantize)
    out = train_generator(spec, sample_examples(pool, min(n, len(pool)), 0), tmp / "generator")
    meta = json.loads((out / "meta.json").read_text())
    return meta["train_examples_per_s"], (meta.get("mfu") or {}).get("mfu"), out


def _generation(cfg, generator: Path, tmp: Path) -> tuple[float, float | None]:
    """Rows sampled per second by the real sampler: GEN_BATCHES batches of one label."""
    import json

    from blindspot.generation.sample import GenerateSpec, generate

    g = cfg.generation.model_dump(mode="json")
    g.pop("per_label")
    spec = GenerateSpec(generator=str(generator), n_per_label=g["batch_size"] * GEN_BATCHES, labels=("entailment",),
                        **{**g, "max_attempts_factor": 1.0}, device=cfg.device, dtype=cfg.dtype)
    out = tmp / "generate"
    try:
        generate(spec, out)
    except Exception as e:  # an untrained generator writes few valid rows: the stage reports it short
        log.info("calibration sampling: %s", str(e).splitlines()[0])
    meta = json.loads((out / "meta.json").read_text())
    report = json.loads((out / "report.json").read_text())
    rows = sum(v["attempts"] for v in report["labels"].values())
    return rows / meta["wall_s"], (meta.get("mfu") or {}).get("mfu")


def flops_only(cfg: ExperimentConfig, plan, sets, assume: dict[str, float], group_size: int,
               why: str = "") -> Rates:
    """No model to run here: rates from an assumed MFU of an assumed peak and the model FLOPs of a
    model of the config's shape (built on the meta device), at `tokens` per example."""
    from blindspot.errors import ConfigError

    need = [k for k in ("tokens", "mfu", "peak") if k not in assume]
    if need:
        raise ConfigError(f"--estimate: nothing can be measured here ({why}); to project from {cfg.model}'s "
                          f"model FLOPs give {', '.join(need)}, e.g. --assume tokens=80,mfu=0.3,peak=989e12 "
                          "(mean tokens per example, model FLOPs utilisation, device peak FLOP/s)")
    cls, gen = _meta_shapes(cfg)
    rate = assume["mfu"] * assume["peak"]
    t, gt = assume["tokens"], assume.get("gen_tokens", assume["tokens"])
    rates = Rates(measured=False, load_s=assume.get("load_s", 60.0))
    per_train = cls.training([int(t)])
    for kind in ("start", "augment", "group"):
        rates.per_kind[kind] = rate / per_train
        rates.mfu[kind] = assume["mfu"]
    rates.per_kind["generator"] = rate / gen.training([int(gt)])
    rates.per_kind["evaluate"] = rate / cls.inference([int(t)])
    rates.per_kind["generate"] = rate / gen.inference([int(gt)])
    rates.mfu |= {k: assume["mfu"] for k in ("generator", "evaluate", "generate")}
    rates.notes += [f"NO RATE MEASURED: every rate is {assume['mfu']:.0%} MFU of {assume['peak']:.3g} FLOP/s over the "
                    f"model FLOPs of {cfg.model}'s shape (blindspot.mfu: training {per_train:.3g} FLOPs per "
                    f"{t:.0f}-token example, P = {cls.params:,}, P_trainable = {cls.trainable_params:,})",
                    f"model load per stage assumed {rates.load_s:.0f} s (--assume load_s=S)",
                    "grouped augmentation projected at the same MFU as alone (what grouping is for: "
                    "batch 2 alone leaves a GPU mostly idle; measure with the GPU check)"]
    return rates


def _meta_shapes(cfg: ExperimentConfig):
    """FlopShapes of the classifier and the generator of the config's model, built without memory."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from blindspot.training.loop import add_lora
    from blindspot.mfu import flop_shape
    config = model_config(cfg.model)
    with torch.device("meta"):
        cls = add_lora(AutoModelForSequenceClassification.from_config(config), cfg.classifier.lora, "classification")
        gen = add_lora(AutoModelForCausalLM.from_config(config), cfg.generator.lora, "causal-lm",
                       tuple(cfg.generator.modules_to_save))
    return flop_shape(cls), flop_shape(gen)


# Shapes of models that are not here (no weights needed to count FLOPs): hub id -> LlamaConfig fields
KNOWN_SHAPES = {"meta-llama/Llama-2-7b-hf": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                                             "num_key_value_heads": 32, "intermediate_size": 11008,
                                             "vocab_size": 32000}}


def model_config(name: str):
    """The transformers config of a model: a known shape, else a local checkpoint's config.json."""
    from transformers import AutoConfig, LlamaConfig

    from blindspot.errors import ConfigError

    if name in KNOWN_SHAPES:
        return LlamaConfig(**KNOWN_SHAPES[name], num_labels=3, pad_token_id=0)
    try:
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        raise ConfigError(f"--estimate: the shape of {name} is not known here (no local config.json; known: "
                          f"{', '.join(KNOWN_SHAPES)})") from None
    config.num_labels = 3
    return config
