"""Paired comparison of two classifiers' predictions on the same evaluation set.

    blindspot compare runs/eval-a/predictions/hans.jsonl runs/eval-b/predictions/hans.jsonl [--json] \
        [--reliance runs/eval-a/predictions/mnli-matched.jsonl runs/eval-b/predictions/mnli-matched.jsonl]

Pairs the two files' rows by id (both files must hold exactly the same ids with the same gold
labels), then reports each accuracy, the exact McNemar test on the discordant pairs
(scipy.stats.binomtest, two-sided) and the difference in accuracy (A - B) with Newcombe's
(1998) hybrid score 95 % interval for paired proportions; overall and, when the rows carry
them, per HANS heuristic x gold label (the blindspot slice among them) and per gold label.

`compare_reliance` compares the reliance measure (blindspot.reliance) of two classifiers, which
involves two sets (challenge and general), with a seeded paired bootstrap over examples.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from blindspot.errors import DataError
from blindspot.stats import mcnemar_exact, paired_difference, paired_table

log = logging.getLogger(__name__)

TEST = "exact McNemar (two-sided binomial test on the discordant pairs)"
CI_METHOD = "Newcombe (1998) hybrid score interval for paired proportions (method 10), 95 %"


def read_predictions(path: str | Path) -> dict[str, dict]:
    """Rows of a predictions JSONL (plain or .gz) keyed by id; DataError naming file:line on bad rows."""
    from blindspot.data.readers import iter_jsonl

    rows: dict[str, dict] = {}
    for lineno, row in iter_jsonl(path):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("correct"), bool) \
                or not isinstance(row.get("gold"), str):
            raise DataError(f"{path}:{lineno}: expected fields id (str), gold (str), correct (bool)")
        if row["id"] in rows:
            raise DataError(f"{path}:{lineno}: duplicate id {row['id']!r}")
        rows[row["id"]] = row
    return rows


def _check_same_set(path_a, rows_a: dict, path_b, rows_b: dict) -> list[str]:
    """The shared ids in A's order; DataError if the two files are not the same set."""
    only_a, only_b = rows_a.keys() - rows_b.keys(), rows_b.keys() - rows_a.keys()
    if only_a or only_b:
        example = sorted(only_a or only_b)[0]
        raise DataError(f"{path_a} and {path_b} are predictions on different sets: {len(only_a)} id(s) only "
                        f"in the first, {len(only_b)} only in the second (e.g. {example!r})")
    for i, row in rows_a.items():
        if row["gold"] != rows_b[i]["gold"]:
            raise DataError(f"{path_a} and {path_b}: id {i!r} has gold label {row['gold']!r} in one and "
                            f"{rows_b[i]['gold']!r} in the other (not the same set)")
    return list(rows_a)


def paired_stats(a_correct: list[bool], b_correct: list[bool]) -> dict:
    """n, both accuracies, the 2x2 counts, McNemar p and the paired difference with its interval."""
    both, only_a, only_b, neither = paired_table(a_correct, b_correct)
    n = len(a_correct)
    diff, lo, hi = paired_difference(a_correct, b_correct)
    return {"n": n, "acc_a": (both + only_a) / n, "acc_b": (both + only_b) / n, "both_correct": both,
            "b": only_a, "c": only_b, "neither": neither, "p_mcnemar": mcnemar_exact(only_a, only_b),
            "diff": diff, "diff_ci": [lo, hi]}


def _slice_keys(row: dict) -> list[str]:
    keys = [f"label={row['gold']}"]
    if row.get("heuristic"):
        keys.append(f"heuristic={row['heuristic']},label={row['gold']}")
    return keys


def compare_predictions(path_a: str | Path, path_b: str | Path) -> dict:
    """Paired comparison of two prediction files of one set: overall and per slice."""
    rows_a, rows_b = read_predictions(path_a), read_predictions(path_b)
    ids = _check_same_set(path_a, rows_a, path_b, rows_b)
    result = {"file_a": str(path_a), "file_b": str(path_b), "test": TEST, "ci_method": CI_METHOD,
              **paired_stats([rows_a[i]["correct"] for i in ids], [rows_b[i]["correct"] for i in ids])}
    groups: dict[str, list[str]] = {}
    for i in ids:
        for key in _slice_keys(rows_a[i]):
            groups.setdefault(key, []).append(i)
    result["slices"] = [{"slice": k, **paired_stats([rows_a[i]["correct"] for i in g],
                                                    [rows_b[i]["correct"] for i in g])}
                        for k, g in sorted(groups.items())]
    return result


BOOTSTRAP = "paired bootstrap over examples (both sets resampled, the same draws for A and B), percentile 95 %"
N_BOOTSTRAP = 2000


def _aligned(rows_a: list[dict], rows_b: list[dict], where: str) -> tuple[np.ndarray, np.ndarray]:
    """Says-entailment vectors of A and B over the same examples, paired by id."""
    from blindspot.reliance import says_entailment

    by_id = {r["id"]: r for r in rows_b}
    if set(by_id) != {r["id"] for r in rows_a}:
        raise DataError(f"{where}: the two classifiers' reliance rows are not the same examples")
    return (np.array([says_entailment(r) for r in rows_a], dtype=float),
            np.array([says_entailment(by_id[r["id"]]) for r in rows_a], dtype=float))


