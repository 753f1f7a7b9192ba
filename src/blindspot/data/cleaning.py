"""Cleaning MNLI as in the paper, the held-out validation split, and seeded sampling.

    python -c "from blindspot.data import load_source, clean_mnli; print(clean_mnli(load_source('../shared/data/mnli-subset/multinli_1.0_train.jsonl.gz'))[1])"

Cleaning (DESIGN.md step 1), in this order: (1) drop pairs whose gold label is `-`
(those the loader already dropped are counted from `meta["dropped_no_gold"]`); (2) drop every
(premise, hypothesis) pair that occurs more than once, ALL copies, whatever their labels
(pairs compared as exact strings). `split_validation` then holds out a label-balanced
validation set, either a seeded sample per label (`mode="sample"`) or, as the reference
implementation does, the first `per_label` rows of each label in file order (`mode="first"`);
the rest is the training pool.

Sampling is deterministic in the seed and nested: with the same seed and candidates, the
first n of a larger sample are the sample of size n (so the n = 5k starting point's data is
inside the n = 10k one's). `sample_examples` draws either with `random.Random(seed)`
(`method="shuffle"`) or exactly as the reference implementation does, pandas
`DataFrame.sample(n, random_state=seed)` (`method="pandas"`; the reference uses seed 42).
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Literal

from blindspot.data.example import NLIExample, NLISet
from blindspot.data.generic import NO_GOLD
from blindspot.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def clean_mnli(s: NLISet) -> tuple[NLISet, dict]:
    """Drop `-` labels and every copy of a duplicated (premise, hypothesis) pair; return (set, report)."""
    loader_dropped = int(s.meta.get("dropped_no_gold", 0))
    gold = [e for e in s.examples if e.label != NO_GOLD]
    no_gold = len(s.examples) - len(gold) + loader_dropped
    counts = Counter((e.premise, e.hypothesis) for e in gold)
    dup_keys = {k for k, c in counts.items() if c > 1}
    labels_of: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in gold:
        if (e.premise, e.hypothesis) in dup_keys:
            labels_of[(e.premise, e.hypothesis)].add(e.label)
    kept = [e for e in gold if (e.premise, e.hypothesis) not in dup_keys]
    report = {
        "input_rows": len(s.examples) + loader_dropped,
        "removed_no_gold": no_gold,
        "removed_duplicates": len(gold) - len(kept),
        "duplicated_pairs": len(dup_keys),
        "duplicated_pairs_with_conflicting_labels": sum(len(v) > 1 for v in labels_of.values()),
        "output_rows": len(kept),
    }
    log.info("cleaned %s: %d -> %d (%d without gold label, %d duplicate rows)", s.name,
             report["input_rows"], len(kept), no_gold, report["removed_duplicates"])
    meta = {**s.meta, "cleaning": report, "dropped_no_gold": 0}
    return NLISet(s.name, s.labels, kept, s.source, meta), report


def _examples(s: NLISet | Iterable[NLIExample]) -> list[NLIExample]:
    return list(s.examples if isinstance(s, NLISet) else s)


def _shuffled(examples: list[NLIExample], seed: int | str) -> list[NLIExample]:
    """A seeded permutation (random.Random, stable across Python versions for int/str seeds)."""
    out = list(examples)
    random.Random(seed).shuffle(out)
    return out


ValidationMode = Literal["sample", "first"]


def split_validation(s: NLISet, per_label: int = 250, seed: int = 0,
                     mode: ValidationMode = "sample") -> tuple[NLISet, NLISet]:
    """Hold out `per_label` examples of each label as validation (seeded sample, or the first in
    file order); the rest is the pool."""
    if per_label < 0:
        raise ConfigError(f"validation per label must be >= 0, got {per_label}")
    if mode not in ("sample", "first"):
        raise ConfigError(f"validation mode: {mode!r} is not one of sample, first")
    if len({e.id for e in s.examples}) != len(s.examples):
        raise DataError(f"{s.name}: example ids are not unique, cannot hold out a validation set by id")
    by_label: dict[str, list[NLIExample]] = defaultdict(list)
    for e in s.examples:
        by_label[e.label].append(e)
    held: set[str] = set()
    for label in s.labels:
        have = by_label.get(label, [])
        if len(have) < per_label:
            raise ConfigError(f"{s.name}: only {len(have)} examples labelled {label!r}, cannot hold out "
                              f"{per_label} per label for validation")
        chosen = have if mode == "first" else _shuffled(have, f"{seed}:{label}")
        held.update(e.id for e in chosen[:per_label])
    val = [e for e in s.examples if e.id in held]
    pool = [e for e in s.examples if e.id not in held]
    info = {"validation_per_label": per_label, "mode": mode, **({"seed": seed} if mode == "sample" else {})}
    return (NLISet(f"{s.name}-validation", s.labels, val, s.source, {**s.meta, "split_validation": info}),
            NLISet(f"{s.name}-pool", s.labels, pool, s.source, {**s.meta, "split_validation": info}))


SampleMethod = Literal["shuffle", "pandas"]


def sample_examples(s: NLISet | Iterable[NLIExample], n: int, seed: int,
                    exclude_ids: Iterable[str] = (), method: SampleMethod = "shuffle") -> list[NLIExample]:
    """n examples drawn without replacement (seeded, nested in n), skipping exclude_ids.

    method "pandas" is the reference's `pool.sample(n=n, random_state=seed)`, in its order.
    """
    excl = set(exclude_ids)
    cands = [e for e in _examples(s) if e.id not in excl]
    if not 0 <= n <= len(cands):
        raise ConfigError(f"cannot sample {n} examples: {len(cands)} available"
                          + (f" after excluding {len(excl)} ids" if excl else ""))
    if method == "pandas":
        import pandas as pd

        return [cands[i] for i in pd.RangeIndex(len(cands)).to_series().sample(n=n, random_state=seed)]
    if method != "shuffle":
        raise ConfigError(f"sampling method: {method!r} is not one of shuffle, pandas")
    return _shuffled(cands, seed)[:n]


def sample_balanced(s: NLISet | Iterable[NLIExample], m: int, seed: int, labels: Iterable[str],
                    exclude_ids: Iterable[str] = ()) -> list[NLIExample]:
    """m examples split evenly over labels (the first m % k labels get one more), seeded and shuffled."""
    labels = tuple(labels)
    excl = set(exclude_ids)
    by_label: dict[str, list[NLIExample]] = defaultdict(list)
    for e in _examples(s):
        if e.id not in excl:
            by_label[e.label].append(e)
    out: list[NLIExample] = []
    for i, label in enumerate(labels):
        want = m // len(labels) + (1 if i < m % len(labels) else 0)
        have = by_label.get(label, [])
        if want > len(have):
            raise ConfigError(f"cannot sample {want} examples labelled {label!r}: {len(have)} available")
        out += _shuffled(have, f"{seed}:{label}")[:want]
    return _shuffled(out, seed)


def stratified_sample(s: NLISet, per_group: int, key: str = "subcase", seed: int = 0) -> NLISet:
    """Up to per_group examples from each value of `key` (e.g. subcase, label), seeded; keeps the name."""
    if key not in NLIExample.__slots__:
        raise ConfigError(f"stratify key {key!r} is not an example field ({', '.join(NLIExample.__slots__)})")
    groups: dict[object, list[NLIExample]] = defaultdict(list)
    for e in s.examples:
        groups[getattr(e, key)].append(e)
    chosen = {e.id for g, es in groups.items() for e in _shuffled(es, f"{seed}:{g}")[:per_group]}
    kept = [e for e in s.examples if e.id in chosen]
    return NLISet(s.name, s.labels, kept, s.source,
                  {**s.meta, "stratified": {"key": key, "per_group": per_group, "seed": seed}})
