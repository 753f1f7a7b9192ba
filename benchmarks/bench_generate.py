"""Generation throughput: blindspot's sampler vs the reference implementation's way.

    python benchmarks/bench_generate.py                          # smollm2-135m, ~4 minutes on 2 CPU cores
    python benchmarks/bench_generate.py --model tiny-llama --train-n 60 --ref-max-new-tokens 128   # a quick check

In one process it first trains a generator briefly (LoRA, `loss_on after_prefix`, a few
epochs at a high learning rate on --train-n short MNLI pool pairs: an untrained base hardly ever
writes the end marker, so valid examples/s would be 0 for both), then, on that same model
(LoRA merged), times
- reference: HF `model.generate` on a batch of 64 copies of the label prompt, sampling,
  max_new_tokens=512, no stopping criterion, then decode everything and parse (the text up to
  the first end marker; the rest is wasted work), and
- blindspot: `blindspot.generate.decode_batch` on the same batch size (prompt cache computed
  once, finished rows dropped at every step, max_new_tokens --ours-max-new-tokens), then parse,
and prints valid examples/s and generated tokens/s (wall clock and process CPU time; CPU time
is the fairer number on a shared machine) and the speed-up. Sampling: temperature 1, no
top-k / top-p, for both.
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

from blindspot.sampling import StopRule, decode_batch, encode_prompt
from blindspot.parsing import doomed_reason, parse_generation

LABELS = ("entailment", "neutral", "contradiction")


def pool_examples(data_root: Path, n: int, seed: int, max_words: int = 30):
    """n MNLI train pairs (premise + hypothesis at most max_words words), drawn with the seed."""
    from blindspot.data.sources import load_source

    pool = load_source(str(data_root / "mnli-subset/multinli_1.0_train.jsonl.gz")).examples
    short = [e for e in pool if len(e.premise.split()) + len(e.hypothesis.split()) <= max_words and e.label in LABELS]
    return random.Random(seed).sample(short, n)


def train(args, out: Path):
    """A briefly trained generator at `out` (reused if it is there), loaded with LoRA merged."""
    from blindspot.generator import GeneratorSpec, load_generator, train_generator
    from blindspot.lora import LoraSpec
    from blindspot.train import OptimSpec

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


def timed(fn):
    """(result, wall seconds, process CPU seconds)."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - w, time.process_time() - c


REASONS: dict[str, Counter] = {"blindspot": Counter(), "reference": Counter()}


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
    return count_valid(gen, label, texts, "blindspot"), sum(len(r) for r in rows)


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
    p.add_argument("--batch", type=int, default=64, help="rows sampled together (both methods)")
    p.add_argument("--ref-max-new-tokens", type=int, default=512, help="reference: tokens generated per row")
    p.add_argument("--ours-max-new-tokens", type=int, default=128, help="blindspot: most tokens per row")
    p.add_argument("--ours-batches", type=int, default=3, help="blindspot batches timed (seeds 0, 1, ...)")
    p.add_argument("--label", default="neutral", help="the label both methods are prompted with")
    p.add_argument("--generator-dir", default=None, help="keep the trained generator here and reuse it on reruns")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        gen = train(args, Path(args.generator_dir or Path(tmp) / "generator"))
    ours(gen, args.label, 4, 8, 0)  # warm-up
    REASONS["blindspot"].clear()
    runs, wall, cpu = timed(lambda: [ours(gen, args.label, args.batch, args.ours_max_new_tokens, i)
                                     for i in range(args.ours_batches)])
    ours_row = report("blindspot", sum(v for v, _ in runs), sum(t for _, t in runs), wall, cpu)
    (valid, tokens), wall, cpu = timed(lambda: reference(gen, args.label, args.batch, args.ref_max_new_tokens, 0))
    ref_row = report("reference", valid, tokens, wall, cpu)
    speedup = {k: ours_row[k] / ref_row[k] if ref_row[k] else float("inf")
               for k in ("valid_per_s", "valid_per_cpu_s", "tokens_per_s")}
    print("parse results:", {k: dict(v.most_common()) for k, v in REASONS.items()})
    print(f"speed-up (valid examples/s): {speedup['valid_per_s']:.1f}x wall, {speedup['valid_per_cpu_s']:.1f}x CPU time")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "blindspot": ours_row, "reference": ref_row,
                                               "speedup": speedup, "parse_results": REASONS}, indent=2) + "\n")


if __name__ == "__main__":
    main()
