"""The report: the paper's figure, the per-heuristic figure, paired tests, Markdown and HTML."""

from __future__ import annotations

import math

import json
from pathlib import Path

import pandas as pd
import pytest

from blindspot.cli import main as cli_main
from blindspot.errors import BlindspotError
from blindspot.report import write_report
from blindspot.report_figures import (BLINDSPOT_SLICE, RELIANCE_SLICE, SOURCE_NAMES, build_heuristic_figure,
                                      build_main_figure, heuristic_slices, pick_eval_sets)
from blindspot.results import load_results, paired_tests
from test_results import AUGS, HANS_LABELS, HEURISTICS, SEEDS, SOURCES, STARTS, make_run_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path / "run")


@pytest.fixture
def table(run_dir: Path) -> pd.DataFrame:
    return load_results(run_dir)


def test_pick_eval_sets(table: pd.DataFrame) -> None:
    assert pick_eval_sets(table) == ("mnli_dev_matched", "hans")
    with pytest.raises(BlindspotError, match="--hans-set 'nope': not an evaluation set"):
        pick_eval_sets(table, hans_set="nope")
    general = table[table["eval_set"] == "mnli_dev_matched"]
    with_mismatched = pd.concat([table, general.assign(eval_set="mnli_dev_mismatched")])
    assert pick_eval_sets(with_mismatched) == ("mnli_dev_matched", "hans")
    two_general = pd.concat([table, general.assign(eval_set="other_dev")]).replace("mnli_dev_matched", "dev")
    with pytest.raises(BlindspotError, match="cannot tell which set is the general set.*--mnli-set"):
        pick_eval_sets(two_general)
    assert pick_eval_sets(two_general, mnli_set="other_dev") == ("other_dev", "hans")
    # a challenge set named after its file (heuristics_evaluation_set) is found by its heuristic slices
    assert pick_eval_sets(table.replace("hans", "heuristics_evaluation_set"))[1] == "heuristics_evaluation_set"


