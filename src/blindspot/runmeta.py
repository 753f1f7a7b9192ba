"""Run metadata written beside every stage's outputs: versions, git commit, host, timing."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import time
from pathlib import Path

from blindspot import __version__

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


def run_metadata(**extra) -> dict:
    """Versions, commit and host; callers add device, dtype, wall time and throughput."""
    if extra.get("dtype") is not None:  # one spelling in every meta.json: "bfloat16", not "torch.bfloat16"
        extra["dtype"] = str(extra["dtype"]).removeprefix("torch.")
    return {
        "blindspot_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
