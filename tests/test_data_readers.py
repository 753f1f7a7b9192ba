"""Tests for blindspot.data.readers: plain / .gz files, JSONL, TSV (quoting off), CSV, and their errors."""

from __future__ import annotations

import gzip
import json

import pytest

from blindspot.data.readers import file_kind, iter_jsonl, iter_rows, iter_table, resolve_path, table_columns
from blindspot.errors import DataError


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_jsonl_plain_and_gz_give_same_rows_with_line_numbers(tmp_path):
    text = _jsonl([{"a": 1}, {"a": 2}]) + "\n" + _jsonl([{"a": 3}])
    (tmp_path / "x.jsonl").write_text(text)
    with gzip.open(tmp_path / "x.jsonl.gz", "wt") as f:
        f.write(text)
    plain = list(iter_rows(tmp_path / "x.jsonl"))
    assert plain == list(iter_rows(tmp_path / "x.jsonl.gz"))
    assert plain == [(1, {"a": 1}), (2, {"a": 2}), (4, {"a": 3})]  # blank line 3 skipped


def test_tsv_keeps_quote_characters_literally(tmp_path):
    p = tmp_path / "x.tsv"
    p.write_text('sentence1\tsentence2\n"Hi," she said\tHe said "no\n')
    assert list(iter_table(p)) == [(2, {"sentence1": '"Hi," she said', "sentence2": 'He said "no'})]
    assert table_columns(p) == ["sentence1", "sentence2"]


def test_csv_uses_standard_quoting(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text('premise,hypothesis\n"A, B",C\n')
    assert list(iter_rows(p)) == [(2, {"premise": "A, B", "hypothesis": "C"})]


def test_file_kind_and_path_expansion(tmp_path, monkeypatch):
    assert file_kind(tmp_path / "a.txt.gz") == "tsv" and file_kind(tmp_path / "b.JSONL") == "jsonl"
    with pytest.raises(DataError, match="unknown file type"):
        file_kind(tmp_path / "a.parquet")
    monkeypatch.setenv("BLINDSPOT_DATA", str(tmp_path))
    assert resolve_path("$BLINDSPOT_DATA/x.jsonl") == tmp_path / "x.jsonl"
    monkeypatch.delenv("BLINDSPOT_DATA")
    with pytest.raises(DataError, match="BLINDSPOT_DATA"):
        resolve_path("$BLINDSPOT_DATA/x.jsonl")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        list(iter_rows(tmp_path / "nope.jsonl"))
    d = tmp_path / "d.jsonl"
    d.mkdir()
    with pytest.raises(DataError, match="is a directory"):
        list(iter_rows(d))


@pytest.mark.parametrize("name,text,match", [
    ("e.jsonl", "", "empty file"),
    ("e.jsonl", "\n\n", "empty file"),
    ("e.tsv", "", "empty file"),
    ("e.tsv", "a\tb\n", "no data rows"),
    ("m.jsonl", '{"a": 1}\n{"a": \n', r"m\.jsonl:2: malformed JSON"),
    ("l.jsonl", "[1, 2]\n", r"l\.jsonl:1: expected a JSON object"),
    ("f.tsv", "a\tb\n1\t2\n1\t2\t3\n", r"f\.tsv:3: 3 fields, expected 2"),
])
def test_bad_files_name_file_and_line(tmp_path, name, text, match):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=match):
        list(iter_rows(tmp_path / name))


def test_truncated_gz_is_a_data_error_naming_the_file(tmp_path):
    full = gzip.compress(_jsonl([{"a": i, "t": "x" * 50} for i in range(2000)]).encode())
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz: truncated or corrupt gzip"):
        list(iter_rows(p))


def test_non_utf8_names_line(tmp_path):
    p = tmp_path / "b.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    with pytest.raises(DataError, match=r"b\.jsonl:\d+: not UTF-8"):
        list(iter_jsonl(p))
