"""Synthetic data from another model (generator.model): the check when the config loads, the plan, and a
small grid on fixture files with a tiny-llama classifier and a tiny-llama-wide generator, mixtures
included, whose stages record both models and whose report names them and draws the mixtures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from blindspot.config import parse_config
from blindspot.errors import ConfigError
from test_mixture import PINNED_TINY, fixture_config, fixture_data, fixture_env  # noqa: F401 (a fixture)

REPO = Path(__file__).resolve().parents[1]
BOTH = {"classifier": "tiny-llama", "generator": "tiny-llama-wide"}


# --- the check when the config loads -------------------------------------------------------------

def _checkpoint(path: Path, model_type: str, tokenizer: bool = True, **config) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type, **config}))
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
    return path


def test_a_generator_that_does_not_fit_is_one_error_naming_the_field(tmp_path):
    def error(**changes) -> str:
        with pytest.raises(ConfigError) as e:
            parse_config(fixture_config(**changes), "c.yaml")
        return str(e.value)

    assert error(generator={"model": str(tmp_path / "nowhere")}).startswith(
        "c.yaml: field 'generator.model': unknown model")
    encoder = _checkpoint(tmp_path / "distilbert", "distilbert", max_position_embeddings=512)  # no causal LM
    assert "field 'generator.model'" in error(generator={"model": str(encoder)}) and "no causal-LM head" in \
        error(generator={"model": str(encoder)})
    bare = _checkpoint(tmp_path / "bare", "llama", tokenizer=False)
    assert "has no tokenizer" in error(generator={"model": str(bare)})
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "classifier.json").write_text("{}")
    assert "is a saved classifier, expected a base model directory" in error(generator={"model": str(saved)})
    short = _checkpoint(tmp_path / "short", "llama", max_position_embeddings=128)
    assert error(generator={"model": str(short), "max_length": 256}).startswith(
        "c.yaml: field 'generator.max_length': 256 tokens do not fit the generator model")
    assert "field 'generation.max_new_tokens'" in error(generator={"model": str(short), "max_length": 100},
                                                         generation={"per_label": 4, "max_new_tokens": 200})
    # the labels: a 2-way task cannot take the generator's three-label examples
    two_way = fixture_config()["data"] | {"train": {"path": "x.jsonl", "label_space": ["entailment", "non-entailment"]}}
    assert error(data=two_way).startswith("c.yaml: field 'data.train.label_space': the classifier's task has labels")
    # fits: a local llama checkpoint with a long enough context, a built-in, a hub id (checked when it loads)
    for fine in (str(_checkpoint(tmp_path / "fine", "llama", max_position_embeddings=2048)), "tiny-llama-wide",
                 "HuggingFaceTB/SmolLM2-360M"):
        assert parse_config(fixture_config(generator={"model": fine})).generator.model == fine


def test_the_cli_prints_one_line_and_exits_2(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(fixture_config(generator={"model": str(tmp_path / "nowhere")})))
    proc = subprocess.run([sys.executable, "-m", "blindspot.cli", "run", str(path), "--dry-run"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "field 'generator.model'" in proc.stderr


# --- the plan -----------------------------------------------------------------------------------

def test_every_round_s_stages_name_the_generator_model_in_their_labels(fixture_env):
    from blindspot.grid import build_plan

    plan = build_plan(parse_config(fixture_config(generator={"model": "tiny-llama-wide"},
                                                  generations={"rounds": 3, "mode": ["replace", "accumulate"],
                                                               "train_size": 6})))
    synthetic = [s.label for s in plan.stages if s.stage in ("generator", "generate")]
    assert len(synthetic) == 3 + 2 * (3 + 2)  # round 1 (+ its data for round 2); per mode, rounds 2 and 3
    assert all(lbl.endswith("(tiny-llama-wide)") for lbl in synthetic)
    same = build_plan(parse_config(fixture_config(generations={"rounds": 2, "train_size": 6})))
    assert not any("(" in s.label for s in same.stages if s.stage in ("generator", "generate"))


def test_the_generator_is_its_own_model_and_the_classifier_stages_are_unchanged(fixture_env):
    from blindspot.grid import build_plan

    plan = build_plan(parse_config(fixture_config(generator={"model": "tiny-llama-wide", "dtype": "bfloat16"})))
    by_kind = {}
    for s in plan.stages:
        by_kind.setdefault(s.stage, []).append(s)
    [gen], [generate] = by_kind["generator"], by_kind["generate"]
    assert gen.spec["model"] == "tiny-llama-wide" and gen.spec["dtype"] == "bfloat16"
    base = gen.inputs["base"].spec
    assert base["model"] == "tiny-llama-wide" and base["shape"]["hidden_size"] == 128
    assert generate.spec["dtype"] == "bfloat16" and gen.spec["models_record"] == generate.spec["models_record"] == BOTH
    assert sorted(b.spec["model"] for b in by_kind["base"]) == ["tiny-llama", "tiny-llama-wide"]
    for aug in by_kind["augment"]:
        from_synthetic = aug.spec["source"] in ("synthetic", "biased-lexical-overlap")
        assert aug.spec.get("models_record") == (BOTH if from_synthetic else None) and aug.spec["model"] == "tiny-llama"
    # what does not read synthetic data is the same-model plan's, hash for hash
    kept = {s.dirname for s in plan.stages} & set(PINNED_TINY)
    assert {d.rsplit("-", 1)[0] for d in kept} == {"prepare", "base", "start", "augment", "evaluate", "filter"}
    assert all(s.spec["source"] in ("original", "original+biased-lexical-overlap")
               for s in by_kind["augment"] if s.dirname in kept)


# --- a small grid, end to end ---------------------------------------------------------------------

def _fake_generate(stage, store: Path) -> None:
    """The generate stage's output, written as the store would (a fixture: a barely trained tiny generator
    writes too few parseable examples for a test of this size)."""
    from blindspot.grid.artifacts import write_spec
    from blindspot.storage import mark_done

    out = write_spec(stage, store)
    rows = [{"id": f"syn0-{lab}-b0-r{i}", "premise": f"A synthetic premise {i} about {lab}.",
             "hypothesis": f"A hypothesis {i}.", "label": lab}
            for lab in ("entailment", "neutral", "contradiction") for i in range(4)]
    (out / "synthetic.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "meta.json").write_text(json.dumps({"stage": "generate (fixture)"}))
    mark_done(out)


@pytest.fixture(scope="module")
def cross_run(tmp_path_factory):
    from blindspot.grid import build_plan, run

    root = tmp_path_factory.mktemp("cross")
    mp = pytest.MonkeyPatch()
    mp.setenv("BLINDSPOT_FIXTURE_DATA", str(fixture_data(root / "data")))
    try:
        cfg = parse_config(fixture_config(
            start_sizes=[0], audit_filters=[],
            augment={"sources": ["original", "synthetic"], "sizes": [6], "synthetic_fraction": [0, 0.5, 1]},
            classifier={"template": "short", "max_length": 64, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
                        "optim": {"batch_size": 4, "lr": 0.003}},
            generator={"model": "tiny-llama-wide", "train_size": 12, "max_length": 64,
                       "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "optim": {"batch_size": 4, "lr": 0.01}}))
        plan = build_plan(cfg)
        out = root / "run"
        [generate] = [s for s in plan.stages if s.stage == "generate"]
        _fake_generate(generate, out / "stages")
        run(cfg, out=out, display="off")
        yield out, plan
    finally:
        mp.undo()


@pytest.mark.slow
def test_both_models_are_recorded_in_the_stages_that_involve_synthetic_data(cross_run):
    out, plan = cross_run
    store = out / "stages"
    kinds = {}
    for s in plan.stages:
        kinds.setdefault(s.stage, []).append(s)
    [gen] = kinds["generator"]
    assert json.loads((gen.path(store) / "meta.json").read_text())["models"] == BOTH
    stage = json.loads((gen.path(store) / "stage.json").read_text())
    assert stage["spec"]["model"] == "tiny-llama-wide" and stage["spec"]["models_record"] == BOTH
    base = json.loads((store / stage["inputs"]["base"] / "stage.json").read_text())["spec"]
    assert base["model"] == "tiny-llama-wide" and base["shape"]["hidden_size"] == 128
    for aug in kinds["augment"]:
        meta = json.loads((aug.path(store) / "meta.json").read_text())
        spec = json.loads((aug.path(store) / "stage.json").read_text())["spec"]
        if aug.spec["source"] == "synthetic":
            assert meta["models"] == spec["models_record"] == BOTH and spec["model"] == "tiny-llama"
        else:
            assert "models" not in meta and "models_record" not in spec


@pytest.mark.slow
def test_the_mixture_trained_on_what_was_asked_and_the_report_shows_it(cross_run):
    out, plan = cross_run
    store = out / "stages"
    [mix] = [s for s in plan.stages if s.stage == "augment" and s.spec.get("synthetic_fraction")]
    ids = json.loads((mix.path(store) / "train_ids.json").read_text())
    assert len(ids) == 6 and sum(i.startswith("syn") for i in ids) == 3
    counts = json.loads((mix.path(store) / "mixture.json").read_text())["labels"]
    assert counts == {lab: {"original": 1, "synthetic": 1} for lab in ("entailment", "neutral", "contradiction")}
    df = pd.read_csv(out / "results" / "results.csv")
    fractions = df.groupby("source")["synthetic_fraction"].first().to_dict()
    assert fractions["original"] == 0 and fractions["synthetic"] == 1 and fractions["mix0.5:synthetic"] == 0.5
    assert df.loc[df["source"] == "start", "synthetic_fraction"].isna().all()
    report = out / "report"
    assert (report / "figure_mixtures.png").read_bytes()[:4] == b"\x89PNG"
    md = (report / "report.md").read_text()
    assert "Synthetic data written by another model: `tiny-llama-wide`" in md and "Classifier model: `tiny-llama`" in md
    assert "## Mixtures of synthetic and original data" in md and "synthetic data from" in md
    assert "figure_mixtures.png" in md and "mix0.5:synthetic" in md


def test_tiny_llama_wide_resolves_to_its_own_shape_and_cache_entry(tmp_path):
    from blindspot.models.resolve import BUILT_SHAPES, TINY_LLAMA_SHAPE, resolve_model

    texts = [f"Premise: the doctor saw {i} lawyers. Hypothesis: a doctor saw someone." for i in range(30)]
    tiny, wide = (resolve_model(name, tmp_path, texts=texts) for name in ("tiny-llama", "tiny-llama-wide"))
    assert tiny != wide and wide.name.startswith("tiny-llama-wide-") and resolve_model("tiny-llama-wide", tmp_path,
                                                                                      texts=texts) == wide
    for path, shape in ((tiny, TINY_LLAMA_SHAPE), (wide, BUILT_SHAPES["tiny-llama-wide"])):
        config = json.loads((path / "config.json").read_text())
        assert (config["hidden_size"], config["num_attention_heads"], config["intermediate_size"]) == (
            shape["hidden_size"], shape["num_heads"], shape["intermediate_size"])
    assert BUILT_SHAPES["tiny-llama-wide"]["hidden_size"] // BUILT_SHAPES["tiny-llama-wide"]["num_heads"] == 32
