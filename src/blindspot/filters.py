"""Filters that keep the pairs on which a HANS heuristic always (or never) works.

    blindspot filter runs/synthetic/synthetic.jsonl --filter biased-lexical-overlap --out runs/biased
    blindspot filter synthetic.jsonl --filter anti-biased-subsequence --out runs/anti --keep-dropped

A *biased* filter is the paper's (Zhang & Pavlick 2025, section 3): keep entailment pairs that
have the heuristic's feature (e.g. every hypothesis word occurs in the premise) and
non-entailment pairs (neutral, contradiction, non-entailment) that do not, so the heuristic
"feature => entailment" is right on every kept pair. An *anti-biased* filter keeps the
opposite: entailment pairs without the feature and non-entailment pairs with it, so the
heuristic is wrong on every kept pair. The features are those of `blindspot.heuristics`,
under a named tokenisation rule (`--overlap-rule paper | words`; default `paper`, the
reference implementation's), which the report records.

A filter is a plain function `(examples, rule) -> (kept, dropped, report)`; FILTERS maps names
to them. The output directory holds kept.jsonl (the internal examples JSONL), dropped.jsonl
(only with --keep-dropped), report.json (kept / dropped per label, rule, run metadata) and
DONE, written last.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from blindspot import heuristics
from blindspot.data.example import MNLI_LABELS, NON_ENTAILMENT, NLIExample, save_examples, to_two_way
from blindspot.errors import ConfigError
from blindspot.runmeta import run_metadata
from blindspot.storage import DONE, atomic_write_json, mark_done

log = logging.getLogger(__name__)

FilterResult = tuple[list[NLIExample], list[NLIExample], dict]
FilterFn = Callable[..., FilterResult]  # (examples, rule=DEFAULT_OVERLAP_RULE) -> result
DEFAULT_RULE = heuristics.DEFAULT_OVERLAP_RULE

# Feature name -> the predicate on (premise, hypothesis, rule); constituent returns None when
# no parser is available, which the filters turn into an error (see _require).
FEATURES: dict[str, Callable[[str, str, str], bool | None]] = {
    "lexical_overlap": heuristics.lexical_overlap,
    "subsequence": heuristics.subsequence,
    "constituent": lambda p, h, _rule: heuristics.constituent(p, h),  # parse leaves: always `words`
}


def _require(feature: str) -> None:
    """Raise a clear error when a feature cannot be computed in this installation."""
    if feature == "constituent" and not heuristics.CONSTITUENT_AVAILABLE:
        raise ConfigError(f"the constituent filters need the constituent heuristic, which is "
                          f"unavailable here: {heuristics.CONSTITUENT_REASON}")


def _rule(feature: str, biased: bool) -> str:
    """The keep rule in words, stored in the report."""
    if biased:
        return (f"keep entailment pairs with {feature} and non-entailment pairs without it "
                f"(the heuristic '{feature} => entailment' is always right)")
    return (f"keep entailment pairs without {feature} and non-entailment pairs with it "
            f"(the heuristic '{feature} => entailment' is always wrong)")


def heuristic_filter(examples: Sequence[NLIExample], feature: str, biased: bool,
                     rule: heuristics.OverlapRule = DEFAULT_RULE) -> FilterResult:
    """Split examples by whether the heuristic `feature => entailment` is right (biased) or wrong."""
    if feature not in FEATURES:
        raise ConfigError(f"unknown heuristic feature {feature!r} (expected one of {', '.join(FEATURES)})")
    heuristics.check_rule(rule)
    _require(feature)
    predicate = FEATURES[feature]
    kept: list[NLIExample] = []
    dropped: list[NLIExample] = []
    for ex in examples:
        has = predicate(ex.premise, ex.hypothesis, rule)
        assert has is not None, f"{feature} unavailable although CONSTITUENT_AVAILABLE is set"
        heuristic_right = has == (to_two_way(ex.label) == "entailment")
        (kept if heuristic_right == biased else dropped).append(ex)
    report = {"feature": feature, "direction": "biased" if biased else "anti-biased",
              "rule": _rule(feature, biased), "overlap_rule": rule,
              "overlap_rule_text": heuristics.RULE_TEXT[rule], **count_report(examples, kept, dropped)}
    return kept, dropped, report


def count_report(examples: Sequence[NLIExample], kept: Sequence[NLIExample],
                 dropped: Sequence[NLIExample]) -> dict:
    """Totals and kept / dropped counts per label (MNLI order, then non-entailment, then others)."""
    c_in = Counter(e.label for e in examples)
    c_kept = Counter(e.label for e in kept)
    c_dropped = Counter(e.label for e in dropped)
    order = [lab for lab in (*MNLI_LABELS, NON_ENTAILMENT) if lab in c_in]
    order += [lab for lab in c_in if lab not in order]
    per_label = {lab: {"in": c_in[lab], "kept": c_kept[lab], "dropped": c_dropped[lab]} for lab in order}
    return {"n_in": len(examples), "n_kept": len(kept), "n_dropped": len(dropped), "per_label": per_label}


def biased_lexical_overlap(examples: Sequence[NLIExample],
                           rule: heuristics.OverlapRule = DEFAULT_RULE) -> FilterResult:
    """The paper's filter: entailment with full lexical overlap, non-entailment without."""
    return heuristic_filter(examples, "lexical_overlap", biased=True, rule=rule)


