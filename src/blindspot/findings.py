"""The paper's three findings, checked against a run's paired tests: holds / fails / inconclusive.

    blindspot report RUN_DIR        # the report's "The paper's three findings, here" section

Zhang & Pavlick (2025) report, for Llama-2-7B on MNLI and HANS:

- (a) augmenting with *biased* synthetic data (filtered so that lexical overlap always means
  entailment) lowers the blindspot number (HANS lexical-overlap non-entailment) and MNLI accuracy,
  from every starting point;
- (b) at the largest augmentation size, synthetic data matches original data on MNLI;
- (c) synthetic data trails original data on HANS, but does not collapse it.

Each is read off the paired differences between sources at the largest augmentation size, per
starting point: the mean over seeds of the per-seed paired difference with a 95 % interval that
adds the seeds' paired (Newcombe) intervals and seed-to-seed variation (blindspot.stats.
seed_interval; 2 or more seeds) or, with one seed, that seed's paired interval. A claim that
two sources differ holds when every interval lies on the claimed side of 0 and fails when one lies
wholly on the other side. "Matches" holds when every interval lies inside +-EQUIVALENCE and fails
when one lies wholly outside it. "Does not collapse" means synthetic's HANS accuracy stays above
COLLAPSED. Everything else is inconclusive at this scale: the intervals are too wide to say.
"""

from __future__ import annotations

import pandas as pd

from blindspot.stats import seed_interval

EQUIVALENCE = 0.05  # |accuracy difference| below which two sources "match"
COLLAPSED = 0.40    # HANS accuracy below which (chance is 0.5) a source has collapsed it
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"


def seed_mean_interval(diffs: pd.DataFrame) -> tuple[float, float, float, int]:
    """(mean, low, high, seeds) of per-seed paired differences (stats.seed_interval: the seeds'
    paired intervals plus seed-to-seed variation), or the one seed's paired interval."""
    d = diffs["diff"].to_numpy(dtype=float)
    if len(d) == 1:
        return float(d[0]), float(diffs["diff_low"].iloc[0]), float(diffs["diff_high"].iloc[0]), 1
    c = seed_interval(d, diffs["diff_low"], diffs["diff_high"], bounds=(-1.0, 1.0))
    return c["mean"], c["low"], c["high"], c["k"]


def _differences(tests: pd.DataFrame, a: str, b: str, eval_set: str, slice_name: str) -> list[dict]:
    """Per start: the seed-aggregated difference a - b at the largest augmentation size."""
    sel = tests[(tests["source_a"] == a) & (tests["source_b"] == b) & (tests["eval_set"] == eval_set)
                & (tests["slice"] == slice_name)]
    out = []
    for start, group in sel.groupby("start_size"):
        top = group[group["aug_size"] == group["aug_size"].max()]
        mean, lo, hi, k = seed_mean_interval(top)
        out.append({"start": int(start), "m": int(top["aug_size"].iloc[0]), "diff": mean, "low": lo, "high": hi,
                    "seeds": k})
    return out


def _side_verdict(diffs: list[dict], sign: int) -> str:
    """holds if every interval is on the `sign` side of 0, fails if one is wholly on the other side."""
    if not diffs:
        return INCONCLUSIVE
    if all((d["high"] < 0) if sign < 0 else (d["low"] > 0) for d in diffs):
        return HOLDS
    if any((d["low"] > 0) if sign < 0 else (d["high"] < 0) for d in diffs):
        return FAILS
    return INCONCLUSIVE


