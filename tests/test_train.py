"""Classifier training on tiny-llama: save/reload, what LoRA changes, n = 0, continuing, files, bad inputs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import blindspot.training.classifier as train
from blindspot.data.example import MNLI_LABELS, NLIExample, save_examples
from blindspot.errors import CheckpointError, ConfigError, DataError
from blindspot.training.loop import LoraSpec, add_lora
from blindspot.models.load import load_base_model, load_tokenizer
from blindspot.models.resolve import build_tiny_llama
from blindspot.templates import encode_classifier_inputs
from blindspot.training.classifier import (ClassifierSpec, OptimSpec, classifier_batches, fit,
                                           load_classifier, train_classifier)

SUBJECTS = ["The doctor", "A lawyer", "The cat", "Some students", "The artist", "A banker"]
EXAMPLES = [NLIExample(f"ex{i}", f"{SUBJECTS[i % 6]} saw the {['actor', 'judge', 'dog'][i % 3]} near the park.",
                       f"{SUBJECTS[(i + i // 3) % 6]} saw {['someone', 'nobody', 'the judge'][i % 3]}.",
                       MNLI_LABELS[i % 3]) for i in range(24)]
PROBE = EXAMPLES[:5]
OUTPUT_FILES = {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
                "classifier.json", "train_log.jsonl", "meta.json", "DONE"}


def spec_for(base, **kw) -> ClassifierSpec:
    optim = kw.pop("optim", OptimSpec(batch_size=4, lr=2e-3, warmup_ratio=0.1, log_every=2))
    kw.setdefault("template", "short")
    return ClassifierSpec(model=str(base), lora=LoraSpec(r=4), optim=optim, device="cpu", **kw)


def logits(model, tokenizer, template, examples=PROBE) -> torch.Tensor:
    """Logits of `examples`, one at a time (no padding), with the shared prefix + suffix encoding."""
    prefix, suffixes = encode_classifier_inputs(tokenizer, template, [(e.premise, e.hypothesis) for e in examples])
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(input_ids=torch.tensor([prefix + s])).logits for s in suffixes])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    texts = [f"{e.premise} {e.hypothesis}" for e in EXAMPLES]
    return build_tiny_llama(tmp_path_factory.mktemp("base") / "tiny", texts)


@pytest.fixture(scope="module")
def trained(base, tmp_path_factory):
    """A classifier trained on 24 examples, and the logits of the in-memory model before saving."""
    captured = {}
    original = train.save_adapter_dir

    def spy(model, tokenizer, out_dir, info_name, info, rows, meta):
        captured["logits"] = logits(model, tokenizer, info["template"])
        captured["state"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        original(model, tokenizer, out_dir, info_name, info, rows, meta)

    train.save_adapter_dir = spy
    try:
        out = train_classifier(spec_for(base), EXAMPLES, tmp_path_factory.mktemp("clf") / "start")
    finally:
        train.save_adapter_dir = original
    return out, captured


def test_reload_gives_identical_logits(trained):
    out, captured = trained
    clf = load_classifier(out, device="cpu")
    assert clf.labels == MNLI_LABELS and "{premise}" in clf.template
    assert clf.model.config.pad_token_id == clf.tokenizer.pad_token_id
    torch.testing.assert_close(logits(clf.model, clf.tokenizer, clf.template), captured["logits"], rtol=0, atol=0)


def test_reload_test_would_catch_a_lost_head(trained, tmp_path):
    """A fresh head gives other logits (so the identity test has teeth); a file without it is refused."""
    out, captured = trained
    clf = load_classifier(out, device="cpu")
    heads = [p for n, p in clf.model.named_parameters() if ".score." in n and "modules_to_save" in n]
    assert heads, "the trained head must be the peft modules_to_save copy"
    torch.manual_seed(123)
    with torch.no_grad():
        heads[0].normal_(std=0.02)  # what a re-initialised head on reload would look like
    assert not torch.allclose(logits(clf.model, clf.tokenizer, clf.template), captured["logits"], atol=1e-4)
    broken = tmp_path / "nohead"
    shutil.copytree(out, broken)
    weights = load_file(broken / "adapter_model.safetensors")
    head = [k for k in weights if ".score." in k]
    assert head, "the score head must be inside the adapter file"
    save_file({k: v for k, v in weights.items() if k not in head}, broken / "adapter_model.safetensors")
    with pytest.raises(CheckpointError, match="no trained score head"):
        load_classifier(broken, device="cpu")


def test_training_moves_only_adapters_and_head(trained, base):
    _, captured = trained
    base_weights = load_file(base / "model.safetensors")
    state = captured["state"]
    frozen = {n: p for n, p in state.items() if "lora_" not in n and ".score." not in n}
    assert len(frozen) > 10
    for name, value in frozen.items():  # e.g. base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight
        key = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if key.startswith("score."):  # the head's original copy, not saved anywhere
            continue
        assert torch.equal(value, base_weights[key]), name
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in state.items())  # lora_B starts at zero


def test_fit_leaves_frozen_weights_bit_identical(base):
    model = add_lora(load_base_model(base, "classification", device="cpu"), LoraSpec(r=4), "classification")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tok = load_tokenizer(base)
    batches = classifier_batches(tok, "short", EXAMPLES[:8], MNLI_LABELS, 2, 128, seed=0)
    result = fit(model, batches, OptimSpec(batch_size=2, grad_accum=2, lr=1e-3, log_every=1), torch.device("cpu"))
    assert (result.steps, result.examples) == (2, 8)  # 4 batches, 2 per optimiser step
    assert [r["step"] for r in result.log] == [1, 2] and all(r["loss"] > 0 for r in result.log)
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        assert changed == p.requires_grad or ("lora_A" in n), n  # lora_A gets no gradient while lora_B is 0


def test_batches_are_seeded_shuffled_and_padded(base):
    tok = load_tokenizer(base)
    make = classifier_batches(tok, "short", EXAMPLES, MNLI_LABELS, 4, 128, seed=0)
    a, b = make(0), make(0)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert not all(torch.equal(x["labels"], y["labels"]) for x, y in zip(a, make(1)))
    assert sorted(int(l) for x in a for l in x["labels"]) == sorted(MNLI_LABELS.index(e.label) for e in EXAMPLES)
    for x in a:  # right padding with the pad id, mask 0 there
        assert ((x["attention_mask"] == 0) == (x["input_ids"] == tok.pad_token_id)).all()


def test_exact_output_files_and_records(trained):
    out, _ = trained
    assert {p.name for p in out.iterdir()} == OUTPUT_FILES
    info = json.loads((out / "classifier.json").read_text())
    assert info["labels"] == list(MNLI_LABELS) and info["train"]["examples"] == 24
    assert info["base"]["fingerprint"] and info["spec"]["lora"]["r"] == 4
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["device"] == "cpu" and meta["dtype"] == "float32" and meta["train_examples_per_s"] > 0
    m = meta["mfu"]  # LoRA training FLOPs over the measured CPU peak (blindspot.mfu)
    assert m["mfu"] > 0 and m["model_flops"] > 0 and m["tokens"] > 24 and m["formula"].startswith("4*P")
    assert 0 < m["shape"]["trainable_params"] < m["shape"]["params"]


def test_bf16_on_cpu_trains_under_autocast_and_reloads(base, tmp_path):
    """dtype bfloat16 on CPU (what 'auto' picks on a CPU with native bf16): trains, saves, reloads.

    The reloaded model computes in bf16 (its head is stored fp32 and loaded into the bf16 copy),
    so the logits match the in-memory fp32-head model at bf16 precision, not bit for bit."""
    captured = {}
    original = train.save_adapter_dir

    def spy(model, tokenizer, out_dir, info_name, info, rows, meta):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            captured["logits"] = logits(model, tokenizer, info["template"]).float()
        original(model, tokenizer, out_dir, info_name, info, rows, meta)

    train.save_adapter_dir = spy
    try:
        out = train_classifier(spec_for(base, dtype="bfloat16"), EXAMPLES, tmp_path / "bf16")
    finally:
        train.save_adapter_dir = original
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert json.loads((out / "meta.json").read_text())["dtype"] == "bfloat16"
    clf = load_classifier(out, device="cpu", dtype="bfloat16")
    assert next(clf.model.parameters()).dtype == torch.bfloat16
    got = logits(clf.model, clf.tokenizer, clf.template).float()
    torch.testing.assert_close(got, captured["logits"], rtol=0.05, atol=0.05)


def test_untrained_head_is_seeded(base, tmp_path):
    runs = {name: train_classifier(spec_for(base, seed=seed), [], tmp_path / name)
            for name, seed in [("a", 0), ("b", 0), ("c", 1)]}
    got = {name: logits(c.model, c.tokenizer, c.template)
           for name, c in ((n, load_classifier(p, device="cpu")) for n, p in runs.items())}
    torch.testing.assert_close(got["a"], got["b"], rtol=0, atol=0)
    assert not torch.allclose(got["a"], got["c"])
    assert (runs["a"] / "train_log.jsonl").read_text() == ""
    assert {p.name for p in runs["a"].iterdir()} == OUTPUT_FILES


def test_continue_from_saved_classifier(trained, tmp_path):
    start, _ = trained
    more = [NLIExample(f"m{i}", e.premise, e.hypothesis, e.label) for i, e in enumerate(EXAMPLES[:8])]
    spec = spec_for("ignored-because-init-from", init_from=str(start), template=None)
    out = train_classifier(spec, more, tmp_path / "aug")
    assert {p.name for p in out.iterdir()} == OUTPUT_FILES
    info, start_info = (json.loads((d / "classifier.json").read_text()) for d in (out, start))
    assert info["base"] == start_info["base"] and info["template"] == start_info["template"]
    assert info["train"]["examples"] == 8
    a, b = load_classifier(start, device="cpu"), load_classifier(out, device="cpu")
    assert not torch.allclose(logits(a.model, a.tokenizer, a.template), logits(b.model, b.tokenizer, b.template))
    with pytest.raises(ConfigError, match="template"):
        train_classifier(spec_for("x", init_from=str(start), template="paper"), more, tmp_path / "bad")


def test_done_dir_is_reused_or_refused(trained, base):
    out, _ = trained
    assert train_classifier(spec_for(base), EXAMPLES, out) == out  # same spec: nothing to do
    with pytest.raises(ConfigError, match="different"):
        train_classifier(spec_for(base, seed=5), EXAMPLES, out)


def test_bad_checkpoints(trained, tmp_path):
    out, _ = trained
    with pytest.raises(CheckpointError, match="no such classifier"):
        load_classifier(tmp_path / "missing")
    corrupt = tmp_path / "corrupt"
    shutil.copytree(out, corrupt)
    (corrupt / "classifier.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="classifier.json: corrupt"):
        load_classifier(corrupt)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(out, unfinished)
    (unfinished / "DONE").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_classifier(unfinished)


def test_adapter_from_another_base_is_detected(base, tmp_path):
    own_base = tmp_path / "base"
    shutil.copytree(base, own_base)
    out = train_classifier(spec_for(own_base), [], tmp_path / "clf")
    shutil.rmtree(own_base)
    build_tiny_llama(own_base, [e.premise for e in EXAMPLES], seed=7)  # same place, other weights
    with pytest.raises(CheckpointError, match="another base model"):
        load_classifier(out)


def test_bad_training_inputs(base, tmp_path):
    with pytest.raises(ConfigError, match="unknown model"):
        train_classifier(spec_for("nobody-knows-this-model"), [], tmp_path / "a")
    with pytest.raises(ConfigError, match="template"):
        train_classifier(spec_for(base, template="no placeholders"), [], tmp_path / "b")
    odd = [NLIExample("x1", "p", "h", "maybe")]
    with pytest.raises(DataError, match="x1.*maybe"):
        train_classifier(spec_for(base), odd, tmp_path / "c")
    with pytest.raises(CheckpointError, match="no such classifier"):
        train_classifier(spec_for(base, init_from=str(tmp_path / "nope")), odd, tmp_path / "d")


def test_cli_trains_from_config_and_options(base, tmp_path, capsys):
    from blindspot.cli import main

    data = tmp_path / "train.jsonl"
    save_examples(data, EXAMPLES)
    config = tmp_path / "clf.yaml"
    config.write_text(f"model: {base}\ntemplate: short\nlora: {{r: 4}}\noptim: {{batch_size: 8}}\n"
                      f"data: {data}\nn: 12\n")
    out = tmp_path / "out"
    assert main(["train-classifier", "--config", str(config), "--lr", "1e-3", "--seed", "3",
                 "--out", str(out), "--device", "cpu"]) == 0
    info = json.loads((out / "classifier.json").read_text())
    assert info["spec"]["optim"]["lr"] == 1e-3 and info["spec"]["optim"]["batch_size"] == 8
    assert info["spec"]["seed"] == 3 and info["train"]["examples"] == 12
    config.write_text("lora: {rank: 4}\n")
    assert main(["train-classifier", "--config", str(config), "--out", str(tmp_path / "x")]) == 2
    assert "lora.rank" in capsys.readouterr().err
    assert main(["train-classifier", "--model", str(base), "--n", "5", "--out", str(tmp_path / "y")]) == 2
    assert "--data" in capsys.readouterr().err


def test_optimizer_is_a_named_choice(caplog):
    import logging

    from blindspot.training.loop import build_optimizer

    params = [torch.nn.Parameter(torch.zeros(64, 64))]
    assert OptimSpec().optimizer == "adamw_torch"
    assert type(build_optimizer(params, OptimSpec(), torch.device("cpu"))) is torch.optim.AdamW
    paged = OptimSpec(optimizer="paged_adamw_32bit")
    with caplog.at_level(logging.WARNING, logger="blindspot.training.loop"):
        opt = build_optimizer(params, paged, torch.device("cpu"))
    assert type(opt) is torch.optim.AdamW and "CUDA only" in caplog.text  # no paging on CPU, said in words
    assert opt.defaults["weight_decay"] == paged.weight_decay == 0.001
    bnb = pytest.importorskip("bitsandbytes")
    cuda_opt = build_optimizer(params, paged, torch.device("cuda"))  # the choice only; nothing runs on CUDA
    assert isinstance(cuda_opt, bnb.optim.PagedAdamW32bit)
    assert cuda_opt.defaults["lr"] == paged.lr and cuda_opt.defaults["weight_decay"] == 0.001


def test_group_by_length_switch(base):
    tok = load_tokenizer(base)
    long = [NLIExample(f"l{i}", e.premise + " and then" * (i % 7), e.hypothesis, e.label) for i, e in enumerate(EXAMPLES)]
    widths = lambda batches: [b["input_ids"].shape[1] for b in batches]  # noqa: E731
    grouped = classifier_batches(tok, "short", long, MNLI_LABELS, 4, 256, seed=0)(0)
    plain = classifier_batches(tok, "short", long, MNLI_LABELS, 4, 256, seed=0, group_by_length=False)(0)
    padding = lambda batches: sum(int((b["attention_mask"] == 0).sum()) for b in batches)  # noqa: E731
    assert padding(grouped) < padding(plain) and sorted(widths(grouped)) != sorted(widths(plain))


def _four_bit_here() -> bool:
    from blindspot.models.load import four_bit_available

    return four_bit_available(torch.device("cpu"))[0]


@pytest.mark.skipif(not _four_bit_here(), reason="bitsandbytes with a CPU backend (>= 0.46) is not installed")
def test_4bit_qlora_classifier_on_cpu_trains_saves_and_reloads_identically(base, tmp_path):
    """The paper's QLoRA path (NF4 base, LoRA, fp32 head) on CPU through bitsandbytes' CPU backend."""
    import bitsandbytes as bnb

    from blindspot.models.load import _nf4_config

    config = _nf4_config(torch.device("cpu"), torch.float32)
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant is False  # as the paper
    captured = {}
    original = train.save_adapter_dir

    def spy(model, tokenizer, out_dir, info_name, info, rows, meta):
        captured["logits"] = logits(model, tokenizer, info["template"])
        captured["4bit"] = any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
        original(model, tokenizer, out_dir, info_name, info, rows, meta)

    train.save_adapter_dir = spy
    try:
        out = train_classifier(spec_for(base, dtype="float32", quantize="4bit"), EXAMPLES, tmp_path / "q")
    finally:
        train.save_adapter_dir = original
    assert captured["4bit"]
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert rows and all(r["loss"] > 0 for r in rows)
    clf = load_classifier(out, device="cpu", dtype="float32")  # quantize None: as trained, 4-bit
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in clf.model.modules())
    torch.testing.assert_close(logits(clf.model, clf.tokenizer, clf.template), captured["logits"], rtol=0, atol=0)
    more = train_classifier(spec_for("unused", init_from=str(out), template=None, dtype="float32", quantize="4bit"),
                            EXAMPLES[:8], tmp_path / "q-more")  # continuing QLoRA training (augmentation)
    assert json.loads((more / "classifier.json").read_text())["train"]["examples"] == 8


def test_4bit_classifier_where_4bit_cannot_run_warns_and_loads_unquantised(trained, tmp_path, monkeypatch, caplog):
    import logging

    from blindspot.models import load as models

    out, _ = trained
    fake = tmp_path / "fake4bit"
    shutil.copytree(out, fake)
    info = json.loads((fake / "classifier.json").read_text())
    info["spec"]["quantize"] = "4bit"
    (fake / "classifier.json").write_text(json.dumps(info))
    monkeypatch.setattr(models, "four_bit_available", lambda dev: (False, "bitsandbytes is not installed"))
    with caplog.at_level(logging.WARNING, logger="blindspot.training.classifier"):
        clf = load_classifier(fake, device="cpu")
    assert "trained on a 4-bit NF4 base, but bitsandbytes is not installed: loading it on the unquantised" in caplog.text
    assert clf.labels == MNLI_LABELS
