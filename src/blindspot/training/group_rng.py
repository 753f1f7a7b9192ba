"""Dropout streams of a group of runs trained together (blindspot.training.grouped): one RNG state per run.

Each run of a group draws its dropout masks from its own copy of the device's global RNG state
(the state its single run would have after loading the start), swapped in around its rows'
draws, so its masks are the ones it would draw alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class AdapterRNG:
    """One copy of the device's global RNG state per run, swapped in around that run's random draws."""

    def __init__(self, device: torch.device, k: int) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.states = [self._get() for _ in range(k)]
        self._snapshots: dict[int, list[torch.Tensor]] = {}
        self.recomputing = False

    def _get(self) -> torch.Tensor:
        return torch.cuda.get_rng_state(self.device) if self.cuda else torch.get_rng_state()

    def _set(self, state: torch.Tensor) -> None:
        if self.cuda:
            torch.cuda.set_rng_state(state, self.device)
        else:
            torch.set_rng_state(state)

    @contextmanager
    def use(self, k: int) -> Iterator[None]:
        """Draw from run k's stream inside the block; the global stream is left as it was."""
        saved = self._get()
        self._set(self.states[k])
        try:
            yield
        finally:
            self.states[k] = self._get()
            self._set(saved)

    def begin(self, key: int) -> None:
        """Before the dropout draws of module `key`: under gradient checkpointing the backward pass runs
        a layer's forward again, which must draw the first pass's masks (as a single run's checkpoint,
        restoring the global RNG state, does): the states each module started from are kept."""
        if self.recomputing:
            self.states = [s.clone() for s in self._snapshots[key]]
        else:
            self._snapshots[key] = [s.clone() for s in self.states]
