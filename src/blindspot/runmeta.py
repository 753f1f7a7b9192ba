"""meta.json, how a stage ran: versions, git commit, host, device, dtype, threads, timing, and the stage's own facts.

    python -c "import json; print(json.load(open('runs/demo/stages/start-HASH/meta.json'))['mfu'])"

`write_meta` is the one writer of meta.json. In a grid, blindspot.grid.store calls it once a stage's
`run` has returned its facts (what the stage measured: wall time, throughput, MFU, engine, counts),
with the runtime the store resolved for it; the standalone commands (`blindspot train-classifier`,
`train-generator`, `generate`, `evaluate`) call it through `finish_standalone`, on the directory
they own, before DONE. The stages and the library functions they call write no meta.json.
"""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from blindspot import __version__

META = "meta.json"
Facts = dict[str, Any]  # what a stage measured and reports for its meta.json (wall_s, examples_per_s, mfu, ...)

_PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "numpy", "gguf")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The commit of the blindspot checkout this code runs from, if it is one (`+dirty` if edited)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    """The local time as meta.json's started_at spells it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def run_metadata(**extra) -> dict:
    """Versions, commit and host; callers add device, dtype, wall time and throughput."""
    if extra.get("dtype") is not None:  # one spelling in every meta.json: "bfloat16", not "torch.bfloat16"
        extra["dtype"] = str(extra["dtype"]).removeprefix("torch.")
    return {
        "blindspot_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": package_versions(),
        "started_at": now(),
        **extra,
    }


def write_meta(out_dir: str | Path, facts: Facts | None = None, **runtime) -> dict:
    """Write out_dir/meta.json: run_metadata, the runtime facts (device, dtype, threads, stage,
    started_at, wall_s; None ones left out) and over them the stage's own `facts` (what it measured:
    its wall_s, its device and dtype as loaded, throughput, MFU, ...). Returns what it wrote."""
    from blindspot.storage import atomic_write_json

    meta = run_metadata(**({k: v for k, v in runtime.items() if v is not None} | dict(facts or {})))
    atomic_write_json(Path(out_dir) / META, meta)
    return meta


def torch_threads() -> int:
    """torch's CPU threads in this process (CPU float results depend on them)."""
    import torch

    return torch.get_num_threads()


def finish_standalone(out_dir: str | Path, facts: Facts, started_at: str) -> None:
    """How a standalone command finishes the directory it owns: meta.json (write_meta, with this
    process's torch threads), then DONE. In a grid the store does both, for every stage."""
    from blindspot.storage import mark_done

    write_meta(out_dir, facts, threads=torch_threads(), started_at=started_at)
    mark_done(out_dir)
