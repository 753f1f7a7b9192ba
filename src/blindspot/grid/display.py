"""What `blindspot run` shows while it works: one live display, or one line per stage in a pipe.

    blindspot run configs/smoke.yaml            # a terminal: live display; a pipe or a file: plain lines
    blindspot run configs/smoke.yaml | cat      # plain lines (CI, nohup)

The live display (rich) holds two lines: the grid (done / running / left / failed, elapsed, ETA)
and the current stage with its own progress (examples trained, predicted or sampled), and
prints each finished stage's result above them: time, examples/s and, for evaluations, the
headline accuracies. In a pipe the same result lines are printed, one per stage, with the ETA.

The ETA is a work estimate, not the mean stage time: every stage declares its work (examples to
train, predict or sample; see grid.stage_work), and the display measures, per stage kind, the
rate of that work inside the stages' progress loops and the time outside them (loading,
saving). The remaining stages' work at those rates, plus their overheads, is the ETA; stages of
a kind not timed yet borrow the rate of another kind doing the same work, else are counted as
untimed. The display is also the progress sink (blindspot.progress) of the stages it runs.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from blindspot.grid.artifacts import StageSpec

log = logging.getLogger(__name__)

Mode = Literal["live", "plain", "off"]
Work = tuple[str, float | None]  # (verb: train | predict | sample | stage, examples; None = not known yet)


def duration(seconds: float) -> str:
    """'45s', '3m12s', '1h04m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


@dataclass
class KindStats:
    """What the finished stages of one kind took: wall time, time inside progress loops, work."""

    stages: int = 0
    wall_s: float = 0.0
    loop_s: float = 0.0
    examples: float = 0.0

    def add(self, other: "KindStats") -> None:
        self.stages += other.stages
        self.wall_s += other.wall_s
        self.loop_s += other.loop_s
        self.examples += other.examples


class WorkEstimate:
    """Seconds a stage will take: overhead + examples / rate, both measured per stage kind."""

    def __init__(self) -> None:
        self.kinds: dict[str, KindStats] = {}
        self.verbs: dict[str, str] = {}  # kind -> verb

    def record(self, kind: str, verb: str, wall_s: float, loop_s: float, examples: float) -> None:
        self.verbs[kind] = verb
        self.kinds.setdefault(kind, KindStats()).add(KindStats(1, wall_s, min(loop_s, wall_s), examples))

    def _stats(self, kind: str, verb: str) -> tuple[KindStats | None, KindStats | None]:
        """(stats of the kind, stats of every kind doing the same work)."""
        same = KindStats()
        for k, s in self.kinds.items():
            if self.verbs[k] == verb:
                same.add(s)
        return self.kinds.get(kind), (same if same.stages else None)

    def seconds(self, kind: str, verb: str, examples: float | None) -> float | None:
        """The predicted wall time of a stage, or None when nothing like it was timed yet."""
        if examples is None:
            return None
        own, same = self._stats(kind, verb)
        base = own or same
        if base is None:
            return None
        overhead = max(0.0, base.wall_s - base.loop_s) / base.stages
        if examples == 0:
            return overhead
        rated = next((s for s in (own, same) if s is not None and s.examples > 0 and s.loop_s > 0), None)
        return None if rated is None else overhead + examples * rated.loop_s / rated.examples


@dataclass
class StageBar:
    """One progress loop of the running stage (the display is its sink)."""

    owner: "RunDisplay"
    total: int | None
    desc: str
    unit: str
    initial: int
    n: int = 0
    postfix: str = ""
    started: float = field(default_factory=time.perf_counter)
    closed: bool = False

    def __post_init__(self) -> None:
        self.n = self.initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner._bar_closed(self)

    def rate(self) -> float | None:
        elapsed = time.perf_counter() - self.started
        return (self.n - self.initial) / elapsed if elapsed > 0 and self.n > self.initial else None


