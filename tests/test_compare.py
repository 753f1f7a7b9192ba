"""Paired comparison of prediction files: counts, McNemar, interval, mismatched sets, CLI."""

from __future__ import annotations

import json

import pytest

from blindspot.cli import main as cli_main
from blindspot.compare import compare_predictions
from blindspot.errors import DataError
from blindspot.storage import atomic_write_jsonl


def write_preds(path, correct, gold="non-entailment", heuristic="lexical_overlap", ids=None):
    ids = ids or [f"e{i}" for i in range(len(correct))]
    atomic_write_jsonl(path, [{"id": i, "gold": gold, "pred": "x", "pred_eval": "x", "correct": bool(c),
                               "probs": [0.2, 0.3, 0.5], "heuristic": heuristic} for i, c in zip(ids, correct)])
    return path


def test_compare_counts_and_mcnemar(tmp_path):
    # 2 both right, 1 only A, 9 only B, 3 both wrong -> b=1, c=9, exact p = 22/1024
    a = [1, 1] + [1] + [0] * 9 + [0, 0, 0]
    b = [1, 1] + [0] + [1] * 9 + [0, 0, 0]
    pa, pb = write_preds(tmp_path / "a.jsonl", a), write_preds(tmp_path / "b.jsonl", b)
    r = compare_predictions(pa, pb)
    assert (r["n"], r["b"], r["c"], r["both_correct"], r["neither"]) == (15, 1, 9, 2, 3)
    assert r["acc_a"] == pytest.approx(3 / 15) and r["acc_b"] == pytest.approx(11 / 15)
    assert r["p_mcnemar"] == pytest.approx(22 / 1024)
    assert r["diff"] == pytest.approx(-8 / 15)
    assert r["diff_ci"][0] < r["diff"] < r["diff_ci"][1] < 0
    blind = {s["slice"]: s for s in r["slices"]}["heuristic=lexical_overlap,label=non-entailment"]
    assert blind["n"] == 15 and blind["c"] == 9


def test_compare_pairs_by_id_not_by_line(tmp_path):
    pa = write_preds(tmp_path / "a.jsonl", [1, 0, 0], ids=["x", "y", "z"])
    pb = write_preds(tmp_path / "b.jsonl", [0, 0, 1], ids=["z", "y", "x"])
    r = compare_predictions(pa, pb)
    assert (r["b"], r["c"], r["both_correct"]) == (0, 0, 1)


def test_compare_mismatched_sets_is_an_error(tmp_path):
    pa = write_preds(tmp_path / "a.jsonl", [1, 0, 1])
    pb = write_preds(tmp_path / "b.jsonl", [1, 0, 1, 1])
    with pytest.raises(DataError, match="different sets"):
        compare_predictions(pa, pb)
    pc = write_preds(tmp_path / "c.jsonl", [1, 0, 1], gold="entailment")
    with pytest.raises(DataError, match="gold label"):
        compare_predictions(pa, pc)


def test_compare_bad_file_names_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "gold": "entailment", "correct": true}\n{"id": "b"}\n')
    good = write_preds(tmp_path / "a.jsonl", [1, 1])
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        compare_predictions(good, bad)


def test_compare_cli_table_json_and_error(tmp_path, capsys):
    pa = write_preds(tmp_path / "a.jsonl", [1, 1, 0, 1])
    pb = write_preds(tmp_path / "b.jsonl", [1, 0, 0, 0])
    assert cli_main(["compare", str(pa), str(pb)]) == 0
    out = capsys.readouterr().out
    assert "McNemar" in out and "heuristic=lexical_overlap,label=non-entailment" in out
    assert cli_main(["compare", str(pa), str(pb), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["b"] == 2 and data["c"] == 0 and data["diff"] == pytest.approx(0.5)
    other = write_preds(tmp_path / "o.jsonl", [1], ids=["zzz"])
    assert cli_main(["compare", str(pa), str(other)]) == 2
    assert "different sets" in capsys.readouterr().err
