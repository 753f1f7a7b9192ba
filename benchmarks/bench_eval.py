"""Evaluation throughput: blindspot's predict_proba vs the reference implementation's way.

    python benchmarks/bench_eval.py --model smollm2-135m --n 320 --set mnli --template paper
    python benchmarks/bench_eval.py --model tiny-llama --n 200          # a quick check
    python benchmarks/bench_eval.py --n 160 --threads 1                 # steadier when the CPU is shared

In one process, on the same model (fresh classification head; speed does not depend on the
weights) and the same examples, it times
- reference: HF `Trainer.predict` with `DataCollatorWithPadding`, batch 32, the examples in
  their given order, the full prompt text tokenised per example (as the paper's code does), and
- blindspot: `blindspot.predict.predict_proba` (tokenised once, length-sorted batches, shared
  prompt prefix run once and its key/value cache reused by every batch, inference_mode),
and prints examples/s (wall clock and process CPU time; CPU time is the fairer number on a
shared machine), the speed-up ratio, and how well the two sets of probabilities agree.

Measured on the 2-core development CPU, smollm2-135m, fp32, paper template, batch 32 (see
docs/LOG.md): 240 examples, 2 threads: MNLI dev-matched 2.32x wall / 2.29x CPU time, HANS
1.74x / 1.77x; 200 examples, --threads 1: MNLI 2.45x / 2.51x, HANS 1.78x / 2.03x. Both paths
are compute-bound at the same rate per token, so the ratio is the ratio of tokens computed: the
paper's shared prefix is 21 of ~67 tokens with SmolLM2's tokenizer, which caps the gain short of
3x (even with zero padding, ~2.7x on MNLI).
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from blindspot.data.example import NLIExample
from blindspot.evaluate import predict_proba
from blindspot.templates import CLASSIFIER_TEMPLATES, classifier_text

SETS = {"mnli": "mnli-subset/multinli_1.0_dev_matched.jsonl.gz",
        "hans": "hans-regen/heuristics_evaluation_set.jsonl.gz"}


def load_examples(data_root: Path, which: str, n: int, seed: int) -> list[NLIExample]:
    """n examples drawn with the seed from MNLI dev-matched or the HANS evaluation set."""
    from blindspot.data.sources import load_source

    examples = list(load_source(str(data_root / SETS[which])).examples)
    return random.Random(seed).sample(examples, min(n, len(examples)))


def load_model(name: str, examples: list[NLIExample], cache_dir: str | None):
    """(model, tokenizer) on CPU in fp32, the model with a fresh 3-way classification head."""
    from blindspot.models.load import load_base_model, load_tokenizer
    from blindspot.models.resolve import resolve_model

    texts = [f"{e.premise} {e.hypothesis}" for e in examples] + list(CLASSIFIER_TEMPLATES.values())
    path = resolve_model(name, cache_dir, texts=texts)
    tokenizer = load_tokenizer(path)
    torch.manual_seed(0)
    model = load_base_model(path, "classification", 3, device="cpu", dtype="float32",
                            pad_token_id=tokenizer.pad_token_id)
    return model.eval(), tokenizer


def reference_predict(model, tokenizer, template: str, examples: list[NLIExample], batch_size: int) -> np.ndarray:
    """The reference way: full prompts tokenised per example, Trainer.predict, padded per batch."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    texts = [classifier_text(template, e.premise, e.hypothesis) for e in examples]
    data = Dataset.from_dict({"text": texts}).map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=512), batched=True, remove_columns=["text"])
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size, report_to=[],
                                 use_cpu=True, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer))
        logits = trainer.predict(data).predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    return torch.softmax(torch.as_tensor(logits).float(), dim=-1).numpy()


def timed(fn, *args, **kwargs) -> tuple[np.ndarray, float, float]:
    """(result, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m, tiny-llama, a checkpoint dir or hub id")
    parser.add_argument("--n", type=int, default=320, help="number of examples")
    parser.add_argument("--set", dest="which", choices=sorted(SETS), default="mnli", help="which evaluation set")
    parser.add_argument("--template", choices=sorted(CLASSIFIER_TEMPLATES), default="paper", help="prompt template")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of both methods")
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"),
                        help="folder holding mnli-subset/ and hans-regen/")
    parser.add_argument("--cache-dir", default=None, help="model cache directory (default $BLINDSPOT_CACHE)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the example sample")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice); 1 is steadier on a shared machine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    examples = load_examples(Path(args.data), args.which, args.n, args.seed)
    model, tokenizer = load_model(args.model, examples, args.cache_dir)
    template = CLASSIFIER_TEMPLATES[args.template]
    predict_proba(model, tokenizer, template, examples[:4], batch_size=4)  # warm-up (kernels, allocator)

    ref, ref_wall, ref_cpu = timed(reference_predict, model, tokenizer, template, examples, args.batch_size)
    ours, our_wall, our_cpu = timed(predict_proba, model, tokenizer, template, examples, batch_size=args.batch_size)

    n = len(examples)
    print(f"model {args.model}, {n} {args.which} examples, template {args.template}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'method':<34} {'wall s':>8} {'ex/s':>8} {'cpu s':>8} {'ex/cpu-s':>9}")
    for name, wall, cpu in (("reference (Trainer.predict)", ref_wall, ref_cpu),
                            ("blindspot predict_proba", our_wall, our_cpu)):
        print(f"{name:<34} {wall:>8.2f} {n / wall:>8.2f} {cpu:>8.2f} {n / cpu:>9.3f}")
    print(f"speed-up: {ref_wall / our_wall:.2f}x wall, {ref_cpu / our_cpu:.2f}x CPU time")
    agree = float(np.mean(ref.argmax(1) == ours.argmax(1)))
    print(f"agreement of predicted labels {agree:.4f}; max |prob difference| {np.abs(ref - ours).max():.2e} "
          "(the reference tokenises the whole prompt at once, so token boundaries can differ)")


if __name__ == "__main__":
    main()
