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

Output directory: synthetic.jsonl (valid records, appended per batch), rejects.jsonl (raw text
and reason), progress.json (batches finished per label: the commit point of each batch),
report.json (counts by reason, duplicates, leakage), spec.json, meta.json, DONE last.
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
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from blindspot.errors import BlindspotError, ConfigError
from blindspot.parsing import LeakageIndex, PairFilter, parse_generation
from blindspot.runmeta import run_metadata
from blindspot.storage import atomic_write_json, atomic_write_text, is_done, mark_done

log = logging.getLogger(__name__)


class GenerateSpec(BaseModel):
    """What to sample and how; stored in the output directory, which must match it on resume."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    generator: str = Field(description="Directory of a trained generator (blindspot train-generator).")
    n_per_label: int = Field(gt=0, description="Valid records wanted per label.")
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
    dtype: str = Field("auto", description="auto | float32 | bfloat16 | float16.")


def batch_seed(seed: int, label: str, batch: int) -> int:
    """The seed of one batch: a stable hash of (seed, label, batch index), 63 bits."""
    digest = hashlib.sha256(f"{seed}\x1f{label}\x1f{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ---------------------------------------------------------------- decoding


def sample_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of `logits` [B, V]: greedy if temperature is 0, else top-k / top-p sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum - sorted_logits.softmax(dim=-1) >= top_p  # keep the smallest set whose mass reaches top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class StopRule:
    """When a row is finished: it wrote the end marker's text, or an EOS token."""

    marker: str
    eos_ids: frozenset[int]
    maybe_end: torch.Tensor  # [V] bool: tokens whose text contains the marker's last character
    tail: int  # how many trailing tokens to decode when checking for the marker
    tokenizer: object

    @classmethod
    def build(cls, tokenizer, marker: str, vocab_size: int) -> "StopRule":
        """Precompute which tokens can end the marker, so most steps decode nothing."""
        marker = marker.strip()
        last = marker[-1]
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        maybe = torch.zeros(max(vocab_size, len(pieces)), dtype=torch.bool)
        for i, piece in enumerate(pieces):
            maybe[i] = piece is not None and (last in piece or not piece.isprintable())
        eos = tokenizer.eos_token_id
        eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        n_marker = len(tokenizer(marker, add_special_tokens=False)["input_ids"])
        return cls(marker, eos_ids, maybe, n_marker + 4, tokenizer)

    def finished(self, tokens: list[int]) -> bool:
        """Whether the row whose generated tokens are `tokens` has stopped."""
        t = tokens[-1]
        if t in self.eos_ids:
            return True
        if not self.maybe_end[t]:
            return False
        return self.marker in self.tokenizer.decode(tokens[-self.tail:], skip_special_tokens=True)


