"""Stage `base`: build the model that is made from the data (tiny-llama) once, and pretrain all its weights.

A random tiny Llama cannot learn the generator's template through LoRA alone (its frozen output
layer caps the logits), so, like a real base model, it first learns the data's language: a few
epochs of causal-LM training on label-first pool examples. Which models need this stage is
`blindspot.models.BUILT_FROM_DATA`; the planner asks it (grid/plan.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import Field

from blindspot.stages.common import Inputs, Runtime, StageModel, load_prepared


class Spec(StageModel):
    """A tiny-llama built from the pool: its tokenizer's vocabulary and its pretraining."""

    model: str = Field("tiny-llama", description="The built-in model built here.")
    vocab_size: int = Field(8000, ge=16, description="Tokenizer vocabulary trained on the pool.")
    seed: int = Field(0, description="Seed of the weights, the sample and the batch order.")
    pretrain_examples: int = Field(400, ge=1, description="Pool examples of causal-LM pretraining.")
    epochs: int = Field(3, ge=1, description="Pretraining epochs.")
    max_length: int = Field(160, ge=16, description="Longest pretraining text in tokens.")
    shape: dict[str, int] = Field(default_factory=lambda: _tiny_shape(),
                                  description="hidden_size, num_layers, num_heads, intermediate_size "
                                  "(models.TINY_LLAMA_SHAPE: heads of 32, the smallest vLLM's CPU attention serves).")


def _tiny_shape() -> dict[str, int]:
    from blindspot.models.resolve import TINY_LLAMA_SHAPE

    return dict(TINY_LLAMA_SHAPE)


def spec_for(model: str) -> Spec | None:
    """The base stage `model` needs: one for a built-in made from the data (models.BUILT_FROM_DATA), else None."""
    from blindspot.models.resolve import BUILT_FROM_DATA

    return Spec(model=model) if model in BUILT_FROM_DATA else None


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> None:
    """Build the tokenizer and model under out/model and pretrain it on the runtime's device."""
    import torch
    from transformers import AutoModelForCausalLM

    from blindspot.data.cleaning import sample_examples
    from blindspot.training.generator import GeneratorSpec, generator_batches
    from blindspot.training.loop import OptimSpec, fit
    from blindspot.models.load import load_tokenizer
    from blindspot.models.resolve import build_tiny_llama
    from blindspot.templates import CLASSIFIER_TEMPLATES

    pool = load_prepared(inputs["prepare"], "pool")
    examples = sample_examples(pool, min(spec.pretrain_examples, len(pool)), spec.seed)
    pre = GeneratorSpec(model="tiny-llama", max_length=spec.max_length, seed=spec.seed,
                        optim=OptimSpec(batch_size=16, lr=1e-2, epochs=spec.epochs, warmup_ratio=0.05,
                                        max_grad_norm=1.0))
    texts = [pre.template().full_text(e.label, e.premise, e.hypothesis) for e in pool.examples]
    if (out / "model").exists():  # built by a run killed before this stage was done (maybe mid-pretraining)
        shutil.rmtree(out / "model")
    path = build_tiny_llama(out / "model", texts + list(CLASSIFIER_TEMPLATES.values()),
                            vocab_size=spec.vocab_size, seed=spec.seed, **spec.shape)
    torch.manual_seed(spec.seed)
    device = torch.device(runtime.device)
    model = AutoModelForCausalLM.from_pretrained(path).to(device)
    fit(model, generator_batches(load_tokenizer(path), pre, examples), pre.optim, device, desc="pretrain tiny-llama")
    model.save_pretrained(path)
