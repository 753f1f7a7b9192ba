"""Low-level readers: plain or gzip text, JSON Lines, and TSV/CSV with a header.

    python -c "from blindspot.data.readers import iter_rows; print(next(iter_rows('../shared/data/hans-regen/heuristics_evaluation_set.jsonl.gz')))"

Every reader yields `(line_number, row_dict)` so that the dataset loaders can name
`file:line` in their errors, and every failure is a DataError naming the file: a missing
path, an empty file, a truncated or corrupt .gz, malformed JSON, a TSV row with the wrong
number of fields, text that is not UTF-8.
TSV is read with quoting off (csv.QUOTE_NONE), as MNLI .txt / GLUE .tsv / HANS .txt need:
their text contains bare quote characters. CSV uses standard quoting.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from blindspot.errors import DataError

Row = tuple[int, dict]

# One MNLI premise can be long; the csv default field limit (128 KiB) is enough for real data
# but a generous limit keeps odd files from failing with an opaque csv error.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def resolve_path(path: str | os.PathLike) -> Path:
    """Expand `$BLINDSPOT_DATA` (and other variables) and `~` in a path."""
    text = str(path)
    if "$BLINDSPOT_DATA" in text or "${BLINDSPOT_DATA}" in text:
        root = os.environ.get("BLINDSPOT_DATA")
        if root is None:
            raise DataError(f"{text}: the path uses $BLINDSPOT_DATA but that variable is not set "
                            "(set it to the folder holding mnli-subset/ and hans-regen/)")
        text = text.replace("${BLINDSPOT_DATA}", root).replace("$BLINDSPOT_DATA", root)
    return Path(os.path.expandvars(os.path.expanduser(text)))


def file_kind(path: Path) -> str:
    """'jsonl', 'tsv' or 'csv' from the file name (a trailing .gz is ignored; .txt is TSV)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".tsv", ".txt")):
        return "tsv"
    if name.endswith(".csv"):
        return "csv"
    raise DataError(f"{path}: unknown file type (expected .jsonl, .tsv, .txt or .csv, optionally .gz)")


@contextmanager
def open_text(path: str | os.PathLike) -> Iterator[IO[str]]:
    """Open a plain or gzip-compressed UTF-8 text file; DataError for a missing path or a directory."""
    p = resolve_path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    if p.is_dir():
        raise DataError(f"{p}: is a directory, expected a data file")
    with open(p, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
    if gz:
        f = gzip.open(p, "rt", encoding="utf-8-sig", newline="")
    else:  # utf-8-sig: a byte-order mark (spreadsheet exports) is not part of the first column's name
        f = open(p, encoding="utf-8-sig", newline="")
    try:
        yield f
    finally:
        f.close()


@contextmanager
def _read_errors(path: Path, where: list[int]) -> Iterator[None]:
    """Turn decompression and decoding failures into one DataError naming the file (and line)."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupt gzip file after line {where[0]} ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{where[0] + 1}: not UTF-8 text ({e.reason})") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[Row]:
    """Yield (line, object) for each non-blank line of a JSON Lines file."""
    p = resolve_path(path)
    where = [0]
    seen = False
    with open_text(p) as f, _read_errors(p, where):
        for lineno, line in enumerate(f, 1):
            where[0] = lineno
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(row).__name__}")
            seen = True
            yield lineno, row
    if not seen:
        raise DataError(f"{p}: empty file (no JSON lines)")


def iter_table(path: str | os.PathLike, delimiter: str = "\t") -> Iterator[Row]:
    """Yield (line, {column: value}) for each data row of a TSV (quoting off) or CSV with a header."""
    p = resolve_path(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    where = [0]
    with open_text(p) as f, _read_errors(p, where):
        reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            raise DataError(f"{p}: empty file (expected a header line)")
        header = [h.strip() for h in header]
        seen = False
        for fields in reader:
            lineno = reader.line_num
            where[0] = lineno
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            if len(fields) != len(header):
                raise DataError(f"{p}:{lineno}: {len(fields)} fields, expected {len(header)} as in the header")
            seen = True
            yield lineno, dict(zip(header, fields))
    if not seen:
        raise DataError(f"{p}: no data rows after the header")


def iter_rows(path: str | os.PathLike) -> Iterator[Row]:
    """Rows of a JSONL, TSV/.txt or CSV file (plain or .gz), chosen by the file name."""
    p = resolve_path(path)
    kind = file_kind(p)
    if kind == "jsonl":
        return iter_jsonl(p)
    return iter_table(p, "\t" if kind == "tsv" else ",")


def table_columns(path: str | os.PathLike) -> list[str] | None:
    """Header of a TSV/CSV file, or None for JSONL (whose keys can differ per line)."""
    p = resolve_path(path)
    kind = file_kind(p)
    if kind == "jsonl":
        return None
    with open_text(p) as f, _read_errors(p, [0]):
        line = f.readline()
    if not line.strip():
        raise DataError(f"{p}: empty file (expected a header line)")
    delimiter, quoting = ("\t", csv.QUOTE_NONE) if kind == "tsv" else (",", csv.QUOTE_MINIMAL)
    return [h.strip() for h in next(csv.reader([line], delimiter=delimiter, quoting=quoting))]


def peek_columns(path: str | os.PathLike) -> list[str]:
    """Column names of a data file: a TSV/CSV header, or the keys of a JSONL file's first object."""
    p = resolve_path(path)
    header = table_columns(p)
    if header is not None:
        return header
    rows = iter_jsonl(p)
    try:
        return list(next(rows)[1])
    finally:
        rows.close()


def iter_hub_rows(hub_id: str, split: str, config: str | None = None) -> Iterator[Row]:
    """Yield (row number, row) of a `datasets` split: a hub id, a local data folder, or a save_to_disk folder."""
    import datasets  # heavy; only hub sources need it

    where = f"hub:{hub_id}:{split}"
    local = Path(hub_id).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            ds = datasets.load_from_disk(str(local))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"{where}: no split {split!r} (splits: {', '.join(ds)})")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(hub_id, config, split=split)
    except DataError:
        raise
    except Exception as e:  # datasets raises many types (network, missing split, bad config)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataError(f"{where}: cannot load ({type(e).__name__}: {msg[:300]})") from None
    if len(ds) == 0:
        raise DataError(f"{where}: empty split")
    for i, row in enumerate(ds, 1):
        yield i, row
