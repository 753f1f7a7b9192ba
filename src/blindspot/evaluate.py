"""Evaluate a classifier on NLI sets: accuracies with Wilson intervals, per-example predictions.

    blindspot evaluate runs/classifier-abc \
        --set mnli_m=../shared/data/mnli-subset/multinli_1.0_dev_matched.jsonl.gz \
        --set hans=../shared/data/hans-regen/heuristics_evaluation_set.jsonl.gz \
        --out runs/eval-abc --per-subcase 20 --per-label 100

Writes OUT/metrics.json, OUT/predictions/<set>.jsonl, OUT/meta.json and, last, OUT/DONE.
A set's kind (mnli | hans | nli) is inferred from its format and label space: MNLI-labelled
sets are scored 3-way (plus the 2-way fold), entailment/non-entailment sets 2-way with the
classifier's neutral and contradiction counted as non-entailment. A set with labels the
classifier cannot map is refused before anything runs.

Speed (blindspot.predict): every set is tokenised once; the template's shared prefix (e.g. the
paper's instruction) runs through the model once and its key/value cache is reused by every
batch, so each batch computes only its per-example suffix; batches are sorted by length (least
padding) and the results put back in the original order; everything runs under
torch.inference_mode.

Lexical overlap: on sets whose pairs carry no `heuristic` field (MNLI, any general task), each
prediction row records `lexical_overlap` (every hypothesis token among the premise tokens,
under the named `--overlap-rule`, default `paper`; see blindspot.heuristics), and the metrics
add the slices `lexical_overlap=yes|no` and `lexical_overlap=yes|no,label=...`. metrics.json
and meta.json record the rule. HANS-like sets are sliced by their own `heuristic` field.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from blindspot import heuristics
from blindspot.data.example import HANS_LABELS, MNLI_LABELS, NLIExample, NLISet, to_two_way
from blindspot.errors import ConfigError, DataError
from blindspot.mfu import inference_mfu
from blindspot.predict import predict_proba
from blindspot.reliance import overlap_flags as overlap_by_rule
from blindspot.runmeta import Facts, finish_standalone, now
from blindspot.stats import accuracy_row
from blindspot.storage import atomic_write_json, atomic_write_jsonl, is_done

log = logging.getLogger(__name__)

SetKind = Literal["mnli", "hans", "nli"]
_SET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_TWO_WAY = frozenset(HANS_LABELS)


# --- label spaces and scoring ---------------------------------------------------------------

def set_kind(nli_set: NLISet) -> SetKind:
    """mnli | hans | nli, from the loader's recorded format, else from labels and fields."""
    meta = nli_set.meta if isinstance(nli_set.meta, dict) else {}
    for key in ("kind", "format"):
        if meta.get(key) in ("mnli", "hans", "nli"):
            return meta[key]
    labels = set(nli_set.labels)
    if labels <= _TWO_WAY and nli_set.examples and all(e.heuristic for e in nli_set.examples):
        return "hans"
    if labels == set(MNLI_LABELS) and any(e.genre for e in nli_set.examples):
        return "mnli"
    return "nli"


def is_two_way(nli_set: NLISet, classifier_labels: Sequence[str]) -> bool:
    """Whether predictions are folded to entailment/non-entailment; DataError if unmappable."""
    gold = set(nli_set.labels) | {e.label for e in nli_set.examples}
    if gold <= set(classifier_labels):
        return False
    if gold <= _TWO_WAY and "entailment" in classifier_labels:
        return True
    bad = sorted(gold - set(classifier_labels) - _TWO_WAY) or sorted(gold - set(classifier_labels))
    raise DataError(f"set {nli_set.name!r} ({nli_set.source or 'in memory'}): label(s) {', '.join(map(repr, bad))} "
                    f"cannot be mapped to the classifier's labels ({', '.join(classifier_labels)}) nor to "
                    "entailment/non-entailment")


def _label_key(label: str) -> tuple[int, str]:
    order = MNLI_LABELS + HANS_LABELS[1:]
    return (order.index(label) if label in order else len(order), label)


