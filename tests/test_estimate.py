"""`blindspot run CONFIG --estimate`: the work per stage, the list schedule, the uncalibrated projection
(paper.yaml, no GPU and no Llama-2 here), and a real calibration on tiny-llama (smoke.yaml, shrunk)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from blindspot.grid.artifacts import StageSpec
from blindspot.config import load_config
from blindspot.errors import ConfigError
from blindspot.grid.estimate import list_schedule, parse_assumptions, run_estimate, stage_examples

REPO = Path(__file__).resolve().parents[1]
PAPER_SIZES = ["pool=391722,mnli-matched=9815,mnli-mismatched=9832,hans=30000"]
HANS_HERE = "data.eval.hans={path: $BLINDSPOT_DATA/hans-regen/heuristics_evaluation_set.jsonl.gz}"


def test_list_schedule_respects_inputs_and_devices():
    a = StageSpec("prepare", {})
    b, c = StageSpec("start", {"n": 1}, {"p": a}), StageSpec("start", {"n": 2}, {"p": a})
    d = StageSpec("evaluate", {}, {"b": b, "c": c})
    items, secs = [a, b, c, d], [1.0, 10.0, 6.0, 2.0]
    assert list_schedule(items, secs, 1) == 19.0
    assert list_schedule(items, secs, 2) == 13.0  # b and c side by side; d waits for b
    assert list_schedule([a, [b, c], d], [1.0, 12.0, 2.0], 4) == 15.0  # a group is one task


def test_assumptions_parse_and_bad_ones_are_one_line():
    assert parse_assumptions(["pool=10,tokens=80", "mfu=0.3"]) == {"pool": 10.0, "tokens": 80.0, "mfu": 0.3}
    with pytest.raises(ConfigError, match="KEY=NUMBER"):
        parse_assumptions(["pool=many"])


def test_generation_rows_are_whole_batches_capped_by_attempts():
    spec = StageSpec("generate", {"generation": {"per_label": 100, "batch_size": 64, "max_attempts_factor": 2.0}})
    sets = {"pool": {"n": 1000}}
    assert stage_examples(spec, sets, {}) == 3 * 128          # 100 valid in whole batches of 64
    assert stage_examples(spec, sets, {"valid": 0.25}) == 3 * 256  # 400 wanted, capped at 2 x 100 -> 4 batches


def test_paper_projection_without_a_gpu_says_nothing_was_measured(data_env, tmp_path, capsys):
    r = run_estimate(REPO / "configs" / "paper.yaml", tmp_path, None, [HANS_HERE], 8,
                     PAPER_SIZES + ["tokens=80,mfu=0.3,peak=989e12"])
    out = capsys.readouterr().out
    assert r["measured"] is False and "NOT MEASURED" in out and (tmp_path / "estimate.md").is_file()
    cfg = load_config(REPO / "configs" / "paper.yaml", [HANS_HERE])
    kinds = r["kinds"]
    assert kinds["augment (grouped)"]["stages"] == len(cfg.start_sizes) * 9
    assert kinds["augment (grouped)"]["examples"] == len(cfg.start_sizes) * 3 * sum(cfg.augment.sizes)
    assert kinds["start"]["examples"] == 5000 + 10000 + 20000 + 100000 + 391722
    # the training rate is the assumed FLOP/s over a 7B LoRA model's training FLOPs per 80-token example
    assert 0.3 * 989e12 / r["rates"]["start"] == pytest.approx(6.9e9 * 4 * 80, rel=0.1)
    assert 0 < r["wall_s_on_gpus"] < r["total_s"]
    assert json.loads((tmp_path / "estimate.json").read_text())["total_s"] == r["total_s"]


def test_paper_without_sizes_names_what_is_missing(data_env, tmp_path):
    with pytest.raises(ConfigError, match="--assume pool=N"):
        run_estimate(REPO / "configs" / "paper.yaml", tmp_path, None, [HANS_HERE], None, ["tokens=80,mfu=0.3,peak=1e15"])
    with pytest.raises(ConfigError, match="give tokens, mfu, peak"):
        run_estimate(REPO / "configs" / "paper.yaml", tmp_path, None, [HANS_HERE], None, PAPER_SIZES)


@pytest.mark.slow
def test_smoke_estimate_calibrates_every_stage_kind_here(data_env, tmp_path, capsys):
    shrink = ["generator.optim.batch_size=4", "generation.batch_size=4", "generation.max_new_tokens=16",
              "classifier.optim.batch_size=4", "generations.rounds=1"]  # a group of 4 (2 sources x 2 sizes)
    r = run_estimate(REPO / "configs" / "smoke.yaml", tmp_path, None, shrink, 2, [])
    assert r["measured"] is True and r["group_size"] == 4
    for kind in ("start", "group", "evaluate", "generator", "generate", "base"):
        assert r["rates"][kind] > 0, kind
    assert all(not row["unknown"] for row in r["kinds"].values())
    assert r["mfu"]["group"] is not None and r["wall_s_on_gpus"] <= r["total_s"]
    assert "augment (grouped)" in capsys.readouterr().out
    assert [p.name.split("-")[0] for p in (tmp_path / "stages").iterdir()] == ["prepare"]  # calibration stores nothing


@pytest.fixture
def data_env():
    root = Path(os.environ.get("BLINDSPOT_DATA", REPO.parent / "shared" / "data"))
    if not (root / "mnli-subset").is_dir():
        pytest.skip(f"real data not found at {root} (set BLINDSPOT_DATA)")
    return root
