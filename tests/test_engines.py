"""Which generation engine runs (auto / native / vllm) and why; the engine in spec.json, config and CLI.

The vLLM engine itself is tested in tests/test_vllm_engine.py (in .venv-vllm); these tests need no vllm.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch

from blindspot import mfu
from blindspot.generation import engines
from blindspot.cli import main as cli_main
from blindspot.config import parse_config
from blindspot.errors import ConfigError
from blindspot.generation.sample import GenerateSpec, generate
from blindspot.training.generator import load_generator
from test_generator import make_tiny_generator


def test_auto_is_vllm_only_on_cuda_with_vllm_installed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(engines, "vllm_installed", lambda: True)
    assert engines.resolve_engine("auto") == ("native", "auto: no CUDA device")
    assert engines.resolve_engine("auto", "cpu") == ("native", "auto: no CUDA device")
    assert engines.resolve_engine("auto", "cuda:1")[0] == "vllm"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert engines.resolve_engine("auto") == ("vllm", "auto: CUDA and vllm installed")
    assert engines.resolve_engine("auto", "cpu")[0] == "native"
    assert engines.resolve_engine("native") == ("native", "as asked")
    assert engines.resolve_engine("vllm") == ("vllm", "as asked")
    monkeypatch.setattr(engines, "vllm_installed", lambda: False)
    name, why = engines.resolve_engine("auto")
    assert name == "native" and "vllm is not installed" in why
    with pytest.raises(ConfigError, match=r"engine vllm: vllm is not installed \(GPU: pip install -e '.\[vllm\]'"):
        engines.resolve_engine("vllm")
    with pytest.raises(ConfigError, match="engine: 'fast' is not one of auto, native, vllm"):
        engines.resolve_engine("fast")


def test_config_field_and_cli_option(tmp_path, capsys, monkeypatch):
    raw = {"name": "x", "data": {"train": {"path": "t.jsonl"}, "eval": {"m": {"path": "m.jsonl"}}},
           "start_sizes": [0], "augment": {"sources": ["original"], "sizes": [3]}, "generation": {"per_label": 2}}
    assert parse_config(raw).generation.engine == "auto"
    raw["generation"]["engine"] = "fast"
    with pytest.raises(ConfigError, match=r"field 'generation.engine': Input should be 'auto', 'native' or 'vllm'"):
        parse_config(raw)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["generate", "--generator", str(tmp_path), "--n-per-label", "2", "--out", str(tmp_path / "o"),
                  "--engine", "fast"])
    assert exit_.value.code == 2 and "invalid choice: 'fast'" in capsys.readouterr().err
    monkeypatch.setattr(engines, "vllm_installed", lambda: False)
    code = cli_main(["generate", "--generator", str(tmp_path), "--n-per-label", "2", "--out", str(tmp_path / "o"),
                     "--engine", "vllm"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("blindspot generate: error: engine vllm: vllm is not installed")


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gen_dir, _ = make_tiny_generator(tmp_path_factory.mktemp("gen"))
    yield gen_dir, load_generator(gen_dir, device="cpu")
    torch.set_num_threads(threads)


def test_spec_json_records_the_engine_that_ran_and_a_resume_cannot_switch(gen, tmp_path, caplog, monkeypatch):
    gen_dir, g = gen
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec = GenerateSpec(generator=str(gen_dir), n_per_label=2, batch_size=4, max_new_tokens=40, device="auto")
    with caplog.at_level(logging.INFO, logger="blindspot"):
        out = generate(spec, tmp_path / "a", generator=g)
    assert "generation engine: native (auto: no CUDA device)" in caplog.text
    assert json.loads((out / "spec.json").read_text())["engine"] == "native"
    assert json.loads((out / "meta.json").read_text())["engine"] == "native"
    same = generate(spec.model_copy(update={"engine": "native"}), tmp_path / "b", generator=g)
    assert (same / "synthetic.jsonl").read_bytes() == (out / "synthetic.jsonl").read_bytes()
    # an unfinished run of the vLLM engine is not resumed with the native one
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "spec.json").write_text(json.dumps({**spec.model_dump(mode="json"), "engine": "vllm"}))
    with pytest.raises(ConfigError, match=r"another spec \(differs in engine\)"):
        generate(spec, tmp_path / "c", generator=g)


def test_native_engine_counts_the_prompt_once_per_label_and_the_fed_back_tokens(gen):
    gen_dir, g = gen
    engine = engines.NativeEngine(g)
    spec = GenerateSpec(generator=str(gen_dir), n_per_label=2, batch_size=4, max_new_tokens=40, device="cpu")
    n, shape = len(g.prompt_ids("neutral")), engine.counter.shape
    assert shape == mfu.flop_shape(g.model)
    first, _ = engine.sample(spec, "neutral", 0, 11)
    second, _ = engine.sample(spec, "neutral", 1, 12)  # the prompt's cache is reused, not recomputed
    fed = [len(r) - 1 for r in first + second]
    assert engine.counter.tokens == n + sum(fed)
    assert engine.counter.flops == shape.inference([n]) + shape.inference([k for k in fed if k], n)
    engine.reset()
    assert (engine.counter.flops, engine.counter.tokens) == (0, 0)


def test_smoke_grid_passes_the_engine_to_its_generate_stage(monkeypatch):
    """`blindspot run configs/smoke.yaml --set generation.engine=vllm`: its generate stage asks for vLLM, and
    only generation and what follows it differ from the native plan."""
    from blindspot.config import load_config
    from blindspot.grid import build_plan

    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    data = Path(os.environ.get("BLINDSPOT_DATA", smoke.parents[2] / "shared" / "data"))
    if not (data / "mnli-subset").is_dir():
        pytest.skip(f"real data not found at {data} (set BLINDSPOT_DATA)")
    monkeypatch.setenv("BLINDSPOT_DATA", str(data))
    native, vllm = (build_plan(load_config(smoke, [f"generation.engine={e}"])) for e in ("native", "vllm"))
    generates = [s for s in vllm.stages if s.stage == "generate"]  # one per round of repeated generations
    assert generates and all(s.spec["generation"]["engine"] == "vllm" for s in generates)
    same = {s.dirname for s in native.stages} & {s.dirname for s in vllm.stages}
    differ = [s for s in vllm.stages if s.dirname not in same]
    # later rounds' generators train on earlier rounds' samples, so they differ too; round 1's does not
    assert {s.stage for s in differ} == {"generate", "generator", "filter", "audit", "augment", "evaluate"}
    assert all(s.spec.get("round") is not None for s in differ if s.stage == "generator")
    assert len(native.stages) == len(vllm.stages)