def overlap_flags(examples: Sequence[NLIExample],
                  rule: heuristics.OverlapRule = heuristics.DEFAULT_OVERLAP_RULE) -> list[bool] | None:
    """Lexical overlap of each pair under `rule`; None for HANS-like sets (their `heuristic` field slices them)."""
    heuristics.check_rule(rule)
    if any(e.heuristic for e in examples):
        return None
    return [heuristics.lexical_overlap(e.premise, e.hypothesis, rule) for e in examples]


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _slices(examples: Sequence[NLIExample], two_way: bool,
            overlap: Sequence[bool] | None = None) -> list[tuple[str, list[int]]]:
    """(slice name, example indices) in report order; empty slices are left out."""
    def group(key) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, e in enumerate(examples):
            k = key(e)
            if k is not None:
                out.setdefault(k, []).append(i)
        return out

    by_label = group(lambda e: e.label)
    slices = [("all", list(range(len(examples))))]
    if not two_way:
        slices.append(("2way", list(range(len(examples)))))
    slices += [(f"label={k}", by_label[k]) for k in sorted(by_label, key=_label_key)]
    by_heuristic = group(lambda e: e.heuristic)
    for h in sorted(by_heuristic):
        slices.append((f"heuristic={h}", by_heuristic[h]))
        hl = group(lambda e: e.label if e.heuristic == h else None)
        slices += [(f"heuristic={h},label={k}", hl[k]) for k in sorted(hl, key=_label_key)]
    for field in ("subcase", "genre"):
        g = group(lambda e: getattr(e, field))
        slices += [(f"{field}={k}", g[k]) for k in sorted(g)]
    if overlap is not None:
        for flag in (True, False):
            idx = [i for i, f in enumerate(overlap) if f is flag]
            if idx:
                slices.append((f"lexical_overlap={_yes_no(flag)}", idx))
            slices += [(f"lexical_overlap={_yes_no(flag)},label={k}", [i for i in by_label[k] if overlap[i] is flag])
                       for k in sorted(by_label, key=_label_key) if any(overlap[i] is flag for i in by_label[k])]
    return slices


def score(examples: Sequence[NLIExample], pred_labels: Sequence[str], set_kind: SetKind,
          two_way: bool | None = None, overlap: Sequence[bool] | None = None) -> list[dict]:
    """Metric rows (slice, correct, n, accuracy, Wilson 95 % interval) of classifier predictions.

    `pred_labels` are in the classifier's (3-way) label space; for 2-way sets (HANS, or
    `two_way=True`) they are folded to entailment/non-entailment before comparing. The "2way"
    slice of a 3-way set folds both gold and predicted labels. `overlap` (see overlap_flags)
    adds the lexical_overlap=yes|no slices.
    """
    assert len(examples) == len(pred_labels)
    if two_way is None:
        two_way = set_kind == "hans" or any(e.label == HANS_LABELS[1] for e in examples)
    preds = [to_two_way(p) if two_way else p for p in pred_labels]
    correct = np.array([p == e.label for p, e in zip(preds, examples)], dtype=bool)
    folded = np.array([to_two_way(p) == to_two_way(e.label) for p, e in zip(preds, examples)], dtype=bool)
    rows = []
    for name, idx in _slices(examples, two_way, overlap):
        hits = folded[idx] if name == "2way" else correct[idx]
        rows.append(accuracy_row(name, int(hits.sum()), len(idx)))
    return rows


def prediction_rows(examples: Sequence[NLIExample], probs: np.ndarray, classifier_labels: Sequence[str],
                    two_way: bool, overlap: Sequence[bool] | None = None) -> list[dict]:
    """Per-example rows: id, gold, pred, pred_eval, correct, probs (+ heuristic, subcase, genre, lexical_overlap;
    rows without a heuristic also get `overlap`: full lexical overlap under every rule, for blindspot.reliance)."""
    rows = []
    for i, (e, p) in enumerate(zip(examples, probs)):
        pred = classifier_labels[int(np.argmax(p))]
        pred_eval = to_two_way(pred) if two_way else pred
        row: dict[str, Any] = {"id": e.id, "gold": e.label, "pred": pred, "pred_eval": pred_eval,
                               "correct": pred_eval == e.label, "probs": [round(float(x), 6) for x in p]}
        for field in ("heuristic", "subcase", "genre"):
            if getattr(e, field) is not None:
                row[field] = getattr(e, field)
        if overlap is not None:
            row["lexical_overlap"] = bool(overlap[i])
        if e.heuristic is None:  # the reliance measure's baseline, recomputable under either rule
            row["overlap"] = overlap_by_rule(e.premise, e.hypothesis)
        rows.append(row)
    return rows


# --- the stage ------------------------------------------------------------------------------

def _load_sets(sets: Mapping[str, Any]) -> dict[str, NLISet]:
    """Load every set (a load_source SOURCE, a DataSource or an NLISet); names must be file-safe."""
    out = {}
    for name, src in sets.items():
        if not _SET_NAME.match(name):
            raise ConfigError(f"--set name {name!r}: use letters, digits, '_', '.', '-' only")
        if isinstance(src, NLISet):
            out[name] = src
        else:
            from blindspot.data.sources import load_source

            out[name] = load_source(src)
    return out


