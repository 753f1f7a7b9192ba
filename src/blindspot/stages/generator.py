"""Stage `generator`: train the generator (the base LLM as a causal LM + LoRA) on pool examples written label-first.

Round 1 (no `round` in the spec) is the paper's generator: a seeded sample of the pool. A later
round of repeated generations (config `generations`, blindspot.rounds) trains a fresh LoRA on the
same base model on what earlier rounds wrote, and records its training ids in train_ids.json:

    replace      round t's contribution
    accumulate   round 1's real training sample + the contributions of rounds 1 .. t-1

A round's contribution is `train_size` examples: round(real_fraction x train_size) real pool
pairs (a seeded sample, never repeating an id already in the set) and the rest that round's
synthetic data (its `synthetic-rS` input), the first examples of each label in file order,
label balanced (the generate stage writes them in sampling order, so they are a random sample
of the generator's output, and nested: a larger train_size keeps the smaller one's examples).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from blindspot.training.loop import LoraSpec, OptimSpec
from blindspot.stages.common import Inputs, Runtime, StageModel, base_model, load_prepared, source_examples
from blindspot.stages.start import ModelChoice
from blindspot.storage import atomic_write_json


class GeneratorTraining(StageModel):
    """How the generator is trained (config: `generator`)."""

    train_size: int | None = Field(None, ge=1, description="Pool examples it is trained on (None = the whole pool).")
    max_length: int = Field(256, ge=16, description="Longest training text in tokens.")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings.")
    modules_to_save: list[str] = Field(default_factory=list, description="Modules trained in full beside LoRA "
                                       "(paper: [embed_tokens, lm_head]); [] = LoRA only.")
    optim: OptimSpec = Field(default_factory=lambda: OptimSpec(batch_size=6), description="Optimiser (paper: batch 6).")
    seed: int = Field(0, description="Seed of the training sample and of training; shared by every condition seed.")


class GenerationRound(StageModel):
    """What a generator of round >= 2 is trained on (config: `generations`)."""

    round: int = Field(ge=2, description="The round this generator writes the data of.")
    mode: Literal["replace", "accumulate"] = Field(description="replace: the previous round's contribution; "
                                                   "accumulate: round 1's real sample + every earlier contribution.")
    train_size: int = Field(ge=1, description="Examples each round contributes to the next one's training set.")
    real_fraction: float = Field(0.0, ge=0, lt=1, description="Share of a contribution that is real pool pairs.")


class Spec(ModelChoice):
    OMIT_IF_NONE = ("round",)

    generator: GeneratorTraining
    round: GenerationRound | None = Field(None, description="None: round 1 (the paper's generator, on the pool).")


def real_sample(pool, g: GeneratorTraining):
    """Round 1's training examples: a seeded sample of train_size pool examples (all of it if None)."""
    from blindspot.data.cleaning import sample_examples

    n = len(pool) if g.train_size is None else min(g.train_size, len(pool))
    return sample_examples(pool, n, g.seed)


def first_balanced(examples, n: int, labels: tuple[str, ...]):
    """n examples split evenly over labels (the first n % k labels one more), each label's first in order."""
    from blindspot.errors import DataError

    out = []
    for i, label in enumerate(labels):
        want = n // len(labels) + (1 if i < n % len(labels) else 0)
        have = [e for e in examples if e.label == label]
        if len(have) < want:
            raise DataError(f"a round's contribution needs {want} synthetic examples labelled {label!r}, "
                            f"its generate stage has {len(have)}")
        out += have[:want]
    return out


def round_examples(spec: Spec, inputs: Inputs) -> tuple[list, dict]:
    """(training examples, where they came from) of a round >= 2 generator."""
    from blindspot.data.cleaning import sample_examples

    r, g = spec.round, spec.generator
    pool = load_prepared(inputs["prepare"], "pool")
    n_real = round(r.real_fraction * r.train_size)
    earlier = range(1, r.round) if r.mode == "accumulate" else [r.round - 1]
    examples, parts = [], {}
    if r.mode == "accumulate":
        examples = real_sample(pool, g)
        parts["real (round 1's sample)"] = len(examples)
    for s in earlier:
        taken = {e.id for e in examples}
        real = sample_examples(pool, n_real, g.seed + s, exclude_ids=taken) if n_real else []
        synthetic = first_balanced(source_examples(inputs[f"synthetic-r{s}"]), r.train_size - n_real, pool.labels)
        examples += real + synthetic
        parts[f"round {s}: real"], parts[f"round {s}: synthetic"] = len(real), len(synthetic)
    return examples, parts


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> None:
    """Train the generator on (a seeded sample of) the pool, or, in a later round, on earlier rounds' data."""
    from blindspot.training.generator import GeneratorSpec, train_generator

    g = spec.generator
    if spec.round is None:
        examples = real_sample(load_prepared(inputs["prepare"], "pool"), g)
    else:
        examples, parts = round_examples(spec, inputs)
        atomic_write_json(out / "train_ids.json", [e.id for e in examples])
        atomic_write_json(out / "train_sources.json", parts)
    gspec = GeneratorSpec(model=base_model(spec.model, inputs), lora=g.lora, optim=g.optim, max_length=g.max_length,
                          modules_to_save=tuple(g.modules_to_save), seed=g.seed, device=runtime.device,
                          dtype=runtime.dtype, quantize=spec.quantize)
    train_generator(gspec, examples, out, runtime.cache_dir, write_done=False)
