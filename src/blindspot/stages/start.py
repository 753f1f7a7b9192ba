"""Stage `start`: train a starting point on n pool examples sampled with the condition's seed (n = 0: untrained)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from blindspot.training.loop import LoraSpec, OptimSpec
from blindspot.stages.common import Inputs, Runtime, StageModel, base_model, load_prepared
from blindspot.storage import atomic_write_json


class ClassifierTraining(StageModel):
    """How classifiers (starting points and augmented models) are trained (config: `classifier`)."""

    template: str = Field("paper", description="'paper', 'short' or a format string with {premise} and {hypothesis}.")
    max_length: int = Field(512, ge=8, description="Longest input in tokens.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings of the starting points.")
    optim: OptimSpec = Field(default_factory=OptimSpec, description="Optimiser settings (paper: lr 2e-5, batch 2).")


class ModelChoice(StageModel):
    """The base model and how it is loaded (config: `model`, `device`, `dtype`, `quantize`)."""

    model: str = Field(description="smollm2-135m, tiny-llama, a hub id or a local checkpoint dir.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N (resolved where the stage runs).")
    dtype: str = Field("auto", description="auto, float32, bfloat16, float16 (resolved where the stage runs).")
    quantize: Literal["none", "4bit"] = Field("none", description="none, or 4bit NF4 (bitsandbytes).")


class Spec(ModelChoice):
    n: int | Literal["all"] = Field(description="Pool examples trained on (0 = untrained, 'all' = the pool).")
    seed: int = Field(description="Seed of the sample, the head and LoRA init, dropout and batch order.")
    classifier: ClassifierTraining
    sampling: Literal["shuffle", "pandas"] = Field("shuffle", description="How the n examples are drawn.")


def classifier_spec(spec: ModelChoice, training: ClassifierTraining, seed: int, inputs: Inputs, runtime: Runtime,
                    init_from: Path | None = None):
    """The library's ClassifierSpec (blindspot.training.classifier) for this stage, on the runtime's device and dtype."""
    from blindspot.training.classifier import ClassifierSpec

    return ClassifierSpec(model=base_model(spec.model, inputs), init_from=str(init_from) if init_from else None,
                          template=training.template, lora=training.lora, optim=training.optim,
                          max_length=training.max_length, seed=seed, device=runtime.device, dtype=runtime.dtype,
                          quantize=spec.quantize)


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> None:
    """Train a starting point on n pool examples sampled with the condition's seed."""
    from blindspot.data.cleaning import sample_examples
    from blindspot.training.classifier import train_classifier

    pool = load_prepared(inputs["prepare"], "pool")
    n = len(pool) if spec.n == "all" else spec.n
    examples = sample_examples(pool, n, spec.seed, method=spec.sampling)
    atomic_write_json(out / "train_ids.json", [e.id for e in examples])
    train_classifier(classifier_spec(spec, spec.classifier, spec.seed, inputs, runtime), examples, out,
                     runtime.cache_dir, write_done=False)
