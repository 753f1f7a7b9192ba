"""Sample labelled synthetic NLI examples from a trained generator, batch by batch, resumably.

    blindspot generate --generator runs/generator --n-per-label 1000 --out runs/synthetic \
        --eval-set ../shared/data/hans-regen/heuristics_evaluation_set.jsonl.gz

For each label the generator is prompted with the label-first prefix up to and including the
label. The prompt is the same text for every example of a label, so its key/value cache is
computed once and copied to each batch; every row then decodes one token per step over that
cache and leaves the batch as soon as it writes the end marker (or EOS), so finished rows cost
nothing. Batch b of label L is sampled with a seed derived from (seed, L, b): the same spec
gives the same records, and a run killed at any moment and started again resumes after its
last finished batch and ends with exactly the records of an uninterrupted run.

That is the native engine; `--engine vllm` samples the batches with vLLM instead
(blindspot.generation.engines, blindspot.generation.vllm_engine). Only the decode call differs: parsing, reject
accounting, dedup, leakage, the files and resumption are this module's, for every engine.

Output directory: synthetic.jsonl (valid records, appended per batch), rejects.jsonl (raw text
and reason), progress.json (batches finished per label: the commit point of each batch),
report.json (counts by reason, duplicates, leakage), spec.json, and from the directory's owner
(`generate` standalone, the store in a grid) meta.json, then DONE last.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from blindspot.generation.engines import ENGINES, choose_engine, open_engine
from blindspot.errors import BlindspotError, ConfigError
from blindspot.generation.parsing import LeakageIndex, PairFilter, doomed_reason, parse_generation
from blindspot.progress import progress_bar
from blindspot.mfu import inference_mfu
from blindspot.runmeta import Facts, finish_standalone, now, torch_threads, write_meta
from blindspot.storage import atomic_write_json, atomic_write_text, is_done

log = logging.getLogger(__name__)


class GenerateSpec(BaseModel):
    """What to sample and how; stored in the output directory, which must match it on resume."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generator: str = Field(description="Directory of a trained generator (blindspot train-generator).")
    n_per_label: int | dict[str, int] = Field(description="Valid records wanted per label: one number, or "
                                              "label -> number (e.g. more entailment for a lexical-overlap filter).")
    labels: tuple[str, ...] | None = Field(None, description="Labels to condition on; None = the generator's labels.")
    batch_size: int = Field(32, gt=0, description="Rows sampled together per batch.")
    temperature: float = Field(1.0, ge=0, description="Softmax temperature; 0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass; 1 = off.")
    top_k: int = Field(0, ge=0, description="Sample among the k most likely tokens; 0 = off.")
    max_new_tokens: int = Field(128, gt=0, description="Tokens a row may write before it is cut (and rejected).")
    seed: int = Field(0, description="Base seed; batch b of label L uses a seed derived from (seed, L, b).")
    max_attempts_factor: float = Field(5.0, ge=1, description="Give up on a label after this many x n_per_label samples.")
    max_chars: int = Field(2000, gt=0, description="Longest text (before the end marker) that is parsed.")
    eval_sets: tuple[str, ...] = Field((), description="Evaluation data sources to check synthetic pairs against.")
    keep_leaked: bool = Field(False, description="Keep pairs that occur in an evaluation set (reported either way).")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps.")
    dtype: str = Field("auto", description="auto | float32 | bfloat16 | float16; spec.json records the dtype "
                       "that ran, so a resume cannot switch it.")
    id_prefix: str = Field("", description="Prefix of every record id (a later round of repeated generations: "
                           "'round2-replace-'), so that rounds mixed in one training set keep distinct ids.")
    engine: Literal["auto", "native", "vllm"] = Field(
        "auto", description="native (our prompt-cached decoder), vllm, or auto: vllm on CUDA when it is "
        "installed, else native. spec.json records the engine that ran.")

    @field_validator("n_per_label")
    @classmethod
    def _positive(cls, v):
        counts = v.values() if isinstance(v, dict) else [v]
        if not counts or any(c < 1 for c in counts):
            raise ValueError(f"must be >= 1 (per label), got {v}")
        return v

    def check_labels(self, labels: tuple[str, ...]) -> None:
        """A per-label count must name only labels the generator writes."""
        unknown = [k for k in self.n_per_label if k not in labels] if isinstance(self.n_per_label, dict) else []
        if unknown:
            raise ConfigError(f"n_per_label: unknown label(s) {', '.join(map(repr, unknown))}; the generator "
                              f"writes {', '.join(labels)}")

    def wanted(self, label: str) -> int:
        """Valid records wanted for `label`."""
        if isinstance(self.n_per_label, int):
            return self.n_per_label
        if label not in self.n_per_label:
            raise ConfigError(f"n_per_label: no count for label {label!r} (given for {', '.join(self.n_per_label)})")
        return self.n_per_label[label]


