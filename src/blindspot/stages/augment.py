"""Stage `augment`: continue a starting point on m label-balanced examples of one source."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from blindspot.errors import ConfigError
from blindspot.stages.common import Facts, Inputs, Runtime, source_examples
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


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> Facts:
    """Sample m balanced examples from the `data` input (minus the start's, if asked) and continue
    `start`; its facts for meta.json."""
    from blindspot.training.classifier import train_classifier_into

    return train_classifier_into(*job(spec, inputs, out, runtime), out, runtime.cache_dir)


def run_group(specs: list[Spec], inputs: list[Inputs], outs: list[Path], runtime: Runtime) -> list[Facts | str]:
    """Several augment stages that continue one start, trained together (blindspot.training.group_runs): each
    one's job, then one base with K adapters. Returns, per member, its facts for meta.json (it ran)
    or its error (a str: its sample failed, it is left out). A BlindspotError of the joint training
    fails them all."""
    from blindspot.errors import BlindspotError
    from blindspot.training.group_runs import train_together_into

    results: list[Facts | str] = [""] * len(specs)
    jobs = []
    for k, (spec, inp, out) in enumerate(zip(specs, inputs, outs)):
        try:
            jobs.append((k, *job(spec, inp, out, runtime)))
        except BlindspotError as e:
            results[k] = str(e)
    if jobs:
        facts = train_together_into([j[1] for j in jobs], [j[2] for j in jobs], [outs[j[0]] for j in jobs],
                                    runtime.cache_dir)
        for j, f in zip(jobs, facts):
            results[j[0]] = f
    return results
