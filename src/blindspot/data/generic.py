"""Any NLI set (SNLI, ANLI, SICK, a challenge set, synthetic data) from JSONL / CSV / TSV, by column and label maps.

    python -c "from blindspot.data.generic import load_nli; print(len(load_nli('snli_1.0_dev.jsonl', columns={'premise': 'sentence1', 'hypothesis': 'sentence2', 'label': 'gold_label', 'id': 'pairID'})))"

A column map says which file column holds each field of NLIExample (premise, hypothesis,
label required; id, genre, heuristic, subcase, template optional). A label map turns raw
values into labels (a value of None drops the row and counts it); the label space is the
set of labels allowed after mapping. The gold label `-` (no annotator majority, as in MNLI
and SNLI) is never an error: such rows are dropped and counted in `meta["dropped_no_gold"]`,
or kept with label "-" when `keep_no_gold` is set, so that cleaning can count them.
MNLI and HANS loaders are this loader with fixed maps.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from blindspot.data.example import HANS_LABELS, MNLI_LABELS, NLIExample, NLISet
from blindspot.data.readers import Row, iter_rows, resolve_path, table_columns
from blindspot.errors import DataError

log = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = ("premise", "hypothesis", "label", "id", "genre", "heuristic", "subcase", "template")
REQUIRED: tuple[str, ...] = ("premise", "hypothesis", "label")
NO_GOLD = "-"
# The default map reads the canonical internal examples JSONL and any file that already
# uses the field names; optional fields are used when the column is there.
DEFAULT_COLUMNS: dict[str, str] = {f: f for f in FIELDS}


def check_column_map(columns: Mapping[str, str], where: str) -> dict[str, str]:
    """Validate a column map's keys (known fields, required ones present); return it as a dict."""
    unknown = [k for k in columns if k not in FIELDS]
    if unknown:
        raise DataError(f"{where}: column map key {unknown[0]!r} is not a field "
                        f"(expected keys among {', '.join(FIELDS)})")
    missing = [k for k in REQUIRED if k not in columns]
    if missing:
        raise DataError(f"{where}: column map lacks required field(s) {', '.join(missing)}")
    bad = [k for k, v in columns.items() if not isinstance(v, str) or not v]
    if bad:
        raise DataError(f"{where}: column map value for {bad[0]!r} must be a column name")
    return dict(columns)


def default_label_space(label_map: Mapping[str, str | None] | None) -> tuple[str, ...]:
    """MNLI's labels, HANS's if the label map only yields those, else the map's values in order."""
    values = [v for v in (label_map or {}).values() if v is not None and v != NO_GOLD]
    if set(values) <= set(MNLI_LABELS):
        return MNLI_LABELS
    if set(values) <= set(HANS_LABELS):
        return HANS_LABELS
    return tuple(dict.fromkeys(values))


