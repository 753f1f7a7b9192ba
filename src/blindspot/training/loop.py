"""LoRA fine-tuning: adapters on a base LLM (peft) and the plain loop that trains them.

    python -c "from blindspot.training.loop import LoraSpec; print(LoraSpec().model_dump())"

Classification: LoRA on the attention and MLP projections, and the `score` head fully trained
(peft `modules_to_save`, so the head is saved inside the adapter file). Causal LM (the
generator): LoRA, plus any fully trained modules the caller names (the paper trains
`embed_tokens` and `lm_head`). A 4-bit base is first prepared with peft's
`prepare_model_for_kbit_training` (QLoRA). `fit` is the optimisation loop shared by the
classifier (blindspot.training.classifier) and the generator: no Trainer, no callbacks. Its optimiser is a
named choice: `adamw_torch` (torch.optim.AdamW) or `paged_adamw_32bit` (bitsandbytes'
PagedAdamW32bit, the paper's; CUDA only, so on CPU it is torch AdamW, said in the log).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from blindspot.logsetup import SCREEN

log = logging.getLogger(__name__)

PAPER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CLASSIFIER_HEAD = "score"  # the name of the head in *ForSequenceClassification models


class RunSettings(BaseModel):
    """Where and in what precision a training runs: the fields the classifier's and the generator's
    specs share (blindspot.training.classifier.ClassifierSpec, .generator.GeneratorSpec)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str = Field("auto", description="auto (CUDA if present, else CPU), cpu, cuda, cuda:N.")
    dtype: str = Field("auto", description="auto (bf16 on CUDA and on CPUs with native bf16, else fp32), float32, "
                       "bfloat16, float16.")
    quantize: str = Field("none", pattern="^(none|4bit)$", description="none, or 4bit (NF4 base via bitsandbytes: "
                          "CUDA, or its CPU backend).")


