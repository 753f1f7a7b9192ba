"""Stage `generate`: sample per_label valid synthetic examples per label from the generator; leakage checked."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from blindspot.stages.common import Inputs, Runtime, StageModel


class Generation(StageModel):
    """How synthetic examples are sampled from the generator."""

    per_label: int | dict[str, int] = Field(description="Valid synthetic examples sampled per label (before "
                                            "filtering): one number, or label -> number for every label "
                                            "(entailment, neutral, contradiction: each is generated, and "
                                            "augmentation draws m/3 of each); a lexical-overlap filter keeps "
                                            "few entailment pairs, so ask for more of those.")
    batch_size: int = Field(32, ge=1, description="Rows sampled together.")
    temperature: float = Field(1.0, ge=0, description="Softmax temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus mass (1 = off).")
    top_k: int = Field(0, ge=0, description="Top-k (0 = off).")
    max_new_tokens: int = Field(128, ge=8, description="Longest generated example in tokens.")
    max_attempts_factor: float = Field(5.0, ge=1, description="Give up on a label after this many x per_label samples.")
    keep_leaked: bool = Field(False, description="Keep synthetic pairs that also occur in an evaluation set.")
    seed: int = Field(0, description="Sampling seed; shared by every condition seed.")
    engine: Literal["auto", "native", "vllm"] = Field("auto", description="native (our prompt-cached decoder), "
                                                      "vllm, or auto: vllm on CUDA when it is installed, else native.")

    @field_validator("per_label")
    @classmethod
    def _every_label(cls, v: int | dict[str, int]) -> int | dict[str, int]:
        """A count >= 1 for each of MNLI's labels: no unknown label, none left out (it would be missing)."""
        from blindspot.data.example import MNLI_LABELS

        expected = ", ".join(MNLI_LABELS)
        if isinstance(v, int):
            if v < 1:
                raise ValueError(f"must be >= 1, got {v}")
            return v
        unknown = [k for k in v if k not in MNLI_LABELS]
        if unknown:
            raise ValueError(f"unknown label {unknown[0]!r} (expected labels {expected})")
        missing = [k for k in MNLI_LABELS if k not in v]
        if missing:
            raise ValueError(f"no count for {', '.join(missing)}: every label is generated and augmentation "
                             f"draws m/3 of each, so give a count for each of {expected} (or one number for all)")
        bad = {k: n for k, n in v.items() if n < 1}
        if bad:
            raise ValueError(f"counts must be >= 1, got {bad}")
        return v


class Spec(StageModel):
    OMIT_IF_NONE = ("round", "mode")

    generation: Generation
    sets: list[str] = Field(description="Evaluation sets (of the prepare stage) the synthetic pairs are checked against.")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N (resolved where the stage runs).")
    dtype: str = Field("auto", description="auto, float32, bfloat16, float16 (resolved where the stage runs).")
    round: int | None = Field(None, ge=2, description="Round of repeated generations (config `generations`) whose "
                              "generator this samples; None = round 1, the paper's generator.")
    mode: Literal["replace", "accumulate"] | None = Field(None, description="How that round's generator was "
                                                          "trained (blindspot.rounds); None in round 1.")

    def id_prefix(self) -> str:
        """What the record ids start with: '' in round 1, else 'round2-replace-' (unique across rounds)."""
        return f"round{self.round}-{self.mode}-" if self.round is not None else ""


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> None:
    """Sample with the `generator` input until each label has its valid examples (resumes a killed run)."""
    from blindspot.generation.sample import GenerateSpec, generate

    g = spec.generation.model_dump()
    eval_files = tuple(str(inputs["prepare"] / "eval" / f"{name}.jsonl") for name in spec.sets)
    gspec = GenerateSpec(generator=str(inputs["generator"]), n_per_label=g.pop("per_label"),
                         eval_sets=eval_files, device=runtime.device, dtype=runtime.dtype,
                         id_prefix=spec.id_prefix(), **g)
    generate(gspec, out, write_done=False)
