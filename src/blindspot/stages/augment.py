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


def job(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime):
    """(ClassifierSpec, examples) of the stage: m balanced examples from the `data` input (minus the
    start's, if asked), to continue `start` on; writes train_ids.json."""
    from blindspot.data.cleaning import sample_balanced

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
    return classifier_spec(spec, spec.classifier, spec.seed, inputs, runtime, init_from=inputs["start"]), examples


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> None:
    """Sample m balanced examples from the `data` input (minus the start's, if asked) and continue `start`."""
    from blindspot.training.classifier import train_classifier

    train_classifier(*job(spec, inputs, out, runtime), out, runtime.cache_dir, write_done=False)


def run_group(specs: list[Spec], inputs: list[Inputs], outs: list[Path], runtime: Runtime) -> list[str | None]:
    """Several augment stages that continue one start, trained together (blindspot.training.group_runs): each
    one's job, then one base with K adapters. Returns each member's error (None: it ran); a member
    whose sample fails is left out. A BlindspotError of the joint training fails them all."""
    from blindspot.errors import BlindspotError
    from blindspot.training.group_runs import train_classifiers_together

    errors: list[str | None] = [None] * len(specs)
    jobs = []
    for k, (spec, inp, out) in enumerate(zip(specs, inputs, outs)):
        try:
            jobs.append((k, *job(spec, inp, out, runtime)))
        except BlindspotError as e:
            errors[k] = str(e)
    if jobs:
        train_classifiers_together([j[1] for j in jobs], [j[2] for j in jobs], [outs[j[0]] for j in jobs],
                                   runtime.cache_dir, write_done=False)
    return errors
