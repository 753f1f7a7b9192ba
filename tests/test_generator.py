"""Generator training: spec defaults, the label-first batches, save / reload to identical logits, errors, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from blindspot.cli import main as cli_main
from blindspot.data.example import NLIExample, save_examples
from blindspot.errors import CheckpointError, ConfigError
from blindspot.training.generator import (GeneratorSpec, encode_example, generator_batches, load_generator, prompt_ids,
                                          train_generator)
from blindspot.training.loop import LoraSpec
from blindspot.models.load import load_tokenizer
from blindspot.models.resolve import build_tiny_llama
from blindspot.training.classifier import OptimSpec, fit

SUBJECTS = ["The man", "A woman", "The dog", "A child", "The cat", "An old man"]
VERBS = ["sleeps", "runs", "eats", "sings", "reads", "walks"]


def fixture_examples() -> list[NLIExample]:
    """36 simple pairs, 12 per label, whose label is visible in the hypothesis's shape."""
    out = []
    for i, (s, v) in enumerate((s, v) for s in SUBJECTS for v in VERBS):
        label = ("entailment", "neutral", "contradiction")[i % 3]
        h = {"entailment": f"{s} {v}.", "neutral": f"{s} {v} happily.", "contradiction": f"{s} does not {v}."}[label]
        out.append(NLIExample(f"x{i}", f"{s} {v} in the park.", h, label))
    return out


def make_tiny_generator(root: Path, seed: int = 0) -> tuple[Path, list[NLIExample]]:
    """A tiny Llama pretrained (all weights, a second) on the fixture texts, then a LoRA generator on it.

    A random tiny Llama cannot learn the template through LoRA alone (its frozen, small
    output layer caps the logits), so the base first learns the fixture's language.
    """
    examples = fixture_examples()
    pre = GeneratorSpec(model="unused", optim=OptimSpec(batch_size=6, lr=1e-2, epochs=15, warmup_ratio=0.05,
                                                        max_grad_norm=1.0))
    texts = [pre.template().full_text(e.label, e.premise, e.hypothesis) for e in examples]
    base = build_tiny_llama(root / "base", texts)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    fit(model, generator_batches(load_tokenizer(base), pre, examples), pre.optim, torch.device("cpu"), desc="pretrain")
    model.save_pretrained(base)
    spec = GeneratorSpec(model=str(base), lora=LoraSpec(r=8, alpha=16), seed=seed, device="cpu",
                         optim=OptimSpec(batch_size=6, lr=1e-3, epochs=2))
    return train_generator(spec, examples, root / "generator"), examples


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared CPU
    yield make_tiny_generator(tmp_path_factory.mktemp("gen"))
    torch.set_num_threads(threads)


def test_spec_defaults_are_the_papers():
    spec = GeneratorSpec()
    assert (spec.lora.r, spec.lora.alpha, spec.lora.dropout) == (64, 16, 0.1)
    assert set(spec.lora.targets) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (spec.optim.epochs, spec.optim.lr, spec.optim.batch_size, spec.optim.warmup_ratio) == (1, 2e-5, 6, 0.3)
    assert json.loads(json.dumps(spec.model_dump(mode="json")))["prefix"].endswith("is {label}.")
    with pytest.raises(ConfigError, match="prefix must contain"):
        GeneratorSpec(prefix="no placeholder").template()


def test_batches_are_label_first_and_mask_the_right_tokens(tiny_generator):
    gen_dir, examples = tiny_generator
    tok = load_tokenizer(gen_dir)
    spec = GeneratorSpec(optim=OptimSpec(batch_size=4))
    e = examples[0]
    p, b = encode_example(tok, spec.template(), e)
    assert p == prompt_ids(tok, spec.template(), e.label) and p[0] == tok.bos_token_id
    assert b[-1] == tok.eos_token_id
    assert tok.decode(p + b, skip_special_tokens=True) == spec.template().full_text(e.label, e.premise, e.hypothesis)
    for loss_on in ("all", "after_prefix"):
        batch = generator_batches(tok, spec.model_copy(update={"loss_on": loss_on}), examples)(0)[0]
        for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
            n = int(mask.sum())
            assert (labels[n:] == -100).all()  # padding never carries loss
            start = len(prompt_ids(tok, spec.template(), "entailment")) if loss_on == "after_prefix" else 0
            assert (labels[:start] == -100).all() and (labels[start:n] == ids[start:n]).all()


