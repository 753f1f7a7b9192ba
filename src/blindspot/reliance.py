"""Heuristic reliance: a blindspot measure that a model biased towards "entailment" cannot fake.

    python -m blindspot.reliance RUN/stages/evaluate-abc/predictions/hans.jsonl \
        RUN/stages/evaluate-abc/predictions/mnli-matched.jsonl

The paper's blindspot number, accuracy on HANS lexical-overlap non-entailment pairs, moves with
how often a model answers entailment at all: every HANS pair has full lexical overlap, so on
HANS alone "always entailment" and "entailment because of overlap" look the same. Reliance on
heuristic h compares the rate of (wrong) entailment answers where h holds with the rate where
no heuristic holds, both on gold non-entailment pairs:

    reliance_h = P(answer entailment | gold non-entailment, h holds)         (challenge set, e.g. HANS)
               - P(answer entailment | gold non-entailment, no lexical overlap) (general set, e.g. MNLI-m)

Gold non-entailment on the general set is neutral + contradiction; a 3-way answer of neutral or
contradiction counts as non-entailment. No full lexical overlap implies no subsequence and no
constituent, so one baseline serves all three heuristics. A constant predictor (always
entailment, always neutral, ...) scores exactly 0; a model that answers entailment exactly when
the hypothesis' words all occur in the premise scores 1 on every heuristic; a model that answers
entailment where h holds less often than elsewhere scores below 0. The interval is Newcombe's
hybrid score interval for the difference of two independent proportions (stats.py).

Full lexical overlap on the general set is computed at evaluation time under every named rule
(the prediction rows' `overlap` field) and the rule is chosen here, so the measure can be
recomputed under another rule without evaluating again.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from blindspot.data.example import to_two_way
from blindspot.errors import DataError
from blindspot.stats import unpaired_difference

ENTAILMENT = "entailment"
SLICE_PREFIX = "reliance:heuristic="
DEFAULT_RULE = "words"  # of runs whose config names no rule (before rules had names, `words` was the one)


def overlap_rules() -> dict[str, Callable[[str, str], bool]]:
    """Named full-lexical-overlap rules (heuristics.OVERLAP_RULES): rule name -> f(premise, hypothesis)."""
    from blindspot import heuristics

    return {name: functools.partial(heuristics.lexical_overlap, rule=name) for name in heuristics.OVERLAP_RULES}


def overlap_flags(premise: str, hypothesis: str) -> dict[str, bool]:
    """Full lexical overlap of one pair under every named rule."""
    return {name: bool(rule(premise, hypothesis)) for name, rule in overlap_rules().items()}


def says_entailment(row: dict) -> bool:
    """The prediction row's answer, folded to two-way, is entailment."""
    return to_two_way(row["pred"]) == ENTAILMENT


def challenge_rows(rows: Iterable[dict], heuristic: str) -> list[dict]:
    """Gold non-entailment rows of the challenge set built for `heuristic`."""
    return [r for r in rows if r.get("heuristic") == heuristic and to_two_way(r["gold"]) != ENTAILMENT]


def baseline_rows(rows: Iterable[dict], rule: str, where: str = "general set") -> list[dict]:
    """Gold non-entailment rows of the general set without full lexical overlap under `rule`."""
    out = []
    for r in rows:
        if to_two_way(r["gold"]) == ENTAILMENT:
            continue
        flags = r.get("overlap")
        if not isinstance(flags, dict) or rule not in flags:
            raise DataError(f"{where}: prediction row {r.get('id')!r} has no overlap flag for rule {rule!r} "
                            "(evaluated by an older blindspot, or not a general-task set); evaluate again")
        if not flags[rule]:
            out.append(r)
    return out


def heuristics_of(rows: Iterable[dict]) -> list[str]:
    return sorted({r["heuristic"] for r in rows if r.get("heuristic")})


def reliance(challenge: list[dict], general: list[dict], heuristic: str, rule: str = DEFAULT_RULE,
             where: str = "general set") -> dict:
    """reliance_h with its counts and 95 % interval from the two sets' prediction rows."""
    hits = challenge_rows(challenge, heuristic)
    base = baseline_rows(general, rule, where)
    if not hits or not base:
        raise DataError(f"reliance on {heuristic}: no {'challenge' if not hits else 'baseline'} rows "
                        "(gold non-entailment where the heuristic holds / without overlap)")
    k1, k2 = sum(map(says_entailment, hits)), sum(map(says_entailment, base))
    value, lo, hi = unpaired_difference(k1, len(hits), k2, len(base))
    return {"slice": f"{SLICE_PREFIX}{heuristic}", "heuristic": heuristic, "rule": rule, "value": value,
            "ci_low": lo, "ci_high": hi, "challenge_entailment": k1, "challenge_n": len(hits),
            "baseline_entailment": k2, "baseline_n": len(base)}


def reliance_all(challenge: list[dict], general: list[dict], rule: str = DEFAULT_RULE,
                 where: str = "general set") -> list[dict]:
    """reliance_h for every heuristic the challenge rows carry."""
    return [reliance(challenge, general, h, rule, where) for h in heuristics_of(challenge)]


def read_rows(path: str | Path) -> list[dict]:
    from blindspot.compare import read_predictions

    return list(read_predictions(path).values())


def main(args: argparse.Namespace) -> int:
    rows = reliance_all(read_rows(args.challenge), read_rows(args.general), args.rule, str(args.general))
    print(json.dumps(rows, indent=2))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("challenge", help="predictions JSONL of the challenge set (HANS)")
    parser.add_argument("general", help="predictions JSONL of the general set (MNLI matched), same classifier")
    from blindspot.heuristics import DEFAULT_OVERLAP_RULE, OVERLAP_RULES

    parser.add_argument("--rule", choices=OVERLAP_RULES, default=DEFAULT_OVERLAP_RULE,
                        help="lexical-overlap rule of the baseline (the run's overlap_rule)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    raise SystemExit(main(p.parse_args()))
