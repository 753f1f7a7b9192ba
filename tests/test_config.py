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
