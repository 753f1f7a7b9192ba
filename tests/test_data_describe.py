"""Tests for `blindspot data describe`: bad input through the CLI, the JSON report, and the real data's counts."""

from __future__ import annotations

import gzip
import json

import pytest

from blindspot.cli import main
from blindspot.data.describe import describe


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["data", "describe", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _mnli_line(label="entailment", pid="1", **kw) -> str:
    return json.dumps({"gold_label": label, "sentence1": "A man runs .", "sentence2": "A man moves .",
                       "pairID": pid, "genre": "fiction", **kw}) + "\n"


def _assert_one_clear_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("blindspot data describe: error: ")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_malformed_json_line(tmp_path, capsys):
    p = tmp_path / "multinli_1.0_train.jsonl"
    p.write_text(_mnli_line() + '{"gold_label": "entailment",\n')
    _assert_one_clear_error(*_run(capsys, p)[::2], f"{p}:2:", "malformed JSON")


def test_missing_column(tmp_path, capsys):
    p = tmp_path / "multinli_1.0_train.jsonl"
    p.write_text(_mnli_line() + json.dumps({"gold_label": "neutral", "sentence1": "x", "pairID": "2"}) + "\n")
    _assert_one_clear_error(*_run(capsys, p)[::2], f"{p}:2:", "missing column 'sentence2'", "hypothesis")


def test_unknown_label(tmp_path, capsys):
    p = tmp_path / "multinli_1.0_train.jsonl"
    p.write_text(_mnli_line() + _mnli_line(label="entails", pid="2"))
    _assert_one_clear_error(*_run(capsys, p)[::2], f"{p}:2:", "unknown label 'entails'", "entailment, neutral, contradiction")


def test_empty_file(tmp_path, capsys):
    p = tmp_path / "heuristics_evaluation_set.jsonl"
    p.write_text("")
    _assert_one_clear_error(*_run(capsys, p)[::2], str(p), "empty file")


def test_wrong_path(tmp_path, capsys):
    p = tmp_path / "no" / "multinli_1.0_train.jsonl.gz"
    _assert_one_clear_error(*_run(capsys, p)[::2], str(p), "no such file")


def test_truncated_gz(tmp_path, capsys):
    data = gzip.compress("".join(_mnli_line(pid=str(i)) for i in range(3000)).encode())
    p = tmp_path / "multinli_1.0_dev_matched.jsonl.gz"
    p.write_bytes(data[: len(data) // 2])
    _assert_one_clear_error(*_run(capsys, p)[::2], str(p), "truncated or corrupt gzip")


@pytest.mark.parametrize("columns,needle", [
    ("premise=context,hypothesis=hypothesis,label=label", "no column 'context' in the file"),
    ("premise=premise,hypothesis=hypothesis,label=label,speaker=who", "column map key 'speaker' is not a field"),
    ("premise", "--columns: 'premise' is not KEY=VALUE"),
])
def test_invalid_column_map(tmp_path, capsys, columns, needle):
    p = tmp_path / "challenge.tsv"
    p.write_text("premise\thypothesis\tlabel\nA man runs .\tA man moves .\tentailment\n")
    _assert_one_clear_error(*_run(capsys, p, "--columns", columns)[::2], needle)


def test_json_report_on_a_fixture_with_cleaning(tmp_path, capsys):
    p = tmp_path / "multinli_1.0_train.jsonl"
    lines = [_mnli_line(lab, f"{lab}{i}").replace("A man runs", f"P{lab}{i}") for lab in ("entailment", "neutral", "contradiction") for i in range(4)]
    p.write_text("".join(lines) + _mnli_line("-", "x") + lines[0].replace('"entailment0"', '"dup"'))
    out_file = tmp_path / "report.json"
    code, out, _ = _run(capsys, p, "--json", "--clean", "--validation-per-label", "2", "--out", out_file)
    assert code == 0
    d = json.loads(out)["sets"][0]
    assert json.loads(out_file.read_text()) == json.loads(out)
    assert d["rows"] == 13 and d["dropped_no_gold_by_loader"] == 1
    assert d["cleaning"]["removed_no_gold"] == 1 and d["cleaning"]["removed_duplicates"] == 2
    assert d["clean_labels"] == {"entailment": 3, "neutral": 4, "contradiction": 4}
    assert d["validation"]["labels"] == {"entailment": 2, "neutral": 2, "contradiction": 2} and d["pool"]["rows"] == 5
    assert d["genres"] == {"fiction": 13}
    assert d["heuristics"]["by_label"]["neutral"]["lexical_overlap"] == 0.0
    assert d["heuristics"]["by_label"]["entailment"]["constituent"] is None


def test_table_output(tmp_path, capsys):
    p = tmp_path / "multinli_1.0_train.jsonl"
    p.write_text(_mnli_line() + _mnli_line("neutral", "2"))
    code, out, _ = _run(capsys, p)
    assert code == 0 and "mnli-train" in out and "label neutral" in out and "constituent n/a" in out


@pytest.mark.shared_data
def test_reproduces_the_shared_data_readme_counts(shared_data):
    m, h = shared_data / "mnli-subset", shared_data / "hans-regen"
    rep = describe([str(m / "multinli_1.0_train.jsonl.gz"), str(m / "multinli_1.0_dev_matched.jsonl.gz"),
                    str(m / "multinli_1.0_dev_mismatched.jsonl.gz"), str(h / "heuristics_evaluation_set.jsonl.gz"),
                    str(h / "heuristics_train_set.jsonl.gz")])
    train, dm, dmm, hans, htrain = rep["sets"]
    lab = lambda *n: dict(zip(("entailment", "neutral", "contradiction"), n))  # noqa: E731
    assert (train["rows"], train["labels"], train["genres"]["null"]) == (12615, lab(4179, 4438, 3998), 9939)
    assert (dm["rows"], dm["labels"]) == (9815, lab(3479, 3123, 3213))
    assert (dmm["rows"], dmm["labels"]) == (3908, lab(1420, 1098, 1390))
    assert hans["rows"] == 30000 and len(hans["subcases"]) == 30
    assert all(sum(c.values()) == 1000 for c in hans["subcases"].values())
    assert hans["heuristic_x_label"] == {k: {"entailment": 5000, "non-entailment": 5000}
                                         for k in ("constituent", "lexical_overlap", "subsequence")}
    assert htrain["rows"] == 29865 and sum(htrain["subcases"]["se_understood_object"].values()) == 865
    # every HANS pair shares all its words with the premise, by construction
    assert hans["heuristics"]["by_label"]["non-entailment"]["lexical_overlap"] == 1.0