def _subsample(name: str, s: NLISet, kind: SetKind, per_subcase: int | None, per_label: int | None,
               seed: int) -> tuple[NLISet, dict | None]:
    """Seeded stratified subsample: k per subcase for HANS-like sets, k per label otherwise."""
    has_subcase = bool(s.examples) and all(e.subcase for e in s.examples)
    key, k = ("subcase", per_subcase) if kind == "hans" or has_subcase else ("label", per_label)
    if k is None:
        return s, None
    if k < 1:
        raise ConfigError(f"--per-{'subcase' if key == 'subcase' else 'label'} must be >= 1, got {k}")
    from blindspot.data.cleaning import stratified_sample

    sub = stratified_sample(s, k, key=key, seed=seed)
    log.info("set %s: subsampled %d of %d examples (%d per %s, seed %d)", name, len(sub), len(s), k, key, seed)
    return sub, {"key": key, "per_group": k, "seed": seed, "n_full": len(s)}


def _source_label(src, name: str) -> str:
    """How a set's source is recorded in the spec: its path / command-line text."""
    if isinstance(src, NLISet):
        return src.source or name
    from blindspot.data.source_args import source_text
    from blindspot.data.sources import DataSource

    return source_text(src) if isinstance(src, DataSource) else str(src)


def _resolve_classifier(classifier, device: str, dtype: str):
    """A Classifier as is, or load one from its directory (on `device`, in `dtype`)."""
    if isinstance(classifier, (str, Path)):
        from blindspot.training.classifier import load_classifier

        return load_classifier(Path(classifier), device=device, dtype=dtype)
    return classifier


def _check_out_dir(out_dir: Path, spec: dict) -> bool:
    """True if `out_dir` already holds this very evaluation; error if it holds another one."""
    if not is_done(out_dir):
        return False
    import json

    meta_path = out_dir / "meta.json"
    previous = json.loads(meta_path.read_text()).get("spec") if meta_path.is_file() else None
    if previous != spec:
        raise ConfigError(f"{out_dir}: holds a finished evaluation with a different spec "
                          "(choose another --out, or delete it)")
    return True


def evaluate(classifier, sets: Mapping[str, Any], out_dir: str | Path, batch_size: int = 32,
             per_subcase: int | None = None, per_label: int | None = None, seed: int = 0,
             device: str = "auto", max_length: int | None = None,
             overlap_rule: heuristics.OverlapRule = heuristics.DEFAULT_OVERLAP_RULE, dtype: str = "auto") -> Path:
    """Evaluate `classifier` (a directory or a loaded Classifier) on named sets into `out_dir`, the
    directory this call owns (metrics.json, predictions/, meta.json, DONE); returns `out_dir`. A
    finished evaluation with this spec is kept.

    max_length None = the classifier's training max_length (512 if it has none). `overlap_rule`
    decides the lexical_overlap slices of general-task sets. `dtype` (auto, float32, bfloat16,
    float16) is the dtype a classifier directory is loaded in; a loaded Classifier keeps its own.
    """
    started = now()
    facts = evaluate_into(classifier, sets, out_dir, batch_size, per_subcase, per_label, seed, device, max_length,
                          overlap_rule, dtype, keep_done=True)
    if facts is not None:
        finish_standalone(out_dir, facts, started)
    return Path(out_dir)


