"""Train the base LLM (causal LM + LoRA) as a label-first generator of NLI examples; reload it.

    blindspot train-generator --model smollm2-135m \
        --data ../shared/data/mnli-subset/multinli_1.0_train.jsonl.gz --n 2000 --out runs/generator

Each training example is written label first, so that sampling can be conditioned on the label:

    This is an example where the relationship between the premise and the hypothesis is {label}.
    Premise: {premise} Hypothesis: {hypothesis} -- This is the end of the example.

(one line; prefix, body and end marker are configurable, defaults in blindspot.templates). An
example is tokenised as prompt ids (the prefix up to and including the label, with BOS) + body
ids (body, end marker, EOS): sampling prompts with exactly those prompt ids.

Loss: on the whole text by default (`loss_on: all`), as in ordinary causal-LM fine-tuning and
in the paper; the fixed prefix is learnt within a few steps and then costs almost nothing.
`loss_on: after_prefix` masks the prompt, so every gradient goes to the premise, hypothesis and
end marker (the part that is sampled): useful for short runs on a small budget.

A saved generator directory holds the peft adapter (safetensors), the tokenizer,
`generator.json` (spec, labels, template, base identity), `train_log.jsonl`, `meta.json` and,
written last, `DONE`. The optimisation loop is blindspot.training.classifier.fit, shared with the classifier.
"""

from __future__ import annotations

import argparse
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
from pydantic import ConfigDict, Field, ValidationError

from blindspot.data.example import MNLI_LABELS, NLIExample
from blindspot.errors import ConfigError, DataError
from blindspot.training.loop import LoraSpec, RunSettings, add_lora
from blindspot.models.checkpoints import (attach_adapter, base_identity, open_adapter_dir, read_adapter_info,
                                         save_adapter_dir)
from blindspot.models.load import load_base_model, load_tokenizer
from blindspot.models.resolve import detect_device, resolve_model
from blindspot.generation.parsing import GenerationTemplate, check_template
from blindspot.mfu import training_mfu
from blindspot.runmeta import Facts, finish_standalone, now
from blindspot.storage import is_done
from blindspot.templates import END_MARKER, GENERATOR_BODY, GENERATOR_PREFIX
from blindspot.training.classifier import OptimSpec, fit, load_training_examples

log = logging.getLogger(__name__)



class GeneratorSpec(RunSettings):
    """Everything that determines a trained generator, apart from its training examples."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field("smollm2-135m", description="Base model: smollm2-135m, tiny-llama, a local checkpoint "
                       "directory or a hub id.")
    labels: tuple[str, ...] = Field(MNLI_LABELS, min_length=1, description="Labels the generator is trained on.")
    prefix: str = Field(GENERATOR_PREFIX, description="Label-first prefix with {label}; the sampling prompt.")
    body: str = Field(GENERATOR_BODY, description="Body after the prefix, with {premise} and {hypothesis}.")
    end_marker: str = Field(END_MARKER, description="Text that ends every example; sampling stops at it.")
    loss_on: Literal["all", "after_prefix"] = Field("all", description="Tokens that carry loss: the whole "
                                                    "text, or only what follows the prompt.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings (paper: r 64, alpha 16, "
                           "dropout 0.1, all projections).")
    modules_to_save: tuple[str, ...] = Field((), description="Modules trained in full beside LoRA and saved in "
                                             "the adapter (paper: embed_tokens, lm_head); () = LoRA only.")
    optim: OptimSpec = Field(default_factory=lambda: OptimSpec(batch_size=6),
                             description="Optimisation (paper: 1 epoch, lr 2e-5, batch 6, cosine, warmup 0.3).")
    max_length: int = Field(256, ge=16, description="Longest training text in tokens (longer ones are dropped).")
    seed: int = Field(0, description="Seed of the LoRA init, dropout and batch order.")

    def template(self) -> GenerationTemplate:
        """The text layout, checked."""
        t = GenerationTemplate(self.prefix, self.body, self.end_marker)
        problems = check_template(t)
        if problems:
            raise ConfigError(f"generator template: {'; '.join(problems)}")
        return t


@dataclass
class Generator:
    """A loaded generator, ready for sampling."""

    model: torch.nn.Module
    tokenizer: object
    template: GenerationTemplate
    labels: tuple[str, ...]
    name: str  # written into every synthetic record
    info: dict
    path: Path | None
    device: torch.device

    def prompt_ids(self, label: str) -> list[int]:
        """The sampling prompt for one label: exactly the prompt ids it was trained with."""
        return prompt_ids(self.tokenizer, self.template, label)


def prompt_ids(tokenizer, template: GenerationTemplate, label: str) -> list[int]:
    """Token ids of the prefix up to and including the label, with the tokenizer's own special tokens."""
    return list(tokenizer(template.prompt(label), add_special_tokens=True)["input_ids"])