def test_main_figure_one_panel_per_start(table: pd.DataFrame) -> None:
    fig = build_main_figure(table[table["metric"] == "accuracy"])
    assert len(fig.axes) == len(STARTS)
    for ax in fig.axes:
        assert ax.get_ylim() == (0.0, 1.0)
        # per evaluation line: one errorbar container per source plus one for the shared starting point
        assert len(ax.containers) == 3 * (len(SOURCES) + 1)
        assert len([ln for ln in ax.get_lines() if ln.get_linestyle() != "None"]) >= 3 * len(SOURCES)
    assert [ax.get_title() for ax in fig.axes] == ["start: untrained (0 examples): accuracy",
                                                   "start: 1,000 examples: accuracy"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {*(SOURCE_NAMES.get(s, s) for s in SOURCES), "starting point"} <= set(labels)
    assert any("the blindspot" in t for t in labels)


def test_main_figure_reliance_panel_below_each_start(table: pd.DataFrame) -> None:
    fig = build_main_figure(table)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["start: untrained (0 examples): accuracy", "start: 1,000 examples: accuracy",
                      "start: untrained (0 examples): reliance on lexical overlap",
                      "start: 1,000 examples: reliance on lexical overlap"]
    rel = fig.axes[2]
    assert len(rel.containers) == len(SOURCES) + 1 and rel.get_ylim()[0] < 0 < rel.get_ylim()[1]
    assert "reliance" in rel.get_ylabel() and "Accuracy" in fig.get_suptitle()


def test_main_figure_drops_empty_panels(table: pd.DataFrame) -> None:
    table = table[table["metric"] == "accuracy"]
    three = pd.concat([table, table[table["start_size"] == 1000].assign(start_size=5000)])
    four = pd.concat([three, table[table["start_size"] == 1000].assign(start_size=9000)])
    assert len(build_main_figure(three).axes) == 3
    assert len(build_main_figure(four).axes) == 4  # a 2 x 3 grid with two empty cells removed


def test_heuristic_figure_panels(table: pd.DataFrame) -> None:
    slices = heuristic_slices(table, "hans")
    assert len(slices) == len(HEURISTICS) * len(HANS_LABELS) and BLINDSPOT_SLICE in slices
    fig = build_heuristic_figure(table, "hans")
    assert len(fig.axes) == len(STARTS) * len(slices)


def test_paired_tests_blindspot_slice(table: pd.DataFrame, run_dir: Path) -> None:
    tests = paired_tests(table, run_dir, [("hans", "all"), ("hans", BLINDSPOT_SLICE)])
    # (synthetic vs original, biased vs synthetic) x starts x augs x seeds x 2 slices
    assert len(tests) == 2 * len(STARTS) * len(AUGS) * len(SEEDS) * 2
    blind = tests[tests["slice"] == BLINDSPOT_SLICE]
    assert (blind["n"] == 10).all() and (tests.loc[tests["slice"] == "all", "n"] == 60).all()
    # acc_a must equal the table's accuracy of that condition on that slice
    r = blind.iloc[0]
    ref = table[(table["start_size"] == r["start_size"]) & (table["source"] == r["source_a"])
                & (table["aug_size"] == r["aug_size"]) & (table["seed"] == r["seed"])
                & (table["eval_set"] == "hans") & (table["slice"] == BLINDSPOT_SLICE)]
    assert r["acc_a"] == pytest.approx(ref["accuracy"].item())
    assert list(tests["diff"]) == pytest.approx(list(tests["acc_a"] - tests["acc_b"]))
    assert tests["p_mcnemar"].between(0, 1).all()


def test_paired_tests_of_the_reliance_measure(table: pd.DataFrame, run_dir: Path) -> None:
    tests = paired_tests(table, run_dir, [("hans", RELIANCE_SLICE)])
    assert len(tests) == 2 * len(STARTS) * len(AUGS) * len(SEEDS) and (tests["test"] == "paired bootstrap").all()
    r = tests.iloc[0]
    ref = table[(table["start_size"] == r["start_size"]) & (table["source"] == r["source_a"])
                & (table["aug_size"] == r["aug_size"]) & (table["seed"] == r["seed"])
                & (table["slice"] == RELIANCE_SLICE)]
    assert r["acc_a"] == pytest.approx(ref["accuracy"].item())
    assert list(tests["diff"]) == pytest.approx(list(tests["acc_a"] - tests["acc_b"]))
    assert tests["p_bootstrap"].between(0, 1).all() and (tests["diff_low"] <= tests["diff"] + 1e-12).all()
    again = paired_tests(table, run_dir, [("hans", RELIANCE_SLICE)])  # seeded: the same intervals
    pd.testing.assert_frame_equal(tests, again)


def test_write_report_files(run_dir: Path) -> None:
    (run_dir / "audit.md").write_text("# Audit\n\n| set | lexical overlap |\n|---|---|\n| synthetic | 0.12 |\n")
    out = write_report(run_dir)
    assert out == run_dir / "report" and (out / "DONE").exists()
    for name in ("figure_main.png", "figure_heuristics.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    md = (out / "report.md").read_text()
    assert "## Paired tests" in md and "### synthetic vs original" in md and "### biased-lexical-overlap vs synthetic" in md
    assert "| comparison | start_size | aug_size | eval_set | slice | seed | n | acc_a | acc_b |" in md
    assert f"`{BLINDSPOT_SLICE}`" in md and "![accuracy against augmentation size](figure_main.png)" in md
    assert "`results/results.csv`" in md and "{" not in md.split("## Configuration")[0]
    assert "## Data audit" in md and "### Audit" in md and "| synthetic | 0.12 |" in md
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table" in page
    assert "## Reliance on each heuristic" in md and "**Reliance on a heuristic**" in md
    paired = pd.read_csv(out / "paired_tests.csv")
    assert len(paired) == 2 * len(STARTS) * len(AUGS) * len(SEEDS) * 4  # 3 slices of interest + reliance
    assert (run_dir / "results" / "results.parquet").exists()


def test_report_cli(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert cli_main(["report", str(run_dir), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "report.html").exists()
    assert capsys.readouterr().out.strip() == str(tmp_path / "rep" / "report.html")


def test_report_without_results_one_clear_error(tmp_path: Path, capsys) -> None:
    assert cli_main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("blindspot report: error: ") and "no results found" in err[0]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "index.json").write_text(json.dumps({"name": "empty", "conditions": []}))
    with pytest.raises(BlindspotError, match="lists no finished evaluations"):
        write_report(tmp_path)


def test_report_reads_what_evaluate_writes(tmp_path: Path) -> None:
    """Eval dirs built with evaluate's own row and metric functions (one seed: Wilson intervals)."""
    import numpy as np

    from blindspot.data.example import MNLI_LABELS, NLIExample
    from blindspot.evaluate import prediction_rows, score
    from blindspot.results import ResultEntry, RunIndex, write_index
    from blindspot.storage import atomic_write_json, atomic_write_jsonl, mark_done

    mnli = [NLIExample(f"m{i}", "p", "h", MNLI_LABELS[i % 3], genre="fiction") for i in range(12)]
    hans = [NLIExample(f"h{i}", "p", "h", ("entailment", "non-entailment")[i // 2 % 2], heuristic=heur, subcase="s")
            for i, heur in enumerate(["lexical_overlap", "subsequence"] * 8)]
    rng, entries = np.random.default_rng(1), []
    for source, aug in (("start", 0), ("original", 50), ("synthetic", 50)):
        rel = f"eval-{source}"
        metrics = {}
        for name, examples, kind in (("multinli_1.0_dev_matched", mnli, "mnli"),
                                     ("heuristics_evaluation_set", hans, "hans")):
            rows = prediction_rows(examples, rng.dirichlet(np.ones(3), len(examples)), MNLI_LABELS, kind == "hans")
            atomic_write_jsonl(tmp_path / rel / "predictions" / f"{name}.jsonl", rows)
            metrics[name] = {"kind": kind, "n": len(examples),
                             "metrics": score(examples, [r["pred"] for r in rows], kind)}
        atomic_write_json(tmp_path / rel / "metrics.json", {"sets": metrics})
        mark_done(tmp_path / rel)
        entries.append(ResultEntry(start_size=100, source=source, aug_size=aug, seed=0, eval_dir=rel))
    write_index(tmp_path, RunIndex(name="eval-format", conditions=entries))
    out = write_report(tmp_path)
    agg = pd.read_csv(tmp_path / "results" / "results_aggregated.csv")
    assert (agg["interval"] == agg["metric"].map({"accuracy": "wilson", "reliance": "newcombe"})).all()
    paired = pd.read_csv(out / "paired_tests.csv")
    # sorted by eval set: HANS, then MNLI; the reliance measure (HANS against MNLI's no-overlap pairs) beside
    assert list(paired["slice"]) == ["all", BLINDSPOT_SLICE, RELIANCE_SLICE, "all"]
    assert list(paired["n"]) == [16, 4, 4, 12]


def test_paired_tests_slices_beyond_compare(table: pd.DataFrame, run_dir: Path, tmp_path: Path) -> None:
    """A slice compare does not report itself (genre) is compared on a sliced copy of both files."""
    from blindspot.results import _compare_slices

    tests = paired_tests(table, run_dir, [("mnli_dev_matched", "genre=fiction")])
    assert len(tests) == 2 * len(STARTS) * len(AUGS) * len(SEEDS) and (tests["n"] == 10).all()
    a = run_dir / "stages/evaluate-0-synthetic-100-0/predictions/hans.jsonl"
    b = run_dir / "stages/evaluate-0-original-100-0/predictions/hans.jsonl"
    (tmp_path / "cmp").mkdir()
    via_compare = _compare_slices(a, b, [BLINDSPOT_SLICE], tmp_path / "cmp")[BLINDSPOT_SLICE]
    own = _compare_slices(a, b, ["heuristic=lexical_overlap,label=non-entailment,subcase=lexical_overlap_case"],
                          tmp_path / "cmp")
    assert list(own.values())[0]["n"] == via_compare["n"] == 10
    assert list(own.values())[0]["diff"] == pytest.approx(via_compare["diff"])


def test_findings_section_from_paired_differences(table: pd.DataFrame, run_dir: Path) -> None:
    from blindspot.findings import FAILS, HOLDS, INCONCLUSIVE, finding_b, seed_mean_interval

    out = write_report(run_dir)
    md = (out / "report.md").read_text()
    assert "## The paper's three findings, here" in md and md.count("| (") == 3
    # two seeds: mean of the paired differences; their paired intervals (0.1 and 0.1 below, 0.2 and
    # 0.4 above) plus seed-to-seed variation (sd 0.1414, z sd / sqrt 2 = 0.196) in quadrature
    mean, lo, hi, k = seed_mean_interval(pd.DataFrame({"diff": [0.1, 0.3], "diff_low": [0.0, 0.2],
                                                       "diff_high": [0.3, 0.7]}))
    assert (mean, k) == (pytest.approx(0.2), 2)
    assert mean - lo == pytest.approx(math.hypot(0.1, 1.959964 * 0.1)) and hi - mean == pytest.approx(math.hypot(0.3, 0.196), abs=1e-4)
    row = {"source_a": "synthetic", "source_b": "original", "eval_set": "m", "slice": "all", "start_size": 0,
           "aug_size": 10, "seed": 0}
    tight = pd.DataFrame([{**row, "diff": 0.01, "diff_low": -0.02, "diff_high": 0.03}])
    far = pd.DataFrame([{**row, "diff": 0.2, "diff_low": 0.1, "diff_high": 0.3}])
    wide = pd.DataFrame([{**row, "diff": 0.0, "diff_low": -0.2, "diff_high": 0.2}])
    assert [finding_b(t, "m")[0] for t in (tight, far, wide)] == [HOLDS, FAILS, INCONCLUSIVE]