def evaluate_into(classifier, sets: Mapping[str, Any], out_dir: str | Path, batch_size: int = 32,
                  per_subcase: int | None = None, per_label: int | None = None, seed: int = 0,
                  device: str = "auto", max_length: int | None = None,
                  overlap_rule: heuristics.OverlapRule = heuristics.DEFAULT_OVERLAP_RULE,
                  dtype: str = "auto", *, keep_done: bool = False) -> Facts | None:
    """`evaluate`'s work: metrics.json and predictions/ into `out_dir`; returns the facts for its
    meta.json (the evaluation's spec, model, device, dtype, wall_s, throughput per set, MFU). No
    meta.json, no DONE: the directory's owner writes them (the grid's store, or `evaluate`).
    `keep_done`: None, doing nothing, if `out_dir` holds this very evaluation already."""
    out_dir = Path(out_dir)
    if not sets:
        raise ConfigError("no evaluation sets given (use --set NAME=SOURCE)")
    loaded = _load_sets(sets)
    spec = {"classifier": str(classifier if isinstance(classifier, (str, Path)) else classifier.path),
            "sets": {n: _source_label(src, n) for n, src in sets.items()},
            "batch_size": batch_size, "per_subcase": per_subcase, "per_label": per_label, "seed": seed,
            "max_length": max_length, "overlap_rule": heuristics.check_rule(overlap_rule), "dtype": dtype}
    if keep_done and _check_out_dir(out_dir, spec):
        log.info("%s: already done", out_dir)
        return None
    clf = _resolve_classifier(classifier, device, dtype)
    info = getattr(clf, "spec", None) or {}
    if max_length is None:
        max_length = int(info.get("max_length") or 512)
    labels = tuple(clf.labels)
    plan = {}
    for name, s in loaded.items():  # every set is checked before any compute
        kind = set_kind(s)
        two_way = is_two_way(s, labels)
        plan[name] = (kind, two_way, *_subsample(name, s, kind, per_subcase, per_label, seed))

    started, report, timing, flops = time.perf_counter(), {}, {}, {}
    for name, (kind, two_way, s, sub_info) in plan.items():
        t0 = time.perf_counter()
        probs = predict_proba(clf.model, clf.tokenizer, clf.template, s.examples, batch_size=batch_size,
                              max_length=max_length, desc=name, flops=flops)
        seconds = time.perf_counter() - t0
        overlap = overlap_flags(s.examples, overlap_rule)
        rows = prediction_rows(s.examples, probs, labels, two_way, overlap)
        atomic_write_jsonl(out_dir / "predictions" / f"{name}.jsonl", rows)
        metrics = score(s.examples, [r["pred"] for r in rows], kind, two_way=two_way, overlap=overlap)
        report[name] = {"kind": kind, "n": len(s), "two_way": two_way, "source": s.source,
                        "subsample": sub_info, "metrics": metrics}
        timing[name] = {"n": len(s), "seconds": round(seconds, 3),
                        "examples_per_s": round(len(s) / seconds, 2) if seconds > 0 else None}
        log.info("set %s (%s): accuracy %.4f on %d examples, %.1f examples/s", name, kind,
                 metrics[0]["accuracy"] if metrics else float("nan"), len(s), timing[name]["examples_per_s"] or 0)

    wall = time.perf_counter() - started
    total = sum(t["n"] for t in timing.values())
    dtype = next(clf.model.parameters()).dtype
    mfu = inference_mfu(flops["shape"], flops["model_flops"], flops["tokens"],
                        sum(t["seconds"] for t in timing.values()), clf.device, dtype) if flops else None
    eps = round(total / wall, 2) if wall > 0 else None
    atomic_write_json(out_dir / "metrics.json", {
        "sets": report, "classifier": spec["classifier"], "examples_per_s": eps, "overlap_rule": overlap_rule,
        "subsample": {"per_subcase": per_subcase, "per_label": per_label, "seed": seed}})
    model_name = (info.get("base") or {}).get("name") or (info.get("spec") or {}).get("model") or info.get("model")
    log.info("evaluation of %d examples in %.1f s (%.1f examples/s) -> %s", total, wall, eps or 0, out_dir)
    return {"stage": "evaluate", "spec": spec, "classifier": info, "model": model_name, "max_length": max_length,
            "overlap_rule": overlap_rule, "device": str(getattr(clf, "device", "")),
            "dtype": str(dtype).removeprefix("torch."), "wall_s": round(wall, 3), "examples": total,
            "examples_per_s": eps, "sets": timing, "mfu": mfu}


# --- command line ---------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blindspot.data.source_args import SOURCE_SYNTAX

    parser.add_argument("classifier", help="directory of a trained classifier (train-classifier output)")
    parser.add_argument("--set", dest="sets", action="append", required=True, metavar="[NAME=]SOURCE",
                        help=f"an evaluation set; SOURCE: {SOURCE_SYNTAX}; repeat for several sets")
    parser.add_argument("--out", required=True, help="output directory (metrics.json, predictions/, meta.json, DONE)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="most examples per forward pass (long examples run in smaller batches)")
    parser.add_argument("--per-subcase", type=_positive_int, default=None,
                        help="quick run: evaluate only K examples per HANS subcase (seeded)")
    parser.add_argument("--per-label", type=_positive_int, default=None,
                        help="quick run: evaluate only K examples per gold label of non-HANS sets (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subsampling")
    parser.add_argument("--max-length", type=_positive_int, default=None,
                        help="longest input in tokens (premise cut first); default: the classifier's training value")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA and on CPUs with native bf16, "
                        "else fp32) | float32 | bfloat16 | float16")
    parser.add_argument("--overlap-rule", choices=heuristics.OVERLAP_RULES, default=heuristics.DEFAULT_OVERLAP_RULE,
                        help="tokens of the lexical_overlap slices of general-task sets: paper (default) or words")


def main(args: argparse.Namespace) -> int:
    from blindspot.data.source_args import default_set_name, parse_named_source

    sets: dict[str, Any] = {}
    for text in args.sets:
        name, source = parse_named_source(text, "--set")
        name = name or default_set_name(source)
        if name in sets:
            raise ConfigError(f"--set {text!r}: the name {name!r} is used twice")
        sets[name] = source
    out = evaluate(args.classifier, sets, args.out, batch_size=args.batch_size, per_subcase=args.per_subcase,
                   per_label=args.per_label, seed=args.seed, device=args.device, max_length=args.max_length,
                   overlap_rule=args.overlap_rule, dtype=args.dtype)
    print(out / "metrics.json")
    return 0
