"""Audit NLI sets side by side: heuristic features per label, lengths, diversity, duplicates.

    blindspot audit ../shared/data/mnli-subset/multinli_1.0_train.jsonl.gz \\
        hans=../shared/data/hans-regen/heuristics_evaluation_set.jsonl.gz
    blindspot audit mnli=pool.jsonl synthetic=synth/kept.jsonl --markdown
    blindspot audit mnli=pool.jsonl synthetic=synth.jsonl --out audit.json

The data-level answer to "does synthetic data carry more of the heuristic than real data?".
Each SOURCE is anything `blindspot.data.sources.load_source` reads, optionally named
NAME=SOURCE (otherwise the file name, without its extensions, names it). For each set:

- features: per label (plus non-entailment = neutral + contradiction for 3-way sets, and
  all pairs), the share of pairs that have each HANS heuristic feature
  (`blindspot.heuristics.features` under `--overlap-rule`, default `paper`; constituent is n/a
  where no parser is installed), and the
  share of entailment among the pairs that have the feature (vs. the overall entailment share);
- lengths: mean premise and hypothesis length in words, and the mean over pairs of
  hypothesis words / premise words;
- diversity: distinct-n (n = 1, 2, 3) of hypotheses and of premises = unique n-grams / total
  n-grams, n-grams taken within each text (over `heuristics.words`, never across texts) and
  pooled over every pair in the set (a premise shared by several pairs counts each time).
  It falls as a set grows, so it is also reported on a seeded random subsample of
  min(set sizes) pairs of every set, which makes sets of different sizes comparable;
- duplicates: 1 - unique / pairs for exact (premise, hypothesis) pairs, premises and hypotheses.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence


from blindspot import heuristics
from blindspot.data.example import HANS_LABELS, MNLI_LABELS, NLIExample, NLISet, to_two_way
from blindspot.errors import ConfigError
from blindspot.progress import track
from blindspot.runmeta import run_metadata
from blindspot.storage import atomic_write_json

log = logging.getLogger(__name__)

NGRAM_ORDERS = (1, 2, 3)
METHOD = {
    "feature_share": "share of the group's pairs whose blindspot.heuristics feature is true",
    "entailment_share_with": "share of entailment among the pairs that have the feature",
    "hypothesis_premise_ratio": "mean over pairs (with a non-empty premise) of hypothesis words / premise words",
    "distinct_n": "unique n-grams / total n-grams; n-grams within each text over heuristics.words, "
                  "pooled over all pairs; 'subsample' is a random.Random(seed) sample of "
                  "min(set sizes) pairs from each set",
    "duplicates": "1 - unique / pairs, exact string match (pairs: premise and hypothesis together)",
}


def label_order(examples: Sequence[NLIExample]) -> tuple[str, ...]:
    """The label space the examples use: MNLI's or HANS's order when they fit, else sorted."""
    seen = {e.label for e in examples}
    for space in (MNLI_LABELS, HANS_LABELS):
        if seen <= set(space):
            return space
    return tuple(sorted(seen))


def _share(num: int, den: int) -> float | None:
    return num / den if den else None


def feature_stats(examples: Sequence[NLIExample], labels: tuple[str, ...], name: str = "",
                  rule: heuristics.OverlapRule = heuristics.DEFAULT_OVERLAP_RULE) -> dict:
    """Per label group, the share of pairs with each feature (under `rule`); entailment share among them."""
    feats = [heuristics.features(e.premise, e.hypothesis, rule=rule)
             for e in track(examples, f"features {name}".strip(), unit="pair", disable=len(examples) < 5000)]
    groups: dict[str, list[int]] = {lab: [] for lab in labels}
    for i, e in enumerate(examples):
        groups.setdefault(e.label, []).append(i)
    if {"neutral", "contradiction"} & set(labels):
        groups["non-entailment"] = [i for i, e in enumerate(examples) if to_two_way(e.label) != "entailment"]
    groups["all"] = list(range(len(examples)))
    entail = [e.label == "entailment" for e in examples]
    names = list(feats[0]) if feats else list(heuristics.features("a", "a"))
    out: dict[str, dict] = {}
    for f in names:
        available = any(d[f] is not None for d in feats)
        with_f = [i for i, d in enumerate(feats) if d[f]]
        out[f] = {
            "available": available,
            "share": {g: _share(sum(1 for i in idx if feats[i][f]), len(idx)) if available else None
                      for g, idx in groups.items()},
            "n_with": len(with_f) if available else None,
            "entailment_share_with": _share(sum(entail[i] for i in with_f), len(with_f)) if available else None,
        }
    return {"groups": {g: len(idx) for g, idx in groups.items()}, "features": out,
            "entailment_share": _share(sum(entail), len(examples))}


def length_stats(p_words: Sequence[list[str]], h_words: Sequence[list[str]]) -> dict:
    """Mean premise / hypothesis words and mean hypothesis/premise ratio."""
    p_len = [len(w) for w in p_words]
    h_len = [len(w) for w in h_words]
    ratios = [h / p for p, h in zip(p_len, h_len) if p > 0]
    return {"premise_words": _share(sum(p_len), len(p_len)), "hypothesis_words": _share(sum(h_len), len(h_len)),
            "hypothesis_premise_ratio": _share(sum(ratios), len(ratios))}


def distinct_tokens(token_lists: Iterable[list[str]], n: int) -> float | None:
    """Unique n-grams / total n-grams, n-grams within each token list; None when there are none."""
    grams: Counter = Counter()
    for w in token_lists:
        grams.update(tuple(w[i:i + n]) for i in range(len(w) - n + 1))
    return _share(len(grams), sum(grams.values()))


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """distinct-n of texts, over `heuristics.words`."""
    return distinct_tokens((heuristics.words(t) for t in texts), n)


def diversity(p_words: Sequence[list[str]], h_words: Sequence[list[str]]) -> dict:
    """distinct-1/2/3 of hypotheses and of premises (given as word lists)."""
    return {side: {f"distinct_{n}": distinct_tokens(toks, n) for n in NGRAM_ORDERS}
            for side, toks in (("hypothesis", h_words), ("premise", p_words))}


def duplicate_stats(examples: Sequence[NLIExample]) -> dict:
    """Exact duplicate rates (1 - unique / n) of pairs, premises and hypotheses."""
    n = len(examples)

    def rate(keys: list) -> float | None:
        return _share(n - len(set(keys)), n)

    return {"pairs": rate([(e.premise, e.hypothesis) for e in examples]),
            "premises": rate([e.premise for e in examples]),
            "hypotheses": rate([e.hypothesis for e in examples])}


def audit_sets(sets: Mapping[str, NLISet | Sequence[NLIExample]], seed: int = 0,
               overlap_rule: heuristics.OverlapRule = heuristics.DEFAULT_OVERLAP_RULE) -> dict:
    """The audit of named sets, side by side, as a JSON-serialisable dict; features under `overlap_rule`."""
    if not sets:
        raise ConfigError("audit needs at least one set")
    heuristics.check_rule(overlap_rule)
    k = min(len(s) for s in sets.values())
    out: dict[str, dict] = {}
    for name, s in sets.items():
        start = time.perf_counter()
        examples = list(s.examples if isinstance(s, NLISet) else s)
        labels = s.labels if isinstance(s, NLISet) else label_order(examples)
        p_words = [heuristics.words(e.premise) for e in examples]
        h_words = [heuristics.words(e.hypothesis) for e in examples]
        sub = random.Random(seed).sample(range(len(examples)), k)  # fresh RNG per set: order-free
        out[name] = {
            "n": len(examples),
            "labels": list(labels),
            "label_counts": {lab: sum(e.label == lab for e in examples) for lab in labels},
            **feature_stats(examples, labels, name, overlap_rule),
            "lengths": length_stats(p_words, h_words),
            "diversity": {"full": diversity(p_words, h_words),
                          "subsample": diversity([p_words[i] for i in sub], [h_words[i] for i in sub])},
            "duplicates": duplicate_stats(examples),
        }
        seconds = time.perf_counter() - start
        log.info("audited %s: %d pairs in %.1fs (%.0f pairs/s)", name, len(examples), seconds,
                 len(examples) / max(seconds, 1e-9))
    return {"sets": out, "subsample_size": k, "seed": seed, "overlap_rule": overlap_rule,
            "method": {**METHOD, "overlap_rule": heuristics.RULE_TEXT[overlap_rule]}}


def load_named_sets(specs: Sequence[str]) -> tuple[dict[str, NLISet], dict[str, str]]:
    """Load [NAME=]SOURCE specs (blindspot.data.source_args syntax); names must be unique."""
    from blindspot.data.source_args import default_set_name, parse_named_source, source_text
    from blindspot.data.sources import load_source

    sets: dict[str, NLISet] = {}
    where: dict[str, str] = {}
    for spec in specs:
        name, src = parse_named_source(spec, "source")
        loaded = load_source(src)
        name = name or (loaded.name if src.hub is not None else default_set_name(src))
        source = source_text(src)
        if name in sets:
            raise ConfigError(f"two sets are named {name!r} ({where[name]} and {source}); "
                              f"name them with NAME=SOURCE")
        sets[name], where[name] = loaded, source
    return sets, where


def run_audit(specs: Sequence[str], seed: int = 0, out: str | Path | None = None,
              overlap_rule: heuristics.OverlapRule = heuristics.DEFAULT_OVERLAP_RULE) -> dict:
    """Load and audit the sources; write the JSON (with run metadata) to `out` if given."""
    sets, where = load_named_sets(specs)
    result = {**audit_sets(sets, seed=seed, overlap_rule=overlap_rule), "sources": where, "meta": run_metadata()}
    if out is not None:
        atomic_write_json(out, result)
        log.info("wrote %s", out)
    return result


# ---- rendering: one list of rows feeds both the Rich table and the Markdown table

def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _with_cell(set_audit: dict, feature: str) -> str:
    """'entailment % (n=pairs with the feature)', or n/a when the feature is unavailable."""
    d = set_audit["features"].get(feature)
    if d is None or not d["available"]:
        return "n/a"
    return f"{_pct(d['entailment_share_with'])} (n={d['n_with']:,})"


def audit_rows(audit: dict) -> list[tuple[str, str, list[str]]]:
    """(section, metric, one cell per set) rows of the side-by-side table."""
    sets = list(audit["sets"].values())
    groups = list(dict.fromkeys(g for s in sets for g in s["groups"]))
    features = list(dict.fromkeys(f for s in sets for f in s["features"]))
    rows: list[tuple[str, str, list[str]]] = [("size", "pairs", [f"{s['n']:,}" for s in sets])]
    rows += [("size", f"{g} pairs", [f"{s['groups'][g]:,}" if g in s["groups"] else "–" for s in sets])
             for g in groups if g != "all"]
    for f in features:
        if not any(s["features"].get(f, {}).get("available") for s in sets):
            rows.append(("features", f"{f} (unavailable here)", ["n/a"] * len(sets)))
            continue
        rows += [("features", f"{f}: % of {g} pairs",
                  [_pct(s["features"][f]["share"].get(g)) if f in s["features"] else "–" for s in sets])
                 for g in groups]
        rows.append(("features", f"entailment % among {f} pairs", [_with_cell(s, f) for s in sets]))
    rows.append(("features", "entailment % among all pairs", [_pct(s["entailment_share"]) for s in sets]))
    rows += [("lengths", "premise words (mean)", [_num(s["lengths"]["premise_words"], 1) for s in sets]),
             ("lengths", "hypothesis words (mean)", [_num(s["lengths"]["hypothesis_words"], 1) for s in sets]),
             ("lengths", "hypothesis / premise words (mean)",
              [_num(s["lengths"]["hypothesis_premise_ratio"], 2) for s in sets])]
    for scope, label in (("full", "all pairs"), ("subsample", f"{audit['subsample_size']:,} pairs")):
        for side, plural in (("hypothesis", "hypotheses"), ("premise", "premises")):
            rows += [("diversity", f"distinct-{n} {plural} ({label})",
                      [_num(s["diversity"][scope][side][f"distinct_{n}"], 3) for s in sets])
                     for n in NGRAM_ORDERS]
    rows += [("duplicates", f"duplicate {k}", [_pct(s["duplicates"][k]) for s in sets])
             for k in ("pairs", "premises", "hypotheses")]
    return rows


def audit_markdown(audit: dict) -> str:
    """The audit as a Markdown table (for the report), with how distinct-n was computed."""
    names = list(audit["sets"])
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {metric} | " + " | ".join(cells) + " |" for _, metric, cells in audit_rows(audit)]
    rule = audit.get("overlap_rule")
    lines += ["", f"Heuristic features under the overlap rule {rule!r} "
                  f"({heuristics.RULE_TEXT.get(rule, 'unrecorded')}). "
                  f"distinct-n: {audit['method']['distinct_n']} (seed {audit['seed']}). "
                  f"Duplicates: {audit['method']['duplicates']}."]
    return "\n".join(lines) + "\n"


def print_rich(audit: dict) -> None:
    """The audit as a Rich table on stdout, one column per set."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"NLI set audit (overlap rule: {audit.get('overlap_rule')})", show_lines=False)
    table.add_column("metric", style="bold", no_wrap=True)
    for name in audit["sets"]:
        table.add_column(name, justify="right")
    section = None
    for sec, metric, cells in audit_rows(audit):
        if section is not None and sec != section:
            table.add_section()
        section = sec
        table.add_row(metric, *cells)
    Console().print(table)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blindspot.data.source_args import SOURCE_SYNTAX

    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help=f"NLI sets to audit, [NAME=]SOURCE; SOURCE: {SOURCE_SYNTAX}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the equal-size subsample for distinct-n")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print the audit as JSON instead of a table")
    shown.add_argument("--markdown", action="store_true", help="print a Markdown table instead of a Rich table")
    parser.add_argument("--out", type=Path, default=None, help="also write the audit JSON to this file")
    parser.add_argument("--overlap-rule", choices=heuristics.OVERLAP_RULES, default=heuristics.DEFAULT_OVERLAP_RULE,
                        help="tokens the heuristic features compare: paper (the reference's; default) or words")


def main(args: argparse.Namespace) -> int:
    audit = run_audit(args.sources, seed=args.seed, out=args.out, overlap_rule=args.overlap_rule)
    if args.json:
        json.dump(audit, sys.stdout, indent=2, default=str)
        print()
    elif args.markdown:
        print(audit_markdown(audit), end="")
    else:
        print_rich(audit)
    return 0
