"""Model FLOPs utilisation (MFU): the model FLOPs a stage did per second over the device's peak.

    python -m blindspot.mfu [--dtype bfloat16] [--remeasure]   # this machine's peak (cached) as JSON

**Model FLOPs** count the matrix multiplications the model mathematically needs for the real
(non-padding) tokens, nothing the implementation adds (padding, recomputation under gradient
checkpointing, the dequantisation of a 4-bit base). With

- `P`  = weights of every linear layer applied to each token: the base model's projections
  (attention q/k/v/o, MLP gate/up/down), the output layer (`lm_head`, or the classifier's
  `score` head), and the LoRA matrices A and B; embedding look-ups are not multiplications
  and are not counted (a tied `lm_head` is, as the multiplication it is);
- `P_t` = the trainable part of P (LoRA A/B, the score head, any module trained in full);
- `A(s, o)` = attention score and value FLOPs of s tokens at positions o..o+s-1, causal:
  `4 * n_layers * d_attn * (s*o + s*(s+1)/2)` (QK^T and AV, 2 FLOPs per multiply-add;
  d_attn = query heads x head dim),

a sequence of s real tokens (after o cached ones) costs

- inference (evaluation, generation): `2*P*s + A(s, o)`;
- LoRA training: forward `2*P*s + A` plus backward `2*P*s` (activation gradients through every
  frozen and trainable linear layer) `+ 2*P_t*s` (weight gradients, trainable layers only)
  `+ 2*A` (attention has no weights: its backward is two activation-gradient products):
  `4*P*s + 2*P_t*s + 3*A` in all. Autograd skips the input gradient of layer 0's q/k/v (no
  upstream parameter needs it); that is counted anyway (< 1/n_layers of the backward).

Generation counts what its engine computed (blindspot.generation.engines' `counter`): the native engine's
merged model (P = the base's layers), the prompt once per label (its cache is shared) and every
row's fed-back tokens; the vLLM engine's base with its adapter unmerged (P + the LoRA A/B, from the
checkpoint files: `served_flop_shape`), each request's uncached prompt tokens and fed-back tokens.

Norms, activations, softmax and the optimiser step are not counted (standard practice, PaLM
appendix B; they are < 1 % of the FLOPs here).

**Peak.** On CUDA: the device's nominal dense bf16 tensor rate from a small table of known
cards (`CUDA_PEAKS`); an unknown card gives MFU null with the reason. On CPU: the best rate of
a square matmul in the stage's dtype, measured once per machine and cached in
`$BLINDSPOT_CACHE/peak_flops.json`, keyed by CPU model, CPU flags, torch version, dtype and
thread count. A CPU shared with other jobs measures a lower peak than it has, and that value
stays cached: measure again on a quiet machine with `python -m blindspot.mfu --remeasure`. So a
CPU MFU is relative to the peak recorded in its meta.json (with when it was measured).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from blindspot.storage import atomic_write_json

log = logging.getLogger(__name__)

PEAK_CACHE = "peak_flops.json"
MATMUL_SIZE = 1024      # square matmul of the CPU measurement
MATMUL_REPEATS = 8      # timed repeats; the best one counts (the least disturbed by other jobs)
# Nominal dense bf16 tensor-core peak, FLOP/s (vendor datasheets; no sparsity). First match wins.
CUDA_PEAKS: tuple[tuple[str, float], ...] = (
    ("H200", 989e12), ("GH200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12),
    ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
)
TRAIN_FORMULA = ("4*P*tokens + 2*P_trainable*tokens + 3*A, A = sum over sequences of "
                 "4*n_layers*d_attn*(s*o + s*(s+1)/2); P = linear-layer weights applied per token "
                 "(base + head + LoRA), real tokens only (see blindspot.mfu)")
INFERENCE_FORMULA = ("2*P*tokens + A, A = sum over sequences of 4*n_layers*d_attn*(s*o + s*(s+1)/2); "
                     "P = linear-layer weights applied per token (base + head + LoRA), real tokens only, "
                     "o = cached prefix tokens (see blindspot.mfu)")


@dataclass(frozen=True)
class FlopShape:
    """What the FLOP count needs to know about a model."""

    params: int            # P: linear-layer weights applied to every token
    trainable_params: int  # P_t: the trainable part of P
    n_layers: int
    attn_width: int        # query heads x head dim

    def attention(self, s: int, offset: int = 0) -> int:
        """Causal attention FLOPs (QK^T and AV) of s tokens after `offset` cached ones."""
        return 4 * self.n_layers * self.attn_width * (s * offset + s * (s + 1) // 2)

    def inference(self, lengths: Iterable[int], offset: int = 0) -> int:
        """Forward FLOPs of sequences of `lengths` real tokens, each after `offset` cached tokens."""
        return sum(2 * self.params * s + self.attention(s, offset) for s in lengths)

    def training(self, lengths: Iterable[int]) -> int:
        """Forward + backward FLOPs of LoRA training on sequences of `lengths` real tokens."""
        return sum((4 * self.params + 2 * self.trainable_params) * s + 3 * self.attention(s) for s in lengths)


@dataclass
class FlopCounter:
    """Model FLOPs and real tokens of inference, counted by an engine as it computes them."""

    shape: FlopShape
    flops: int = 0
    tokens: int = 0

    def add(self, lengths: Iterable[int], offset: int = 0) -> None:
        """Sequences of `lengths` real tokens fed to the model, each after `offset` cached tokens."""
        lengths = [n for n in lengths if n > 0]
        self.flops += self.shape.inference(lengths, offset)
        self.tokens += sum(lengths)


def _linear_dims(module: torch.nn.Module) -> int | None:
    """in x out of a linear layer (also 4-bit ones, whose packed weight has another shape)."""
    if isinstance(module, torch.nn.Linear):
        return int(module.in_features) * int(module.out_features)
    return None


def flop_shape(model: torch.nn.Module) -> FlopShape:
    """P, P_t, layers and attention width of a (peft-wrapped, possibly 4-bit) transformers model."""
    params = trainable = 0
    for name, module in model.named_modules():
        size = _linear_dims(module)
        # peft keeps a frozen copy of each fully trained module ("original_module") that forward skips
        if size is None or ".original_module" in f".{name}":
            continue
        params += size
        weight = getattr(module, "weight", None)
        if weight is not None and weight.requires_grad:
            trainable += size
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return FlopShape(params, trainable, int(config.num_hidden_layers), heads * int(head_dim))


def served_flop_shape(base_path: str | Path, adapter_dir: str | Path | None = None) -> FlopShape:
    """The FlopShape of a base checkpoint with a peft adapter applied unmerged (as vLLM serves it), from
    files alone: the base built on the meta device (no weights read), plus r x (in + out) weights per
    adapted layer from the adapter's tensor shapes. Nothing is trainable."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_path)
    with torch.device("meta"):
        base = flop_shape(AutoModelForCausalLM.from_config(config))
    lora = 0
    if adapter_dir is not None:
        with safe_open(str(Path(adapter_dir) / "adapter_model.safetensors"), framework="pt") as f:
            for key in f.keys():
                if ".lora_A." in key or ".lora_B." in key:
                    rows, cols = f.get_slice(key).get_shape()
                    lora += rows * cols
    return FlopShape(base.params + lora, 0, base.n_layers, base.attn_width)