class RunDisplay:
    """The grid's progress: a rich live display, plain lines, or nothing (mode 'off')."""

    def __init__(self, todo: list[StageSpec], cached: int, work: Callable[[StageSpec], Work], mode: Mode,
                 store: Path) -> None:
        self.todo, self.cached, self.work_of, self.mode, self.store = todo, cached, work, mode, store
        self.estimate = WorkEstimate()
        self.finished = self.failed = 0
        self.current: StageSpec | None = None
        self.bar: StageBar | None = None
        self.t0 = self.stage_t0 = time.perf_counter()
        self.stage_loop_s = self.stage_examples = 0.0
        self._work: dict[str, Work] = {}
        self._live = None
        # Parallel executors (Ray): no sequential ETA; (running, waiting) counts shown instead
        self.parallel = False
        self.grid_counts: tuple[int, int] | None = None

    # --- the grid's events -----------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator["RunDisplay"]:
        """Show the display for the duration of the block (live mode: a rich Live)."""
        if self.mode != "live":
            yield self
            return
        from rich.console import Console
        from rich.live import Live

        with Live(get_renderable=self._render, console=Console(highlight=False), refresh_per_second=4,
                  transient=True, redirect_stdout=True, redirect_stderr=True) as live:
            self._live = live
            try:
                yield self
            finally:
                self._live = None

    def print(self, line: str, style: str | None = None) -> None:
        """A line on screen (above a live display), and in the log file."""
        if self.mode == "live" and self._live is not None:
            log.info("%s", line)
            self._live.console.print(line, style=style, markup=False, highlight=False)
        else:
            say(line, self.mode)

    def started(self, stage: StageSpec) -> None:
        self.current, self.bar = stage, None
        self.stage_t0 = time.perf_counter()
        self.stage_loop_s = self.stage_examples = 0.0

    def done(self, stage: StageSpec, wall_s: float, out: Path) -> None:
        verb, examples = self.work(stage)
        measured = self.stage_examples if self.stage_loop_s > 0 else (examples or 0.0)
        loop_s = self.stage_loop_s if self.stage_loop_s > 0 else (wall_s if measured else 0.0)
        self.estimate.record(stage.stage, verb, wall_s, loop_s, measured)
        self.finished += 1
        self.current, self.bar = None, None
        parts = [duration(wall_s)]
        if verb != "stage" and measured and loop_s > 0:
            parts.append(f"{measured / loop_s:.1f} {verb} ex/s")
        if stage.stage == "evaluate":
            parts.append(headline(out))
        self.print(f"{self._count()} {stage.label:<40} {' · '.join(p for p in parts if p)}{self._eta_suffix()}")

    def done_elsewhere(self, stage: StageSpec) -> None:
        """Another driver on the same store finished the stage meanwhile."""
        self.finished += 1
        self.current, self.bar = None, None
        self.print(f"{self._count()} {stage.label:<40} done by another run{self._eta_suffix()}")

    def failed_stage(self, stage: StageSpec, reason: str, skipped: bool = False) -> None:
        self.failed += 1
        self.current, self.bar = None, None
        self.print(f"{self._count()} {'skipped' if skipped else 'FAILED'} {stage.label}: {reason}",
                   style=None if skipped else "bold red")

    def _count(self) -> str:
        width = len(str(len(self.todo)))
        return f"[{self.finished + self.failed:>{width}}/{len(self.todo)}]"

    # --- the progress sink -----------------------------------------------------------------

    def open(self, total: int | None, desc: str, unit: str, initial: int, disable: bool) -> StageBar:
        self.bar = StageBar(self, total, desc, unit, initial)
        return self.bar

    def _bar_closed(self, bar: StageBar) -> None:
        self.stage_loop_s += time.perf_counter() - bar.started
        self.stage_examples += bar.n - bar.initial

    # --- the ETA ---------------------------------------------------------------------------

    def work(self, stage: StageSpec) -> Work:
        """The stage's declared work, cached once known (it may need prepare's outputs)."""
        if stage.dirname not in self._work or self._work[stage.dirname][1] is None:
            self._work[stage.dirname] = self.work_of(stage)
        return self._work[stage.dirname]

    def eta(self) -> tuple[float, int]:
        """(seconds of work left that can be estimated, number of stages that cannot)."""
        left, untimed = 0.0, 0
        position = self.finished + self.failed + (self.current is not None)
        for stage in self.todo[position:]:
            s = self.estimate.seconds(stage.stage, *self.work(stage))
            left, untimed = (left + s, untimed) if s is not None else (left, untimed + 1)
        if self.current is not None:
            s = self.estimate.seconds(self.current.stage, *self.work(self.current))
            elapsed = time.perf_counter() - self.stage_t0
            bar = self.bar
            if bar is not None and bar.total and bar.rate():
                left += (bar.total - bar.n) / bar.rate()  # the loop running now, at its own rate
            elif s is not None:
                left += max(0.0, s - elapsed)
            else:
                untimed += 1
        return left, untimed

    def eta_text(self) -> str:
        left, untimed = self.eta()
        if untimed and not left:
            return "ETA: after the first stages of each kind"
        more = f" + {untimed} untimed stage{'s' * (untimed > 1)}" if untimed else ""
        return f"ETA {duration(left)}{more}"

    def _eta_suffix(self) -> str:
        if self.parallel:
            running, waiting = self.grid_counts or (0, 0)
            return (f"  (grid: {self.finished} done · {running} running · {waiting} waiting · {self.failed} failed)"
                    if self.finished + self.failed < len(self.todo) else "")
        return f"  ({self.eta_text()})" if self.finished + self.failed < len(self.todo) else ""

    # --- the live rendering ----------------------------------------------------------------

    def _render(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        total, ended = len(self.todo), self.finished + self.failed
        left = total - ended - (self.current is not None)
        running = int(self.current is not None)
        if self.parallel and self.grid_counts is not None:
            running, left = self.grid_counts
        eta = f"{left} waiting" if self.parallel else f"{left} left"
        grid = Table.grid(padding=(0, 1))
        grid.add_row(Text("grid", style="bold"), ProgressBar(total=max(total, 1), completed=ended, width=30),
                     Text.from_markup(f"{self.finished} done · {running} running · {eta}"
                                      + (f" · [red]{self.failed} failed[/]" if self.failed else "")
                                      + f" · {duration(time.perf_counter() - self.t0)}"
                                      + ("" if self.parallel else f" · {self.eta_text()}")))
        if self.current is not None:
            bar = self.bar
            info = f"{duration(time.perf_counter() - self.stage_t0)}"
            if bar is not None:
                rate = bar.rate()
                info = (f"{bar.desc}: {bar.n}/{bar.total or '?'} {bar.unit}"
                        + (f" · {rate:.1f} {bar.unit}/s" if rate else "") + (f" · {bar.postfix}" if bar.postfix else "")
                        + f" · {info}")
            grid.add_row(Text(self.current.label, style="cyan"),
                         ProgressBar(total=max(bar.total or 1, 1), completed=bar.n if bar else 0, width=30)
                         if bar is not None and bar.total else Text(""), Text(info))
        return grid


def headline(eval_dir: Path) -> str:
    """'mnli-matched 36.7% · hans 50.0% (lexical-overlap non-entailment 20.0%)' from metrics.json."""
    from blindspot.report_figures import BLINDSPOT_SLICE

    try:
        sets = json.loads((eval_dir / "metrics.json").read_text())["sets"]
    except (OSError, ValueError, KeyError):
        return ""
    parts = []
    for name, block in sets.items():
        rows = {m["slice"]: m for m in block["metrics"]}
        text = f"{name} {rows['all']['accuracy']:.1%}" if "all" in rows else name
        if BLINDSPOT_SLICE in rows:
            text += f" (lexical-overlap non-entailment {rows[BLINDSPOT_SLICE]['accuracy']:.1%})"
        parts.append(text)
    return " · ".join(parts)


def say(line: str, mode: Mode) -> None:
    """One of our result lines: logged (run.log), and on stdout unless the mode is 'off'."""
    log.info("%s", line)
    if mode != "off":
        print(line, file=sys.stdout, flush=True)


def choose_mode(quiet: bool = False) -> Mode:
    """'off' when quiet, 'live' on a terminal, else 'plain'."""
    if quiet:
        return "off"
    return "live" if sys.stdout.isatty() else "plain"
