"""Stage `filter`: keep the synthetic (or pool) pairs on which a heuristic always (or never) works."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field

from blindspot.stages.common import Facts, Inputs, Runtime, StageModel


class Spec(StageModel):
    OMIT_IF_NONE = ("input",)

    filter: str = Field(description="A filter of blindspot.filters, e.g. biased-lexical-overlap.")
    input: Literal["pool"] | None = Field(None, description="pool: filter the prepare stage's pool (a source "
                                          "'original+FILTER'); None: the generate stage's synthetic data.")
    overlap_rule: Literal["paper", "words"] = Field("paper", description="Tokens the heuristics compare.")


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> Facts:
    """Apply the filter to the `data` input (kept.jsonl, dropped.jsonl, report.json); its wall time and
    rate, for meta.json."""
    from blindspot.filters import run_filter

    name = "pool.jsonl" if spec.input == "pool" else "synthetic.jsonl"
    run_filter(str(inputs["data"] / name), spec.filter, out, keep_dropped=True, overlap_rule=spec.overlap_rule,
               write_done=False)
    measured = json.loads((out / "report.json").read_text())["meta"]
    return {k: measured[k] for k in ("wall_s", "examples_per_s")}
