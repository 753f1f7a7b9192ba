"""Recognise an NLI file's format from its columns (the file name is only a hint), and say what map would read it.

    python -c "from blindspot.data.recognise import file_format; print(file_format('$BLINDSPOT_DATA/hans-regen/heuristics_evaluation_set.jsonl.gz', None, 'nli'))"

Formats, by the columns they need (a TSV/CSV header, or the keys of a JSONL file's first object):
- hans: sentence1, sentence2, gold_label, heuristic, subcase (HANS .txt / .jsonl);
- mnli: sentence1, sentence2, gold_label (MNLI .jsonl / .txt, GLUE MNLI .tsv, and SNLI, which has
  the same fields: its captionID column is ignored);
- nli: premise, hypothesis, label (the internal examples JSONL, or any set in those names).
When several fit, the one the file name suggests wins (multinli* -> mnli, heuristics_* -> hans),
else the most specific. When none fits, the error lists the columns found and the column map
(YAML and command line) that would read them, guessed from common names (SICK's sentence_A,
ANLI's context, ...).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from blindspot.data.readers import peek_columns, resolve_path
from blindspot.errors import DataError

FORMAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "hans": ("sentence1", "sentence2", "gold_label", "heuristic", "subcase"),
    "mnli": ("sentence1", "sentence2", "gold_label"),
    "nli": ("premise", "hypothesis", "label"),
}
# Column names other public NLI sets use for each field, lower-cased (first match wins).
_GUESSES: dict[str, tuple[str, ...]] = {
    "premise": ("premise", "sentence1", "sentence_a", "context", "text_a", "sentence_1", "s1", "sent1", "text"),
    "hypothesis": ("hypothesis", "sentence2", "sentence_b", "text_b", "sentence_2", "s2", "sent2", "claim"),
    "label": ("label", "gold_label", "gold", "entailment_label", "entailment_judgment", "labels", "relation",
              "class", "target"),
    "id": ("id", "pairid", "pair_id", "uid", "idx", "guid", "example_id"),
}


def formats_fitting(columns: Iterable[str]) -> list[str]:
    """Formats whose required columns are all present, most specific first."""
    have = set(columns)
    return [fmt for fmt, need in FORMAT_COLUMNS.items() if set(need) <= have]


def guess_column_map(columns: Iterable[str]) -> dict[str, str | None]:
    """field -> the column that probably holds it (None where nothing looks like it)."""
    by_lower = {c.lower(): c for c in columns}
    guess: dict[str, str | None] = {}
    for field, names in _GUESSES.items():
        guess[field] = next((by_lower[n] for n in names if n in by_lower), None)
    if guess["id"] is None:
        del guess["id"]
    return guess


def column_map_hint(path: str, columns: list[str]) -> str:
    """'columns: {premise: ..., ...} in YAML, or PATH:premise=...,... on the command line'."""
    guess = {f: c or "COLUMN" for f, c in guess_column_map(columns).items()}
    yaml_map = ", ".join(f"{f}: {c}" for f, c in guess.items())
    cli_map = ",".join(f"{f}={c}" for f, c in guess.items())
    return f"columns: {{{yaml_map}}} in YAML, or {path}:{cli_map} on the command line"


def no_format_error(path: str, columns: list[str], wanted: str | None = None,
                    fits: list[str] | None = None) -> DataError:
    """The error for a file whose columns fit no format (or not the one asked for)."""
    formats = "; ".join(f"{fmt}: {', '.join(need)}" for fmt, need in FORMAT_COLUMNS.items())
    what = (f"lacks the columns format {wanted!r} reads ({', '.join(FORMAT_COLUMNS[wanted])})" if wanted
            else f"match no known format ({formats})")
    other = f"; they fit format {fits[0]!r} (leave format out and it is recognised), or" if fits else ";"
    return DataError(f"{path}: columns {', '.join(columns) or '(none)'} {what}{other} give a column map, e.g. "
                     f"{column_map_hint(path, columns)}")


def file_format(path: str | os.PathLike, asked: str | None, name_hint: str) -> str:
    """The format to read a data file in: `asked` if its columns fit it, else recognised from the columns.

    `name_hint` (the format the file name suggests) breaks ties between formats that fit.
    """
    p = resolve_path(path)
    columns = peek_columns(p)
    fits = formats_fitting(columns)
    if asked is not None:
        if asked not in fits:
            raise no_format_error(str(p), columns, asked, fits)
        return asked
    if not fits:
        raise no_format_error(str(p), columns)
    return name_hint if name_hint in fits else fits[0]
