"""Checks on a saved checkpoint's files, so that a cut or corrupt file is one error naming it.

    python -c "from blindspot.models.checkpoint_files import adapter_keys; from pathlib import Path; print(adapter_keys(Path('runs/demo/stages/start-HASH')))"

Used at the loading boundary (models/load.py, models/checkpoints.py, training/) before anything
heavy loads: the JSON files of an adapter / tokenizer / model config, the safetensors header of an
adapter (a truncated file fails there: its header promises more bytes than the file has), and
what a directory is when it is not the kind asked for (a generator given as a classifier, a stage
directory, a base model).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError

from blindspot.errors import CheckpointError

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
TOKENIZER_JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# Files that say what a directory is, for "this is not a saved classifier, it is ...".
_DIRECTORY_KINDS = (("classifier.json", "a saved classifier"), ("generator.json", "a saved generator"),
                    ("metrics.json", "an evaluation output"), ("synthetic.jsonl", "a generate output"),
                    ("kept.jsonl", "a filter output"), ("audit.json", "an audit output"),
                    ("config.json", "a base model checkpoint"), ("stages", "a run directory"))


def _first_line(e: BaseException) -> str:
    """'Type: first line of the message' (at most 300 characters)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def read_json_file(path: Path) -> object:
    """A JSON file of a checkpoint; CheckpointError naming it when truncated or corrupt."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt JSON ({_first_line(e)})") from None


def adapter_keys(path: Path) -> list[str]:
    """Tensor names of a saved adapter, after checking adapter_config.json and the safetensors header."""
    config = read_json_file(path / ADAPTER_CONFIG)
    if not isinstance(config, dict) or "peft_type" not in config:
        raise CheckpointError(f"{path / ADAPTER_CONFIG}: not a peft adapter config (no peft_type)")
    from safetensors import safe_open

    try:
        with safe_open(path / ADAPTER_WEIGHTS, "pt") as f:
            return list(f.keys())
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: truncated or corrupt safetensors file "
                              f"({_first_line(e)})") from None


def directory_kind(path: Path) -> str | None:
    """What a directory holds, from the files that mark each kind (None when nothing matches)."""
    what = next((what for name, what in _DIRECTORY_KINDS if (path / name).exists()), None)
    if what is None and (path / "stage.json").is_file():  # a stage directory of `blindspot run`
        try:
            what = f"the output of a {json.loads((path / 'stage.json').read_text())['stage']!r} stage"
        except (ValueError, KeyError, TypeError):
            what = "a stage directory"
    return what