def encode_example(tokenizer, template: GenerationTemplate, e: NLIExample) -> tuple[list[int], list[int]]:
    """(prompt ids, body ids): body + end marker + EOS, without special tokens in between."""
    body = tokenizer(template.body_text(e.premise, e.hypothesis) + template.end_marker,
                     add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return prompt_ids(tokenizer, template, e.label), body + ([eos] if eos is not None else [])


def generator_batches(tokenizer, spec: GeneratorSpec, examples: list[NLIExample]) -> Callable[[int], list[dict]]:
    """Tokenise once; per epoch, a seeded shuffle, length-sorted within chunks of 50 batches."""
    template, bs = spec.template(), spec.optim.batch_size
    encoded = [encode_example(tokenizer, template, e) for e in examples]
    kept = [(p, b) for p, b in encoded if len(p) + len(b) <= spec.max_length]
    if len(kept) < len(encoded):
        log.warning("dropped %d of %d examples longer than max_length %d tokens", len(encoded) - len(kept),
                    len(encoded), spec.max_length)
    if not kept:
        raise DataError(f"no training example fits max_length {spec.max_length} tokens")

    def collate(items: list[tuple[list[int], list[int]]]) -> dict:
        width = max(len(p) + len(b) for p, b in items)
        ids = torch.full((len(items), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), width), -100, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, (p, b) in enumerate(items):
            n = len(p) + len(b)
            ids[row, :n] = torch.tensor(p + b)
            mask[row, :n] = 1
            start = len(p) if spec.loss_on == "after_prefix" else 0
            labels[row, start:n] = ids[row, start:n]  # padding (maybe the EOS id) never carries loss
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def for_epoch(epoch: int) -> list[dict]:
        rng = random.Random(f"{spec.seed}:{epoch}")
        order = list(range(len(kept)))
        rng.shuffle(order)
        groups = []
        for start in range(0, len(order), 50 * bs):
            part = order[start:start + 50 * bs]
            if spec.optim.group_by_length:
                part = sorted(part, key=lambda j: len(kept[j][0]) + len(kept[j][1]))
            groups += [part[k:k + bs] for k in range(0, len(part), bs)]
        rng.shuffle(groups)
        return [collate([kept[j] for j in g]) for g in groups]

    return for_epoch


# --- train / save / load ----------------------------------------------------------------------

def train_generator(spec: GeneratorSpec, train_examples: list[NLIExample], out_dir: str | Path,
                    cache_dir: str | Path | None = None) -> Path:
    """Fine-tune the base model with LoRA on `train_examples` written label first, into the directory
    this call owns: its files, meta.json, DONE. A finished one with this spec is kept."""
    out_dir = Path(out_dir)
    if is_done(out_dir):
        if _read_info(out_dir)["spec"] != spec.model_dump(mode="json"):
            raise ConfigError(f"{out_dir}: already holds a different finished generator (choose another output)")
        log.info("%s is done already; nothing to do", out_dir)
        return out_dir
    started = now()
    finish_standalone(out_dir, train_generator_into(spec, train_examples, out_dir, cache_dir), started)
    return out_dir


def train_generator_into(spec: GeneratorSpec, train_examples: list[NLIExample], out_dir: str | Path,
                         cache_dir: str | Path | None = None) -> Facts:
    """Train the generator and save it into `out_dir` (adapter, tokenizer, generator.json,
    train_log.jsonl); returns its facts for meta.json (device, dtype, wall_s, throughput, MFU). No
    meta.json, no DONE: the directory's owner writes them (the grid's store, or train_generator)."""
    out_dir, examples = Path(out_dir), list(train_examples)
    template = spec.template()
    if not examples:
        raise DataError("train-generator: no training examples")
    bad = next((e for e in examples if e.label not in spec.labels), None)
    if bad is not None:
        raise DataError(f"example {bad.id}: label {bad.label!r} is not one of {', '.join(spec.labels)}")
    t0 = time.time()
    device, dtype = detect_device(spec.device, spec.dtype)
    texts = [template.full_text(e.label, e.premise, e.hypothesis) for e in examples]
    base_path = resolve_model(spec.model, cache_dir, texts=texts)
    torch.manual_seed(spec.seed)  # LoRA init, dropout; after a tiny-llama build, which draws random numbers
    base = base_identity(spec.model, base_path)
    tokenizer = load_tokenizer(base_path)
    model = load_base_model(base_path, "causal-lm", device=device, dtype=dtype, quantize=spec.quantize,
                            pad_token_id=tokenizer.pad_token_id)
    model = add_lora(model, spec.lora, "causal-lm", modules_to_save=spec.modules_to_save)
    batches = generator_batches(tokenizer, spec, examples)
    result = fit(model, batches, spec.optim, device, desc="train-generator",
                     checkpoint_dir=out_dir)
    mfu = training_mfu(model, batches, spec.optim.epochs, result.seconds, device, dtype, cache_dir)
    info = {"spec": spec.model_dump(mode="json"), "labels": list(spec.labels),
            "template": {"prefix": template.prefix, "body": template.body, "end_marker": template.end_marker},
            "base": base, "train": {"examples": len(examples), "steps": result.steps,
                                    "label_counts": {lab: sum(e.label == lab for e in examples) for lab in spec.labels}}}
    save_adapter_dir(model, tokenizer, out_dir, "generator.json", info, result.log)
    return {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "wall_s": time.time() - t0,
            "train_seconds": result.seconds, "train_examples_per_s": result.examples_per_s, "mfu": mfu}


_INFO_KEYS = ("spec", "labels", "template", "base")  # of generator.json, that loading needs


def _read_info(path: Path) -> dict:
    """generator.json, checked for the keys load_generator needs."""
    return read_adapter_info(path, "generator.json", _INFO_KEYS, "generator")


def load_generator(path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                   merge: bool = True) -> Generator:
    """Reload a saved generator in eval mode; `merge` folds LoRA into the weights (faster sampling).

    A generator trained on a 4-bit base samples from the 4-bit base with the adapter unmerged,
    as the reference does (merging into NF4 weights would round the adapter away); `merge` is
    then ignored, and the log says so.
    """
    path = Path(path)
    info, base_path = open_adapter_dir(path, "generator", _INFO_KEYS)
    dev, dt = detect_device(device, dtype)
    tokenizer = load_tokenizer(path)
    quantize = info["spec"].get("quantize", "none")
    base = load_base_model(base_path, "causal-lm", device=dev, dtype=dt, quantize=quantize,
                           pad_token_id=tokenizer.pad_token_id)
    model = attach_adapter(base, path, base_path, trainable=False)
    if quantize == "4bit":
        log.info("generator %s: sampling from the 4-bit NF4 base with the LoRA adapter unmerged (as the "
                 "reference)", path.name)
    elif merge:
        model = model.merge_and_unload()
    t = info["template"]
    template = GenerationTemplate(t["prefix"], t["body"], t["end_marker"])
    return Generator(model.eval(), tokenizer, template, tuple(info["labels"]), path.name, info, path, dev)


# --- command line -----------------------------------------------------------------------------

# CLI option -> path of the GeneratorSpec field it sets
_FIELDS = {"model": ("model",), "labels": ("labels",), "prefix": ("prefix",), "body": ("body",),
           "end_marker": ("end_marker",), "loss_on": ("loss_on",), "max_length": ("max_length",), "seed": ("seed",),
           "device": ("device",), "dtype": ("dtype",), "quantize": ("quantize",), "lr": ("optim", "lr"),
           "modules_to_save": ("modules_to_save",), "optimizer": ("optim", "optimizer"),
           "batch_size": ("optim", "batch_size"), "grad_accum": ("optim", "grad_accum"),
           "epochs": ("optim", "epochs"), "warmup_ratio": ("optim", "warmup_ratio"),
           "lora_r": ("lora", "r"), "lora_alpha": ("lora", "alpha"), "lora_dropout": ("lora", "dropout")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `blindspot train-generator`; unset options keep the GeneratorSpec defaults."""
    a = parser.add_argument
    a("--data", required=True, help="training pool: a file path or hub:ID[:SPLIT] (see blindspot.data.sources)")
    a("--n", type=int, help="number of training examples sampled from --data (default: all)")
    a("--sample-seed", type=int, help="seed of the sample of --n examples (default: --seed)")
    a("--out", required=True, help="output generator directory")
    a("--cache-dir", help="where converted models are cached (default $BLINDSPOT_CACHE or ~/.cache/blindspot)")
    a("--model", help="base model: smollm2-135m (default), tiny-llama, a checkpoint directory or a hub id")
    a("--labels", nargs="+", help="labels to train on (default: entailment neutral contradiction)")
    a("--prefix", help="label-first prefix with {label} (default: the paper's)")
    a("--body", help="body with {premise} and {hypothesis} (default: ' Premise: {premise} Hypothesis: {hypothesis}')")
    a("--end-marker", help="text that ends each example (default: ' -- This is the end of the example.')")
    a("--loss-on", choices=["all", "after_prefix"], help="tokens with loss: whole text (default) or after the prompt")
    for name, kind, what in [("lr", float, "peak learning rate (2e-5)"), ("batch-size", int, "batch size (6)"),
                             ("grad-accum", int, "batches per optimiser step (1)"), ("epochs", int, "epochs (1)"),
                             ("warmup-ratio", float, "warmup fraction before cosine decay (0.3)"),
                             ("max-length", int, "longest training text in tokens (256)"),
                             ("lora-r", int, "LoRA rank (64)"), ("lora-alpha", float, "LoRA alpha (16)"),
                             ("lora-dropout", float, "LoRA dropout (0.1)"),
                             ("seed", int, "seed of LoRA init, dropout and batch order (0)")]:
        a(f"--{name}", type=kind, help=what)
    a("--device", help="auto (default), cpu, cuda, cuda:N")
    a("--dtype", help="auto (default: bf16 on CUDA and on CPUs with native bf16, else fp32), float32, bfloat16, "
      "float16")
    a("--quantize", choices=["none", "4bit"], help="4bit: NF4 base via bitsandbytes (CUDA; CPU through "
      "bitsandbytes' CPU backend, slow); default none")
    a("--modules-to-save", nargs="+", metavar="MODULE", help="modules trained in full beside LoRA "
      "(paper: embed_tokens lm_head); default: none")
    a("--optimizer", choices=["adamw_torch", "paged_adamw_32bit"], help="optimiser (default adamw_torch; "
      "paged_adamw_32bit is the paper's, CUDA only)")


def spec_from_args(args: argparse.Namespace) -> GeneratorSpec:
    """The GeneratorSpec of the given options (defaults for the rest)."""
    raw: dict = {}
    for opt, field_path in _FIELDS.items():
        value = getattr(args, opt, None)
        if value is not None:
            target = raw
            for key in field_path[:-1]:
                target = target.setdefault(key, {})
            target[field_path[-1]] = value
    if "optim" in raw:
        raw["optim"] = {"batch_size": 6, **raw["optim"]}
    try:
        return GeneratorSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"option {'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None


def main(args: argparse.Namespace) -> int:
    """Sample the training examples, train, print the output directory."""
    spec = spec_from_args(args)
    seed = spec.seed if args.sample_seed is None else args.sample_seed
    examples = load_training_examples(args.data, args.n, seed, spec.labels)
    examples = [e for e in examples if e.label in spec.labels]
    print(train_generator(spec, examples, args.out, args.cache_dir))
    return 0