def test_batches_are_seeded_and_reshuffled_per_epoch(tiny_generator):
    gen_dir, examples = tiny_generator
    tok = load_tokenizer(gen_dir)
    spec = GeneratorSpec(optim=OptimSpec(batch_size=4))
    a, b = generator_batches(tok, spec, examples), generator_batches(tok, spec, examples)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a(0), b(0)))
    assert any(not torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a(0), a(1)))


def test_saved_generator_files_and_identical_logits_on_reload(tiny_generator):
    gen_dir, _ = tiny_generator
    names = {p.name for p in gen_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "generator.json", "train_log.jsonl", "meta.json",
            "DONE", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    info = json.loads((gen_dir / "generator.json").read_text())
    assert info["base"]["fingerprint"] and info["template"]["end_marker"] == " -- This is the end of the example."
    a = load_generator(gen_dir, device="cpu", merge=False)
    b = load_generator(gen_dir, device="cpu", merge=False)
    merged = load_generator(gen_dir, device="cpu")
    ids = torch.tensor([a.prompt_ids("neutral")])
    with torch.no_grad():
        la, lb, lm = (g.model(input_ids=ids).logits for g in (a, b, merged))
    assert torch.equal(la, lb)
    assert torch.allclose(la, lm, atol=1e-4)
    assert a.labels == ("entailment", "neutral", "contradiction") and a.name == gen_dir.name


def test_training_is_seeded(tiny_generator, tmp_path):
    gen_dir, examples = tiny_generator
    spec = GeneratorSpec.model_validate(json.loads((gen_dir / "generator.json").read_text())["spec"])
    again = train_generator(spec, examples, tmp_path / "again")
    from safetensors.torch import load_file

    w1, w2 = (load_file(d / "adapter_model.safetensors") for d in (gen_dir, again))
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    assert train_generator(spec, examples, again) == again  # done: nothing to do
    with pytest.raises(ConfigError, match="different finished generator"):
        train_generator(spec.model_copy(update={"seed": 5}), examples, again)


def test_load_errors_name_the_problem(tiny_generator, tmp_path):
    gen_dir, _ = tiny_generator
    with pytest.raises(CheckpointError, match="no such generator"):
        load_generator(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(CheckpointError, match="no DONE"):
        load_generator(tmp_path / "half")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for f in gen_dir.iterdir():
        (foreign / f.name).write_bytes(f.read_bytes())
    info = json.loads((foreign / "generator.json").read_text())
    info["base"]["fingerprint"] = "0" * 16
    (foreign / "generator.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="another base model"):
        load_generator(foreign, device="cpu")


def test_train_generator_cli(tiny_generator, tmp_path, capsys):
    gen_dir, examples = tiny_generator
    save_examples(tmp_path / "pool.jsonl", examples)
    base = json.loads((gen_dir / "generator.json").read_text())["base"]["path"]
    rc = cli_main(["train-generator", "--data", str(tmp_path / "pool.jsonl"), "--n", "12", "--model", base,
                   "--out", str(tmp_path / "g"), "--lora-r", "4", "--batch-size", "4", "--loss-on", "after_prefix",
                   "--device", "cpu"])
    assert rc == 0 and (tmp_path / "g" / "DONE").exists()
    info = json.loads((tmp_path / "g" / "generator.json").read_text())
    assert info["train"]["examples"] == 12 and info["spec"]["loss_on"] == "after_prefix"
    assert info["spec"]["optim"]["batch_size"] == 4 and info["spec"]["lora"]["r"] == 4
    rc = cli_main(["train-generator", "--data", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "h"),
                   "--body", "no placeholders", "--model", base])
    assert rc == 2 and "body must contain {premise}" in capsys.readouterr().err


def test_modules_to_save_trains_embeddings_and_head_and_reloads_identically(tiny_generator, tmp_path, monkeypatch):
    """The paper's generator also trains embed_tokens and lm_head (peft modules_to_save)."""
    import blindspot.training.generator as generator_module
    from safetensors.torch import load_file

    gen_dir, examples = tiny_generator
    base = gen_dir.parent / "base"
    captured = {}
    original = generator_module.save_adapter_dir

    def spy(model, tokenizer, out_dir, info_name, info, rows, meta):
        ids = torch.tensor([prompt_ids(tokenizer, GeneratorSpec().template(), "neutral")])
        with torch.no_grad():
            captured["logits"] = model(input_ids=ids).logits
        original(model, tokenizer, out_dir, info_name, info, rows, meta)

    monkeypatch.setattr(generator_module, "save_adapter_dir", spy)
    spec = GeneratorSpec(model=str(base), lora=LoraSpec(r=8, alpha=16), device="cpu",
                         modules_to_save=("embed_tokens", "lm_head"), optim=OptimSpec(batch_size=6, lr=1e-3))
    out = train_generator(spec, examples, tmp_path / "gen")
    saved = load_file(out / "adapter_model.safetensors")
    base_w = load_file(base / "model.safetensors")
    for module, key in (("embed_tokens", "model.embed_tokens.weight"), ("lm_head", "lm_head.weight")):
        name = next(k for k in saved if module in k)
        assert saved[name].shape == base_w[key].shape
        assert not torch.equal(saved[name], base_w[key]), f"{module} did not change in training"
    for merge in (False, True):
        g = load_generator(out, device="cpu", merge=merge)
        with torch.no_grad():
            got = g.model(input_ids=torch.tensor([g.prompt_ids("neutral")])).logits
        if merge:
            torch.testing.assert_close(got, captured["logits"], rtol=1e-4, atol=1e-4)
        else:
            torch.testing.assert_close(got, captured["logits"], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="modules_to_save.*wte"):
        train_generator(spec.model_copy(update={"modules_to_save": ("wte",)}), examples, tmp_path / "bad")


def _four_bit_here() -> bool:
    from blindspot.models.load import four_bit_available

    return four_bit_available(torch.device("cpu"))[0]


@pytest.mark.skipif(not _four_bit_here(), reason="bitsandbytes with a CPU backend (>= 0.46) is not installed")
def test_4bit_generator_trains_reloads_unmerged_and_samples(tiny_generator, tmp_path, caplog):
    """QLoRA on CPU (bitsandbytes' CPU backend): train on an NF4 base, reload it 4-bit with the
    adapter unmerged (as the reference samples), identical logits, and a real generation run."""
    import logging

    import bitsandbytes as bnb

    import blindspot.training.generator as generator_module
    from blindspot.generation.sample import GenerateSpec, generate

    gen_dir, examples = tiny_generator
    captured = {}
    original = generator_module.save_adapter_dir

    def spy(model, tokenizer, out_dir, info_name, info, rows, meta):
        with torch.no_grad():
            captured["logits"] = model(input_ids=torch.tensor([prompt_ids(tokenizer, GeneratorSpec().template(),
                                                                          "neutral")])).logits
        original(model, tokenizer, out_dir, info_name, info, rows, meta)

    generator_module.save_adapter_dir = spy
    try:
        spec = GeneratorSpec(model=str(gen_dir.parent / "base"), lora=LoraSpec(r=8, alpha=16), device="cpu",
                             dtype="float32", quantize="4bit", optim=OptimSpec(batch_size=6, lr=1e-3))
        out = train_generator(spec, examples, tmp_path / "gen4")
    finally:
        generator_module.save_adapter_dir = original
    with caplog.at_level(logging.INFO, logger="blindspot.training.generator"):
        g = load_generator(out, device="cpu", dtype="float32")
    assert "4-bit NF4 base with the LoRA adapter unmerged" in caplog.text
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in g.model.modules())
    assert any("lora_A" in n for n, _ in g.model.named_parameters())  # not merged
    with torch.no_grad():
        got = g.model(input_ids=torch.tensor([g.prompt_ids("neutral")])).logits
    torch.testing.assert_close(got, captured["logits"], rtol=0, atol=0)
    gspec = GenerateSpec(generator=str(out), n_per_label=2, labels=("neutral",), batch_size=4, max_new_tokens=40,
                         max_attempts_factor=2, device="cpu", dtype="float32")
    report = json.loads((generate(gspec, tmp_path / "synthetic") / "report.json").read_text())
    assert report["attempts"] >= 4 and report["labels"]["neutral"]["batches"] >= 1
    assert report["valid"] + sum(report["rejected"].values()) <= report["attempts"]
