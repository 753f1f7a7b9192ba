"""Stage `audit`: heuristic features, lengths and diversity of the pool against the synthetic and filtered sets."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from blindspot.stages.common import Facts, Inputs, Runtime, StageModel, load_prepared, source_examples
from blindspot.storage import atomic_write_json, atomic_write_text


class Spec(StageModel):
    seed: int = Field(0, description="Seed of the audit's samples.")
    overlap_rule: Literal["paper", "words"] = Field("paper", description="Tokens the heuristics compare.")


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> Facts:
    """Audit the pool (`prepare`) against every other input (audit.json, audit.md); the sets audited,
    for meta.json."""
    from blindspot.audit import audit_markdown, audit_sets

    sets = {"mnli-pool": load_prepared(inputs["prepare"], "pool")}
    for key, path in inputs.items():
        if key != "prepare":
            sets[key] = source_examples(path)
    audit = audit_sets(sets, seed=spec.seed, overlap_rule=spec.overlap_rule)
    atomic_write_json(out / "audit.json", audit)
    atomic_write_text(out / "audit.md", audit_markdown(audit))
    return {"sets": {name: len(s) for name, s in sets.items()}}
