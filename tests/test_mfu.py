"""MFU bookkeeping: the FLOP formula on a tiny config counted by hand, the peak cache, the records."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from blindspot import mfu

# these tests wrap models with peft directly; peft 0.21 reads transformers' deprecated
# `is_gradient_checkpointing` while it does (blindspot's own calls hide it: training.loop)
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def tiny_llama(tie: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=4, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg)


# per layer: q 16x16, k 16x8, v 16x8, o 16x16, gate/up/down 16x32 each; lm_head 16x50
BASE = 2 * (256 + 128 + 128 + 256 + 3 * 512) + 16 * 50


def test_flop_shape_counts_the_linear_layers_of_a_known_config():
    shape = mfu.flop_shape(tiny_llama())
    assert shape == mfu.FlopShape(params=BASE, trainable_params=BASE, n_layers=2, attn_width=16)
    assert mfu.flop_shape(tiny_llama(tie=True)).params == BASE  # a tied lm_head still multiplies


def test_flop_shape_with_lora_counts_adapters_as_trainable_and_base_as_frozen():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    shape = mfu.flop_shape(model)
    lora = 2 * (2 * (16 + 16) + 2 * (16 + 8))  # r x (in + out) for q and v, two layers
    assert shape.params == BASE + lora and shape.trainable_params == lora


def test_modules_to_save_are_counted_once():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    shape = mfu.flop_shape(model)
    assert shape.params == BASE + 2 * 2 * 32  # the frozen original lm_head copy is not run, not counted
    assert shape.trainable_params == 2 * 2 * 32 + 16 * 50


def test_served_shape_from_files_is_the_unmerged_peft_models(tmp_path):
    """The shape vLLM's MFU uses, read from a saved base and adapter, is what flop_shape counts on the loaded model."""
    from peft import LoraConfig, PeftModel, get_peft_model

    tiny_llama().save_pretrained(tmp_path / "base")
    get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj", "down_proj"])).save_pretrained(
        tmp_path / "adapter")
    lora = 2 * (2 * (16 + 16) + 2 * (16 + 8) + 2 * (32 + 16))  # r x (in + out) for q, v and down, two layers
    served = mfu.served_flop_shape(tmp_path / "base", tmp_path / "adapter")
    assert served == mfu.FlopShape(params=BASE + lora, trainable_params=0, n_layers=2, attn_width=16)
    loaded = mfu.flop_shape(PeftModel.from_pretrained(tiny_llama(), tmp_path / "adapter"))
    assert (loaded.params, loaded.n_layers, loaded.attn_width) == (served.params, 2, 16)
    assert mfu.served_flop_shape(tmp_path / "base") == mfu.FlopShape(BASE, 0, 2, 16)


def test_flop_counter_adds_what_is_fed():
    counter = mfu.FlopCounter(mfu.FlopShape(params=1000, trainable_params=0, n_layers=2, attn_width=16))
    counter.add([5])         # a prompt of 5
    counter.add([3, 0], 5)   # two rows after it: one fed 3 tokens back, one none (ended on its first token)
    assert counter.tokens == 8
    assert counter.flops == counter.shape.inference([5]) + counter.shape.inference([3], 5)


def test_formulas_by_hand():
    shape = mfu.FlopShape(params=1000, trainable_params=10, n_layers=2, attn_width=16)
    # causal attention of 3 tokens after 4 cached: positions attend to 5, 6, 7 keys; 4 FLOPs/key/dim/layer
    assert shape.attention(3, 4) == 4 * 2 * 16 * (5 + 6 + 7)
    assert shape.inference([3], 4) == 2 * 1000 * 3 + 4 * 2 * 16 * 18
    assert shape.inference([2, 1]) == 2 * 1000 * 3 + 4 * 2 * 16 * (1 + 2 + 1)
    assert shape.training([3]) == (4 * 1000 + 2 * 10) * 3 + 3 * 4 * 2 * 16 * 6


def test_cpu_peak_is_measured_once_and_cached(tmp_path):
    calls = []

    def fake(dtype):
        calls.append(dtype)
        return 5e10

    first = mfu.cpu_peak(torch.float32, tmp_path, measure=fake)
    again = mfu.cpu_peak(torch.float32, tmp_path, measure=fake)
    assert first == again and first["flops_per_s"] == 5e10 and len(calls) == 1
    mfu.cpu_peak(torch.bfloat16, tmp_path, measure=fake)  # another dtype is another key
    assert len(calls) == 2
    mfu.cpu_peak(torch.float32, tmp_path, measure=lambda dtype: 9e10, remeasure=True)
    assert mfu.cpu_peak(torch.float32, tmp_path, measure=fake)["flops_per_s"] == 9e10 and len(calls) == 2
    cached = json.loads((tmp_path / mfu.PEAK_CACHE).read_text())
    assert {e["dtype"] for e in cached.values()} == {"float32", "bfloat16"}


def test_mfu_record_divides_achieved_by_peak(tmp_path, monkeypatch):
    monkeypatch.setattr(mfu, "measure_matmul_rate", lambda dtype: 1e10)
    rec = mfu.mfu_record(4e10, 8.0, 100, "f", "cpu", torch.float32, tmp_path)
    assert rec["achieved_flops_per_s"] == 5e9 and rec["mfu"] == pytest.approx(0.5) and rec["reason"] is None
    assert mfu.mfu_record(1, 0.0, 1, "f", "cpu", torch.float32, tmp_path)["mfu"] is None


def test_unknown_cuda_device_gives_no_mfu_and_says_why(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Imaginary GPU 9000")
    peak = mfu.cuda_peak("cuda:0")
    assert peak["flops_per_s"] is None and "Imaginary GPU 9000" in peak["source"]
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert mfu.cuda_peak("cuda:0")["flops_per_s"] == 989e12


def test_measured_matmul_rate_is_positive():
    assert mfu.measure_matmul_rate(torch.float32, size=64, repeats=2) > 0


def test_stage_costs_reads_timing_and_meta(tmp_path):
    from blindspot.costs import by_kind, cost_table, stage_costs

    for name, meta in (("start-abc", {"train_examples_per_s": 3.5, "mfu": {"mfu": 0.12, "model_flops": 2e12}}),
                       ("prepare-def", {"wall_s": 1.0})):
        (tmp_path / "stages" / name).mkdir(parents=True)
        (tmp_path / "stages" / name / "meta.json").write_text(json.dumps(meta))
        (tmp_path / "stages" / name / "timing.json").write_text(json.dumps({"label": name, "wall_s": 5.0}))
        (tmp_path / "stages" / name / "DONE").write_text("")
    costs = stage_costs(tmp_path).set_index("kind")
    assert costs.loc["start", "examples_per_s"] == 3.5 and costs.loc["start", "mfu"] == 0.12
    assert pd.isna(costs.loc["prepare", "mfu"]) and by_kind(stage_costs(tmp_path))["stages"].sum() == 2
    assert set(cost_table(tmp_path)["mfu"]) == {"12.0 %", ""}
