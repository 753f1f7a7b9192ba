"""`blindspot data describe`: label / genre / heuristic counts, cleaning and heuristic prevalence of NLI sets.

    blindspot data describe ../shared/data/mnli-subset/multinli_1.0_train.jsonl.gz --clean
    blindspot data describe ../shared/data/hans-regen/heuristics_evaluation_set.jsonl.gz --json
    blindspot data describe snli_1.0_dev.jsonl       # SNLI has MNLI's columns: recognised with no map
    blindspot data describe "anli=dev.jsonl:premise=context,hypothesis=hypothesis,label=label,id=uid,labels=e:entailment/n:neutral/c:contradiction"

For each set: rows per label, per genre (null genre counted as "null"), per heuristic x
label and per subcase (HANS), rows the loader dropped for want of a gold label, with
--clean what cleaning removes and why (and, for an MNLI train set, the validation / pool
split), and the prevalence of the HANS heuristics per label with the share of entailment
among pairs that have each feature.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter, defaultdict

from blindspot.data.cleaning import clean_mnli, split_validation
from blindspot.data.example import NLISet
from blindspot.data.sources import DataSource, load_source
from blindspot.errors import ConfigError
from blindspot import heuristics

log = logging.getLogger(__name__)
FEATURES = ("lexical_overlap", "subsequence", "constituent")


def heuristic_prevalence(s: NLISet) -> dict:
    """Share of each label's pairs with each feature, and share of entailment among pairs with it."""
    per_label: dict[str, Counter] = defaultdict(Counter)
    with_feature: Counter = Counter()
    entail_with: Counter = Counter()
    for e in s.examples:
        f = heuristics.features(e.premise, e.hypothesis)
        per_label[e.label]["n"] += 1
        for k in FEATURES:
            if f[k]:
                per_label[e.label][k] += 1
                with_feature[k] += 1
                entail_with[k] += e.label == "entailment"
    avail = {k: k != "constituent" or heuristics.CONSTITUENT_AVAILABLE for k in FEATURES}
    by_label = {lab: {"n": c["n"], **{k: (c[k] / c["n"] if c["n"] and avail[k] else None) for k in FEATURES}}
                for lab, c in ((lab, per_label[lab]) for lab in dict.fromkeys([*s.labels, *per_label]))}
    entail = {k: {"n": with_feature[k] if avail[k] else None,
                  "entailment_share": entail_with[k] / with_feature[k] if avail[k] and with_feature[k] else None}
              for k in FEATURES}
    return {"by_label": by_label, "entailment_among": entail, "overlap_rule": heuristics.DEFAULT_OVERLAP_RULE}


def describe_set(s: NLISet, clean: bool = False, validation_per_label: int = 250, seed: int = 0) -> dict:
    """Counts (and optional cleaning) of one loaded set, as a JSON-ready dict."""
    out: dict = {"name": s.name, "source": s.source, "kind": s.meta.get("kind"), "rows": len(s),
                 "labels": s.label_counts(), "dropped_no_gold_by_loader": s.meta.get("dropped_no_gold", 0)}
    if s.meta.get("kind") == "mnli" or any(e.genre for e in s):
        out["genres"] = dict(sorted(Counter(e.genre or "null" for e in s).items()))
    if any(e.heuristic for e in s):
        hx: dict[str, Counter] = defaultdict(Counter)
        for e in s:
            hx[e.heuristic or "null"][e.label] += 1
        out["heuristic_x_label"] = {h: {lab: c.get(lab, 0) for lab in s.labels} for h, c in sorted(hx.items())}
        sub: dict[str, Counter] = defaultdict(Counter)
        for e in s:
            sub[e.subcase or "null"][e.label] += 1
        out["subcases"] = {k: dict(c) for k, c in sorted(sub.items())}
    if clean:
        s, report = clean_mnli(s)
        out["cleaning"] = report
        if s.meta.get("kind") == "mnli" and s.name.endswith("train"):
            val, pool = split_validation(s, validation_per_label, seed)
            out["validation"] = {"rows": len(val), "labels": val.label_counts(), "per_label": validation_per_label,
                                 "seed": seed}
            out["pool"] = {"rows": len(pool), "labels": pool.label_counts()}
        out["clean_labels"] = s.label_counts()
    out["heuristics_on"] = "cleaned" if clean else "loaded"
    out["heuristics"] = heuristic_prevalence(s)
    return out


