"""HANS (McCoy et al., 2019): heuristics_{evaluation,train}_set .txt / .jsonl (plain or .gz) and the hub copy.

    python -c "from blindspot.data.hans import load_hans; print(load_hans('../shared/data/hans-regen/heuristics_evaluation_set.jsonl.gz').label_counts())"

Files: tab-separated with a header (gold_label, sentence1_binary_parse, sentence2_binary_parse,
sentence1_parse, sentence2_parse, sentence1, sentence2, pairID, heuristic, subcase, template),
or JSONL with the same field names. Hub: `hans` / `jhu-cogsci/hans` (premise, hypothesis,
label 0 = entailment, 1 = non-entailment, heuristic, subcase, template; splits train and
validation, the latter being the evaluation set). Hub rows have no pairID; they get the
official ids `ex0`, `ex1`, ... in file order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from blindspot.data.example import HANS_LABELS, NLISet
from blindspot.data.generic import rows_to_set
from blindspot.data.readers import Row, iter_hub_rows, iter_rows, resolve_path

HUB_ID = "hans"
HUB_SPLITS = ("train", "validation")
HEURISTICS = ("lexical_overlap", "subsequence", "constituent")
FILE_COLUMNS = {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label", "id": "pairID",
                "heuristic": "heuristic", "subcase": "subcase", "template": "template"}
HUB_COLUMNS = {**FILE_COLUMNS, "premise": "premise", "hypothesis": "hypothesis", "label": "label"}
HUB_LABELS = {"0": "entailment", "1": "non-entailment"}
REQUIRED = ("premise", "hypothesis", "label", "heuristic", "subcase")


def split_name(text: str) -> str:
    """'hans-eval' for the evaluation set (hub: validation), 'hans-train' for the train set."""
    t = text.lower()
    return "hans-train" if "train" in t else "hans-eval"


def load_hans(path: str | os.PathLike, name: str | None = None) -> NLISet:
    """Load a HANS heuristics_*_set .txt/.tsv/.jsonl file, plain or .gz."""
    p = resolve_path(path)
    name = name or split_name(p.name)
    return rows_to_set(iter_rows(p), str(p), name, FILE_COLUMNS, HANS_LABELS, required=REQUIRED,
                       meta={"kind": "hans", "format": "hans", "path": str(p), "split": name})


def _with_ids(rows: Iterator[Row]) -> Iterator[Row]:
    """Give hub rows the official pairIDs ex0, ex1, ... when they have none."""
    for i, row in rows:
        yield i, row if "pairID" in row else {**row, "pairID": f"ex{i - 1}"}


def load_hans_hub(split: str, hub_id: str = HUB_ID, config: str | None = None, name: str | None = None) -> NLISet:
    """Load one split of the hub HANS (`hans`, `jhu-cogsci/hans`, or a local copy saved by `datasets`)."""
    where = f"hub:{hub_id}:{split}"
    name = name or split_name(split)
    return rows_to_set(_with_ids(iter_hub_rows(hub_id, split, config)), where, name, HUB_COLUMNS, HANS_LABELS,
                       label_map=HUB_LABELS, required=REQUIRED,
                       meta={"kind": "hans", "format": "hans", "hub": hub_id, "split": name})