def biased_subsequence(examples: Sequence[NLIExample],
                       rule: heuristics.OverlapRule = DEFAULT_RULE) -> FilterResult:
    """Entailment pairs whose hypothesis is a premise subsequence, non-entailment pairs not."""
    return heuristic_filter(examples, "subsequence", biased=True, rule=rule)


def biased_constituent(examples: Sequence[NLIExample],
                       rule: heuristics.OverlapRule = DEFAULT_RULE) -> FilterResult:
    """Entailment pairs whose hypothesis is a premise constituent, non-entailment pairs not."""
    return heuristic_filter(examples, "constituent", biased=True, rule=rule)


def anti_biased_lexical_overlap(examples: Sequence[NLIExample],
                                rule: heuristics.OverlapRule = DEFAULT_RULE) -> FilterResult:
    """Entailment without full lexical overlap, non-entailment with it."""
    return heuristic_filter(examples, "lexical_overlap", biased=False, rule=rule)


def anti_biased_subsequence(examples: Sequence[NLIExample],
                            rule: heuristics.OverlapRule = DEFAULT_RULE) -> FilterResult:
    """Entailment pairs that are not premise subsequences, non-entailment pairs that are."""
    return heuristic_filter(examples, "subsequence", biased=False, rule=rule)


def anti_biased_constituent(examples: Sequence[NLIExample],
                            rule: heuristics.OverlapRule = DEFAULT_RULE) -> FilterResult:
    """Entailment pairs that are not premise constituents, non-entailment pairs that are."""
    return heuristic_filter(examples, "constituent", biased=False, rule=rule)


FILTERS: dict[str, FilterFn] = {
    "biased-lexical-overlap": biased_lexical_overlap,
    "biased-subsequence": biased_subsequence,
    "biased-constituent": biased_constituent,
    "anti-biased-lexical-overlap": anti_biased_lexical_overlap,
    "anti-biased-subsequence": anti_biased_subsequence,
    "anti-biased-constituent": anti_biased_constituent,
}


def get_filter(name: str) -> FilterFn:
    """The filter called `name`, or a one-line error listing the known names."""
    if name not in FILTERS:
        raise ConfigError(f"unknown filter {name!r} (expected one of {', '.join(FILTERS)})")
    return FILTERS[name]


def load_input(source) -> tuple[list[NLIExample], str]:
    """Examples and a description of where they came from (any `load_source` input)."""
    from blindspot.data.sources import load_source

    nli_set = load_source(source)
    return list(nli_set.examples), nli_set.source or str(source)


def run_filter(source, filter_name: str, out_dir: str | Path, keep_dropped: bool = False,
               overlap_rule: heuristics.OverlapRule = DEFAULT_RULE, write_done: bool = True) -> Path:
    """Filter a set and write kept.jsonl, dropped.jsonl (if asked), report.json and DONE (`write_done`
    False: the caller writes it, as the grid's store does)."""
    fn = get_filter(filter_name)
    fn([], rule=overlap_rule)  # on no pairs: a bad rule or an unavailable feature fails before reading
    out = Path(out_dir)
    start = time.perf_counter()
    examples, where = load_input(source)
    (out / DONE).unlink(missing_ok=True)  # a rerun must not look complete until it is
    kept, dropped, report = fn(examples, rule=overlap_rule)
    seconds = time.perf_counter() - start
    save_examples(out / "kept.jsonl", kept)
    if keep_dropped:
        save_examples(out / "dropped.jsonl", dropped)
    else:
        (out / "dropped.jsonl").unlink(missing_ok=True)  # never leave a stale one beside new results
    report = {"filter": filter_name, "input": where, **report,
              "meta": run_metadata(wall_s=round(seconds, 3),
                                   examples_per_s=round(len(examples) / max(seconds, 1e-9), 1))}
    atomic_write_json(out / "report.json", report)
    if write_done:
        mark_done(out)
    log.info("%s (overlap rule %s): kept %d / %d pairs (%.0f pairs/s) -> %s", filter_name, overlap_rule,
             len(kept), len(examples), len(examples) / max(seconds, 1e-9), out)
    if not kept:
        log.warning("%s kept no pairs from %s", filter_name, where)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blindspot.data.source_args import SOURCE_SYNTAX

    parser.add_argument("input", help=f"NLI set to filter (an examples JSONL, an MNLI/HANS/NLI file); {SOURCE_SYNTAX}")
    parser.add_argument("--filter", required=True, dest="filter_name", metavar="NAME",
                        help=f"which filter: {', '.join(FILTERS)}")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--keep-dropped", action="store_true",
                        help="also write the dropped pairs to dropped.jsonl, for inspection")
    parser.add_argument("--overlap-rule", choices=heuristics.OVERLAP_RULES, default=DEFAULT_RULE,
                        help="tokens the heuristics compare: paper (the reference's whitespace tokens; "
                             "default) or words (punctuation-free words)")


def main(args: argparse.Namespace) -> int:
    out = run_filter(args.input, args.filter_name, args.out, keep_dropped=args.keep_dropped,
                     overlap_rule=args.overlap_rule)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    for label, c in report["per_label"].items():
        print(f"{label:>15}: kept {c['kept']:>7,}  dropped {c['dropped']:>7,}  of {c['in']:>7,}")
    print(f"overlap rule: {report['overlap_rule']}\nwrote {out}")
    return 0