# --- peak ---------------------------------------------------------------------------------------

def _cpu_identity() -> tuple[str, str]:
    """(CPU model name, sorted flags) from /proc/cpuinfo; platform strings where it is absent."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.processor(), platform.machine()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return model, flags


def measure_matmul_rate(dtype: torch.dtype, size: int = MATMUL_SIZE, repeats: int = MATMUL_REPEATS) -> float:
    """Best FLOP/s of a size x size matmul in `dtype` on the CPU (2 warm-up runs first)."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    best = float("inf")
    with torch.inference_mode():
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            torch.mm(a, b)
            if i >= 2:
                best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best


def cpu_peak(dtype: torch.dtype, cache_dir: str | Path | None = None,
             measure: Callable[[torch.dtype], float] | None = None, remeasure: bool = False) -> dict:
    """This CPU's matmul peak in `dtype` at the current thread count: cached, else (or with
    `remeasure`) measured and cached."""
    from blindspot.models.resolve import cache_root

    cpu, flags = _cpu_identity()
    ident = {"cpu": cpu, "flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16],
             "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
             "threads": torch.get_num_threads()}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_root(cache_dir) / PEAK_CACHE
    try:
        cached = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        cached = {}
    if key in cached and not remeasure:
        return cached[key]
    rate = (measure or measure_matmul_rate)(dtype)
    entry = {**ident, "flops_per_s": rate, "source": f"measured: best of {MATMUL_REPEATS} {MATMUL_SIZE}^3 "
             "torch.mm", "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    log.info("peak of this CPU (%s, %s, %d threads): %.1f GFLOP/s measured, cached in %s",
             cpu, ident["dtype"], ident["threads"], rate / 1e9, path)
    atomic_write_json(path, {**cached, key: entry})
    return entry


