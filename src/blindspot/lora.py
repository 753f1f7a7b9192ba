"""LoRA adapters on a base LLM (peft), with the paper's settings as defaults.

    python -c "from blindspot.lora import LoraSpec; print(LoraSpec().model_dump())"

Classification: LoRA on the attention and MLP projections, and the `score` head fully trained
(peft `modules_to_save`, so the head is saved inside the adapter file). Causal LM (the
generator): LoRA only. A 4-bit base is first prepared with peft's
`prepare_model_for_kbit_training` (QLoRA).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

PAPER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CLASSIFIER_HEAD = "score"  # the name of the head in *ForSequenceClassification models


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


def add_lora(model, lora: LoraSpec, task: Literal["classification", "causal-lm"]):
    """Wrap `model` in a peft LoRA model; only adapters (and the classifier head) are trainable."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=lora.gradient_checkpointing)
    classification = task == "classification"
    config = LoraConfig(task_type=TaskType.SEQ_CLS if classification else TaskType.CAUSAL_LM,
                        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.targets),
                        modules_to_save=[CLASSIFIER_HEAD] if classification else None)
    model = get_peft_model(model, config)
    upcast_trainable(model)
    log_trainable(model)
    return model


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