def _label(raw, label_map, label_space, where: str, lineno: int) -> str | None:
    """The row's label (NO_GOLD kept as is), or None when the label map drops it."""
    key = str(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else raw
    if label_map is not None and key in label_map:
        return label_map[key]
    if key == NO_GOLD or key in label_space:
        return key
    if isinstance(key, str) and key.strip().lower() in label_space:  # SICK's ENTAILMENT, stray spaces
        return key.strip().lower()
    raise DataError(f"{where}:{lineno}: unknown label {raw!r} (expected one of {', '.join(label_space)}"
                    + (f", or a raw value in the label map: {', '.join(map(str, label_map))})" if label_map else ")")
                    + label_map_hint(key, label_space))


def label_map_hint(raw, label_space: tuple[str, ...]) -> str:
    """For raw labels that look like a known coding (e/n/c, 0/1/2), the label map that would read them."""
    if tuple(label_space) != MNLI_LABELS or not isinstance(raw, str):
        return ""
    if raw.strip().lower() in ("e", "n", "c"):
        return ("; for e/n/c give a label map: labels: {e: entailment, n: neutral, c: contradiction} in YAML, "
                "or labels=e:entailment/n:neutral/c:contradiction on the command line")
    if raw.strip() in ("0", "1", "2", "-1"):
        return ("; if 0/1/2 mean entailment/neutral/contradiction (as on the Hugging Face hub), give a label map: "
                "labels: {0: entailment, 1: neutral, 2: contradiction} in YAML, or "
                "labels=0:entailment/1:neutral/2:contradiction on the command line")
    return ""


def rows_to_set(rows: Iterable[Row], where: str, name: str, columns: Mapping[str, str],
                label_space: tuple[str, ...], label_map: Mapping[str, str | None] | None = None,
                required: Iterable[str] = REQUIRED, keep_no_gold: bool = False, meta: dict | None = None) -> NLISet:
    """Convert (line, row) pairs into an NLISet; every bad row is a DataError naming where:line."""
    required = set(required)
    examples: list[NLIExample] = []
    dropped = {"no_gold": 0, "label_map": 0}
    for lineno, row in rows:
        values = {}
        for field, col in columns.items():
            v = row.get(col)
            if col not in row and field in required:
                raise DataError(f"{where}:{lineno}: missing column {col!r} (field {field}); the row has "
                                f"{', '.join(map(str, row)) or 'no columns'}")
            if v is None and field in REQUIRED:
                raise DataError(f"{where}:{lineno}: null value in column {col!r} (field {field})")
            values[field] = None if v is None or (v == "" and field not in REQUIRED) else v
        for field in ("premise", "hypothesis"):
            if not isinstance(values[field], str):
                raise DataError(f"{where}:{lineno}: column {columns[field]!r} ({field}) must be text, "
                                f"got {type(values[field]).__name__}")
        label = _label(values["label"], label_map, label_space, where, lineno)
        if label is None or (label == NO_GOLD and not keep_no_gold):
            dropped["no_gold" if label == NO_GOLD else "label_map"] += 1
            continue
        ident = values.get("id")
        examples.append(NLIExample(
            id=str(ident) if ident is not None else f"{name}-{lineno}",
            premise=values["premise"], hypothesis=values["hypothesis"], label=label,
            **{f: None if values.get(f) is None else str(values[f]) for f in ("genre", "heuristic", "subcase", "template")}))
    meta = dict(meta or {})
    meta.update(dropped_no_gold=dropped["no_gold"], dropped_by_label_map=dropped["label_map"])
    log.info("%s: %d examples (%d without gold label dropped)", where, len(examples), dropped["no_gold"])
    return NLISet(name=name, labels=tuple(label_space), examples=examples, source=where, meta=meta)


def load_nli(path: str | os.PathLike, columns: Mapping[str, str] | None = None,
             label_map: Mapping[str, str | None] | None = None, label_space: Iterable[str] | None = None,
             name: str | None = None, keep_no_gold: bool = False, kind: str = "nli") -> NLISet:
    """Load a generic NLI file; without a column map the field names themselves are the columns."""
    p = resolve_path(path)
    explicit = columns is not None
    cols = check_column_map(columns if explicit else DEFAULT_COLUMNS, str(p))
    space = tuple(label_space) if label_space else default_label_space(label_map)
    if not space:
        raise DataError(f"{p}: empty label space (give labels or a label map)")
    header = table_columns(p)
    if header is not None:
        absent = [f for f, c in cols.items() if c not in header]
        if explicit and absent:
            f = absent[0]
            raise DataError(f"{p}: column map {f}={cols[f]!r}: no column {cols[f]!r} in the file "
                            f"(columns: {', '.join(header)})")
        cols = {f: c for f, c in cols.items() if c in header or f in REQUIRED}
    required = cols.keys() if explicit else REQUIRED
    stem = p.name.split(".")[0]
    rows: Iterable[Row] = iter_rows(p)
    if not label_space and label_map is None:  # no label info given: a 2-way file reads as 2-way
        rows = list(rows)
        seen = {r.get(cols["label"]) for _, r in rows}
        if "non-entailment" in seen and seen <= set(HANS_LABELS) | {NO_GOLD}:
            space = HANS_LABELS
    return rows_to_set(rows, str(p), name or stem, cols, space, label_map, required, keep_no_gold,
                       meta={"kind": kind, "format": "nli", "path": str(p)})
