"""Mixtures: a fixed-size, label-balanced augmentation in which a fraction f is synthetic, the rest original.

    augment:
      sources: [original, synthetic]
      sizes: [240]
      synthetic_fraction: [0, 0.25, 0.5, 0.75, 1]   # the axis
      mixture_sources: [synthetic]                    # the synthetic share's source: synthetic, or a filter
      mixture_sizes: [240]                            # optional; default augment.sizes

Each (mixture source S, fraction f, size m, seed, starting point) is one cached augment stage, a
condition of source `mix{f}:{S}` (e.g. `mix0.25:synthetic`) in the results table, whose column
`synthetic_fraction` holds f (0 for original data, 1 for synthetic and filtered sources, empty for
the starting point). f = 0 is exactly source `original` and f = 1 exactly source S (the sampler
below reduces to `sample_balanced` there, a test checks it), so those are the same stages and
conditions, planned once.

Counts, exact (`mixture_counts`): label i gets m_i = m // k (+1 for the first m % k labels), as
`sample_balanced`, so the total is m and the labels as balanced as m allows. Of the m, round(f·m)
are synthetic (halves up), split over the labels by largest remainder: label i gets floor(f·m_i),
and the labels with the largest fractional parts f·m_i - floor(f·m_i) (ties: label order) get one
more until the total is reached. So every label's synthetic count is within 1 of f·m_i, and
f is read as the decimal it is written as (0.1 is 1/10, not the float's binary value).

Sampling (`sample_mixture`): per label, the first m_i - s_i of the original candidates and the
first s_i of the synthetic ones, each shuffled with the seed as `sample_balanced` does, then all
shuffled together. Nested: raising f swaps original examples for synthetic ones, keeping the rest.
"""

from __future__ import annotations

import math
from collections import defaultdict
from fractions import Fraction
from typing import Iterable

from blindspot.data.example import NLIExample
from blindspot.errors import ConfigError

PREFIX = "mix"


def mixture_name(source: str, fraction: float) -> str:
    """The results table's source of a mixture: 'mix0.25:synthetic'."""
    return f"{PREFIX}{fraction:g}:{source}"


def parse_mixture(source: str) -> tuple[str, float] | None:
    """(mixture source, fraction) of a mixture's source name, None for any other source."""
    head, sep, rest = source.partition(":")
    if not sep or not head.startswith(PREFIX):
        return None
    try:
        return rest, float(head.removeprefix(PREFIX))
    except ValueError:
        return None


def synthetic_fraction(source: str) -> float | None:
    """The share of synthetic data in a condition's augmentation: f of a mixture, 0 for original data
    (also through a filter), 1 for synthetic and filtered synthetic sources, None for the starting point."""
    if source == "start":
        return None
    mix = parse_mixture(source)
    if mix is not None:
        return mix[1]
    return 0.0 if source == "original" or source.startswith("original+") else 1.0


def augment_conditions(aug) -> list[tuple[str, int, str, float | None]]:
    """(condition source, m, data source, fraction) of each augment stage of a starting point: the
    sources x sizes as always, then the mixtures (f = 0 / 1 are the pure sources, added if missing).

    `aug` is the config's AugmentConfig; `fraction` is None except for 0 < f < 1.
    """
    out = [(s, m, s, None) for s in aug.sources for m in aug.sizes]
    for source in aug.mixture_sources if aug.synthetic_fraction else []:
        for m in aug.mixture_sizes or aug.sizes:
            for f in aug.synthetic_fraction:
                pure = "original" if f == 0 else source if f == 1 else None
                cond = (pure, m, pure, None) if pure else (mixture_name(source, f), m, source, f)
                if cond not in out:
                    out.append(cond)
    return out


def exact_fraction(fraction: float) -> Fraction:
    """f as the decimal it is written as: 0.1 -> 1/10."""
    return Fraction(repr(float(fraction)))


def mixture_counts(m: int, labels: Iterable[str], fraction: float) -> dict[str, tuple[int, int]]:
    """label -> (original, synthetic) counts of a mixture of m examples (module docstring: the rounding)."""
    labels = tuple(labels)
    if not 0 <= fraction <= 1:
        raise ConfigError(f"synthetic fraction {fraction}: expected a number between 0 and 1")
    k = len(labels)
    per_label = [m // k + (1 if i < m % k else 0) for i in range(k)]
    f = exact_fraction(fraction)
    exact = [f * n for n in per_label]
    syn = [math.floor(x) for x in exact]
    total = math.floor(f * m + Fraction(1, 2))
    by_remainder = sorted(range(k), key=lambda i: (-(exact[i] - syn[i]), i))
    for i in by_remainder[:total - sum(syn)]:
        syn[i] += 1
    return {label: (n - s, s) for label, n, s in zip(labels, per_label, syn)}


def sample_mixture(original: Iterable[NLIExample], synthetic: Iterable[NLIExample], m: int, fraction: float,
                   seed: int, labels: Iterable[str], exclude_ids: Iterable[str] = ()) -> list[NLIExample]:
    """m label-balanced examples, round(f·m) of them synthetic (mixture_counts), seeded and shuffled;
    `exclude_ids` are never drawn from the original candidates (augment.exclude_seen)."""
    from blindspot.data.cleaning import _shuffled

    labels = tuple(labels)
    excl = set(exclude_ids)
    pools: dict[str, dict[str, list[NLIExample]]] = {"original": defaultdict(list), "synthetic": defaultdict(list)}
    for e in original:
        if e.id not in excl:
            pools["original"][e.label].append(e)
    for e in synthetic:
        pools["synthetic"][e.label].append(e)
    out: list[NLIExample] = []
    for label, counts in mixture_counts(m, labels, fraction).items():
        for kind, want in zip(("original", "synthetic"), counts):
            have = pools[kind].get(label, [])
            if want > len(have):
                raise ConfigError(f"cannot sample {want} {kind} examples labelled {label!r}: {len(have)} available")
            out += _shuffled(have, f"{seed}:{label}")[:want]
    return _shuffled(out, seed)
