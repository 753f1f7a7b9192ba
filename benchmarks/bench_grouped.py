"""One start's augmentation runs, one by one vs grouped (blindspot.training.grouped): wall, CPU time, MFU, agreement.

    python benchmarks/bench_grouped.py --model smollm2-135m --sizes 48,72,96 --out runs/bench-grouped

Trains a starting point on --start examples of the MNLI pool ($BLINDSPOT_DATA), then continues it
once per size (label-balanced samples, as the grid's augment stage draws them) with the demo's
classifier settings (short template, max_length 128, LoRA r 64 / alpha 16 / no dropout, lr 2e-4,
batch 8, warmup 0.1): first each run alone (train.train_classifier), then all of them as one group
(group_runs.train_classifiers_together). Prints and writes OUT/bench.json: per mode the wall and
process CPU seconds, training examples/s and MFU (blindspot.mfu), and the largest weight difference
between the grouped and the single runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    import torch
    from safetensors.torch import load_file

    from blindspot.data.cleaning import sample_balanced
    from blindspot.data.example import MNLI_LABELS
    from blindspot.training.group_runs import train_classifiers_together
    from blindspot.training.loop import LoraSpec, OptimSpec
    from blindspot.training.classifier import ClassifierSpec, load_training_examples, train_classifier

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--sizes", default="48,72,96", help="augmentation sizes, one run each")
    p.add_argument("--start", type=int, default=16, help="examples the starting point is trained on")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", type=Path, default=Path("runs/bench-grouped"))
    args = p.parse_args()
    data = os.path.expandvars("$BLINDSPOT_DATA/mnli-subset/multinli_1.0_train.jsonl.gz")
    pool = load_training_examples(data, None, 0, MNLI_LABELS, pool_per_label=50)
    optim = OptimSpec(lr=2e-4, batch_size=8, warmup_ratio=0.1)
    common = dict(device="cpu", dtype=args.dtype, max_length=128, optim=optim)
    start = train_classifier(ClassifierSpec(model=args.model, template="short", seed=0, lora=LoraSpec(r=64, alpha=16,
                             dropout=0.0), **common), pool[:args.start], args.out / "start")
    sizes = [int(s) for s in args.sizes.split(",")]
    specs = [ClassifierSpec(init_from=str(start), seed=0, **common) for _ in sizes]
    examples = [sample_balanced(pool[args.start:], m, 0, MNLI_LABELS, []) for m in sizes]
    report: dict = {"model": args.model, "sizes": sizes, "threads": torch.get_num_threads(), "dtype": args.dtype}
    for mode in ("alone", "grouped"):
        dirs = [args.out / f"{mode}-{m}" for m in sizes]
        wall0, cpu0 = time.time(), time.process_time()
        if mode == "alone":
            for spec, ex, d in zip(specs, examples, dirs):
                train_classifier(spec, ex, d)
        else:
            train_classifiers_together(specs, examples, dirs)
        metas = [json.loads((d / "meta.json").read_text()) for d in dirs]
        flops = sum(m["mfu"]["model_flops"] for m in metas)
        train_s = metas[0]["group"]["train_seconds"] if mode == "grouped" else sum(m["train_seconds"] for m in metas)
        peak = metas[0]["mfu"]["peak_flops_per_s"]
        report[mode] = {"wall_s": round(time.time() - wall0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
                        "train_s": round(train_s, 1), "examples_per_s": round(sum(sizes) / train_s, 2),
                        "mfu": flops / train_s / peak if peak else None, "peak_flops_per_s": peak}
        print(mode, report[mode], flush=True)
    worst = 0.0
    for m in sizes:
        a = load_file(args.out / f"alone-{m}" / "adapter_model.safetensors")
        g = load_file(args.out / f"grouped-{m}" / "adapter_model.safetensors")
        worst = max(worst, *(float((a[k] - g[k]).abs().max()) for k in a))
    report["max_abs_weight_diff"] = worst
    (args.out / "bench.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
