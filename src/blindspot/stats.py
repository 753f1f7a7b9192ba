"""Intervals and tests for accuracies: Wilson score, exact McNemar, Newcombe differences.

Every accuracy the project reports carries its count and a Wilson 95 % interval; two classifiers
evaluated on the same examples are compared with the exact McNemar test on the discordant pairs
and Newcombe's (1998) hybrid score interval for the difference of paired proportions. The
difference of two proportions on independent samples (the reliance measure: a challenge-set
rate minus a general-set rate) gets Newcombe's hybrid score interval for unpaired proportions.
Several seeds of one condition are combined by `seed_interval` (evaluation sampling plus
seed-to-seed variation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest
from scipy.stats import t as t_dist

Z95 = 1.959963984540054  # the two-sided 95 % normal quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for `correct` successes out of `n`; (0, 1) when n is 0."""
    if n < 0 or not 0 <= correct <= n:
        raise ValueError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clamp so the interval always contains p (at p = 0 or 1 rounding can put a bound past it).
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: b ~ Binomial(b + c, 1/2) on the discordant pairs."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def paired_table(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> tuple[int, int, int, int]:
    """Counts (both right, only A right, only B right, both wrong) of two paired 0/1 vectors."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired vectors must be 1-D and of equal length, got {a.shape} and {b.shape}")
    return (int(np.sum(a & b)), int(np.sum(a & ~b)), int(np.sum(~a & b)), int(np.sum(~a & ~b)))


def _phi(both: int, only_a: int, only_b: int, neither: int) -> float:
    """Newcombe's continuity-corrected correlation of the two paired proportions."""
    n = both + only_a + only_b + neither
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    if margins == 0:
        return 0.0
    cross = both * neither - only_a * only_b
    if cross > n / 2:
        cross -= n / 2
    elif cross >= 0:
        cross = 0
    return cross / math.sqrt(margins)


def paired_difference(a_correct: Sequence[bool], b_correct: Sequence[bool],
                      z: float = Z95) -> tuple[float, float, float]:
    """Accuracy of A minus accuracy of B on the same examples, with Newcombe's method-10 interval.

    Newcombe (1998, Stat. Med. 17:2635) "square-and-add" hybrid score interval built from the two
    Wilson intervals and the continuity-corrected phi between the paired outcomes.
    """
    both, only_a, only_b, neither = paired_table(a_correct, b_correct)
    n = both + only_a + only_b + neither
    if n == 0:
        return 0.0, -1.0, 1.0
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n, z)
    l2, u2 = wilson_interval(both + only_b, n, z)
    phi = _phi(both, only_a, only_b, neither)
    diff = p1 - p2
    lower = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2)))
    upper = diff + math.sqrt(max(0.0, (p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1)))
    return diff, max(-1.0, lower), min(1.0, upper)


def unpaired_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float]:
    """k1/n1 - k2/n2 of two independent samples, with Newcombe's hybrid score interval (method 10).

    Newcombe (1998, Stat. Med. 17:873), "square-and-add" of the two Wilson intervals; e.g.
    56/70 - 48/80 = 0.2000 with interval [0.0524, 0.3339] (his worked example).
    """
    if n1 < 1 or n2 < 1:
        raise ValueError(f"both samples need n >= 1, got n1={n1}, n2={n2}")
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson_interval(k1, n1, z)
    l2, u2 = wilson_interval(k2, n2, z)
    diff = p1 - p2
    lower = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return diff, max(-1.0, lower), min(1.0, upper)


def accuracy_row(slice_name: str, correct: int, n: int) -> dict:
    """One metric row as written to metrics.json: slice, correct, n, accuracy, Wilson interval."""
    assert n > 0, f"empty slice {slice_name!r}: callers emit only non-empty slices"
    lo, hi = wilson_interval(correct, n)
    return {"slice": slice_name, "correct": int(correct), "n": int(n),
            "accuracy": correct / n, "ci_low": lo, "ci_high": hi}


def seed_interval(values: Sequence[float], lows: Sequence[float], highs: Sequence[float],
                  bounds: tuple[float, float] = (0.0, 1.0), z: float = Z95) -> dict:
    """Mean of k >= 2 seeds' estimates of one quantity, with a 95 % interval for it.

    The seeds are evaluated on the same examples, so two sources of error add up: which examples
    were drawn (shared by every seed: the seeds' own intervals, `lows` / `highs`, averaged, not
    narrowed by k) and which training seed was drawn (the sample standard deviation s of the
    seeds' estimates; its share is z * s / sqrt(k)). The two half-widths are added in quadrature,
    each side on its own, and clipped to `bounds`:

        low  = mean - sqrt(mean(value - low)^2 + (z s / sqrt k)^2)
        high = mean + sqrt(mean(high - value)^2 + (z s / sqrt k)^2)

    The seed part uses the normal quantile: with 2 or 3 seeds s is itself poorly estimated, so
    this interval can be too narrow where seeds disagree. The t-interval over seeds alone (the
    textbook answer for seed variation, t_0.975 = 12.7 with 2 seeds; zero width when seeds
    agree, although the examples were still a sample) comes back as `t_low` / `t_high`.
    """
    v = np.asarray(values, dtype=float)
    k = len(v)
    if k < 2:
        raise ValueError(f"seed_interval needs 2 or more seeds, got {k}")
    mean, sd = float(v.mean()), float(np.std(v, ddof=1))
    seed_half = z * sd / math.sqrt(k)
    below = float(np.mean(v - np.asarray(lows, dtype=float)))
    above = float(np.mean(np.asarray(highs, dtype=float) - v))
    t_half = float(t_dist.ppf(0.975, k - 1)) * sd / math.sqrt(k)
    lo_bound, hi_bound = bounds
    return {"mean": mean, "sd": sd, "k": k,
            "low": max(lo_bound, mean - math.hypot(below, seed_half)),
            "high": min(hi_bound, mean + math.hypot(above, seed_half)),
            "t_low": max(lo_bound, mean - t_half), "t_high": min(hi_bound, mean + t_half)}