def cuda_peak(device: torch.device | str) -> dict:
    """Nominal dense bf16 peak of a CUDA device from CUDA_PEAKS; flops_per_s None if unknown."""
    name = torch.cuda.get_device_name(torch.device(device))
    for pattern, rate in CUDA_PEAKS:
        if pattern in name:
            return {"device_name": name, "flops_per_s": rate, "source": f"nominal dense bf16 of {pattern}"}
    return {"device_name": name, "flops_per_s": None,
            "source": f"unknown CUDA device {name!r}: no nominal peak in blindspot.mfu.CUDA_PEAKS"}


def device_peak(device: torch.device | str, dtype: torch.dtype, cache_dir: str | Path | None = None) -> dict:
    """The peak FLOP/s that MFU divides by, with where it came from."""
    device = torch.device(device)
    if device.type == "cuda":
        return cuda_peak(device)
    if device.type == "cpu":
        return cpu_peak(dtype, cache_dir)
    return {"flops_per_s": None, "source": f"no peak known for device type {device.type!r}"}


def mfu_record(model_flops: int, seconds: float, tokens: int, formula: str, device: torch.device | str,
               dtype: torch.dtype, cache_dir: str | Path | None = None) -> dict:
    """The meta.json block: model FLOPs, seconds, achieved and peak FLOP/s, MFU (None with a reason)."""
    try:
        peak = device_peak(device, dtype, cache_dir)
    except (RuntimeError, OSError) as e:  # never fail a finished stage over its bookkeeping
        peak = {"flops_per_s": None, "source": f"peak not available: {e}"}
    achieved = model_flops / seconds if seconds > 0 else None
    mfu = achieved / peak["flops_per_s"] if achieved is not None and peak.get("flops_per_s") else None
    reason = None if mfu is not None else ("no time measured" if achieved is None else peak["source"])
    return {"mfu": mfu, "model_flops": int(model_flops), "tokens": int(tokens), "seconds": seconds,
            "achieved_flops_per_s": achieved, "peak_flops_per_s": peak.get("flops_per_s"), "peak": peak,
            "formula": formula, "reason": reason}


def training_mfu(model: torch.nn.Module, batches, epochs: int, seconds: float, device, dtype,
                 cache_dir: str | Path | None = None) -> dict:
    """MFU block of a LoRA training run over `batches` (a list, or epoch -> list, as `fit` takes)."""
    first = batches(0) if callable(batches) else batches
    lengths = [int(n) for b in first for n in b["attention_mask"].sum(dim=1).tolist()] * epochs
    shape = flop_shape(model)
    return {**mfu_record(shape.training(lengths), seconds, sum(lengths), TRAIN_FORMULA, device, dtype, cache_dir),
            "shape": asdict(shape)}


def inference_mfu(shape: FlopShape, model_flops: int, tokens: int, seconds: float, device, dtype,
                  cache_dir: str | Path | None = None) -> dict:
    """MFU block of an inference stage whose FLOPs were counted with `shape`."""
    return {**mfu_record(model_flops, seconds, tokens, INFERENCE_FORMULA, device, dtype, cache_dir),
            "shape": asdict(shape)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="This machine's peak FLOP/s as MFU uses it (cached).")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--remeasure", action="store_true",
                        help="measure again and replace the cached CPU peak (do it on a quiet machine: a busy "
                             "one measures less than its peak, which inflates every MFU after it)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    peak = cpu_peak(dtype, remeasure=args.remeasure) if not torch.cuda.is_available() else cuda_peak("cuda")
    print(json.dumps(peak, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