def compare_reliance(challenge_a: list[dict], general_a: list[dict], challenge_b: list[dict], general_b: list[dict],
                     heuristic: str, rule: str, seed: int = 0, n_boot: int = N_BOOTSTRAP) -> dict:
    """reliance(A) - reliance(B) on the same examples, with a seeded paired bootstrap interval and p.

    Each replicate resamples the challenge rows (heuristic h, gold non-entailment) and the baseline
    rows (general set, gold non-entailment, no overlap) with replacement, independently of each
    other, and uses the same draws for A and B, so the example-to-example correlation of the two
    classifiers is kept. p = 2 (t + 1) / (B + 1), t = the replicate differences on the smaller side of 0.
    """
    from blindspot.reliance import baseline_rows, challenge_rows

    ca, cb = _aligned(challenge_rows(challenge_a, heuristic), challenge_rows(challenge_b, heuristic), "challenge")
    ga, gb = _aligned(baseline_rows(general_a, rule), baseline_rows(general_b, rule), "baseline")
    if not len(ca) or not len(ga):
        raise DataError(f"reliance on {heuristic}: no challenge or baseline rows to compare")
    rng = np.random.default_rng(seed)
    dc, dg = ca - cb, ga - gb  # per-example differences: reliance(A) - reliance(B) = mean(dc) - mean(dg)
    reps = np.empty(n_boot)
    for start in range(0, n_boot, 250):  # chunks keep memory at 250 x n
        k = min(250, n_boot - start)
        reps[start:start + k] = (dc[rng.integers(0, len(dc), (k, len(dc)))].mean(axis=1)
                                 - dg[rng.integers(0, len(dg), (k, len(dg)))].mean(axis=1))
    diff = float(dc.mean() - dg.mean())
    tail = min(int(np.sum(reps <= 0)), int(np.sum(reps >= 0)))
    p = min(1.0, 2 * (tail + 1) / (n_boot + 1))  # never 0: the smallest p B replicates can show
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return {"heuristic": heuristic, "rule": rule, "n": len(ca), "baseline_n": len(ga),
            "reliance_a": float(ca.mean() - ga.mean()), "reliance_b": float(cb.mean() - gb.mean()),
            "diff": diff, "diff_ci": [float(lo), float(hi)], "p_bootstrap": p, "n_boot": n_boot, "seed": seed,
            "test": BOOTSTRAP}


def format_table(result: dict) -> str:
    """The comparison as a fixed-width text table."""
    head = f"{'slice':<45} {'n':>6} {'acc A':>7} {'acc B':>7} {'A-B':>7} {'95% CI':>17} {'b':>5} {'c':>5} {'p':>8}"
    lines = [f"A: {result['file_a']}", f"B: {result['file_b']}", head, "-" * len(head)]
    for r in [{"slice": "all", **result}] + result["slices"]:
        lo, hi = r["diff_ci"]
        lines.append(f"{r['slice']:<45} {r['n']:>6} {r['acc_a']:>7.4f} {r['acc_b']:>7.4f} {r['diff']:>+7.4f} "
                     f"[{lo:>+7.4f},{hi:>+7.4f}] {r['b']:>5} {r['c']:>5} {r['p_mcnemar']:>8.2g}")
    lines += ["", f"b: A right, B wrong; c: A wrong, B right. p: {TEST}.", f"CI: {CI_METHOD}."]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="predictions JSONL of classifier A (OUT/predictions/<set>.jsonl)")
    parser.add_argument("b", help="predictions JSONL of classifier B on the same set")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    parser.add_argument("--reliance", nargs=2, metavar=("A_GENERAL", "B_GENERAL"), default=None,
                        help="also compare the reliance measure: A and B are then the challenge-set (HANS) "
                             "predictions and these the general-set (MNLI) predictions of the same classifiers")
    parser.add_argument("--overlap-rule", default="paper", help="lexical-overlap rule of the reliance baseline")


def _reliance_lines(args: argparse.Namespace) -> list[dict]:
    """compare_reliance for every heuristic of A's challenge rows (seeded: the same numbers every time)."""
    from blindspot.reliance import heuristics_of, read_rows

    ca, cb, ga, gb = (read_rows(p) for p in (args.a, args.b, *args.reliance))
    return [compare_reliance(ca, ga, cb, gb, h, args.overlap_rule) for h in heuristics_of(ca)]


def main(args: argparse.Namespace) -> int:
    result = compare_predictions(args.a, args.b)
    if args.reliance:
        result["reliance"] = _reliance_lines(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(format_table(result))
    for r in result.get("reliance", []):
        lo, hi = r["diff_ci"]
        print(f"reliance on {r['heuristic']:<16} A {r['reliance_a']:+.4f}  B {r['reliance_b']:+.4f}  A-B "
              f"{r['diff']:+.4f} [{lo:+.4f},{hi:+.4f}]  p {r['p_bootstrap']:.3g} ({BOOTSTRAP}, rule {r['rule']})")
    return 0
