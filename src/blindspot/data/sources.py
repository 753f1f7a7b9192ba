"""Where an NLI set comes from (a DataSource, declared as data) and the one function that loads it.

    python -c "from blindspot.data.sources import load_source; print(load_source('$BLINDSPOT_DATA/hans-regen/heuristics_evaluation_set.jsonl.gz'))"

A source is a file path or `hub:ID[:SPLIT]`. Its format is "mnli", "hans" or "nli" (a
generic set with column and label maps). For a file without a given format it is recognised
from the file's columns (recognise.py: HANS's, MNLI's / SNLI's, or premise / hypothesis /
label), the name breaking ties (multinli* / dev_matched.tsv / train.tsv -> mnli; heuristics_*
-> hans); a column or label map means "nli". Hub sources go by the id: multi_nli -> mnli,
hans -> hans, anything else -> nli. Command-line sources with maps: source_args.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from blindspot.data.example import NLISet
from blindspot.data.generic import check_column_map, load_nli, rows_to_set, default_label_space, REQUIRED
from blindspot.data.hans import load_hans, load_hans_hub
from blindspot.data.mnli import load_mnli, load_mnli_hub
from blindspot.data.readers import iter_hub_rows, peek_columns, resolve_path
from blindspot.data.recognise import file_format
from blindspot.errors import ConfigError, DataError

Format = Literal["mnli", "hans", "nli"]


class DataSource(BaseModel):
    """One NLI set to load: a file or a hub split, its format, and (for "nli") its column / label maps."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Format | None = Field(None, description="mnli | hans | nli; None = detect from the path or hub id")
    path: str | None = Field(None, description="data file (JSONL/TSV/TXT/CSV, plain or .gz); $BLINDSPOT_DATA and ~ expand")
    hub: str | None = Field(None, description="`datasets` id (e.g. nyu-mll/multi_nli) or a local datasets folder")
    split: str | None = Field(None, description="hub split, e.g. validation_matched (required with hub)")
    config: str | None = Field(None, description="hub config name, if the dataset has several")
    name: str | None = Field(None, description="set name used in outputs; default from the file name / split")
    columns: dict[str, str] | None = Field(None, description="nli only: field -> column, fields premise, hypothesis, "
                                           "label (required), id, genre, heuristic, subcase, template")
    labels: dict[str, str | None] | None = Field(None, description="nli only: raw label value -> label (null drops the row)")
    label_space: list[str] | None = Field(None, description="nli only: allowed labels; default MNLI's (or HANS's "
                                          "when the label map yields only entailment / non-entailment)")
    keep_no_gold: bool = Field(False, description="keep rows whose gold label is '-' (label '-') instead of dropping them")


def detect_format(text: str) -> Format:
    """mnli / hans / nli from a file name or hub id."""
    name = Path(text).name.lower()
    if "multi_nli" in text.lower() or name.startswith("multinli") or \
            re.match(r"(dev_matched|dev_mismatched|train)\.tsv(\.gz)?$", name):
        return "mnli"
    if name.startswith("heuristics_") or name == "hans" or text.lower().endswith("/hans"):
        return "hans"
    return "nli"


def parse_source(text: str) -> DataSource:
    """A command-line source: a path or `hub:ID[:SPLIT]`, with optional `:KEY=VALUE,...` (source_args.py)."""
    from blindspot.data.source_args import parse_source_text

    return parse_source_text(text)


def has_maps(src: DataSource) -> bool:
    """Whether the source gives a column map, label map or label space (which mean format "nli")."""
    return bool(src.columns or src.labels or src.label_space)


def file_stem(path: str) -> str:
    """A file's name without its data extensions: snli_1.0_dev.jsonl.gz -> snli_1.0_dev."""
    name = Path(path).name
    for ext in (".gz", ".jsonl", ".json", ".ndjson", ".tsv", ".txt", ".csv"):
        name = name.removesuffix(ext)
    return name or "set"


