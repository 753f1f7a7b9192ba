"""Stage `generator`: train the generator (the base LLM as a causal LM + LoRA) on pool examples written label-first."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from blindspot.training.loop import LoraSpec, OptimSpec
from blindspot.stages.common import Inputs, Runtime, StageModel, base_model, load_prepared
from blindspot.stages.start import ModelChoice


class GeneratorTraining(StageModel):
    """How the generator is trained (config: `generator`)."""

    train_size: int | None = Field(None, ge=1, description="Pool examples it is trained on (None = the whole pool).")
    max_length: int = Field(256, ge=16, description="Longest training text in tokens.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings.")
    modules_to_save: list[str] = Field(default_factory=list, description="Modules trained in full beside LoRA "
                                       "(paper: [embed_tokens, lm_head]); [] = LoRA only.")
    optim: OptimSpec = Field(default_factory=lambda: OptimSpec(batch_size=6), description="Optimiser (paper: batch 6).")
    seed: int = Field(0, description="Seed of the training sample and of training; shared by every condition seed.")


class Spec(ModelChoice):
    generator: GeneratorTraining


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> None:
    """Train the generator on (a seeded sample of) the pool."""
    from blindspot.data.cleaning import sample_examples
    from blindspot.training.generator import GeneratorSpec, train_generator

    pool = load_prepared(inputs["prepare"], "pool")
    g = spec.generator
    n = len(pool) if g.train_size is None else min(g.train_size, len(pool))
    examples = sample_examples(pool, n, g.seed)
    gspec = GeneratorSpec(model=base_model(spec.model, inputs), lora=g.lora, optim=g.optim, max_length=g.max_length,
                          modules_to_save=tuple(g.modules_to_save), seed=g.seed, device=runtime.device,
                          dtype=runtime.dtype, quantize=spec.quantize)
    train_generator(gspec, examples, out, runtime.cache_dir, write_done=False)
