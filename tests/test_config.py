"""Experiment configs: every shipped YAML validates; a wrong field gets one error naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blindspot.cli import main as cli
from blindspot.config import apply_override, load_config, parse_config
from blindspot.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def minimal() -> dict:
    return {"name": "t", "model": "tiny-llama",
            "data": {"train": {"path": "train.jsonl"}, "eval": {"hans": {"path": "hans.jsonl"}}},
            "start_sizes": [0, 10], "augment": {"sources": ["original"], "sizes": [6]},
            "generation": {"per_label": 5}}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_config_validates_and_opens_with_its_command(path: Path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    first = path.read_text().splitlines()[0]
    assert first.startswith("#"), "a shipped config opens with a comment"
    assert f"blindspot run configs/{path.name}" in path.read_text().split("\nname:")[0]


def test_shipped_configs_exist():
    assert {p.name for p in CONFIGS} >= {"smoke.yaml", "demo.yaml", "paper.yaml"}


def test_paper_config_is_the_papers_grid():
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "paper.yaml")
    assert cfg.start_sizes == [0, 5000, 10000, 20000, 100000, "all"]
    assert cfg.augment.sizes == [18020, 36040, 73080]
    assert cfg.augment.sources == ["original", "synthetic", "biased-lexical-overlap"]
    assert cfg.quantize == "4bit"
    assert (cfg.classifier.lora.r, cfg.classifier.lora.alpha, cfg.classifier.lora.dropout) == (64, 16, 0.1)
    assert (cfg.classifier.optim.lr, cfg.classifier.optim.batch_size, cfg.classifier.optim.warmup_ratio) == (2e-5, 2, 0.3)
    assert cfg.generator.optim.batch_size == 6
    assert cfg.overlap_rule == "paper" and cfg.data.validation_mode == "first"
    assert cfg.data.start_sampling == "pandas" and cfg.seeds == [42]
    assert cfg.generator.modules_to_save == ["embed_tokens", "lm_head"] and cfg.generation.top_k == 50
    assert cfg.classifier.optim.optimizer == cfg.generator.optim.optimizer == "paged_adamw_32bit"
    assert cfg.classifier.optim.group_by_length and cfg.generator.optim.group_by_length


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c["augment"].update(sizes=[6, "x"]), "augment.sizes[1]"),
    (lambda c: c["augment"].update(sources=["original", "made-up"]), "augment.sources"),
    (lambda c: c.update(start_sizes=[-1]), "(top level)"),
    (lambda c: c.update(quantize="8bit"), "quantize"),
    (lambda c: c.update(overlap_rule="hans"), "overlap_rule"),
    (lambda c: c.update(learning_rate=1e-4), "learning_rate"),
    (lambda c: c["data"].pop("train"), "data.train"),
    (lambda c: c.update(classifier={"optim": {"lr": -1}}), "classifier.optim.lr"),
])
def test_bad_field_is_named(mutate, field):
    raw = minimal()
    mutate(raw)
    with pytest.raises(ConfigError) as e:
        parse_config(raw, "x.yaml")
    assert f"x.yaml: field '{field}'" in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_bad_config_one_line(tmp_path, capsys):
    raw = minimal()
    raw["seeds"] = "zero"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "field 'seeds'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nseeds: [0, 1\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: not valid YAML"):
        load_config(path)


def test_override_sets_nested_values():
    raw = minimal()
    apply_override(raw, "classifier.optim.lr=0.001")
    apply_override(raw, "seeds=[0,1]")
    cfg = parse_config(raw)
    assert cfg.classifier.optim.lr == 0.001 and cfg.seeds == [0, 1]
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override(raw, "seeds")


def test_original_plus_filter_source_needs_no_generator():
    from blindspot.config import parse_config

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml").read_text())
    raw["augment"]["sources"] = ["original", "original+biased-lexical-overlap"]
    raw["audit_filters"] = []
    raw.pop("generations")  # later rounds augment as the synthetic source does: they need it
    cfg = parse_config(raw)
    assert not cfg.needs_synthetic() and cfg.filters() == []
    raw["augment"]["sources"] = ["original+nope"]
    with pytest.raises(ConfigError, match="augment.sources.*original\\+"):
        parse_config(raw, "x.yaml")


def test_demo_config_is_designed_to_answer_something():
    """issue 9: a trained start (not only n = 0), >= 2 seeds, augmentation big enough to move things."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml")
    assert len(cfg.seeds) >= 2 and max(cfg.start_sizes) >= 2000  # 1,000 was at chance (LOG)
    assert min(cfg.augment.sizes) >= 200 and {"original", "synthetic"} <= set(cfg.augment.sources)
    assert any(s.startswith("original+biased") for s in cfg.augment.sources)  # the cheap positive control
    assert cfg.overlap_rule == "words"  # the paper's rule leaves too few overlap pairs (docs/FIDELITY.md)
    per_label = cfg.generation.per_label
    want = min(per_label.values()) if isinstance(per_label, dict) else per_label
    assert want >= max(cfg.augment.sizes) // 3
    assert cfg.data.eval_per_label * 3 >= 240 and cfg.data.eval_per_subcase * 30 >= 240  # intervals ~ +-0.06


def test_laptop_config_can_test_the_three_findings():
    """issue 9: >= 3 seeds, an untrained and a trained start, original / synthetic / biased synthetic."""
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "laptop.yaml")
    assert len(cfg.seeds) >= 3 and 0 in cfg.start_sizes and max(cfg.start_sizes) >= 2000  # 1,000 was at chance (LOG)
    assert {"original", "synthetic", "biased-lexical-overlap"} <= set(cfg.augment.sources)
    assert len(cfg.augment.sizes) >= 2
    # the biased filter keeps ~4 % of the generator's entailment pairs (docs/LOG.md): enough for m / 3
    assert cfg.generation.per_label["entailment"] * 0.04 >= max(cfg.augment.sizes) // 3
    # and the other labels lose parse failures and their full-overlap pairs: 110 left 98 of 100 (LOG)
    assert min(cfg.generation.per_label["neutral"], cfg.generation.per_label["contradiction"]) >= 1.25 * (
        max(cfg.augment.sizes) // 3)
