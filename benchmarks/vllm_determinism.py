"""Why a resumed vLLM run differed from an uninterrupted one now and then (issue 11): two checks.

    PYTHONPATH=src:tests .venv-vllm/bin/python benchmarks/vllm_determinism.py arrival --repeats 8
    PYTHONPATH=src .venv-vllm/bin/python benchmarks/vllm_determinism.py resume --generator GEN \
        --reference FP32_RUN --origin RUN [--origin RUN ...]

**resume.** Every commit point of each `--origin` run (a finished `blindspot generate --engine vllm`
output, sampled in some dtype) is cut out as a killed run would leave it (progress.json and the
committed rows), then resumed in this process on one float32 engine and compared with
`--reference` (an uninterrupted float32 run of the same spec, in another process). Prints, per
origin, how many resumes were byte-identical, differed (and where) or were refused.

**arrival.**
One engine on the tiny-llama generator of tests/test_vllm_engine.py (batch 8 = max_num_seqs, 48 new
tokens, on CPU in `--dtype`). Chunk 0 of each label (4 batches of 8 requests, per-request seeds, the
default sampling settings) is sampled `repeats` times in each of four ways, and every run is
compared token for token with the first run of `paused`:

- `plain`: `LLM.generate`, as VllmEngine.complete did before the fix: the requests are sent to
  vLLM's engine process one by one, and it starts stepping on the first to arrive;
- `plain+jitter`: the same with a random 0-2 ms wait before each request is sent (the timing of
  a loaded machine, made frequent);
- `paused`, `paused+jitter`: VllmEngine.complete (scheduling paused while the chunk is queued, an
  empty prefix cache), without and with the same waits.

Prints, per way, how many runs and rows differed from the reference, and the prompt tokens vLLM's
prefix cache served (0 on a CPU: its 128-token blocks are longer than these sequences).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

LABELS = ("entailment", "neutral", "contradiction")
BATCH, CHUNK, NEW_TOKENS = 8, 4, 48


def arrival(args) -> None:
    import torch

    torch.set_num_threads(1)
    from test_generator import make_tiny_generator  # tests/ on PYTHONPATH

    from blindspot.generation.sample import GenerateSpec
    from blindspot.generation.vllm_engine import VllmEngine, attempt_seed

    t0 = time.perf_counter()
    gen_dir, _ = make_tiny_generator(Path(tempfile.mkdtemp(prefix="vllm-det-")))
    eng = VllmEngine.open(gen_dir, device="cpu", dtype=args.dtype, batch_size=BATCH, max_new_tokens=NEW_TOKENS)
    print(f"{args.dtype}: generator + engine start: {time.perf_counter() - t0:.0f} s", flush=True)
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    spec = GenerateSpec(generator=str(gen_dir), engine="vllm", n_per_label=40, batch_size=BATCH,
                        max_new_tokens=NEW_TOKENS, device="cpu")
    core = eng.llm.llm_engine.engine_core
    send = core.add_request
    jitter = {"on": False}
    rng = random.Random(0)

    def jittered_send(request):  # on the instance: LLMEngine.add_request calls engine_core.add_request
        if jitter["on"]:
            time.sleep(rng.uniform(0, args.jitter_ms) / 1000)
        return send(request)

    core.add_request = jittered_send

    def params(label: str) -> list:
        return [SamplingParams(temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k,
                               max_tokens=NEW_TOKENS, seed=attempt_seed(spec.seed, label, a),
                               stop=[eng.gen.template.end_marker.strip()], include_stop_str_in_output=True,
                               stop_token_ids=[eng.gen.tokenizer.eos_token_id])
                for a in range(BATCH * CHUNK)]

    def plain(label: str) -> list[list[int]]:
        prompt = TokensPrompt(prompt_token_ids=list(eng.gen.prompt_ids(label)))
        outs = eng.llm.generate([prompt] * BATCH * CHUNK, params(label), use_tqdm=False, lora_request=eng.lora)
        cached["tokens"] += sum(o.num_cached_tokens or 0 for o in outs)
        return [list(o.outputs[0].token_ids) for o in outs]

    def paused(label: str) -> list[list[int]]:
        before = eng.counter.tokens
        rows = eng.complete(eng.gen.prompt_ids(label), params(label))
        n = len(eng.gen.prompt_ids(label))  # computed prompt tokens = n - cached, per request
        cached["tokens"] += len(rows) * n - (eng.counter.tokens - before - sum(len(r) - 1 for r in rows))
        return rows

    cached = {"tokens": 0}
    ways = (("paused", paused, False), ("plain", plain, False), ("plain+jitter", plain, True),
            ("paused+jitter", paused, True))
    ref: dict[str, list[list[int]]] = {}
    for name, run, jit in ways:
        jitter["on"], cached["tokens"] = jit, 0
        runs_off, rows_off, started = 0, 0, time.perf_counter()
        for i in range(args.repeats):
            off = 0
            for label in LABELS:
                rows = run(label)
                ref.setdefault(label, rows)
                off += sum(a != b for a, b in zip(rows, ref[label]))
            runs_off += off > 0
            rows_off += off
        print(f"{name:14s} {args.repeats} runs of {len(LABELS)} chunks x {BATCH * CHUNK} requests: "
              f"{runs_off} runs and {rows_off} rows differ from the reference; prefix-cache tokens "
              f"{cached['tokens']}; {time.perf_counter() - started:.0f} s", flush=True)
    eng.close()


FILES = ("synthetic.jsonl", "rejects.jsonl", "report.json", "progress.json")


def _batch(row: dict) -> int:
    return row["batch"] if "batch" in row else int(row["id"].rsplit("-b", 1)[1].split("-r")[0])


def cut(run: Path, out: Path, points: int, labels: tuple[str, ...]) -> None:
    """`out` as a run killed after its first `points` committed batches (labels in order) would leave it."""
    done = json.loads((run / "progress.json").read_text())
    progress, left = {}, points
    for lab in labels:
        b = min(left, done[lab]["batches"])
        progress[lab] = done[lab] if b == done[lab]["batches"] else {"batches": b, "surplus": 0}
        left -= b
    out.mkdir(parents=True)
    shutil.copy(run / "spec.json", out / "spec.json")
    for name in FILES[:2]:
        rows = [line for line in (run / name).read_text().splitlines(keepends=True)
                if _batch(json.loads(line)) < progress[json.loads(line)["label"]]["batches"]]
        (out / name).write_text("".join(rows))
    (out / "progress.json").write_text(json.dumps(progress))


def resume(args) -> None:
    from blindspot.errors import BlindspotError
    from blindspot.generation.sample import GenerateSpec, generate
    from blindspot.generation.vllm_engine import VllmEngine

    ref = Path(args.reference)
    saved = json.loads((ref / "spec.json").read_text())
    eng = VllmEngine.open(args.generator, device="cpu", dtype="float32", batch_size=saved["batch_size"],
                          max_new_tokens=saved["max_new_tokens"])
    labels = tuple(saved["labels"] or eng.gen.labels)
    total = sum(p["batches"] for p in json.loads((ref / "progress.json").read_text()).values())
    tmp = Path(tempfile.mkdtemp(prefix="vllm-resume-"))
    for o, origin in enumerate(map(Path, args.origin)):
        dtype = json.loads((origin / "spec.json").read_text())["dtype"]
        same, differ, refused, started = 0, [], [], time.perf_counter()
        for k in range(1, total):
            out = tmp / f"{o}-{k}"
            cut(origin, out, k, labels)
            spec = GenerateSpec(**{**json.loads((origin / "spec.json").read_text()), "dtype": "auto",
                                   "generator": args.generator})
            try:
                generate(spec, out, engine=eng)
            except BlindspotError as e:
                refused.append((k, str(e).split(": ", 1)[-1][:70]))
                continue
            bad = [n for n in FILES if (out / n).read_bytes() != (ref / n).read_bytes()]
            if bad:
                differ.append((k, bad))
            else:
                same += 1
        print(f"origin {origin} (spec.json dtype {dtype}): {total - 1} commit points resumed in float32: "
              f"{same} identical to the reference, {len(differ)} differ {differ[:6]}, {len(refused)} refused "
              f"{refused[:1]}; {time.perf_counter() - started:.0f} s", flush=True)
    eng.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="check", required=True)
    a = sub.add_parser("arrival")
    a.add_argument("--repeats", type=int, default=8)
    a.add_argument("--jitter-ms", type=float, default=2.0, help="largest wait before a request is sent")
    a.add_argument("--dtype", default="float32", help="float32 | bfloat16 (auto on a CPU with AMX)")
    r = sub.add_parser("resume")
    r.add_argument("--generator", required=True)
    r.add_argument("--reference", required=True, help="an uninterrupted float32 run")
    r.add_argument("--origin", action="append", required=True, help="a finished run to cut and resume")
    args = ap.parse_args()
    arrival(args) if args.check == "arrival" else resume(args)


if __name__ == "__main__":
    main()
