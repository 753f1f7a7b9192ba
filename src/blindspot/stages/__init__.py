"""The grid's stages: one module per stage kind, each a frozen typed `Spec` and `run(spec, inputs, out, runtime)`.

    python -c "from blindspot.stages import STAGES; print({k: m.Spec.model_fields.keys() for k, m in STAGES.items()})"

    prepare    clean the general task, hold out validation, write pool + evaluation sets
    base       build a model that is made from the data (tiny-llama) and pretrain it
    start      train a starting point on n pool examples (n = 0: untrained, fresh head)
    generator  train the generator (causal LM + LoRA) on pool examples written label-first
    generate   sample synthetic examples per label (resumable)
    filter     keep synthetic (or pool) pairs on which a heuristic always (or never) works
    augment    continue a starting point on m label-balanced examples of one source
    evaluate   score a classifier on every evaluation set
    audit      heuristic features, lengths, diversity of pool vs synthetic vs filtered

A stage's parameters are its `Spec` (the planner, grid/plan.py, builds it from the experiment
config; its JSON is what the stage directory's hash covers). `run` reads only the spec, its
input stage directories and the `Runtime` that blindspot.grid.store resolved just before it started
(device, dtype, model cache, CPU threads: how it runs, not what it computes, so not hashed), writes into `out`, and returns; the store writes DONE. So any executor (in
process, or a Ray worker) runs them the same way.
"""

from __future__ import annotations

from types import ModuleType

from blindspot.stages import audit, augment, base, evaluate, filter, generate, generator, prepare, start  # noqa: A004
from blindspot.stages.common import Inputs, Runtime, StageModel, spec_json

STAGES: dict[str, ModuleType] = {
    "prepare": prepare, "base": base, "start": start, "generator": generator, "generate": generate,
    "filter": filter, "augment": augment, "evaluate": evaluate, "audit": audit,
}

__all__ = ["STAGES", "Inputs", "Runtime", "StageModel", "spec_json"]