@dataclass
class PromptCache:
    """The key/value cache and next-token logits of one prompt (batch 1), computed once."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    logits: torch.Tensor  # [1, V]


@torch.inference_mode()
def encode_prompt(model, prompt_ids: list[int]) -> PromptCache:
    """Run the prompt through the model once and keep its cache."""
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([prompt_ids], device=device), use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    return PromptCache(list(prompt_ids), layers, out.logits[:, -1, :])


@torch.inference_mode()
def decode_batch(model, prompt: PromptCache, n_rows: int, stop: StopRule, *, max_new_tokens: int,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> tuple[list[list[int]], int]:
    """Generate `n_rows` continuations of one prompt; returns (tokens per row, tokens computed).

    Finished rows are removed from the batch and from the KV cache at every step.
    """
    from transformers import DynamicCache

    cache = DynamicCache(ddp_cache_data=[(k.expand(n_rows, -1, -1, -1), v.expand(n_rows, -1, -1, -1))
                                         for k, v in prompt.layers])
    out: list[list[int]] = [[] for _ in range(n_rows)]
    active = list(range(n_rows))  # row number of each batch position
    logits = prompt.logits.expand(n_rows, -1)
    computed = 0
    for step in range(max_new_tokens):
        next_ids = sample_next(logits, temperature, top_k, top_p, generator)
        keep = []
        for pos, (row, tok) in enumerate(zip(active, next_ids.tolist())):
            out[row].append(tok)
            if not stop.finished(out[row]):
                keep.append(pos)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=next_ids.device)
            cache.batch_select_indices(index)
            next_ids = next_ids[index]
            active = [active[p] for p in keep]
        logits = model(input_ids=next_ids[:, None], past_key_values=cache, use_cache=True).logits[:, -1, :]
        computed += len(active)
    return out, computed


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


def _check_spec(out: Path, spec: GenerateSpec) -> None:
    """Write spec.json, or check that an existing one (a run to resume) is the same spec."""
    path = out / "spec.json"
    mine = spec.model_dump(mode="json")
    if path.exists():
        theirs = json.loads(path.read_text())
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
        if parsed.ok:
            reason, _ = pairs.offer(parsed.premise, parsed.hypothesis)
        base = {"label": label, "batch": batch, "row": r, "seed": seed}
        if reason is not None:
            extra = {} if parsed.reason else {"premise": parsed.premise, "hypothesis": parsed.hypothesis}
            rejects.append({**base, "reason": reason, "text": text, **extra})
        elif len(records) < need:
            records.append({"id": f"syn{spec.seed}-{label}-b{batch}-r{r}", "premise": parsed.premise,
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
        "complete": all(v["valid"] == spec.n_per_label for v in per_label.values()),
        "attempts": attempts, "valid": len(records), "rejected": dict(sorted(reasons.items())),
        "parse_failure_rate": parse_failures / attempts if attempts else 0.0,
        "duplicates": reasons.get("duplicate", 0),
        "leakage": {"checked_against": list(spec.eval_sets), "dropped": not spec.keep_leaked,
                    "leak_pair": reasons.get("leak_pair", 0) + kept_leaks.get("leak_pair", 0),
                    "leak_hypothesis": reasons.get("leak_hypothesis", 0) + kept_leaks.get("leak_hypothesis", 0)},
    }


def generate(spec: GenerateSpec, out_dir: str | Path, generator=None) -> Path:
    """Sample until `n_per_label` valid records per label are in `out_dir`; resumes a killed run."""
    from blindspot.generator import load_generator

    out = Path(out_dir)
    if is_done(out):
        log.info("%s is done already; nothing to do", out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    _check_spec(out, spec)
    gen = generator or load_generator(spec.generator, device=spec.device, dtype=spec.dtype)
    labels = spec.labels or gen.labels
    leakage = _leakage_index(spec.eval_sets)
    progress, records, rejects = _restore(out, spec, labels)
    if any(p["batches"] for p in progress.values()):
        log.info("resuming from %d valid records (%s) after %d finished batches", len(records),
                 ", ".join(f"{lab}: {sum(r['label'] == lab for r in records)}" for lab in labels),
                 sum(p["batches"] for p in progress.values()))
    pairs = PairFilter(leakage, spec.keep_leaked, seen={(r["premise"], r["hypothesis"]) for r in records})
    stop = StopRule.build(gen.tokenizer, gen.template.end_marker, gen.model.config.vocab_size)
    cap = math.ceil(spec.max_attempts_factor * spec.n_per_label)
    started, computed, new = time.perf_counter(), 0, 0
    bar = tqdm(total=spec.n_per_label * len(labels), initial=len(records), desc="generate", unit="ex")
    for label in labels:
        have = sum(r["label"] == label for r in records)
        if have >= spec.n_per_label or progress[label]["batches"] * spec.batch_size >= cap:
            continue
        prompt = encode_prompt(gen.model, gen.prompt_ids(label))
        while have < spec.n_per_label and progress[label]["batches"] * spec.batch_size < cap:
            b = progress[label]["batches"]
            seed = batch_seed(spec.seed, label, b)
            rng = torch.Generator(device=gen.device).manual_seed(seed)
            rows, n_tok = decode_batch(gen.model, prompt, spec.batch_size, stop, max_new_tokens=spec.max_new_tokens,
                                       temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p, generator=rng)
            kept, rejected, surplus = _parse_batch(gen, label, b, seed, rows, spec, pairs, spec.n_per_label - have)
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
    atomic_write_json(out / "meta.json", run_metadata(
        device=str(gen.device), dtype=str(gen.model.dtype), wall_s=wall, new_records=new,
        examples_per_s=new / wall if wall else None, decode_tokens_per_s=computed / wall if wall else None))
    if not report["complete"]:
        short = {lab: v["valid"] for lab, v in report["labels"].items() if v["valid"] < spec.n_per_label}
        raise BlindspotError(f"{out}: the generator produced too few valid examples after {cap} attempts per label "
                             f"({short}, wanted {spec.n_per_label}); see {out / 'report.json'} and rejects.jsonl")
    mark_done(out)
    return out


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `blindspot generate`, one per GenerateSpec field."""
    d = GenerateSpec.model_fields
    parser.add_argument("--generator", required=True, help=d["generator"].description)
    parser.add_argument("--out", required=True, help="Output directory (resumed if it holds an unfinished run).")
    parser.add_argument("--n-per-label", type=int, required=True, help=d["n_per_label"].description)
    parser.add_argument("--labels", nargs="+", default=None, help=d["labels"].description)
    parser.add_argument("--eval-set", dest="eval_sets", action="append", default=[],
                        help=d["eval_sets"].description + " Repeatable.")
    parser.add_argument("--keep-leaked", action="store_true", help=d["keep_leaked"].description)
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
