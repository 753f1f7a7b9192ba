"""Cache keys follow the code: a stage's code that changed since it was recorded fails here until
its version is bumped (behaviour changed) or left (it did not) and the fingerprints re-recorded."""

from __future__ import annotations

import pytest

from blindspot.grid import stage_versions
from blindspot.grid.artifacts import StageSpec


def test_every_stage_code_is_as_recorded():
    lines = stage_versions.stale()
    assert not lines, ("stage code changed since stage_code.json was recorded:\n  " + "\n  ".join(lines)
                       + "\nIf a change alters what a stage writes, bump its STAGE_VERSIONS entry in "
                       "src/blindspot/grid/stage_versions.py; then run `python -m blindspot.grid.stage_versions --record`.")


def test_every_stage_kind_has_a_version_and_code():
    from blindspot.stages import STAGES

    assert set(stage_versions.STAGE_VERSIONS) == set(STAGES) == set(stage_versions.STAGE_CODE)


def test_a_version_bump_changes_the_hash_of_that_stage_and_its_dependants(monkeypatch):
    prepare = StageSpec("prepare", {"x": 1})
    start = StageSpec("start", {"n": 5}, {"prepare": prepare})
    before = (prepare.hash, start.hash)
    monkeypatch.setitem(stage_versions.STAGE_VERSIONS, "prepare", stage_versions.STAGE_VERSIONS["prepare"] + 1)
    assert prepare.hash != before[0] and start.hash != before[1]
    monkeypatch.undo()
    monkeypatch.setitem(stage_versions.STAGE_VERSIONS, "start", stage_versions.STAGE_VERSIONS["start"] + 1)
    assert (prepare.hash, start.hash != before[1]) == (before[0], True)


def test_docstrings_and_comments_do_not_count(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text('def f(x):\n    """One thing."""\n    return x + 1  # why\n')
    b.write_text('def f(x):\n    """Another thing, reworded."""\n\n    return x + 1\n')
    assert stage_versions._fingerprint_file(a) == stage_versions._fingerprint_file(b)
    b.write_text('def f(x):\n    return x + 2\n')
    assert stage_versions._fingerprint_file(a) != stage_versions._fingerprint_file(b)
    with pytest.raises(KeyError):
        stage_versions._fingerprint_file(a, "g")


# --- the stage contract -------------------------------------------------------------------------

SHIPPED = sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.stem)
def test_every_stage_spec_of_every_shipped_config_round_trips_through_json(config, shared_data, monkeypatch):
    """Each stage's JSON (what is hashed) is its kind's typed Spec, and back, unchanged."""
    import json

    from blindspot.config import load_config
    from blindspot.grid import build_plan
    from blindspot.stages import STAGES, spec_json

    monkeypatch.setenv("BLINDSPOT_DATA", str(shared_data))
    overrides = []
    if config.stem == "paper":  # the official HANS .txt is not in ../shared/data: its regenerated JSONL stands in
        overrides = ["data.eval.hans={path: $BLINDSPOT_DATA/hans-regen/heuristics_evaluation_set.jsonl.gz}"]
    plan = build_plan(load_config(config, overrides))
    assert {s.stage for s in plan.stages} <= set(STAGES)
    for stage in plan.stages:
        spec = STAGES[stage.stage].Spec.model_validate_json(json.dumps(stage.spec))
        assert spec_json(spec) == stage.spec, stage.label
        assert spec.model_config["frozen"], stage.stage