def check_source(src: DataSource) -> None:
    """ConfigError for a source whose fields contradict each other."""
    if (src.path is None) == (src.hub is None):
        raise ConfigError("data source: give exactly one of path or hub")
    if src.hub is not None and not src.split:
        raise ConfigError(f"data source hub:{src.hub}: a split is required (write hub:{src.hub}:SPLIT, e.g. "
                          "validation_matched for MNLI, validation for HANS)")
    fmt = src.format or ("nli" if has_maps(src) else detect_format(src.path or src.hub or ""))
    if fmt != "nli" and has_maps(src):
        raise ConfigError(f"data source {src.path or src.hub}: columns / labels / label_space are for format "
                          f"'nli' only, this source is {fmt!r}")


def _load_hub_nli(src: DataSource) -> NLISet:
    """A generic set from a hub split, with the source's column / label maps."""
    where = f"hub:{src.hub}:{src.split}"
    columns = check_column_map(src.columns or {"premise": "premise", "hypothesis": "hypothesis", "label": "label"}, where)
    space = tuple(src.label_space) if src.label_space else default_label_space(src.labels)
    required = columns.keys() if src.columns else REQUIRED
    return rows_to_set(iter_hub_rows(src.hub, src.split, src.config), where, src.name or src.split, columns,
                       space, src.labels, required, src.keep_no_gold,
                       meta={"kind": "nli", "format": "nli", "hub": src.hub, "split": src.split})


def _check_mapped_columns(path: str, columns: dict[str, str]) -> None:
    """A column map's columns must be in the file (its header, or its first JSON object)."""
    p = resolve_path(path)
    columns = check_column_map(columns, str(p))
    have = peek_columns(p)
    absent = [f for f, c in columns.items() if c not in have]
    if absent:
        f = absent[0]
        raise DataError(f"{p}: column map {f}={columns[f]!r}: no column {columns[f]!r} in the file "
                        f"(columns: {', '.join(have)})")


def source_format(src: DataSource) -> Format:
    """The format a source is read in: given, implied by its maps, or recognised from a file's columns.

    Cheap (a file's header or first line), so a plan can check every source before anything runs.
    """
    check_source(src)
    if src.hub is not None:
        return src.format or detect_format(src.hub)
    if src.columns:
        _check_mapped_columns(src.path, src.columns)
        return "nli"
    return file_format(src.path, src.format or ("nli" if has_maps(src) else None), detect_format(src.path))


def load_source(src: DataSource | str | dict) -> NLISet:
    """Load one NLI set from a DataSource, a command-line source string, or a mapping of DataSource fields."""
    if isinstance(src, str):
        src = parse_source(src)
    elif isinstance(src, dict):
        from blindspot.data.source_args import source_from_mapping

        src = source_from_mapping(src)
    elif not isinstance(src, DataSource):
        raise ConfigError(f"data source: expected a path, hub:ID:SPLIT or a mapping with path / hub, "
                          f"got {type(src).__name__} {src!r}")
    fmt = source_format(src)
    if src.hub is not None:
        if fmt == "mnli":
            return load_mnli_hub(src.split, src.hub, src.config, src.name, src.keep_no_gold)
        if fmt == "hans":
            return load_hans_hub(src.split, src.hub, src.config, src.name)
        return _load_hub_nli(src)
    hint = detect_format(src.path)
    # a set recognised by its columns, not its name (SNLI read as MNLI): named after its file
    name = src.name or (None if fmt == hint and fmt != "nli" else file_stem(src.path))
    if fmt == "mnli":
        return load_mnli(src.path, name, src.keep_no_gold)
    if fmt == "hans":
        return load_hans(src.path, name)
    if fmt == "nli":
        return load_nli(src.path, src.columns, src.labels, src.label_space, name, src.keep_no_gold)
    raise DataError(f"{src.path}: unknown format {fmt!r}")  # unreachable with the Literal type
