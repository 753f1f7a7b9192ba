"""The tidy results table: collection from evaluation dirs, seed aggregation, atomic writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blindspot.errors import BlindspotError
from blindspot.stats import Z95, wilson_interval
from blindspot.results import (COLUMNS, INDEX, ResultEntry, RunIndex, aggregate_seeds, collect_results,
                               comparison_pairs, load_index, load_results, write_index, write_results)

STARTS, SOURCES, AUGS, SEEDS = (0, 1000), ("original", "synthetic", "biased-lexical-overlap"), (100, 200), (0, 1)
HEURISTICS, HANS_LABELS = ("lexical_overlap", "subsequence", "constituent"), ("entailment", "non-entailment")
MNLI_LABELS, GENRES = ("entailment", "neutral", "contradiction"), ("fiction", "travel")
T_975_1DF = 12.706204736174707  # scipy.stats.t.ppf(0.975, 1), written out so the test checks the code


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def _examples() -> dict[str, list[dict]]:
    """20 MNLI-like and 60 HANS-like examples (10 per heuristic x gold label)."""
    mnli = [{"id": f"m{i}", "gold": MNLI_LABELS[i % 3], "genre": GENRES[i % 2], "overlap": {"words": i % 4 == 0}}
            for i in range(20)]
    hans = [{"id": f"h{h}{lab}{i}", "gold": lab, "heuristic": heur, "subcase": f"{heur}_case"}
            for h, heur in enumerate(HEURISTICS) for lab in HANS_LABELS for i in range(10)]
    return {"mnli_dev_matched": mnli, "hans": hans}


def _slices(row: dict) -> list[str]:
    if "heuristic" in row:
        return ["all", f"heuristic={row['heuristic']}", f"heuristic={row['heuristic']},label={row['gold']}"]
    return ["all", f"genre={row['genre']}"]


def write_eval_dir(eval_dir: Path, rng: np.random.Generator) -> None:
    """A finished evaluation dir as evaluation writes it, with random (fixture) correctness."""
    sets = {}
    for name, rows in _examples().items():
        preds, groups = [], {}
        for row in rows:
            ok = bool(rng.random() < 0.6)
            preds.append({**row, "pred": row["gold"] if ok else "neutral", "pred_eval": row["gold"] if ok else "x",
                          "correct": ok, "probs": [0.2, 0.5, 0.3]})
            for s in _slices(row):
                groups.setdefault(s, []).append(ok)
        (eval_dir / "predictions").mkdir(parents=True, exist_ok=True)
        (eval_dir / "predictions" / f"{name}.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
        metrics = [{"slice": s, "correct": sum(v), "n": len(v), "accuracy": sum(v) / len(v),
                    "ci_low": _wilson(sum(v), len(v))[0], "ci_high": _wilson(sum(v), len(v))[1]}
                   for s, v in groups.items()]
        sets[name] = {"kind": "hans" if "hans" in name else "mnli", "n": len(rows), "metrics": metrics}
    (eval_dir / "metrics.json").write_text(json.dumps({"sets": sets, "classifier": "x", "examples_per_s": 1.0}))
    (eval_dir / "DONE").write_text("")


def make_run_dir(root: Path) -> Path:
    """A run dir for a 2 start x 3 source x 2 aug x 2 seed grid (plus the starting points)."""
    rng = np.random.default_rng(0)
    conds = [(s, "start", 0, seed) for s in STARTS for seed in SEEDS]
    conds += [(s, src, a, seed) for s in STARTS for src in SOURCES for a in AUGS for seed in SEEDS]
    entries = []
    for start, src, aug, seed in conds:
        rel = f"stages/evaluate-{start}-{src}-{aug}-{seed}"
        write_eval_dir(root / rel, rng)
        entries.append(ResultEntry(start_size=start, source=src, aug_size=aug, seed=seed, eval_dir=rel))
    write_index(root, RunIndex(name="fixture", config={"model": "tiny-llama"}, conditions=entries))
    return root


N_CONDITIONS = len(STARTS) * len(SEEDS) * (1 + len(SOURCES) * len(AUGS))  # 28
N_SLICES = (1 + len(GENRES)) + (1 + len(HEURISTICS) + len(HEURISTICS) * len(HANS_LABELS)) + len(HEURISTICS)  # 3+10+3


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return make_run_dir(tmp_path / "run")


def test_collect_results_table(run_dir: Path) -> None:
    df = collect_results(load_index(run_dir).conditions, run_dir)
    assert list(df.columns) == COLUMNS
    assert len(df) == N_CONDITIONS * N_SLICES
    assert set(df["source"]) == {"start", *SOURCES}
    assert (df.loc[df["source"] == "start", "aug_size"] == 0).all()
    assert all((run_dir / p).is_file() and not Path(p).is_absolute() for p in df["predictions"].unique())
    assert df["n"].max() == 60 and df.loc[df["slice"] == "heuristic=lexical_overlap,label=non-entailment", "n"].eq(10).all()


def test_reliance_rows_by_hand(run_dir: Path) -> None:
    df = collect_results(load_index(run_dir).conditions, run_dir)
    rel = df[df["metric"] == "reliance"]
    assert len(rel) == N_CONDITIONS * len(HEURISTICS)
    assert set(rel["slice"]) == {f"reliance:heuristic={h}" for h in HEURISTICS}
    assert (rel["eval_set"] == "hans").all() and (rel["baseline_set"] == "mnli_dev_matched").all()
    row = rel[(rel["start_size"] == 1000) & (rel["source"] == "synthetic") & (rel["aug_size"] == 200)
              & (rel["seed"] == 1) & (rel["slice"] == "reliance:heuristic=subsequence")].iloc[0]
    d = run_dir / "stages/evaluate-1000-synthetic-200-1/predictions"
    hans = [json.loads(r) for r in (d / "hans.jsonl").read_text().splitlines()]
    mnli = [json.loads(r) for r in (d / "mnli_dev_matched.jsonl").read_text().splitlines()]
    k1 = sum(r["pred"] == "entailment" for r in hans if r["heuristic"] == "subsequence" and r["gold"] != "entailment")
    base = [r for r in mnli if r["gold"] != "entailment" and not r["overlap"]["words"]]
    k2 = sum(r["pred"] == "entailment" for r in base)
    assert (row["correct"], row["n"], row["baseline_k"], row["baseline_n"]) == (k1, 10, k2, len(base))
    assert row["accuracy"] == pytest.approx(k1 / 10 - k2 / len(base)) and row["overlap_rule"] == "words"
    agg = aggregate_seeds(df)
    assert (agg.loc[agg["metric"] == "reliance", "ci_low"] >= -1).all()


def test_aggregate_seeds_hand_computed(run_dir: Path) -> None:
    df = collect_results(load_index(run_dir).conditions, run_dir)
    agg = aggregate_seeds(df)
    assert len(agg) == N_CONDITIONS // len(SEEDS) * N_SLICES
    # by hand from the predictions files of both seeds: HANS overall, start 1000 + 200 synthetic
    accs, wilsons = [], []
    for seed in SEEDS:
        rows = (run_dir / f"stages/evaluate-1000-synthetic-200-{seed}/predictions/hans.jsonl").read_text().splitlines()
        correct = sum(json.loads(r)["correct"] for r in rows)
        accs.append(correct / len(rows))
        wilsons.append(wilson_interval(correct, len(rows)))
    sd = abs(accs[0] - accs[1]) / math.sqrt(2)
    mean, t_half, seed_half = (accs[0] + accs[1]) / 2, T_975_1DF * sd / math.sqrt(2), Z95 * sd / math.sqrt(2)
    below = sum(a - w[0] for a, w in zip(accs, wilsons)) / 2  # the seeds' own Wilson half-widths, averaged
    above = sum(w[1] - a for a, w in zip(accs, wilsons)) / 2
    row = agg[(agg["start_size"] == 1000) & (agg["source"] == "synthetic") & (agg["aug_size"] == 200)
              & (agg["eval_set"] == "hans") & (agg["slice"] == "all")].iloc[0]
    assert row["n_seeds"] == 2 and row["interval"] == "eval+seeds" and row["n"] == 60
    assert row["accuracy"] == pytest.approx(mean)
    # metrics.json keeps the Wilson bounds rounded: compare to 1e-5
    assert row["ci_low"] == pytest.approx(max(0.0, mean - math.sqrt(below ** 2 + seed_half ** 2)), abs=1e-5)
    assert row["ci_high"] == pytest.approx(min(1.0, mean + math.sqrt(above ** 2 + seed_half ** 2)), abs=1e-5)
    assert row["t_low"] == pytest.approx(max(0.0, mean - t_half))
    assert row["t_high"] == pytest.approx(min(1.0, mean + t_half))


def test_aggregate_single_seed_keeps_its_own_interval(run_dir: Path) -> None:
    df = collect_results(load_index(run_dir).conditions, run_dir)
    one = df[df["seed"] == 0]
    agg = aggregate_seeds(one)
    expected = agg["metric"].map({"accuracy": "wilson", "reliance": "newcombe"})
    assert (agg["interval"] == expected).all() and (agg["n_seeds"] == 1).all()
    merged = agg.merge(one, on=["start_size", "source", "aug_size", "eval_set", "slice"], suffixes=("", "_run"))
    assert np.allclose(merged["ci_low"], merged["ci_low_run"]) and np.allclose(merged["accuracy"], merged["accuracy_run"])


def test_write_results_round_trip(run_dir: Path) -> None:
    df = collect_results(load_index(run_dir).conditions, run_dir)
    paths = write_results(df, run_dir)
    pd.testing.assert_frame_equal(pd.read_parquet(paths["parquet"]), df)
    assert len(pd.read_csv(paths["csv"])) == len(df)
    assert len(pd.read_csv(paths["aggregated"])) == len(aggregate_seeds(df))
    assert not list((run_dir / "results").glob(".*.tmp"))


def test_load_results_without_index_reads_saved_table(run_dir: Path) -> None:
    df = load_results(run_dir)  # collects and writes
    (run_dir / INDEX).unlink()
    pd.testing.assert_frame_equal(load_results(run_dir), df)


def test_no_results_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BlindspotError, match="no results found.*index.json"):
        load_results(tmp_path)


def test_unfinished_evaluation_named(run_dir: Path) -> None:
    (run_dir / "stages/evaluate-0-start-0-1/DONE").unlink()
    with pytest.raises(BlindspotError, match="evaluate-0-start-0-1: evaluation not finished"):
        load_results(run_dir)


def test_bad_index_names_field(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / INDEX).write_text(json.dumps({"name": "x", "conditions": [{"start_size": "many", "source": "s",
                                                                           "aug_size": 0, "seed": 0, "eval_dir": "e"}]}))
    with pytest.raises(BlindspotError, match=r"conditions\.0\.start_size"):
        load_index(tmp_path)


def test_duplicate_condition_rejected(run_dir: Path) -> None:
    entries = load_index(run_dir).conditions
    with pytest.raises(BlindspotError, match="more than once"):
        collect_results(entries + entries[:1], run_dir)


def test_comparison_pairs() -> None:
    assert comparison_pairs(["start", "original", "synthetic", "biased-lexical-overlap"]) == [
        ("synthetic", "original"), ("biased-lexical-overlap", "synthetic")]
    assert comparison_pairs(["start", "original"]) == []
    assert comparison_pairs(["original", "original+biased-lexical-overlap"]) == [
        ("original+biased-lexical-overlap", "original")]


def test_slice_filter_spells_booleans_yes_no() -> None:
    from blindspot.results import _slice_filter

    keep = _slice_filter("lexical_overlap=no,label=neutral")
    assert keep({"lexical_overlap": False, "gold": "neutral"}) and not keep({"lexical_overlap": True, "gold": "neutral"})
