"""Model loading: a resolved checkpoint's tokenizer, and its base model as a classifier or a causal LM (4-bit NF4 too).

    python -c "from blindspot.models.load import load_base_model; help(load_base_model)"

Checkpoint names are resolved by blindspot.models.resolve (which also picks device and dtype); the
files are checked on the way in (blindspot.models.checkpoint_files), so a cut file is one error naming it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
from pathlib import Path
from typing import Literal

import torch

from safetensors import SafetensorError

from blindspot.errors import CheckpointError, ConfigError
from blindspot.models.checkpoint_files import TOKENIZER_JSON_FILES, _first_line, read_json_file
from blindspot.models.resolve import detect_device

log = logging.getLogger(__name__)

Task = Literal["classification", "causal-lm"]
Quantize = Literal["none", "4bit"]

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