def batch_seed(seed: int, label: str, batch: int) -> int:
    """The seed of one batch: a stable hash of (seed, label, batch index), 63 bits."""
    digest = hashlib.sha256(f"{seed}\x1f{label}\x1f{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ---------------------------------------------------------------- output files and resumption


def _append_jsonl(path: Path, rows: list[dict]) -> None:
    """Append rows as JSON lines, flushed and fsynced: a batch is on disk before it is committed."""
    with path.open("a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def _read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file up to its first torn line (no trailing newline, or bad JSON)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def _restore(out: Path, spec: GenerateSpec, labels: tuple[str, ...]) -> tuple[dict, list[dict], list[dict]]:
    """(progress, records, rejects) of the batches committed so far; rewrites files to exactly those."""
    progress_path = out / "progress.json"
    progress = json.loads(progress_path.read_text()) if progress_path.exists() else {}
    progress = {lab: progress.get(lab, {"batches": 0, "surplus": 0}) for lab in labels}
    batch_of = {(lab, batch_seed(spec.seed, lab, b)): b for lab in labels for b in range(progress[lab]["batches"])}
    files = {}
    for name, key in (("synthetic.jsonl", lambda r: (r.get("label"), r.get("seed")) in batch_of),
                      ("rejects.jsonl", lambda r: r.get("batch", 1 << 62) < progress.get(r.get("label"), {}).get("batches", 0))):
        path = out / name
        raw = path.read_bytes() if path.exists() else b""
        rows = [r for r in _read_jsonl(path) if isinstance(r, dict) and key(r)]
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if text.encode() != raw:  # a torn line or rows of an uncommitted batch: cut them away
            atomic_write_text(path, text)
        files[name] = rows
    return progress, files["synthetic.jsonl"], files["rejects.jsonl"]


def _run_dtype(spec: GenerateSpec, engine=None, generator=None) -> str:
    """The dtype a run samples in (float32, bfloat16, float16): that of the engine or generator passed
    in, else what spec.dtype resolves to on this machine."""
    import torch

    from blindspot.models.resolve import detect_device

    dt = engine.dtype if engine is not None else generator.model.dtype if generator is not None else None
    if dt is None:
        dev = ("cuda" if torch.cuda.is_available() else "cpu") if spec.device == "auto" else spec.device
        try:
            dev = torch.device(dev)  # resolved: detect_device logs its choice when the engine opens, not here
        except RuntimeError:
            pass  # not a device: detect_device says so
        dt = detect_device(dev, spec.dtype)[1]
    name = str(dt).removeprefix("torch.")
    if spec.dtype not in ("auto", name):
        raise ConfigError(f"dtype: the spec asks for {spec.dtype} but the {'engine' if engine else 'generator'} "
                          f"passed in runs {name}")
    return name


def _check_spec(out: Path, spec: GenerateSpec) -> None:
    """Write spec.json, or check that an existing one (a run to resume) is the same spec."""
    path = out / "spec.json"
    mine = spec.model_dump(mode="json", exclude=set() if spec.id_prefix else {"id_prefix"})  # as before id_prefix
    if path.exists():
        theirs = json.loads(path.read_text())
        if not theirs.get("id_prefix", ""):  # an empty prefix is left out of `mine`, as before id_prefix
            theirs.pop("id_prefix", None)
        if theirs.get("dtype") == "auto":  # written before spec.json recorded the dtype that ran: not known
            theirs["dtype"] = mine["dtype"]
        if theirs.get("dtype") != mine["dtype"] and {**theirs, "dtype": mine["dtype"]} == mine:
            raise ConfigError(f"{out}: holds a run sampled in {theirs['dtype']}, this one would sample in "
                              f"{mine['dtype']} (records of two dtypes differ): pass --dtype {theirs['dtype']}, "
                              "or use another --out")
        if theirs != mine:
            diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
            raise ConfigError(f"{out}: holds a generation run with another spec (differs in {', '.join(diff)}); "
                              "use another --out or delete that directory")
    else:
        atomic_write_json(path, mine)


def _leakage_index(sources: tuple[str, ...]) -> LeakageIndex | None:
    """Normalised pairs and premises of the evaluation sets, or None when there are none."""
    if not sources:
        return None
    from blindspot.data.sources import load_source

    pairs = [(e.premise, e.hypothesis) for src in sources for e in load_source(src).examples]
    log.info("leakage check against %d evaluation pairs from %d set(s)", len(pairs), len(sources))
    return LeakageIndex.from_pairs(pairs)


def _parse_batch(gen, label: str, batch: int, seed: int, rows: list[list[int]], spec: GenerateSpec,
                 pairs: PairFilter, need: int) -> tuple[list[dict], list[dict], int]:
    """(records, rejects, surplus) of one batch, in row order; at most `need` records are kept."""
    records, rejects, surplus = [], [], 0
    for r, tokens in enumerate(rows):
        text = gen.tokenizer.decode(tokens, skip_special_tokens=True)
        parsed = parse_generation(text, label, gen.template, spec.max_chars)
        reason = parsed.reason
        if reason == "no_marker":  # stopped early as doomed: say why
            reason = doomed_reason(text, label, gen.template, spec.max_chars) or reason
        if parsed.ok:
            reason, _ = pairs.offer(parsed.premise, parsed.hypothesis)
        base = {"label": label, "batch": batch, "row": r, "seed": seed}
        if reason is not None:
            extra = {} if parsed.reason else {"premise": parsed.premise, "hypothesis": parsed.hypothesis}
            rejects.append({**base, "reason": reason, "text": text, **extra})
        elif len(records) < need:
            records.append({"id": f"{spec.id_prefix}syn{spec.seed}-{label}-b{batch}-r{r}", "premise": parsed.premise,
                            "hypothesis": parsed.hypothesis, "label": label, "generator": gen.name, "seed": seed})
        else:
            pairs.seen.discard((parsed.premise, parsed.hypothesis))  # not kept, so not a duplicate later
            surplus += 1
    return records, rejects, surplus


def _report(spec: GenerateSpec, labels, progress: dict, records: list[dict], rejects: list[dict],
            leakage: LeakageIndex | None) -> dict:
    """Counts by label and reason, duplicates and leakage: a function of the files alone."""
    per_label = {}
    for lab in labels:
        reasons = Counter(r["reason"] for r in rejects if r["label"] == lab)
        per_label[lab] = {"valid": sum(r["label"] == lab for r in records), "batches": progress[lab]["batches"],
                          "attempts": progress[lab]["batches"] * spec.batch_size,
                          "surplus": progress[lab]["surplus"], "rejected": dict(sorted(reasons.items()))}
    reasons = Counter(r["reason"] for r in rejects)
    kept_leaks = Counter(leakage.check(r["premise"], r["hypothesis"]) for r in records) if leakage else Counter()
    kept_leaks.pop(None, None)
    attempts = sum(v["attempts"] for v in per_label.values())
    parse_failures = sum(v for k, v in reasons.items() if k not in ("duplicate", "leak_pair", "leak_hypothesis"))
    return {
        "n_per_label": spec.n_per_label, "labels": per_label,
        "complete": all(v["valid"] == spec.wanted(lab) for lab, v in per_label.items()),
        "attempts": attempts, "valid": len(records), "rejected": dict(sorted(reasons.items())),
        "parse_failure_rate": parse_failures / attempts if attempts else 0.0,
        "duplicates": reasons.get("duplicate", 0),
        "leakage": {"checked_against": list(spec.eval_sets), "dropped": not spec.keep_leaked,
                    "leak_pair": reasons.get("leak_pair", 0) + kept_leaks.get("leak_pair", 0),
                    "leak_hypothesis": reasons.get("leak_hypothesis", 0) + kept_leaks.get("leak_hypothesis", 0)},
    }


class TooFewValid(BlindspotError):
    """The generator produced too few valid examples within its attempts; `facts` are what the run
    measured, for the meta.json of a standalone run (a grid's failed stage has none)."""

    def __init__(self, message: str, facts: Facts | None = None) -> None:  # facts optional: it pickles
        super().__init__(message)
        self.facts = facts or {}


def generate(spec: GenerateSpec, out_dir: str | Path, generator=None, engine=None) -> Path:
    """Sample until `n_per_label` valid records per label are in `out_dir`, the directory this call
    owns (its files, meta.json, DONE); resumes a killed run, keeps a finished one.

    `generator`: a loaded Generator for the native engine; `engine`: an open engine (blindspot.generation.engines)
    to reuse across runs. Otherwise the engine spec.engine names is opened on spec.generator.
    """
    out = Path(out_dir)
    if is_done(out):
        log.info("%s is done already; nothing to do", out)
        return out
    started = now()
    try:
        facts = generate_into(spec, out, generator, engine)
    except TooFewValid as e:  # meta.json still says how the short run went
        write_meta(out, e.facts, threads=torch_threads(), started_at=started)
        raise
    finish_standalone(out, facts, started)
    return out


def generate_into(spec: GenerateSpec, out_dir: str | Path, generator=None, engine=None) -> Facts:
    """Sample into `out_dir` (resuming what is there) until every label has its valid records;
    returns the run's facts for meta.json (engine, device, dtype, wall_s, throughput, MFU). No
    meta.json, no DONE: the directory's owner writes them (the grid's store, or `generate`).
    TooFewValid if a label ran out of attempts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name, why = choose_engine(spec, engine)
    log.info("generation engine: %s (%s)", name, why)
    asked = spec.model_copy(update={"engine": name})
    # spec.json records the engine and the dtype that run, so that a resume cannot switch them: "auto"
    # is bf16 on one CPU and fp32 on another, and records sampled in the two differ now and then
    spec = asked.model_copy(update={"dtype": _run_dtype(asked, engine, generator)})
    _check_spec(out, spec)
    opened = engine is None
    engine = engine or open_engine(name, asked, generator)
    try:
        return _sample_until_done(spec, out, engine)
    finally:
        if opened:
            engine.close()  # frees the GPU (vLLM) for the stages that follow in this process


def _sample_until_done(spec: GenerateSpec, out: Path, engine) -> Facts:
    """The sampling loop of `generate`: batches until every label has its records, or its attempt cap."""
    engine.reset()
    gen = engine.gen
    labels = spec.labels or gen.labels
    spec.check_labels(labels)
    leakage = _leakage_index(spec.eval_sets)
    progress, records, rejects = _restore(out, spec, labels)
    if any(p["batches"] for p in progress.values()):
        log.info("resuming from %d valid records (%s) after %d finished batches", len(records),
                 ", ".join(f"{lab}: {sum(r['label'] == lab for r in records)}" for lab in labels),
                 sum(p["batches"] for p in progress.values()))
    pairs = PairFilter(leakage, spec.keep_leaked, seen={(r["premise"], r["hypothesis"]) for r in records})
    started, computed, new = time.perf_counter(), 0, 0
    bar = progress_bar(sum(spec.wanted(lab) for lab in labels), "generate", unit="ex", initial=len(records))
    for label in labels:
        want = spec.wanted(label)
        cap = math.ceil(spec.max_attempts_factor * want)
        have = sum(r["label"] == label for r in records)
        if have >= want or progress[label]["batches"] * spec.batch_size >= cap:
            continue
        while have < want and progress[label]["batches"] * spec.batch_size < cap:
            b = progress[label]["batches"]
            seed = batch_seed(spec.seed, label, b)
            rows, n_tok = engine.sample(spec, label, b, seed)
            kept, rejected, surplus = _parse_batch(gen, label, b, seed, rows, spec, pairs, want - have)
            _append_jsonl(out / "rejects.jsonl", rejected)
            _append_jsonl(out / "synthetic.jsonl", kept)
            progress[label] = {"batches": b + 1, "surplus": progress[label]["surplus"] + surplus}
            atomic_write_json(out / "progress.json", progress)  # the commit point of this batch
            records += kept
            rejects += rejected
            have += len(kept)
            computed += n_tok
            new += len(kept)
            bar.update(len(kept))
    bar.close()
    wall = time.perf_counter() - started
    log.info("generated %d new valid records in %.1fs (%.2f examples/s, %.0f decode tokens/s)",
             new, wall, new / wall if wall else 0.0, computed / wall if wall else 0.0)
    report = _report(spec, labels, progress, records, rejects, leakage)
    atomic_write_json(out / "report.json", report)
    c = engine.counter
    facts = {**engine.describe(), "wall_s": wall, "new_records": new,
             "examples_per_s": new / wall if wall else None, "decode_tokens_per_s": computed / wall if wall else None,
             # model FLOPs the engine computed (blindspot.mfu), prompt and generated tokens, over the device's peak
             "mfu": inference_mfu(c.shape, c.flops, c.tokens, wall, gen.device, engine.dtype) if new else None}
    if not report["complete"]:
        short = {lab: f"{v['valid']} of {spec.wanted(lab)}" for lab, v in report["labels"].items()
                 if v["valid"] < spec.wanted(lab)}
        raise TooFewValid(f"{out}: the generator produced too few valid examples after "
                          f"{spec.max_attempts_factor:g}x as many attempts ({short}); see {out / 'report.json'} "
                          "and rejects.jsonl", facts)
    return facts


# ---------------------------------------------------------------- command line


def per_label_counts(text: str) -> int | dict[str, int]:
    """`500` or `entailment=2000,neutral=500,...` from the command line."""
    try:
        if "=" not in text:
            return int(text)
        return {k.strip(): int(v) for k, v in (item.split("=", 1) for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or LABEL=N,LABEL=N, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `blindspot generate`, one per GenerateSpec field."""
    d = GenerateSpec.model_fields
    parser.add_argument("--generator", required=True, help=d["generator"].description)
    parser.add_argument("--out", required=True, help="Output directory (resumed if it holds an unfinished run).")
    parser.add_argument("--n-per-label", type=per_label_counts, required=True, metavar="N|LABEL=N,...",
                        help=d["n_per_label"].description + " E.g. 500, or entailment=2000,neutral=500,contradiction=500.")
    parser.add_argument("--labels", nargs="+", default=None, help=d["labels"].description)
    parser.add_argument("--eval-set", dest="eval_sets", action="append", default=[],
                        help=d["eval_sets"].description + " Repeatable.")
    parser.add_argument("--keep-leaked", action="store_true", help=d["keep_leaked"].description)
    parser.add_argument("--engine", choices=ENGINES, default=d["engine"].default, help=d["engine"].description)
    for name in ("batch_size", "temperature", "top_p", "top_k", "max_new_tokens", "seed",
                 "max_attempts_factor", "max_chars", "device", "dtype"):
        field = d[name]
        kind = type(field.default) if field.default is not None else str
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=field.default, help=field.description)


def main(args: argparse.Namespace) -> int:
    """Validate the options into a GenerateSpec and run the stage."""
    fields = {k: v for k, v in vars(args).items() if k in GenerateSpec.model_fields and v is not None}
    fields["eval_sets"] = tuple(fields.get("eval_sets", ()))
    try:
        spec = GenerateSpec(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"--{'-'.join(str(x) for x in err['loc']).replace('_', '-')}: {err['msg']}") from None
    out = generate(spec, args.out)
    print(out / "synthetic.jsonl")
    return 0
