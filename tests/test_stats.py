"""Intervals and paired tests against hand-computed and published values."""

from __future__ import annotations

import math

import pytest

from blindspot.stats import Z95, accuracy_row, seed_interval, mcnemar_exact, paired_difference, paired_table, wilson_interval


@pytest.mark.parametrize("correct,n,lo,hi", [
    (8, 10, 0.4902, 0.9433),     # the textbook table (Newcombe 1998a, Agresti & Coull)
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),   # Newcombe (1998a), example (ii)
])
def test_wilson_interval_known_values(correct, n, lo, hi):
    got = wilson_interval(correct, n)
    assert got[0] == pytest.approx(lo, abs=1e-4)
    assert got[1] == pytest.approx(hi, abs=1e-4)


def test_wilson_interval_is_symmetric_and_handles_empty():
    lo, hi = wilson_interval(3, 10)
    lo2, hi2 = wilson_interval(7, 10)
    assert lo == pytest.approx(1 - hi2) and hi == pytest.approx(1 - lo2)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_mcnemar_exact_small_table():
    # b=1, c=9: p = 2 * P(X <= 1 | n=10, 1/2) = 2 * 11 / 1024
    assert mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0
    # b=0, c=6: 2 * (1/2)^6
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_paired_table_counts():
    assert paired_table([1, 1, 0, 0, 1], [1, 0, 1, 0, 0]) == (1, 2, 1, 1)
    with pytest.raises(ValueError):
        paired_table([1, 0], [1])


def test_paired_difference_newcombe_published_value():
    # Cavo et al. (2012) table in Fagerland, Lydersen & Laake (2017), ch. 8:
    # [[59, 6], [16, 80]] -> estimate -0.0621, Newcombe square-and-add 95 % CI (-0.1186, -0.0046)
    a = [1] * 59 + [1] * 6 + [0] * 16 + [0] * 80
    b = [1] * 59 + [0] * 6 + [1] * 16 + [0] * 80
    diff, lo, hi = paired_difference(a, b)
    assert diff == pytest.approx(-10 / 161)
    assert lo == pytest.approx(-0.1186, abs=1e-4)
    assert hi == pytest.approx(-0.0046, abs=1e-4)


def test_paired_difference_identical_and_swapped():
    a = [1, 0, 1, 1, 0, 1, 1, 1]
    diff, lo, hi = paired_difference(a, a)
    assert diff == 0 and lo < 0 < hi
    d1, l1, h1 = paired_difference(a, [0] * 8)
    d2, l2, h2 = paired_difference([0] * 8, a)
    assert d1 == pytest.approx(-d2) and l1 == pytest.approx(-h2) and h1 == pytest.approx(-l2)
    assert -1 <= l1 <= d1 <= h1 <= 1


def test_accuracy_row_fields():
    row = accuracy_row("all", 8, 10)
    assert row["slice"] == "all" and row["correct"] == 8 and row["n"] == 10
    assert row["accuracy"] == 0.8
    assert math.isclose(row["ci_low"], 0.4902, abs_tol=1e-4)


@pytest.mark.parametrize("n", [1, 7, 12, 30, 49, 100, 1000])
def test_wilson_interval_contains_the_estimate_at_the_extremes(n):
    for correct in (0, n):
        lo, hi = wilson_interval(correct, n)
        assert lo <= correct / n <= hi


@pytest.mark.parametrize("k1,n1,k2,n2,lo,hi", [
    (56, 70, 48, 80, 0.0524, 0.3339),   # Newcombe (1998b), Stat. Med. 17:873, table II, method 10
    (9, 10, 3, 10, 0.1705, 0.8090),
    (6, 7, 2, 7, 0.0582, 0.8062),
    (5, 56, 0, 29, -0.0381, 0.1926),
])
def test_unpaired_difference_matches_newcombe_method_10(k1, n1, k2, n2, lo, hi):
    from blindspot.stats import unpaired_difference

    diff, got_lo, got_hi = unpaired_difference(k1, n1, k2, n2)
    assert diff == pytest.approx(k1 / n1 - k2 / n2)
    assert (got_lo, got_hi) == (pytest.approx(lo, abs=1e-4), pytest.approx(hi, abs=1e-4))


def test_unpaired_difference_of_equal_extremes_contains_zero():
    from blindspot.stats import unpaired_difference

    for k in (0, 30):
        diff, lo, hi = unpaired_difference(k, 30, k * 2, 60)
        assert diff == 0 and lo < 0 < hi
    with pytest.raises(ValueError):
        unpaired_difference(0, 0, 1, 2)


def test_seed_interval_adds_evaluation_and_seed_error():
    """Seeds share the evaluation examples: their own intervals do not shrink with k; seed spread adds."""
    agree = seed_interval([0.5, 0.5, 0.5], [0.44, 0.44, 0.44], [0.56, 0.56, 0.56])
    assert (agree["low"], agree["high"]) == (pytest.approx(0.44), pytest.approx(0.56))  # not zero width
    assert agree["t_low"] == agree["t_high"] == pytest.approx(0.5)  # the t-interval alone claims certainty
    spread = seed_interval([0.4, 0.6], [0.34, 0.54], [0.46, 0.66])
    seed_half = Z95 * math.sqrt(0.02) / math.sqrt(2)  # sd of (0.4, 0.6) is sqrt(0.02)
    assert spread["mean"] == pytest.approx(0.5)
    assert spread["high"] - 0.5 == pytest.approx(math.hypot(0.06, seed_half))
    assert spread["t_high"] == 1.0 and spread["t_low"] == 0.0  # t_0.975,1 = 12.7: clipped to [0, 1]
    close = seed_interval([0.48, 0.52], [0.42, 0.46], [0.54, 0.58])
    assert close["t_high"] - 0.5 == pytest.approx(12.706205 * math.sqrt(0.0008) / math.sqrt(2))
    floor = seed_interval([0.0, 0.0], [0.0, 0.0], [0.088, 0.088])
    assert (floor["low"], floor["high"]) == (0.0, pytest.approx(0.088))
    clipped = seed_interval([-0.9, -0.5], [-1.0, -0.7], [-0.7, -0.3], bounds=(-1.0, 1.0))
    assert clipped["low"] == -1.0
    with pytest.raises(ValueError, match="2 or more seeds"):
        seed_interval([0.5], [0.4], [0.6])
