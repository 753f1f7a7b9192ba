"""Checkpoint I/O: saved adapter directories, written, read and tied to their base model.

A trained adapter directory holds the adapter (safetensors), the tokenizer, an info file
(classifier.json / generator.json: its spec and `base_identity`, the base model's name, path and
fingerprint), train_log.jsonl and, written by its owner (blindspot.runmeta), meta.json. Reading
one checks its files first (blindspot.models.checkpoint_files), so that a cut or corrupt file is
one error naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

from blindspot.errors import CheckpointError, ConfigError
from blindspot.models.checkpoint_files import adapter_keys, directory_kind
from blindspot.storage import atomic_write_json, atomic_write_jsonl, is_done
from blindspot.training.resume import remove_checkpoints

log = logging.getLogger(__name__)


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
    from blindspot.models.resolve import resolve_model

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


def save_adapter_dir(model, tokenizer, out_dir: Path, info_name: str, info: dict, log_rows: list[dict]) -> None:
    """Adapter (safetensors) and tokenizer, `info_name`, train_log.jsonl; no meta.json and no DONE (the
    directory's owner writes them: the training function standalone, the store in a grid)."""
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


def open_adapter_dir(path: Path, kind: str, required: tuple[str, ...]) -> tuple[dict, Path]:
    """(info, base path) of a saved classifier's or generator's directory (`kind`), checked before any
    weights load: it is a directory, finished (DONE), has KIND.json with the `required` keys and its
    adapter files, holds an adapter of its kind (a classifier's has a trained score head, else peft
    would silently keep a random one; a generator's has none), and its base is found again by
    fingerprint. Otherwise one CheckpointError naming the directory or file."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such {kind} directory")
    if not is_done(path):
        raise CheckpointError(f"{path}: incomplete {kind} (no DONE marker)")
    info = read_adapter_info(path, f"{kind}.json", required, kind)
    missing = [n for n in ADAPTER_FILES if not (path / n).is_file()]
    if missing:
        raise CheckpointError(f"{path}: missing {', '.join(missing)}")
    has_head = any(".score." in k for k in adapter_keys(path))
    if kind == "classifier" and not has_head:
        raise CheckpointError(f"{path / ADAPTER_FILES[1]}: adapter file has no trained score head "
                              "(a generator's adapter? expected a classifier's)")
    if kind == "generator" and has_head:
        raise CheckpointError(f"{path / ADAPTER_FILES[1]}: adapter has a classification head (a classifier's? "
                              "expected a generator's)")
    return info, verified_base(info["base"], path)


def attach_adapter(base, path: Path, base_path: Path, trainable: bool):
    """The saved LoRA adapter in `path` on `base` (a PeftModel); one CheckpointError if it does not fit."""
    from peft import PeftModel

    from blindspot.training.loop import peft_internal_deprecations_hidden

    try:
        with peft_internal_deprecations_hidden():
            return PeftModel.from_pretrained(base, path, is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: adapter does not fit base {base_path} ({str(e).splitlines()[0]})") from None
