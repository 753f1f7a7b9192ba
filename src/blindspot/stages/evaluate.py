"""Stage `evaluate`: score a classifier on every evaluation set (optionally a seeded stratified subsample)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from blindspot.stages.common import Facts, Inputs, Runtime, StageModel, load_prepared


class Spec(StageModel):
    sets: list[str] = Field(description="Evaluation sets of the prepare stage, by name.")
    per_label: int | None = Field(None, ge=1, description="k per label of 3-way sets (None = all).")
    per_subcase: int | None = Field(None, ge=1, description="k per subcase of HANS-like sets (None = all).")
    seed: int = Field(0, description="Seed of the subsamples.")
    batch_size: int = Field(32, ge=1, description="Examples per forward pass.")
    max_length: int = Field(512, ge=8, description="Longest input in tokens.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N (resolved where the stage runs).")
    dtype: str = Field("auto", description="auto, float32, bfloat16, float16 (resolved where the stage runs).")
    overlap_rule: Literal["paper", "words"] = Field("paper", description="Tokens of the lexical-overlap slices.")


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> Facts:
    """Evaluate the `classifier` input on every set (metrics.json, predictions/); its facts for meta.json."""
    from blindspot.evaluate import evaluate_into

    sets = {name: load_prepared(inputs["prepare"], name) for name in spec.sets}
    return evaluate_into(inputs["classifier"], sets, out, batch_size=spec.batch_size, per_subcase=spec.per_subcase,
                         per_label=spec.per_label, seed=spec.seed, device=runtime.device, max_length=spec.max_length,
                         overlap_rule=spec.overlap_rule, dtype=runtime.dtype)
