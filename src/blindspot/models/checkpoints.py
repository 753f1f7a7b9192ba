"""Checkpoint I/O: saved adapter directories, written, read and tied to their base model.

A trained adapter directory holds the adapter (safetensors), the tokenizer, an info file
(classifier.json / generator.json: its spec and `base_identity`, the base model's name, path and
fingerprint), train_log.jsonl and meta.json. Reading one checks its files first
(blindspot.models.checkpoint_files), so that a cut or corrupt file is one error naming it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path

from blindspot.errors import CheckpointError, ConfigError
from blindspot.models.checkpoint_files import directory_kind
from blindspot.storage import atomic_write_json, atomic_write_jsonl
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
