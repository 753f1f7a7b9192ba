"""Mid-training checkpoints: a killed training stage resumes at its last optimizer step, not from zero.

    ls RUN/stages/generator-HASH/checkpoints/      # step-40/ while it trains; gone once it is saved

`fit` (training/loop.py) writes one every `optim.checkpoint_every` optimizer steps into the stage's
`checkpoints/step-N/`: the trainable weights (LoRA, the head, modules_to_save; safetensors), the
optimizer and scheduler states, the RNG states (torch CPU and CUDA) and the data position
(epoch, batch, examples seen, the loss log so far). It is written into `.tmp-step-N/` and
renamed, so a directory named `step-N` is always complete; older ones are then removed. On
start, `fit` loads the newest and skips the batches already trained on: the batch order is a
function of (seed, epoch), so the rest of the run sees the same batches in the same order with
the same random state, and ends with the same weights as an uninterrupted run (bit-identical on
CPU with the same thread count; tests/test_resume.py). The saved adapter directory keeps no
checkpoints (`remove_checkpoints`).

Optimizer and scheduler states are torch.save'd dicts of tensors and numbers and are read back
with `torch.load(weights_only=True)`, which unpickles nothing but those.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"


@dataclass
class Position:
    """Where training stands after an optimizer step: the next batch is `batch` of `epoch`."""

    step: int
    epoch: int
    batch: int
    seen: int
    rows: list[dict]
    window: list[float]


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(directory: Path, model, opt, sched, pos: Position, weights: dict | None = None,
                    rng: dict | None = None) -> Path:
    """Write checkpoints/step-N atomically (temporary directory, then rename); drop older ones.

    `weights` and `rng` default to the model's trainable weights and the global RNG states (a run
    alone); a grouped run (blindspot.training.grouped) passes its own slice and its own stream.
    """
    from safetensors.torch import save_file

    root = directory / CHECKPOINTS
    tmp, final = root / f".tmp-step-{pos.step}", root / f"step-{pos.step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if weights is None:
        weights = {n: p.detach() for n, p in _trainable(model).items()}
    save_file({n: t.contiguous().cpu() for n, t in weights.items()}, str(tmp / "trainable.safetensors"))
    if rng is None:
        rng = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng}, tmp / "state.pt")
    with open(tmp / "position.json", "w", encoding="utf-8") as f:
        json.dump(pos.__dict__, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    for old in root.glob("step-*"):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    log.debug("checkpoint at step %d -> %s", pos.step, final)
    return final


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoints/step-N (half-written .tmp-* ones are ignored)."""
    found = [p for p in (directory / CHECKPOINTS).glob("step-*") if (p / "position.json").is_file()]
    return max(found, key=lambda p: int(p.name.removeprefix("step-")), default=None)


def read_checkpoint(path: Path) -> tuple[dict, dict, Position]:
    """(trainable weights by name, {optimizer, scheduler, rng} states, data position) of a checkpoint."""
    from safetensors.torch import load_file

    state = torch.load(path / "state.pt", weights_only=True, map_location="cpu")
    pos = Position(**json.loads((path / "position.json").read_text(encoding="utf-8")))
    return load_file(str(path / "trainable.safetensors")), state, pos


def load_checkpoint(path: Path, model, opt, sched) -> Position:
    """Restore weights, optimizer, scheduler and RNG from `path`; returns the data position."""
    weights, state, pos = read_checkpoint(path)
    params = _trainable(model)
    if set(weights) != set(params):
        raise RuntimeError(f"{path}: checkpoint holds other trainable weights than the model "
                           f"({len(weights)} vs {len(params)} tensors)")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name].to(p.device, p.dtype))
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["cpu"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return pos


def remove_checkpoints(directory: Path) -> None:
    """Once the trained weights are saved the checkpoints are not needed."""
    shutil.rmtree(Path(directory) / CHECKPOINTS, ignore_errors=True)
