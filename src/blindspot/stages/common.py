"""What every stage shares: the Runtime it runs with, its inputs, and reading prepare's sets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from blindspot.data.example import NLIExample, NLISet, load_examples

Inputs = dict[str, Path]  # input name -> that stage's directory
FROZEN = ConfigDict(frozen=True, extra="forbid")


class StageModel(BaseModel):
    """Base of the stage specs: frozen, no unknown fields, JSON round trip."""

    model_config = FROZEN
    # fields left out of the JSON while None (so that adding one keeps existing stages' hashes)
    OMIT_IF_NONE: ClassVar[tuple[str, ...]] = ()


def spec_json(spec: StageModel) -> dict:
    """The spec as the JSON a stage directory's hash covers (and stage.json records)."""
    out = spec.model_dump(mode="json")
    for name in spec.OMIT_IF_NONE:
        if out.get(name) is None:
            out.pop(name, None)
    return out


@dataclass(frozen=True)
class Runtime:
    """How a stage runs, resolved by blindspot.grid.store on the machine that runs it, recorded in
    timing.json, and not part of its hash (none of it changes what the stage computes)."""

    device: str = "cpu"  # resolved: cpu, cuda, cuda:N (never auto)
    dtype: str = "float32"  # resolved: float32, bfloat16, float16
    cache_dir: str | None = None  # converted base models (blindspot.models.cache_root's default if None)
    threads: int = 1  # torch CPU threads


def load_prepared(prepare_dir: Path, name: str) -> NLISet:
    """A set written by the prepare stage ('pool' or an evaluation set name), with its label space."""
    info = json.loads((prepare_dir / "sets.json").read_text())[name]
    path = prepare_dir / ("pool.jsonl" if name == "pool" else f"eval/{name}.jsonl")
    meta = {"format": info["format"]} if info.get("format") else {}
    return NLISet(name, tuple(info["labels"]), load_examples(path), info.get("source", ""), meta)


def source_examples(data: Path) -> list[NLIExample]:
    """The candidate examples a stage directory offers: a filter's kept.jsonl, synthetic.jsonl or the pool."""
    for name in ("kept.jsonl", "synthetic.jsonl", "pool.jsonl"):
        if (data / name).is_file():
            return load_examples(data / name)
    raise FileNotFoundError(f"{data}: no kept.jsonl, synthetic.jsonl or pool.jsonl")


def base_model(model: str, inputs: Inputs) -> str:
    """The model to start from: a built base stage's checkpoint, else the configured name."""
    return str(inputs["base"] / "model") if "base" in inputs else model
