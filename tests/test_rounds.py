"""Repeated generations (blindspot.rounds): the config, the stages of each round, what each round's
generator trains on, cached rounds, and the report's section; old configs keep their stages' hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from blindspot.config import load_config, parse_config
from blindspot.data.example import MNLI_LABELS, NLIExample, save_examples
from blindspot.errors import ConfigError
from blindspot.grid import build_plan, print_plan
from blindspot.stages import generate as generate_stage
from blindspot.stages import generator as generator_stage
from blindspot.storage import atomic_write_json, atomic_write_jsonl, mark_done

REPO = Path(__file__).resolve().parents[1]
BEFORE = json.loads((Path(__file__).parent / "stage_dirs_before_rounds.json").read_text())
HANS_HERE = "data.eval.hans={path: $BLINDSPOT_DATA/hans-regen/heuristics_evaluation_set.jsonl.gz}"


def raw_config(tmp_path: Path, generations: dict | None = None) -> dict:
    """A tiny-llama grid on small files of the official formats (planning only hashes them)."""
    train, hans = tmp_path / "train.jsonl", tmp_path / "hans.jsonl"
    atomic_write_jsonl(train, [{"pairID": f"p{i}", "genre": "fiction", "gold_label": MNLI_LABELS[i % 3],
                                "sentence1": f"A man {i} walks.", "sentence2": f"A man {i} moves."} for i in range(90)])
    atomic_write_jsonl(hans, [{"pairID": f"h{i}", "gold_label": ["entailment", "non-entailment"][i % 2],
                               "heuristic": "lexical_overlap", "subcase": "ln_subject/object_swap", "template": "t",
                               "sentence1": "The judge saw the actor.", "sentence2": f"The actor saw the judge {i}."}
                              for i in range(6)])
    raw = {"name": "t", "model": "tiny-llama", "dtype": "float32",
           "data": {"train": {"path": str(train)}, "eval": {"hans": {"path": str(hans)}}, "validation_per_label": 2},
           "start_sizes": [0, 10], "augment": {"sources": ["original", "synthetic"], "sizes": [6]},
           "generator": {"train_size": 30}, "generation": {"per_label": 10}}
    if generations is not None:
        raw["generations"] = generations
    return raw


def plan_of(tmp_path: Path, generations: dict | None = None):
    return build_plan(parse_config(raw_config(tmp_path, generations)))


def by_label(plan) -> dict:
    return {s.label: s for s in plan.stages}


# ---- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("generations, needle", [
    ({"rounds": 0}, "field 'generations.rounds'"),
    ({"rounds": 2, "mode": "both"}, "field 'generations.mode[0]': Input should be 'replace' or 'accumulate'"),
    ({"rounds": 2, "mode": ["replace", "replace"]}, "field 'generations.mode'"),
    ({"rounds": 2, "real_fraction": 1.0}, "field 'generations.real_fraction'"),
    ({"rounds": 2, "size": 3}, "field 'generations.size': unknown field"),
])
def test_bad_generations_field_is_named(tmp_path, generations, needle):
    with pytest.raises(ConfigError) as e:
        parse_config(raw_config(tmp_path, generations), "x.yaml")
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_rounds_need_the_synthetic_source_and_a_training_size(tmp_path):
    raw = raw_config(tmp_path, {"rounds": 2})
    raw["augment"]["sources"] = ["original"]
    with pytest.raises(ConfigError, match="augment.sources needs 'synthetic'"):
        parse_config(raw)
    raw = raw_config(tmp_path, {"rounds": 2})
    raw["generator"] = {}  # the whole pool: the next round's size must be given
    with pytest.raises(ConfigError, match="generations.train_size: needed"):
        parse_config(raw)
    with pytest.raises(ConfigError, match="fewer than 3 synthetic examples"):
        parse_config(raw_config(tmp_path, {"rounds": 2, "train_size": 4, "real_fraction": 0.5}))
    assert parse_config(raw_config(tmp_path)).generations.rounds == 1


# ---- hashes of configs without rounds ---------------------------------------------------------

def test_without_generations_the_plan_is_todays(tmp_path):
    """No section, or one round in any mode: the same stages with the same hashes and no round stages."""
    plain = plan_of(tmp_path)
    for generations in ({"rounds": 1}, {"rounds": 1, "mode": "accumulate", "real_fraction": 0.5}):
        same = plan_of(tmp_path, generations)
        assert [s.dirname for s in same.stages] == [s.dirname for s in plain.stages]
    assert not any("round" in s.spec for s in plain.stages)
    assert [c["round"] for c in plain.conditions if c["source"] == "synthetic"] == [1, 1]


@pytest.mark.parametrize("name", ["demo", "laptop", "paper", "smoke"])
def test_shipped_configs_keep_their_stage_hashes(name, shared_data, monkeypatch):
    """The stage directories each shipped config planned before repeated generations existed
    (recorded at 9dccaef: the demo's store holds exactly these) are still planned; smoke.yaml,
    which now has 2 rounds and a mixture, plans them and those on top once its generator is the
    classifier's model again (it is tiny-llama-wide now: blindspot.crossmodel, tests/test_mixture.py)."""
    monkeypatch.setenv("BLINDSPOT_DATA", str(shared_data))
    overrides = {"paper": [HANS_HERE], "smoke": ["generator.model=tiny-llama"]}.get(name, [])
    plan = build_plan(load_config(REPO / "configs" / f"{name}.yaml", overrides))
    dirs = {s.dirname for s in plan.stages}
    if name == "smoke":
        assert set(BEFORE[name]) < dirs
        assert all(s.spec.get("round") for s in plan.stages if s.dirname not in BEFORE[name]
                   and s.stage in ("generator", "generate"))
    else:
        assert dirs == set(BEFORE[name])


# ---- the stages of each round -----------------------------------------------------------------

def test_k_rounds_make_k_generators_each_on_the_right_data(tmp_path):
    plan = plan_of(tmp_path, {"rounds": 3, "mode": ["replace", "accumulate"]})
    plain = by_label(plan_of(tmp_path))
    st = by_label(plan)
    gens = [s for s in plan.stages if s.stage == "generator"]
    assert len(gens) == 1 + 2 * 2  # round 1 shared, rounds 2 and 3 per mode
    assert st["train generator"].dirname == plain["train generator"].dirname
    assert len({g.dirname for g in gens}) == len(gens)
    first = st["train generator"]
    contrib1 = st["train generator round 2 replace"].inputs["synthetic-r1"]
    # generation.per_label is 10 and train_size 30 (10 per label): each round's contribution to the
    # next round's training set is the round's own set (one stage)
    assert contrib1.dirname == st["generate 10/label"].dirname and contrib1.inputs["generator"].dirname == first.dirname
    for mode in ("replace", "accumulate"):
        r2, r3 = st[f"train generator round 2 {mode}"], st[f"train generator round 3 {mode}"]
        assert r2.spec["round"] == {"round": 2, "mode": mode, "train_size": 30, "real_fraction": 0.0}
        assert r2.inputs["synthetic-r1"].dirname == contrib1.dirname
        data2 = r3.inputs["synthetic-r2"]
        assert data2.inputs["generator"].dirname == r2.dirname
        assert data2.dirname == st[f"generate round 2 {mode}"].dirname
        own = st[f"generate round 3 {mode}"]
        assert (own.spec["round"], own.spec["mode"], own.inputs["generator"].dirname) == (3, mode, r3.dirname)
        assert set(st[f"audit round 3 {mode}"].inputs) == {"prepare", f"synthetic-r3-{mode}"}
    assert all(r["next_audit"] is None for r in plan.rounds)  # each round's data for the next is its own set
    assert "synthetic-r1" not in st["train generator round 3 replace"].inputs  # replace: the last round only
    assert st["train generator round 3 accumulate"].inputs["synthetic-r1"].dirname == contrib1.dirname
    rounds = {(c["source"], c["round"]) for c in plan.conditions if c["round"]}
    assert rounds == {("synthetic", 1), ("synthetic-r2-replace", 2), ("synthetic-r3-replace", 3),
                      ("synthetic-r2-accumulate", 2), ("synthetic-r3-accumulate", 3)}
    assert not any(c["round"] for c in plan.conditions if c["source"] in ("start", "original"))


def test_raising_k_runs_only_the_new_rounds(tmp_path, capsys):
    """K = 5 after K = 3: the planner finds every stage of rounds 1-3 cached, and runs rounds 4 and 5
    (their generators, data, audits, augmentations and evaluations) and round 3's data for round 4."""
    store = tmp_path / "store"
    small = plan_of(tmp_path, {"rounds": 3, "mode": ["replace", "accumulate"], "train_size": 60})
    for s in small.stages:
        s.path(store).mkdir(parents=True)
        mark_done(s.path(store))
    big = plan_of(tmp_path, {"rounds": 5, "mode": ["replace", "accumulate"], "train_size": 60})
    todo = print_plan(big, store)
    assert f"{len(big.stages)} stages: {len(small.stages)} cached, {todo} to run" in capsys.readouterr().out
    new = [s for s in big.stages if not s.done(store)]
    assert {s.dirname for s in small.stages} <= {s.dirname for s in big.stages}
    per_mode = 2 * 5  # rounds 4 and 5: generator, own data, audit; data for the next round and its audit
    # (round 3's for round 4 and round 4's for round 5)
    conditions = 2 * 2 * 2  # 2 starts x 2 new sources per mode x 2 modes, 1 size, 1 seed
    assert len(new) == 2 * per_mode + 2 * conditions
    for s in new:
        assert any(f"round {t}" in s.label or f"-r{t}-" in s.label for t in (4, 5)), s.label



def test_each_rounds_data_for_the_next_round_is_audited_and_reported(tmp_path):
    """With train_size 60 (20 per label) and per_label 10, each round writes a larger set for the next
    round's generator than its own: that set gets an audit stage of its own, in rounds.json and in the
    report's audit table after the round's own set."""
    from blindspot.rounds import write_rounds
    from blindspot.rounds_report import audit_table

    cfg = parse_config(raw_config(tmp_path, {"rounds": 3, "mode": ["replace", "accumulate"], "train_size": 60}))
    plan = build_plan(cfg)
    st, dirs = by_label(plan), {s.dirname for s in plan.stages}
    r1 = plan.rounds[0]
    assert r1["next"].dirname == st["generate round 1 for round 2 20/label"].dirname != r1["generate"].dirname
    assert r1["next_audit"].label == "audit round 1 for round 2"
    assert r1["next_audit"].inputs["synthetic-for-r2"].dirname == r1["next"].dirname
    for mode in ("replace", "accumulate"):
        r2, r3 = [r for r in plan.rounds if r["mode"] == mode]
        data = st[f"generate round 2 {mode} for round 3 20/label"]
        assert r2["next_audit"].inputs[f"synthetic-r2-{mode}-for-r3"].dirname == data.dirname
        assert st[f"train generator round 3 {mode}"].inputs["synthetic-r2"].dirname == data.dirname
        assert r3["next"] is None and r3["next_audit"] is None  # the last round writes for no one
    assert {r["next_audit"].dirname for r in plan.rounds if r["next_audit"]} <= dirs
    store, run_dir = tmp_path / "store", tmp_path / "run"
    for s in plan.stages:
        d = s.path(store)
        d.mkdir(parents=True)
        if s.stage == "generate":
            atomic_write_json(d / "report.json", {"attempts": 90, "valid": 60, "parse_failure_rate": 0.2,
                                                  "rejected": {}, "labels": list(MNLI_LABELS)})
        elif s.stage == "generator":
            atomic_write_json(d / "generator.json", {"train": {"examples": 60}})
        elif s.stage == "audit":
            n = 20 if any(name.endswith("-for-r2") or name.endswith("-for-r3") for name in s.inputs) else 10
            atomic_write_json(d / "audit.json", {"overlap_rule": "words", "sets": {
                name: _audit(n, {"entailment": 2, "neutral": 1, "contradiction": 0}) for name in s.inputs
                if name != "prepare"} | {"mnli-pool": _audit(100, {"entailment": 10, "neutral": 2, "contradiction": 1})}})
        mark_done(d)
    info = json.loads(write_rounds(cfg, plan.rounds, plan.audit, run_dir, store).read_text())
    nxt = [s["next_round_data"] for s in info["sets"]]
    assert [None if x is None else x["for_round"] for x in nxt] == [2, 3, None, 3, None]
    assert nxt[0]["audit"]["n"] == 60 and nxt[0]["generation"]["attempts"] == 90
    audit = audit_table(info)
    assert list(audit["data"]) == ["MNLI pool (real)", "round 1", "round 1, for round 2", "round 2 (replace)",
                                   "round 2 (replace), for round 3", "round 3 (replace)", "round 2 (accumulate)",
                                   "round 2 (accumulate), for round 3", "round 3 (accumulate)"]
    assert list(audit["pairs"])[1:3] == ["30", "60"]

# ---- what a later round's generator trains on --------------------------------------------------

def _examples(prefix: str, n_per_label: int) -> list[NLIExample]:
    return [NLIExample(f"{prefix}{lab}{i}", f"P {prefix} {i}.", f"H {i}.", lab)
            for i in range(n_per_label) for lab in MNLI_LABELS]


def _dirs(tmp_path: Path, rounds: int) -> dict[str, Path]:
    prepare = tmp_path / "prepare"
    pool = _examples("pool-", 40)
    save_examples(prepare / "pool.jsonl", pool)
    atomic_write_json(prepare / "sets.json", {"pool": {"labels": list(MNLI_LABELS), "format": "mnli", "n": len(pool)}})
    inputs = {"prepare": prepare}
    for s in range(1, rounds):
        d = tmp_path / f"gen{s}"
        atomic_write_jsonl(d / "synthetic.jsonl", [{**e.to_dict(), "generator": "g", "seed": 0}
                                                  for e in _examples(f"round{s}-", 12)])
        inputs[f"synthetic-r{s}"] = d
    return inputs


def _spec(t: int, mode: str, real_fraction: float = 0.0, train_size: int = 30) -> generator_stage.Spec:
    return generator_stage.Spec(model="tiny-llama", generator=generator_stage.GeneratorTraining(train_size=24),
                                round=generator_stage.GenerationRound(round=t, mode=mode, train_size=train_size,
                                                                      real_fraction=real_fraction))


def _ids(d: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (d / "synthetic.jsonl").read_text().splitlines()]


def test_replace_trains_on_the_previous_rounds_data_only(tmp_path):
    inputs = _dirs(tmp_path, 3)
    examples, parts = generator_stage.round_examples(_spec(3, "replace"), inputs)
    ids = [e.id for e in examples]
    assert len(ids) == 30 and set(ids) <= set(_ids(inputs["synthetic-r2"]))
    assert {lab: sum(e.label == lab for e in examples) for lab in MNLI_LABELS} == dict.fromkeys(MNLI_LABELS, 10)
    assert parts == {"round 2: real": 0, "round 2: synthetic": 30}
    # the first examples of each label in file order: a larger contribution keeps the smaller one's
    bigger, _ = generator_stage.round_examples(_spec(3, "replace", train_size=36), inputs)
    assert set(ids) < {e.id for e in bigger} and set(_ids(inputs["synthetic-r2"])) == {e.id for e in bigger}


def test_accumulate_trains_on_the_real_sample_and_every_earlier_round(tmp_path):
    inputs = _dirs(tmp_path, 4)
    examples, parts = generator_stage.round_examples(_spec(4, "accumulate"), inputs)
    ids = [e.id for e in examples]
    first = generator_stage.real_sample(generator_stage.load_prepared(inputs["prepare"], "pool"),
                                        generator_stage.GeneratorTraining(train_size=24))
    assert ids[:24] == [e.id for e in first]  # round 1's real training sample, as round 1 drew it
    for s in (1, 2, 3):
        assert sum(i.startswith(f"round{s}-") for i in ids) == 30
    assert len(ids) == len(set(ids)) == 24 + 3 * 30
    assert parts["real (round 1's sample)"] == 24


def test_real_fraction_mixes_fresh_real_pairs_into_each_contribution(tmp_path):
    inputs = _dirs(tmp_path, 3)
    examples, parts = generator_stage.round_examples(_spec(3, "accumulate", real_fraction=0.2), inputs)
    ids = [e.id for e in examples]
    assert parts == {"real (round 1's sample)": 24, "round 1: real": 6, "round 1: synthetic": 24,
                     "round 2: real": 6, "round 2: synthetic": 24}
    assert len(ids) == len(set(ids)) == 24 + 2 * 30 and sum(i.startswith("pool-") for i in ids) == 36
    replace, _ = generator_stage.round_examples(_spec(2, "replace", real_fraction=0.5), inputs)
    assert sum(e.id.startswith("pool-") for e in replace) == 15


def test_too_little_synthetic_data_is_a_named_error(tmp_path):
    from blindspot.errors import DataError

    with pytest.raises(DataError, match="needs 14 synthetic examples labelled 'entailment'"):
        generator_stage.round_examples(_spec(2, "replace", train_size=42), _dirs(tmp_path, 2))


def test_the_stage_records_its_training_ids_and_trains_on_them(tmp_path, monkeypatch):
    import blindspot.training.generator as generator_module
    from blindspot.stages.common import Runtime

    seen = {}
    monkeypatch.setattr(generator_module, "train_generator_into",
                        lambda spec, examples, out, cache: seen.update(ids=[e.id for e in examples]) or {})
    inputs = _dirs(tmp_path, 3)
    out = tmp_path / "out"
    generator_stage.run(_spec(3, "accumulate", train_size=36), inputs, out, Runtime())  # all 12/label of each
    recorded = json.loads((out / "train_ids.json").read_text())
    assert recorded == seen["ids"] and set(_ids(inputs["synthetic-r2"])) | set(_ids(inputs["synthetic-r1"])) < set(recorded)
    assert json.loads((out / "train_sources.json").read_text())["round 2: synthetic"] == 36


def test_later_rounds_write_ids_of_their_own():
    spec = lambda **kw: generate_stage.Spec(generation=generate_stage.Generation(per_label=3), sets=[], **kw)  # noqa: E731
    from blindspot.stages import spec_json

    assert spec().id_prefix() == "" and "round" not in spec_json(spec()) and "mode" not in spec_json(spec())
    assert spec(round=2, mode="accumulate").id_prefix() == "round2-accumulate-"


# ---- the report's section ---------------------------------------------------------------------

def _audit(n_per_label: int, overlap: dict[str, int]) -> dict:
    groups = {lab: n_per_label for lab in MNLI_LABELS}
    share = {lab: overlap[lab] / n_per_label for lab in MNLI_LABELS}
    with_f = sum(overlap.values())
    return {"n": 3 * n_per_label, "labels": list(MNLI_LABELS), "label_counts": groups, "groups": groups,
            "features": {"lexical_overlap": {"available": True, "share": share, "n_with": with_f,
                                             "entailment_share_with": overlap["entailment"] / with_f}},
            "lengths": {"premise_words": 12.0, "hypothesis_words": 6.5},
            "diversity": {"full": {"hypothesis": {"distinct_1": 0.5, "distinct_2": 0.8}}}}


def test_rounds_report_tables(tmp_path):
    from blindspot.rounds_report import audit_table, build_rounds_figure, rounds_table

    sets = [{"round": t, "mode": m, "source": src, "generation": {"attempts": 300, "parse_failure_rate": 0.1},
             "generator_train": {"examples": 90}, "audit": _audit(80, {"entailment": t, "neutral": 1, "contradiction": 0}),
             "pool_audit": _audit(100, {"entailment": 10, "neutral": 2, "contradiction": 1}), "overlap_rule": "words"}
            for t, m, src in ((1, None, "synthetic"), (2, "replace", "synthetic-r2-replace"))]
    info = {"rounds": 2, "modes": ["replace"], "real_fraction": 0.0, "train_size": 90, "sets": sets}
    audit = audit_table(info)
    assert list(audit["data"]) == ["MNLI pool (real)", "round 1", "round 2 (replace)"]
    assert audit["overlap % of entailment"].iloc[2].startswith("2.5% [") and "(2/80)" in audit.iloc[2, 5]
    assert audit["parse failures"].iloc[1] == "10.0% of 300"
    rows = [{"start_size": 10, "aug_size": 6, "source": src, "eval_set": "hans", "slice": "all", "metric": "accuracy",
             "n_seeds": 2, "accuracy": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1}
            for src, acc in (("synthetic", 0.5), ("synthetic-r2-replace", 0.4), ("original", 0.6))]
    agg = pd.DataFrame(rows)
    table = rounds_table(info, agg, [("hans", "all", "HANS")])
    assert list(table["round"]) == [1, 2] and table["HANS"].iloc[1] == "0.400 [0.300, 0.500]"
    fig = build_rounds_figure(info, agg, [("hans", "all", "HANS")])
    assert len(fig.axes) == 1


def test_each_later_round_is_compared_with_round_one():
    from blindspot.results import comparison_pairs

    pairs = comparison_pairs(["start", "original", "synthetic", "synthetic-r2-replace", "synthetic-r3-accumulate"])
    assert ("synthetic-r2-replace", "synthetic") in pairs and ("synthetic-r3-accumulate", "synthetic") in pairs


def test_the_eta_counts_what_each_rounds_generator_trains_on(tmp_path):
    from blindspot.rounds import generator_examples

    st = by_label(plan_of(tmp_path, {"rounds": 3, "mode": ["replace", "accumulate"], "train_size": 60}))
    counts = {k: generator_examples(st[k].spec, 1000) for k in st if k.startswith("train generator")}
    assert counts == {"train generator": 30, "train generator round 2 replace": 60,
                      "train generator round 3 replace": 60, "train generator round 2 accumulate": 30 + 60,
                      "train generator round 3 accumulate": 30 + 2 * 60}


def test_generations_config_is_the_demo_plus_rounds():
    """configs/generations.yaml reuses the demo's stages: every field but its name and rounds is the demo's."""
    demo, gen = (load_config(REPO / "configs" / f"{n}.yaml").model_dump() for n in ("demo", "generations"))
    assert {k: v for k, v in gen.items() if k not in ("name", "generations")} == \
           {k: v for k, v in demo.items() if k not in ("name", "generations")}
    g = load_config(REPO / "configs" / "generations.yaml").generations
    assert g.rounds >= 3 and g.modes() == ["replace", "accumulate"]
