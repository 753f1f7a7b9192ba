"""bf16 against fp32 on this CPU: training and evaluation speed, and how far the predictions agree.

    python benchmarks/bench_dtype.py --train 200 --eval-per-label 100 --json /tmp/bench_dtype.json
    python benchmarks/bench_dtype.py --train 64 --eval-per-label 40 --threads 1   # a busy shared CPU
    python benchmarks/bench_dtype.py --model tiny-llama --train 40 --eval-per-label 10   # a quick check

In one process, on the same training sample and the same evaluation pairs (MNLI dev-matched,
k per label), it
1. trains a classifier in fp32 and another in bf16 (same seed, same examples; the short
   template and the demo's optimiser settings),
2. evaluates the fp32-trained classifier in fp32 and in bf16 (same weights: the agreement is
   the effect of bf16 inference alone), and the bf16-trained one in bf16 (the effect of bf16
   training and inference together, against fp32 throughout),
and prints examples/s by wall clock and by process CPU time (the fairer number on a shared
machine), the speed-up ratios, accuracies and prediction agreement. dtype 'auto' picks bf16 on
a CPU with native bf16 (AVX512_BF16 / AMX); this measures what that choice buys and costs.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from blindspot.data.cleaning import clean_mnli, sample_examples, split_validation, stratified_sample
from blindspot.data.sources import load_source
from blindspot.evaluate import predict_proba
from blindspot.training.loop import LoraSpec, OptimSpec
from blindspot.models.resolve import cpu_native_bf16
from blindspot.training.classifier import ClassifierSpec, load_classifier, train_classifier

DATA = "$BLINDSPOT_DATA/mnli-subset"


def timed(fn):
    """(result, wall seconds, process CPU seconds) of fn()."""
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def train(model: str, dtype: str, examples, out: Path) -> tuple[Path, float, float]:
    spec = ClassifierSpec(model=model, template="short", max_length=128, device="cpu", dtype=dtype,
                          lora=LoraSpec(r=64, alpha=16, dropout=0.0),
                          optim=OptimSpec(lr=2e-4, batch_size=8, warmup_ratio=0.1))
    return timed(lambda: train_classifier(spec, examples, out))


def predict(path: Path, dtype: str, examples) -> tuple[np.ndarray, float, float]:
    clf = load_classifier(path, device="cpu", dtype=dtype)
    return timed(lambda: predict_proba(clf.model, clf.tokenizer, clf.template, examples, batch_size=32,
                                       max_length=128, desc=f"eval {dtype}"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--train", type=int, default=200, help="training examples")
    p.add_argument("--eval-per-label", type=int, default=100, help="MNLI dev-matched pairs per label")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a shared CPU")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    import os

    data = Path(os.path.expandvars(DATA))
    pool = split_validation(clean_mnli(load_source(str(data / "multinli_1.0_train.jsonl.gz")))[0], 250, 0)[1]
    examples = sample_examples(pool, args.train, seed=0)
    dev = stratified_sample(load_source(str(data / "multinli_1.0_dev_matched.jsonl.gz")), args.eval_per_label,
                            key="label", seed=0).examples
    gold = np.array([e.label for e in dev])
    res: dict = {"cpu": cpu_native_bf16()[1], "threads": torch.get_num_threads(), "model": args.model,
                 "train_examples": len(examples), "eval_examples": len(dev)}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for dtype in ("float32", "bfloat16"):
            dirs[dtype], w, c = train(args.model, dtype, examples, Path(tmp) / dtype)
            res[f"train_{dtype}"] = {"wall_s": round(w, 1), "cpu_s": round(c, 1),
                                     "examples_per_s": round(len(examples) / w, 2),
                                     "examples_per_cpu_s": round(len(examples) / c, 3)}
        preds = {}
        for name, (trained, dtype) in {"fp32": ("float32", "float32"), "fp32_in_bf16": ("float32", "bfloat16"),
                                       "bf16": ("bfloat16", "bfloat16")}.items():
            probs, w, c = predict(dirs[trained], dtype, dev)
            labels = json.loads((dirs[trained] / "classifier.json").read_text())["labels"]
            preds[name] = np.array([labels[i] for i in probs.argmax(1)])
            res[f"eval_{name}"] = {"wall_s": round(w, 1), "cpu_s": round(c, 1),
                                   "examples_per_s": round(len(dev) / w, 2),
                                   "examples_per_cpu_s": round(len(dev) / c, 3),
                                   "accuracy": round(float((preds[name] == gold).mean()), 4)}
    t32, t16 = res["train_float32"], res["train_bfloat16"]
    e32, e16 = res["eval_fp32"], res["eval_fp32_in_bf16"]
    res["speedup"] = {"train_wall": round(t32["wall_s"] / t16["wall_s"], 2),
                      "train_cpu": round(t32["cpu_s"] / t16["cpu_s"], 2),
                      "eval_wall": round(e32["wall_s"] / e16["wall_s"], 2),
                      "eval_cpu": round(e32["cpu_s"] / e16["cpu_s"], 2)}
    res["agreement"] = {"same_weights_fp32_vs_bf16_inference": round(float((preds["fp32"] == preds["fp32_in_bf16"]).mean()), 4),
                        "fp32_trained_vs_bf16_trained": round(float((preds["fp32"] == preds["bf16"]).mean()), 4)}
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
