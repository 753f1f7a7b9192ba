"""Stage `prepare`: load and clean the general task, hold out validation, write the pool and every evaluation set."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from blindspot.data.example import save_examples
from blindspot.data.sources import DataSource
from blindspot.stages.common import Facts, Inputs, Runtime, StageModel
from blindspot.storage import atomic_write_json

log = logging.getLogger(__name__)


class Spec(StageModel):
    """What the prepare stage reads and how it splits it (config: `data`)."""

    train: DataSource = Field(description="General-task training data.")
    eval: dict[str, DataSource] = Field(description="Evaluation sets by name.")
    clean: bool = Field(description="The paper's cleaning: drop '-' labels and every duplicated pair.")
    validation_per_label: int = Field(ge=0, description="Label-balanced validation examples held out per label.")
    split_seed: int = Field(description="Seed of the validation hold-out.")
    validation_mode: Literal["sample", "first"] = Field(description="Validation rows: seeded sample or first rows.")
    content: dict = Field(description="Fingerprints of the sources' content (file sha256, hub id + split): a changed "
                          "file changes the hash, a moved one does not.")


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> Facts:
    """Load + clean the training data, hold out validation, write pool and full evaluation sets; the
    counts, for meta.json."""
    from blindspot.data.cleaning import clean_mnli, split_validation
    from blindspot.data.sources import load_source

    t0 = time.time()
    train = load_source(spec.train)
    report: dict = {"train_loaded": len(train)}
    if spec.clean:
        train, report["cleaning"] = clean_mnli(train)
    validation, pool = split_validation(train, spec.validation_per_label, spec.split_seed, spec.validation_mode)
    save_examples(out / "pool.jsonl", pool.examples)
    save_examples(out / "validation.jsonl", validation.examples)
    sets = {"pool": {"labels": list(pool.labels), "format": "mnli", "n": len(pool), "source": train.source}}
    for name, source in spec.eval.items():
        s = load_source(source)
        save_examples(out / "eval" / f"{name}.jsonl", s.examples)
        fmt = s.meta.get("format") if isinstance(s.meta, dict) else None
        sets[name] = {"labels": list(s.labels), "format": fmt, "n": len(s), "source": s.source}
    report |= {"pool": len(pool), "validation": len(validation), "sets": sets}
    atomic_write_json(out / "sets.json", sets)
    atomic_write_json(out / "report.json", report)
    log.info("prepare: pool %d, validation %d, evaluation sets %s", len(pool), len(validation),
             {k: v["n"] for k, v in sets.items() if k != "pool"})
    return {"wall_s": round(time.time() - t0, 3), "pool": len(pool), "validation": len(validation)}