class LoraSpec(BaseModel):
    """LoRA settings (defaults: Zhang & Pavlick 2025, appendix)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: int = Field(64, ge=1, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    targets: tuple[str, ...] = Field(PAPER_TARGETS, min_length=1,
                                     description="Names of the linear modules that get LoRA adapters.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in backward; "
                                         "used only with a 4-bit base (QLoRA).")


def add_lora(model, lora: LoraSpec, task: Literal["classification", "causal-lm"],
             modules_to_save: Sequence[str] = ()):
    """Wrap `model` in a peft LoRA model; only adapters, the classifier head and `modules_to_save`
    (fully trained copies, e.g. embed_tokens and lm_head) are trainable."""
    from peft import LoraConfig, TaskType, get_peft_model

    from blindspot.errors import ConfigError

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    unknown = [m for m in modules_to_save if m not in names]
    if unknown:
        raise ConfigError(f"modules_to_save: {unknown} name no module of {type(model).__name__} "
                          f"(e.g. embed_tokens, lm_head for Llama-style models)")
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_4bit_for_training(model, lora.gradient_checkpointing)
    classification = task == "classification"
    full = ([CLASSIFIER_HEAD] if classification else []) + [m for m in modules_to_save if m != CLASSIFIER_HEAD]
    # a model with tied input/output embeddings (e.g. SmolLM2) keeps one trained matrix, not two
    tied = {"embed_tokens", "lm_head"} <= set(full) and bool(getattr(model.config, "tie_word_embeddings", False))
    config = LoraConfig(task_type=TaskType.SEQ_CLS if classification else TaskType.CAUSAL_LM,
                        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.targets), modules_to_save=full or None,
                        ensure_weight_tying=tied)
    with peft_internal_deprecations_hidden():
        model = get_peft_model(model, config)
    upcast_trainable(model)
    log_trainable(model)
    return model


def prepare_4bit_for_training(model, gradient_checkpointing: bool):
    """A 4-bit base made ready for QLoRA: peft's prepare_model_for_kbit_training (base frozen, its
    non-4-bit weights in fp32), then activation checkpointing (non-reentrant) when asked for.

    The checkpointing is switched on here rather than by peft: peft (0.21) calls transformers'
    `gradient_checkpointing_enable`, which transformers >= 5.23 deprecates (a FutureWarning per
    model) in favour of `activation_checkpointing_enable`; older releases have only the former."""
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


@contextmanager
def peft_internal_deprecations_hidden() -> Iterator[None]:
    """Hide the deprecation warnings that peft's own code triggers while it wraps a model.

    peft (0.21) reads `model.is_gradient_checkpointing` in PeftModel.__init__, which transformers
    >= 5.23 deprecates in favour of `is_activation_checkpointing`: a FutureWarning per model that
    no call of ours can avoid. Only that message is hidden, and only around peft's constructors.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def upcast_trainable(model) -> None:
    """Keep trainable weights in fp32 (optimiser updates of 2e-5 vanish in bf16)."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def log_trainable(model) -> tuple[int, int]:
    """Log and return (trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("trainable parameters: %.2fM of %.1fM (%.2f%%)", trainable / 1e6, total / 1e6,
             100 * trainable / max(total, 1))
    return trainable, total


# --- the optimisation loop --------------------------------------------------------------------

class OptimSpec(BaseModel):
    """Optimisation hyperparameters of `fit` (defaults: the paper's classifier training)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(1, ge=1, description="Passes over the training data.")
    optimizer: Literal["adamw_torch", "paged_adamw_32bit"] = Field(
        "adamw_torch", description="adamw_torch (torch.optim.AdamW) or paged_adamw_32bit (bitsandbytes' "
        "PagedAdamW32bit, the paper's; CUDA only: on CPU torch AdamW is used and the log says so).")
    lr: float = Field(2e-5, gt=0, description="Peak learning rate (AdamW).")
    warmup_ratio: float = Field(0.3, ge=0, le=1, description="Fraction of optimiser steps of linear warmup "
                                "before the cosine decay.")
    weight_decay: float = Field(0.001, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(0.3, gt=0, description="Gradient clipping threshold (L2 norm).")
    batch_size: int = Field(2, ge=1, description="Examples per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Forward passes per optimiser step.")
    group_by_length: bool = Field(True, description="Batches of similar length (sorted within chunks of 50 "
                                  "batches, batch order shuffled), like HF group_by_length; false = plain shuffle.")
    log_every: int = Field(10, ge=1, description="Optimiser steps per train_log.jsonl row.")
    checkpoint_every: int = Field(500, ge=0, description="Optimiser steps between mid-training checkpoints "
                                  "(weights, optimiser, scheduler, RNG, data position; a killed stage resumes "
                                  "from the last one, see blindspot.training.resume); 0 = none.")


def build_optimizer(params: list, optim: OptimSpec, device: torch.device) -> torch.optim.Optimizer:
    """The optimiser `optim.optimizer` names, for `device` (paged AdamW exists on CUDA only)."""
    if optim.optimizer == "paged_adamw_32bit":
        if device.type == "cuda":
            try:
                import bitsandbytes as bnb
            except ImportError:
                from blindspot.errors import ConfigError

                raise ConfigError("optim.optimizer: 'paged_adamw_32bit' needs bitsandbytes: "
                                  "pip install 'blindspot[cuda]'") from None
            return bnb.optim.PagedAdamW32bit(params, lr=optim.lr, weight_decay=optim.weight_decay)
        log.warning("optim.optimizer paged_adamw_32bit pages optimiser state between GPU and CPU memory, "
                    "which exists on CUDA only: on %s using torch AdamW (the same update rule)", device.type)
    return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)


@dataclass
class FitResult:
    steps: int
    examples: int
    seconds: float
    examples_per_s: float
    log: list[dict]


def fit(model: torch.nn.Module, batches: Sequence[dict] | Callable[[int], Sequence[dict]], optim: OptimSpec,
        device: torch.device, desc: str = "train", checkpoint_dir: Path | None = None) -> FitResult:
    """AdamW + warmup/cosine schedule + clipping + accumulation over batches of `model(**batch).loss`.

    `batches` is a list of dicts of tensors (reused every epoch) or a function epoch -> list.
    Only parameters with requires_grad are optimised. With a bf16 or 4-bit model (on CUDA with
    bf16, or on CPU) the forward pass runs under bf16 autocast (trainable weights stay fp32).
    With `checkpoint_dir`, a checkpoint every `optim.checkpoint_every` steps goes there, and a
    checkpoint found there is resumed from (blindspot.training.resume).
    """
    from transformers import get_cosine_schedule_with_warmup

    from blindspot.progress import progress_bar
    from blindspot.training.resume import Position, latest_checkpoint, load_checkpoint, save_checkpoint

    epoch_batches = batches if callable(batches) else (lambda _epoch: batches)
    first = epoch_batches(0)
    total = math.ceil(len(first) / optim.grad_accum) * optim.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    assert params, "fit: the model has no trainable parameters"
    opt = build_optimizer(params, optim, device)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(optim.warmup_ratio * total), total)
    low_precision = (getattr(model, "is_loaded_in_4bit", False)
                     or any(p.dtype == torch.bfloat16 for p in model.parameters()))
    autocast = low_precision and (device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported()))
    model.train()
    rows: list[dict] = []
    step, seen, window, t0 = 0, 0, [], time.time()
    start_epoch, start_batch = 0, 0
    found = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if found is not None:
        pos = load_checkpoint(found, model, opt, sched)
        step, seen, rows, window, start_epoch, start_batch = pos.step, pos.seen, pos.rows, pos.window, pos.epoch, pos.batch
        log.info("%s: resuming from checkpoint %s: step %d of %d (epoch %d, batch %d, %d examples done)",
                 desc, found, step, total, start_epoch, start_batch, seen, extra=SCREEN)
    resumed_seen = seen
    per_epoch = sum(int(b["input_ids"].shape[0]) for b in first)
    bar = progress_bar(per_epoch * optim.epochs, desc, unit="ex", initial=seen)
    for epoch in range(start_epoch, optim.epochs):
        epoch_list = first if epoch == 0 else epoch_batches(epoch)
        for i, batch in enumerate(epoch_list):
            if epoch == start_epoch and i < start_batch:
                continue  # trained on before the checkpoint
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = model(**batch).loss
            (loss / optim.grad_accum).backward()
            window.append(loss.item())
            seen += batch["input_ids"].shape[0]
            bar.update(int(batch["input_ids"].shape[0]))
            if (i + 1) % optim.grad_accum and i + 1 != len(epoch_list):
                continue  # accumulate; the last (short) group of an epoch still steps
            torch.nn.utils.clip_grad_norm_(params, optim.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            bar.set_postfix_str(f"loss {window[-1]:.4f}")
            if step % optim.log_every == 0 or step == total:
                rows.append({"step": step, "epoch": epoch, "examples": seen, "loss": sum(window) / len(window),
                             "lr": sched.get_last_lr()[0], "elapsed_s": round(time.time() - t0, 3)})
                window = []
            if checkpoint_dir is not None and optim.checkpoint_every and step % optim.checkpoint_every == 0 \
                    and step < total:
                next_epoch, next_batch = (epoch, i + 1) if i + 1 < len(epoch_list) else (epoch + 1, 0)
                save_checkpoint(checkpoint_dir, model, opt, sched,
                                Position(step, next_epoch, next_batch, seen, rows, window))
    bar.close()
    model.eval()
    seconds = time.time() - t0
    rate = (seen - resumed_seen) / seconds if seconds > 0 else 0.0
    log.info("%s: %d steps, %d examples in %.1f s (%.2f examples/s)", desc, step, seen, seconds, rate)
    return FitResult(step, seen, seconds, rate, rows)