def _fmt(diffs: list[dict], what: str) -> str:
    return "; ".join(f"start {d['start']:,} +{d['m']:,}: {what} {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                     f" ({d['seeds']} seed{'s' if d['seeds'] > 1 else ''})" for d in diffs) or "no paired tests"


def finding_a(tests: pd.DataFrame, general: str, challenge: str, blindspot: str) -> tuple[str, str]:
    biased = sorted(s for s in tests["source_a"].unique() if s.startswith("biased"))
    if not biased:
        return INCONCLUSIVE, "not tested: the run has no biased synthetic source"
    b = biased[0]
    blind = _differences(tests, b, "synthetic", challenge, blindspot)
    mnli = _differences(tests, b, "synthetic", general, "all")
    verdicts = {_side_verdict(blind, -1), _side_verdict(mnli, -1)}
    verdict = FAILS if FAILS in verdicts else HOLDS if verdicts == {HOLDS} else INCONCLUSIVE
    return verdict, (f"{b} minus synthetic, blindspot number: {_fmt(blind, 'diff')}. "
                     f"MNLI: {_fmt(mnli, 'diff')}.")


def finding_b(tests: pd.DataFrame, general: str) -> tuple[str, str]:
    diffs = _differences(tests, "synthetic", "original", general, "all")
    if not diffs:
        return INCONCLUSIVE, "not tested: the run lacks synthetic or original data"
    inside = all(-EQUIVALENCE <= d["low"] and d["high"] <= EQUIVALENCE for d in diffs)
    outside = any(d["low"] > EQUIVALENCE or d["high"] < -EQUIVALENCE for d in diffs)
    verdict = HOLDS if inside else FAILS if outside else INCONCLUSIVE
    return verdict, f"synthetic minus original, MNLI: {_fmt(diffs, 'diff')}; match = inside +-{EQUIVALENCE}."


def finding_c(tests: pd.DataFrame, agg: pd.DataFrame, challenge: str) -> tuple[str, str]:
    diffs = _differences(tests, "synthetic", "original", challenge, "all")
    if not diffs:
        return INCONCLUSIVE, "not tested: the run lacks synthetic or original data"
    syn = agg[(agg["source"] == "synthetic") & (agg["eval_set"] == challenge) & (agg["slice"] == "all")]
    syn = syn[syn["aug_size"] == syn["aug_size"].max()]
    collapsed = bool((syn["ci_high"] < COLLAPSED).any())
    intact = bool((syn["ci_low"] >= COLLAPSED).all()) and not syn.empty
    trails = _side_verdict(diffs, -1)
    verdict = FAILS if collapsed or trails == FAILS else HOLDS if trails == HOLDS and intact else INCONCLUSIVE
    levels = "; ".join(f"start {int(r.start_size):,}: {r.accuracy:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
                       for r in syn.itertuples())
    return verdict, (f"synthetic minus original, HANS: {_fmt(diffs, 'diff')}. Synthetic's HANS accuracy: "
                     f"{levels} (collapse = below {COLLAPSED}).")


def findings_blocks(tests: pd.DataFrame, agg: pd.DataFrame, general: str, challenge: str,
                    blindspot: str) -> list[tuple]:
    """Report blocks: each finding in words, then whether it holds here, with the intervals."""
    if tests.empty:
        return []
    rows = [("(a) Biased synthetic data lowers the blindspot number and MNLI accuracy, from every start",
             *finding_a(tests, general, challenge, blindspot)),
            ("(b) Synthetic data matches original data on MNLI at the largest size", *finding_b(tests, general)),
            ("(c) Synthetic data trails original data on HANS but does not collapse it",
             *finding_c(tests, agg, challenge))]
    table = pd.DataFrame([{"finding": f, "here": v, "evidence (95 % intervals)": e} for f, v, e in rows])
    return [("h2", "The paper's three findings, here"),
            ("p", "Zhang & Pavlick (2025) found, for Llama-2-7B: (a) training on synthetic data filtered so that "
                  "lexical overlap always means entailment makes the blindspot worse and MNLI accuracy lower; "
                  "(b) plain synthetic data is as good as original data for MNLI; (c) it is somewhat worse than "
                  "original data on HANS, but does not wreck it. Each is checked below at the largest "
                  "augmentation size with the paired differences between sources (mean over seeds, 95 % "
                  "interval of evaluation sampling plus seed-to-seed variation; one seed: the paired "
                  "interval). holds / fails = the intervals say so; "
                  "inconclusive = they are too wide to tell at this scale."),
            ("table", table)]
