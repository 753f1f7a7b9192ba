"""Stage `augment`: continue a starting point on m label-balanced examples of one source, or of a mixture
of one source and original data (blindspot.mixture)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from blindspot.errors import ConfigError
from blindspot.stages.common import Facts, Inputs, Runtime, source_examples
from blindspot.stages.start import ClassifierTraining, ModelChoice, classifier_spec
from blindspot.storage import atomic_write_json


class Spec(ModelChoice):
    OMIT_IF_NONE = ("synthetic_fraction", "models_record")

    source: str = Field(description="original, synthetic, a filter name, or original+FILTER (config: augment.sources).")
    m: int = Field(ge=1, description="Examples added, label balanced (m / len(labels) each).")
    seed: int = Field(description="Seed of the sample and of training.")
    labels: list[str] = Field(description="Labels the sample is balanced over.")
    exclude_seen: bool = Field(False, description="Original data: never re-sample what the starting point saw.")
    classifier: ClassifierTraining
    synthetic_fraction: float | None = Field(None, gt=0, lt=1, description="A mixture (blindspot.mixture): this "
                                             "share of the m from `source` (the `data` input), the rest original "
                                             "(the `original` input); None: all from `source`.")
    models_record: dict[str, str] | None = Field(None, description="{classifier, generator} models, for the "
                                                 "record (blindspot.crossmodel; not hashed).")


def job(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime):
    """(ClassifierSpec, examples) of the stage: m balanced examples from the `data` input (minus the
    start's, if asked), to continue `start` on; writes train_ids.json."""
    from blindspot.data.cleaning import sample_balanced

    from blindspot.mixture import mixture_counts, sample_mixture

    exclude: list[str] = []
    mixed = spec.synthetic_fraction is not None
    if spec.exclude_seen and (spec.source == "original" or mixed):
        exclude = json.loads((inputs["start"] / "train_ids.json").read_text())
    candidates = source_examples(inputs["data"])
    try:
        if mixed:
            examples = sample_mixture(source_examples(inputs["original"]), candidates, spec.m,
                                      spec.synthetic_fraction, spec.seed, spec.labels, exclude)
        else:
            examples = sample_balanced(candidates, spec.m, spec.seed, spec.labels, exclude)
    except ConfigError as e:
        raise ConfigError(f"augment {spec.source} m={spec.m}: {e} in {inputs['data']} "
                          "(raise generation.per_label, or lower augment.sizes)") from None
    atomic_write_json(out / "train_ids.json", [e.id for e in examples])
    if mixed:
        counts = mixture_counts(spec.m, spec.labels, spec.synthetic_fraction)
        atomic_write_json(out / "mixture.json", {
            "fraction": spec.synthetic_fraction, "source": spec.source, "m": spec.m,
            "labels": {k: {"original": o, "synthetic": n} for k, (o, n) in counts.items()}})
    return classifier_spec(spec, spec.classifier, spec.seed, inputs, runtime, init_from=inputs["start"]), examples


def run(spec: Spec, inputs: Inputs, out: Path, runtime: Runtime) -> Facts:
    """Sample m balanced examples from the `data` input (minus the start's, if asked), or a mixture, and
    continue `start`; its facts for meta.json."""
    from blindspot.crossmodel import with_models
    from blindspot.training.classifier import train_classifier_into

    return with_models(train_classifier_into(*job(spec, inputs, out, runtime), out, runtime.cache_dir),
                       spec.models_record)


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
        from blindspot.crossmodel import with_models

        facts = train_together_into([j[1] for j in jobs], [j[2] for j in jobs], [outs[j[0]] for j in jobs],
                                    runtime.cache_dir)
        for j, f in zip(jobs, facts):
            results[j[0]] = with_models(f, specs[j[0]].models_record)
    return results
