"""MultiNLI: the official release (multinli_1.0_*.jsonl / .txt), GLUE's MNLI TSVs, and the hub copy.

    python -c "from blindspot.data.mnli import load_mnli; print(load_mnli('../shared/data/mnli-subset/multinli_1.0_dev_matched.jsonl.gz').label_counts())"

Files: official JSONL / .txt (fields gold_label, sentence1, sentence2, pairID, genre, ...) and
GLUE train.tsv / dev_matched.tsv / dev_mismatched.tsv (same column names, tab-separated,
no quoting), plain or .gz. Hub: `nyu-mll/multi_nli` (premise, hypothesis, label 0/1/2 =
entailment/neutral/contradiction, -1 = no gold; splits train, validation_matched,
validation_mismatched). Rows whose gold label is `-` (or -1) are dropped and counted in
`meta["dropped_no_gold"]`, or kept with label "-" when `keep_no_gold=True`.
"""

from __future__ import annotations

import os
from pathlib import Path

from blindspot.data.example import MNLI_LABELS, NLISet
from blindspot.data.generic import rows_to_set
from blindspot.data.readers import iter_hub_rows, iter_rows, resolve_path, table_columns

HUB_ID = "nyu-mll/multi_nli"
HUB_SPLITS = ("train", "validation_matched", "validation_mismatched")
FILE_COLUMNS = {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label",
                "id": "pairID", "genre": "genre"}
HUB_COLUMNS = {"premise": "premise", "hypothesis": "hypothesis", "label": "label",
               "id": "pairID", "genre": "genre"}
HUB_LABELS = {"0": "entailment", "1": "neutral", "2": "contradiction", "-1": "-"}


def split_name(text: str) -> str:
    """'mnli-train' / 'mnli-dev-matched' / 'mnli-dev-mismatched' from a file name or hub split."""
    t = text.lower()
    if "mismatched" in t:
        return "mnli-dev-mismatched"
    if "matched" in t:
        return "mnli-dev-matched"
    if "train" in t:
        return "mnli-train"
    return "mnli-" + Path(t).name.split(".")[0]


def load_mnli(path: str | os.PathLike, name: str | None = None, keep_no_gold: bool = False) -> NLISet:
    """Load an official MNLI JSONL/.txt or GLUE MNLI .tsv file (plain or .gz)."""
    p = resolve_path(path)
    header = table_columns(p)
    columns = dict(FILE_COLUMNS)
    if header is not None and "pairID" not in header:
        del columns["id"]  # fall back to name-line ids
    name = name or split_name(p.name)
    return rows_to_set(iter_rows(p), str(p), name, columns, MNLI_LABELS,
                       required=("premise", "hypothesis", "label"), keep_no_gold=keep_no_gold,
                       meta={"kind": "mnli", "format": "mnli", "path": str(p), "split": name})


def load_mnli_hub(split: str, hub_id: str = HUB_ID, config: str | None = None, name: str | None = None,
                  keep_no_gold: bool = False) -> NLISet:
    """Load one split of the hub MNLI (`nyu-mll/multi_nli` or a local copy saved by `datasets`)."""
    where = f"hub:{hub_id}:{split}"
    name = name or split_name(split)
    return rows_to_set(iter_hub_rows(hub_id, split, config), where, name, HUB_COLUMNS, MNLI_LABELS,
                       label_map=HUB_LABELS, required=("premise", "hypothesis", "label"),
                       keep_no_gold=keep_no_gold,
                       meta={"kind": "mnli", "format": "mnli", "hub": hub_id, "split": name})
