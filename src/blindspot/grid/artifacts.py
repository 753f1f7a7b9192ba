"""Content-addressed stage outputs: a stage's directory is named by its spec and its inputs.

    <root>/<stage>-<hash12>/
        stage.json   what was asked (the stage spec, the input directories, the code version)
        meta.json    how it ran (versions, git commit, device, wall time, throughput)
        ...          the stage's outputs
        DONE         written last; a directory without it is incomplete and is redone or resumed

The hash covers the stage name, its spec, the hashes of its input stages and the stage kind's
code version (blindspot.grid.stage_versions), so
running the same stage twice is a no-op and changing one value reruns only what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blindspot.grid.stage_versions import STAGE_VERSIONS
from blindspot.storage import atomic_write_json, is_done


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the text that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def file_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (data sources are hashed by content, not by name)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# Spec keys that change how a stage runs but provably not what it writes, left out of the hash:
# a training stage resumed from a checkpoint ends bit-identical (tests/test_resume.py), so the
# checkpoint interval may change without rerunning anything.
NOT_HASHED = ("checkpoint_every",)


def hashed(spec):
    """`spec` without the NOT_HASHED keys, at any depth."""
    if isinstance(spec, dict):
        return {k: hashed(v) for k, v in spec.items() if k not in NOT_HASHED}
    if isinstance(spec, list):
        return [hashed(v) for v in spec]
    return spec


@dataclass(frozen=True)
class StageSpec:
    """One node of the experiment graph: a stage name, its JSON spec, and the stages it reads."""

    stage: str
    spec: dict
    inputs: dict[str, "StageSpec"] = field(default_factory=dict)
    label: str = ""  # human-readable name for plans and progress, e.g. "start n=2000 seed=0"

    @property
    def hash(self) -> str:
        payload = {"stage": self.stage, "spec": hashed(self.spec), "code": str(STAGE_VERSIONS[self.stage]),
                   "inputs": {k: v.hash for k, v in sorted(self.inputs.items())}}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:12]

    @property
    def dirname(self) -> str:
        return f"{self.stage}-{self.hash}"

    def path(self, root: str | Path) -> Path:
        return Path(root) / self.dirname

    def done(self, root: str | Path) -> bool:
        return is_done(self.path(root))


def write_spec(spec: StageSpec, root: str | Path) -> Path:
    """Create the stage directory and record what it was asked (before any work starts)."""
    out = spec.path(root)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "stage.json", {
        "stage": spec.stage, "label": spec.label, "spec": spec.spec, "stage_version": STAGE_VERSIONS[spec.stage],
        "inputs": {k: v.dirname for k, v in spec.inputs.items()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    return out


def topological_order(targets: list[StageSpec]) -> list[StageSpec]:
    """Every stage reachable from `targets`, each once, inputs before the stages that read them."""
    order: list[StageSpec] = []
    seen: set[str] = set()

    def visit(s: StageSpec) -> None:
        if s.dirname in seen:
            return
        for dep in s.inputs.values():
            visit(dep)
        seen.add(s.dirname)
        order.append(s)

    for t in targets:
        visit(t)
    return order