def describe(sources: list[DataSource | str], clean: bool = False, validation_per_label: int = 250,
             seed: int = 0) -> dict:
    """Load and describe every source; the report also states whether `constituent` could be computed."""
    sets = [describe_set(load_source(src), clean, validation_per_label, seed) for src in sources]
    return {"sets": sets, "constituent": {"available": heuristics.CONSTITUENT_AVAILABLE,
                                          "reason": None if heuristics.CONSTITUENT_AVAILABLE else heuristics.CONSTITUENT_REASON},
            "tokenisation": heuristics.RULE_TEXT[heuristics.DEFAULT_OVERLAP_RULE]}


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render(report: dict) -> None:
    """Print the report as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for d in report["sets"]:
        t = Table(title=f"{d['name']}  ({d['rows']:,} rows)  {d['source']}", title_justify="left")
        t.add_column("count")
        t.add_column("value", justify="right")
        for lab, n in d["labels"].items():
            t.add_row(f"label {lab}", f"{n:,}")
        t.add_row("dropped by loader: gold label '-'", f"{d['dropped_no_gold_by_loader']:,}")
        for k, v in d.get("cleaning", {}).items():
            t.add_row(f"cleaning: {k}", f"{v:,}")
        for part in ("validation", "pool"):
            if part in d:
                t.add_row(f"{part}", f"{d[part]['rows']:,}  " + " / ".join(f"{n:,}" for n in d[part]["labels"].values()))
        for g, n in d.get("genres", {}).items():
            t.add_row(f"genre {g}", f"{n:,}")
        for h, c in d.get("heuristic_x_label", {}).items():
            t.add_row(f"heuristic {h}", " / ".join(f"{lab} {n:,}" for lab, n in c.items()))
        for sc, c in d.get("subcases", {}).items():
            t.add_row(f"subcase {sc}", " / ".join(f"{lab} {n:,}" for lab, n in c.items()))
        console.print(t)
        h = Table(title=f"{d['name']}: heuristic prevalence per label", title_justify="left")
        for col in ("label", "n", *FEATURES):
            h.add_column(col, justify="right")
        for lab, r in d["heuristics"]["by_label"].items():
            h.add_row(lab, f"{r['n']:,}", *(_share(r[k]) for k in FEATURES))
        ent = d["heuristics"]["entailment_among"]
        h.add_row("entailment among", "", *(_share(ent[k]["entailment_share"]) for k in FEATURES))
        console.print(h)
    if report["constituent"]["reason"]:
        console.print(f"constituent n/a: {report['constituent']['reason']}")


def _pairs(text: str | None, option: str) -> dict[str, str] | None:
    """'a=b,c=d' -> {'a': 'b', 'c': 'd'} (ConfigError naming the option otherwise)."""
    if text is None:
        return None
    out = {}
    for item in text.split(","):
        k, sep, v = item.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise ConfigError(f"{option}: {item!r} is not KEY=VALUE (expected e.g. premise=sentence1,hypothesis=sentence2)")
        out[k.strip()] = v.strip()
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blindspot.data.source_args import SOURCE_SYNTAX

    parser.add_argument("sources", nargs="+", metavar="SOURCE", help=f"[NAME=]SOURCE; SOURCE: {SOURCE_SYNTAX}")
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout instead of tables")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON report to this file")
    parser.add_argument("--clean", action="store_true", help="apply the paper's cleaning and report what it removes")
    parser.add_argument("--validation-per-label", type=int, default=250, metavar="N", help="validation examples held out per label (with --clean, MNLI train)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the validation split")
    parser.add_argument("--format", choices=("mnli", "hans", "nli"), help="data format of every source; unset = recognised from each file's columns (hub: from the id)")
    parser.add_argument("--columns", metavar="MAP", help="nli column map of every source, FIELD=COLUMN,... (fields premise, hypothesis, label, id, genre, heuristic, subcase, template); a source's own :KEY=VALUE options win")
    parser.add_argument("--label-map", metavar="MAP", help="nli label map of every source, RAW:LABEL/... or RAW=LABEL,... (e.g. e:entailment/n:neutral/c:contradiction)")
    parser.add_argument("--labels", metavar="LABELS", help="nli label space, comma-separated; unset = MNLI's (HANS's if the label map yields only those)")


def main(args: argparse.Namespace) -> int:
    from blindspot.data.source_args import parse_label_map, parse_named_source

    columns = _pairs(args.columns, "--columns")
    label_map = parse_label_map(args.label_map, "--label-map") if args.label_map else None
    space = [x.strip() for x in args.labels.split(",")] if args.labels else None
    shared = {k: v for k, v in {"format": args.format, "columns": columns, "labels": label_map,
                                "label_space": space}.items() if v is not None}
    sources = []
    for text in args.sources:
        name, src = parse_named_source(text, "source")
        given = src.model_dump(exclude_defaults=True)
        fields = {**shared, **given, **({"name": name} if name else {})}
        sources.append(DataSource.model_validate(fields) if fields != given else src)
    report = describe(sources, args.clean, args.validation_per_label, args.seed)
    if args.out:
        from blindspot.storage import atomic_write_json

        atomic_write_json(args.out, report)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(report)
    return 0
