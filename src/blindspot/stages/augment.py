"""Stage `augment`: continue a starting point on m label-balanced examples of one source."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from blindspot.errors import ConfigError
from blindspot.stages.common import Inputs, Runtime, source_examples
from blindspot.stages.start import ClassifierTraining, ModelChoice, classifier_spec
from blindspot.storage import atomic_write_json


class Spec(ModelChoice):
    source: str = Field(description="original, synthetic, a filter name, or original+FILTER (config: augment.sources).")
    m: int = Field(ge=1, description="Examples added, label balanced (m / len(labels) each).")
    seed: int = Field(description="Seed of the sample and of training.")
    labels: list[str] = Field(description="Labels the sample is balanced over.")
    exclude_seen: bool = Field(False, description="Original data: never re-sample what the starting point saw.")
    classifier: ClassifierTraining


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> None:
    """Sample m balanced examples from the `data` input (minus the start's, if asked) and continue `start`."""
    from blindspot.data.cleaning import sample_balanced
    from blindspot.train import train_classifier

    exclude: list[str] = []
    if spec.exclude_seen and spec.source == "original":
        exclude = json.loads((inputs["start"] / "train_ids.json").read_text())
    candidates = source_examples(inputs["data"])
    try:
        examples = sample_balanced(candidates, spec.m, spec.seed, spec.labels, exclude)
    except ConfigError as e:
        raise ConfigError(f"augment {spec.source} m={spec.m}: {e} in {inputs['data']} "
                          "(raise generation.per_label, or lower augment.sizes)") from None
    atomic_write_json(out / "train_ids.json", [e.id for e in examples])
    train_classifier(classifier_spec(spec, spec.classifier, spec.seed, inputs, runtime, init_from=inputs["start"]),
                     examples, out, runtime.cache_dir, write_done=False)
