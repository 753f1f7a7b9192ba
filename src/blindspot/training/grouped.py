"""Train K LoRA classifiers that share one frozen base together: one model in memory, one batch a step.

    python -m pytest tests/test_grouped.py      # grouped == K separate runs (weights and logits)

A starting point's augmentation runs all continue the same saved adapter on the same frozen base
and differ only in their training examples (and so their length). `AdapterGroup` loads the base
once and holds K copies of the adapter's LoRA matrices and classifier head, stacked along a first
axis of size K. Each step concatenates one micro-batch of every run still training; inside every
LoRA layer the rows of run k go through run k's matrices with one batched matmul (`torch.bmm` over
the K runs, rows laid out as a K x rows grid), and the head likewise. Each run keeps its own
AdamW, warmup + cosine schedule (of its own length), gradient clipping, accumulation, data order
and dropout random stream, exactly as `blindspot.training.loop.fit` would run it alone; a run that has
finished its epochs leaves the group.

Why it is exact: the base is frozen and rows never interact in a transformer, so the gradient of
run j's loss with respect to run k's weights is zero for j != k; the summed loss gives every run
the gradient it would have alone. Each run's optimiser sees views into the stacked weights and
gradients, so its update is the same arithmetic. Dropout: each run has its own copy of the global
RNG state (the state its single run would have after loading the start), swapped in around its
rows' dropout draws, which are drawn with the same kernel, shape and order as alone. What differs
is float rounding: rows are padded to the group's longest micro-batch, and the matmuls are batched
(tests: float32, 1e-5 relative on the weights after training).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from blindspot.logsetup import SCREEN
from blindspot.training.group_rng import AdapterRNG
from blindspot.training.loop import FitResult, OptimSpec, build_optimizer

log = logging.getLogger(__name__)

Batches = Callable[[int], Sequence[dict]]  # epoch -> micro-batches (dicts of input_ids, attention_mask, labels)


class UngroupableModel(ValueError):
    """A model whose trainable parts are not only LoRA A/B and the classifier head: train it alone."""


@dataclass
class Layout:
    """Where each running adapter's rows sit in the step's concatenated batch."""

    active: list[int]      # adapter indices, in row order
    rows: list[int]        # micro-batch rows of each
    widths: list[int]      # padded width of each micro-batch alone
    width: int             # the step's padded width
    index: torch.Tensor    # the adapters as a tensor (selects their stacked weights)
    grid: torch.Tensor | None  # row -> position in the (len(active) x max rows) grid; None = identity

    @property
    def offsets(self) -> list[int]:
        out = [0]
        for r in self.rows:
            out.append(out[-1] + r)
        return out


@dataclass
class _Run:
    optim: OptimSpec
    batches: list[Sequence[dict]]  # per epoch
    params: list[torch.nn.Parameter] = field(default_factory=list)
    opt: torch.optim.Optimizer | None = None
    sched: object = None
    total: int = 0
    steps: int = 0
    seen: int = 0
    window: list[float] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    seconds: float = 0.0  # this run's share of the group's training time (by its share of each step's tokens)
    tokens: int = 0
    resumed: int = 0  # examples trained on before the checkpoint it resumed from


class AdapterGroup:
    """K trainable copies of a peft classifier's adapter ("default") and head, on its frozen base."""

    def __init__(self, model: torch.nn.Module, k: int, device: torch.device, pad_token_id: int) -> None:
        self.model, self.k, self.device, self.pad = model, k, device, pad_token_id
        self.hf = model.get_base_model()
        self.inner = getattr(self.hf, self.hf.base_model_prefix)
        self.rng = AdapterRNG(device, k)
        self.layout: Layout | None = None
        self.slots: list[torch.Tensor] = []  # stacked (K, ...) weights, in model.parameters() order
        self.stacked: dict[str, torch.Tensor] = {}  # parameter name -> its stacked tensor
        self.head: dict[str, torch.Tensor] = {}
        self._patched: list[torch.nn.Module] = []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            stacked = p.detach().unsqueeze(0).repeat(k, *[1] * p.dim()).requires_grad_(True)
            self.slots.append(stacked)
            self.stacked[name] = stacked
            if name.endswith(".lora_A.default.weight") or name.endswith(".lora_B.default.weight"):
                continue
            head = self.hf.score if hasattr(self.hf, "score") else None
            if ".score.modules_to_save.default." not in name or head is None:
                raise UngroupableModel(f"grouped training: trainable parameter {name} is neither LoRA A/B nor "
                                          "the classifier head (LoRA bias, DoRA or other modules are not supported)")
            self.head[name.rsplit(".", 1)[-1]] = stacked
        for name, module in model.named_modules():
            if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
                a, b = self.stacked[f"{name}.lora_A.default.weight"], self.stacked[f"{name}.lora_B.default.weight"]
                module.forward = partial(self._lora_forward, module, a, b)
                self._patched.append(module)

    def close(self) -> None:
        """Give the peft modules their own forward back."""
        for module in self._patched:
            del module.forward
        self._patched = []

    # --- the forward pass ----------------------------------------------------------------------

    def _to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(rows, ...) -> (adapters, max rows, ...): each adapter's rows in its own row of the grid."""
        lay = self.layout
        n, most = len(lay.active), max(lay.rows)
        if lay.grid is None:
            return x.reshape(n, most, *x.shape[1:])
        grid = x.new_zeros(n * most, *x.shape[1:]).index_copy(0, lay.grid, x)
        return grid.reshape(n, most, *x.shape[1:])

    def _from_grid(self, y: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        y = y.reshape(-1, *y.shape[2:])
        return y if lay.grid is None else y.index_select(0, lay.grid)

    def _weights(self, stacked: torch.Tensor) -> torch.Tensor:
        return stacked if len(self.layout.active) == self.k else stacked.index_select(0, self.layout.index)

    def _dropout(self, x: torch.Tensor, drop: torch.nn.Module) -> torch.Tensor:
        """Each adapter's rows through `drop`, on its own RNG stream, at its own micro-batch's width."""
        lay, pieces = self.layout, []
        bounds = lay.offsets
        self.rng.begin(id(drop))
        for j, k in enumerate(lay.active):
            with self.rng.use(k):
                d = drop(x[bounds[j]:bounds[j + 1], :lay.widths[j]])
            pieces.append(F.pad(d, (0, 0, 0, lay.width - lay.widths[j])))
        return torch.cat(pieces)

    def _lora_forward(self, module, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, *args, **kwargs):
        """peft's LoRA Linear forward, with run k's A and B for run k's rows (one bmm for all runs)."""
        result = module.base_layer(x, *args, **kwargs)
        out_dtype = result.dtype
        x = module._cast_input_dtype(x, a.dtype)
        drop = module.lora_dropout["default"]
        if module.training and getattr(drop, "p", 0) > 0:
            x = self._dropout(x, drop)
        rows, width = x.shape[0], x.shape[1]
        grid = self._to_grid(x)  # (n, most, width, in)
        n, most = grid.shape[0], grid.shape[1]
        h = torch.bmm(grid.reshape(n, most * width, -1), self._weights(a).transpose(1, 2))
        y = torch.bmm(h, self._weights(b).transpose(1, 2)) * module.scaling["default"]
        y = self._from_grid(y.reshape(n, most, width, -1))
        assert y.shape[0] == rows
        return (result + y).to(out_dtype)

    def losses(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """Mean cross-entropy of each running adapter's rows (as the seq-classification model computes it)."""
        hidden = self.inner(input_ids, attention_mask=attention_mask).last_hidden_state
        pad = self.hf.config.get_text_config().pad_token_id
        positions = torch.arange(input_ids.shape[-1], device=hidden.device, dtype=torch.int32)
        last = (positions * (input_ids != pad).to(hidden.device, torch.int32)).argmax(-1)
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (rows, hidden)
        grid = self._to_grid(pooled)  # (n, most, hidden)
        weight = self._weights(self.head["weight"])
        if not torch.is_autocast_enabled():
            grid = grid.to(weight.dtype)  # as nn.Linear would refuse a mix; under autocast bmm casts both
        logits = torch.bmm(grid, weight.transpose(1, 2))
        if "bias" in self.head:
            logits = logits + self._weights(self.head["bias"]).unsqueeze(1)
        logits = self._from_grid(logits)
        bounds = self.layout.offsets
        return [F.cross_entropy(logits[bounds[j]:bounds[j + 1]].float(), labels[bounds[j]:bounds[j + 1]])
                for j in range(len(self.layout.active))]

    def _step_batch(self, parts: list[tuple[int, dict]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Concatenate one micro-batch per running adapter (padded to the widest) and set the layout."""
        widths = [int(b["input_ids"].shape[1]) for _, b in parts]
        rows = [int(b["input_ids"].shape[0]) for _, b in parts]
        width, most = max(widths), max(rows)
        ids = torch.cat([F.pad(b["input_ids"], (0, width - w), value=self.pad) for (_, b), w in zip(parts, widths)])
        mask = torch.cat([F.pad(b["attention_mask"], (0, width - w), value=0) for (_, b), w in zip(parts, widths)])
        labels = torch.cat([b["labels"] for _, b in parts])
        grid = None
        if any(r != most for r in rows):
            grid = torch.tensor([j * most + i for j, r in enumerate(rows) for i in range(r)], device=self.device)
        active = [k for k, _ in parts]
        self.layout = Layout(active, rows, widths, width, torch.tensor(active, device=self.device), grid)
        return ids.to(self.device), mask.to(self.device), labels.to(self.device)

    # --- training ------------------------------------------------------------------------------

    def fit(self, batches: list[Batches], optims: list[OptimSpec], desc: str = "train-group",
            max_steps: int | None = None, checkpoint_dirs: Sequence[Path | None] | None = None) -> list[FitResult]:
        """Train adapter k on batches[k] with optims[k], all at once, as `lora.fit` would train each
        alone. `max_steps` stops after that many group steps (calibration). With `checkpoint_dirs`,
        run k checkpoints into checkpoint_dirs[k] every `optim.checkpoint_every` of its own steps and
        resumes from one found there, in the files a run alone writes (blindspot.training.resume)."""
        from transformers import get_cosine_schedule_with_warmup

        from blindspot.progress import progress_bar

        assert len(batches) == len(optims) == self.k
        runs = []
        for k, (make, optim) in enumerate(zip(batches, optims)):
            epochs = [make(0)] + [None] * (optim.epochs - 1)
            run = _Run(optim, epochs)
            run.total = math.ceil(len(epochs[0]) / optim.grad_accum) * optim.epochs
            run.params = [torch.nn.Parameter(s.data[k]) for s in self.slots]  # views: the run's own weights
            run.opt = build_optimizer(run.params, optim, self.device)
            run.sched = get_cosine_schedule_with_warmup(run.opt, math.ceil(optim.warmup_ratio * run.total), run.total)
            runs.append(run)
        dirs = list(checkpoint_dirs or [None] * self.k)
        starts = [self._resume(k, run, d) for k, (run, d) in enumerate(zip(runs, dirs))]
        model = self.model
        low_precision = (getattr(model, "is_loaded_in_4bit", False)
                         or any(p.dtype == torch.bfloat16 for p in model.parameters()))
        dev = self.device
        autocast = low_precision and (dev.type == "cpu" or (dev.type == "cuda" and torch.cuda.is_bf16_supported()))
        model.train()
        cursors = [iter(self._micro_batches(k, run, batches[k], starts[k])) for k, run in enumerate(runs)]
        running = list(range(self.k))
        total_rows = sum(sum(int(b["input_ids"].shape[0]) for b in r.batches[0]) * r.optim.epochs for r in runs)
        bar = progress_bar(total_rows, desc, unit="ex", initial=sum(r.seen for r in runs))
        t0, group_steps = time.time(), 0
        while running and (max_steps is None or group_steps < max_steps):
            t_step = time.time()
            parts, marks = [], []
            for k in list(running):
                item = next(cursors[k], None)
                if item is None:
                    running.remove(k)
                    continue
                epoch, batch, boundary, after = item
                parts.append((k, batch))
                marks.append((k, epoch, boundary, after))
            if not parts:
                break
            ids, mask, labels = self._step_batch(parts)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                losses = self.losses(ids, mask, labels)
            total = sum(loss / runs[k].optim.grad_accum for (k, *_), loss in zip(marks, losses))
            self._backward(total)
            tokens = [int(b["attention_mask"].sum()) for _, b in parts]
            for (k, epoch, boundary, after), loss, (_, b), tok in zip(marks, losses, parts, tokens):
                run = runs[k]
                run.window.append(loss.item())
                run.seen += int(b["input_ids"].shape[0])
                run.tokens += tok
                bar.update(int(b["input_ids"].shape[0]))
                if boundary:
                    self._optimizer_step(k, run, epoch, t0)
                    self._checkpoint(k, run, dirs[k], after)
            elapsed = time.time() - t_step
            for (k, *_), tok in zip(marks, tokens):  # the step's time, shared by tokens
                runs[k].seconds += elapsed * tok / max(sum(tokens), 1)
            group_steps += 1
        bar.close()
        model.eval()
        self.layout = None
        seconds = time.time() - t0
        log.info("%s: %d adapters, %d group steps, %d examples in %.1f s (%.2f examples/s)", desc, self.k,
                 group_steps, sum(r.seen for r in runs), seconds, sum(r.seen for r in runs) / max(seconds, 1e-9))
        return [FitResult(r.steps, r.seen, r.seconds, (r.seen - r.resumed) / r.seconds if r.seconds > 0 else 0.0, r.rows)
                for r in runs]

    @staticmethod
    def _micro_batches(k: int, run: _Run, make: Batches, start: tuple[int, int] = (0, 0)
                       ) -> Iterator[tuple[int, dict, bool, tuple[int, int]]]:
        """(epoch, micro-batch, whether the optimiser steps after it, the (epoch, batch) after it), as
        `lora.fit` walks them, from (epoch, batch) `start` on (a resumed run)."""
        for epoch in range(start[0], run.optim.epochs):
            if run.batches[epoch] is None:
                run.batches[epoch] = make(epoch)
            batches = run.batches[epoch]
            for i, batch in enumerate(batches):
                if epoch == start[0] and i < start[1]:
                    continue  # trained on before the checkpoint
                after = (epoch, i + 1) if i + 1 < len(batches) else (epoch + 1, 0)
                yield epoch, batch, not ((i + 1) % run.optim.grad_accum and i + 1 != len(batches)), after
            if epoch > 0:
                run.batches[epoch] = None  # only the first epoch's list is kept (its sizes are counted)

    def _backward(self, loss: torch.Tensor) -> None:
        """Backward; a checkpointed layer run again meanwhile redraws its first pass's dropout masks."""
        after_forward = [s.clone() for s in self.rng.states]
        self.rng.recomputing = True
        try:
            loss.backward()
        finally:
            self.rng.recomputing = False
            self.rng.states = after_forward

    def _optimizer_step(self, k: int, run: _Run, epoch: int, t0: float) -> None:
        """Clip, step and schedule adapter k alone, on views of its slice of the stacked gradients."""
        for p, stacked in zip(run.params, self.slots):
            p.grad = stacked.grad[k] if stacked.grad is not None else torch.zeros_like(p)
        torch.nn.utils.clip_grad_norm_(run.params, run.optim.max_grad_norm)
        run.opt.step()
        run.sched.step()
        for p, stacked in zip(run.params, self.slots):
            if stacked.grad is not None:
                stacked.grad[k].zero_()
            p.grad = None
        run.steps += 1
        if run.steps % run.optim.log_every == 0 or run.steps == run.total:
            run.rows.append({"step": run.steps, "epoch": epoch, "examples": run.seen,
                             "loss": sum(run.window) / len(run.window), "lr": run.sched.get_last_lr()[0],
                             "elapsed_s": round(time.time() - t0, 3)})
            run.window = []

    # --- mid-training checkpoints (blindspot.training.resume's files, one directory per run) ----------------

    def _checkpoint(self, k: int, run: _Run, directory: Path | None, after: tuple[int, int]) -> None:
        """Run k's weights, optimiser, schedule, RNG stream (as a run alone saves the global RNG) and position."""
        from blindspot.training.resume import Position, save_checkpoint

        every = run.optim.checkpoint_every
        if directory is None or not every or run.steps % every or run.steps >= run.total:
            return
        rng = {"cpu": self.rng.states[k].clone()}
        if self.rng.cuda:
            rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()}
            rng["cuda"][self._cuda_index()] = self.rng.states[k].clone()
        save_checkpoint(directory, None, run.opt, run.sched,
                        Position(run.steps, after[0], after[1], run.seen, list(run.rows), list(run.window)),
                        weights={n: t[k].detach() for n, t in self.stacked.items()}, rng=rng)

    def _cuda_index(self) -> int:
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def _resume(self, k: int, run: _Run, directory: Path | None) -> tuple[int, int]:
        """Load run k's newest checkpoint in `directory`, if any; the (epoch, batch) it goes on from."""
        from blindspot.training.resume import latest_checkpoint, read_checkpoint

        found = latest_checkpoint(directory) if directory is not None else None
        if found is None:
            return 0, 0
        weights, state, pos = read_checkpoint(found)
        if set(weights) != set(self.stacked):
            raise RuntimeError(f"{found}: checkpoint holds other trainable weights than the group's model")
        with torch.no_grad():
            for name, t in weights.items():
                self.stacked[name][k].copy_(t.to(self.device, self.stacked[name].dtype))
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        rng = state["rng"]
        self.rng.states[k] = rng["cuda"][self._cuda_index()] if self.rng.cuda else rng["cpu"]
        run.steps, run.seen, run.rows, run.window = pos.step, pos.seen, list(pos.rows), list(pos.window)
        run.resumed = pos.seen
        log.info("run %d of the group: resuming from checkpoint %s: step %d of %d (epoch %d, batch %d)",
                 k, found, pos.step, run.total, pos.epoch, pos.batch, extra=SCREEN)
        return pos.epoch, pos.batch

    def export(self, k: int) -> None:
        """Write adapter k's weights into the peft model's own parameters (to save or evaluate it)."""
        with torch.no_grad():
            for (name, p), stacked in zip(((n, p) for n, p in self.model.named_parameters() if p.requires_grad),
                                          self.slots):
                p.copy_(stacked[k])
