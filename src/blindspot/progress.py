"""Progress of long loops: one call for every stage, shown as a tqdm bar or by the run's display.

    python -c "from blindspot.progress import progress_bar; b = progress_bar(3, 'demo'); b.update(3); b.close()"

A loop a person waits for opens a bar with `progress_bar(total, desc, unit)` and calls
`update(n)`. Standalone (a subcommand, a notebook, a test) that is a tqdm bar on stderr. Inside
`blindspot run` the grid's live display installs itself as the sink (`use_sink`), and the same
calls then move the current stage's line of that display (and feed its ETA) instead of printing
bars of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Protocol, TypeVar

T = TypeVar("T")


class Bar(Protocol):
    """What a loop calls on its progress bar."""

    def update(self, n: int = 1) -> None: ...

    def set_postfix_str(self, text: str) -> None: ...

    def close(self) -> None: ...


class Sink(Protocol):
    """Where bars go: `open` returns a Bar for one loop."""

    def open(self, total: int | None, desc: str, unit: str, initial: int, disable: bool) -> Bar: ...


class TqdmSink:
    """The default sink: a tqdm bar per loop (disabled ones print nothing)."""

    def open(self, total: int | None, desc: str, unit: str, initial: int, disable: bool) -> Bar:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=disable)


class NullBar:
    """A bar that shows nothing (`blindspot -q`)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class NullSink:
    """No bars at all: what `-q` installs for a subcommand."""

    def open(self, total: int | None, desc: str, unit: str, initial: int, disable: bool) -> Bar:
        return NullBar()


_DEFAULT = TqdmSink()
_SINK: ContextVar[Sink | None] = ContextVar("blindspot_progress_sink", default=None)


def progress_bar(total: int | None, desc: str, unit: str = "it", initial: int = 0, disable: bool = False) -> Bar:
    """A bar for one loop of `total` units (`initial` already done), on the active sink.

    `disable` hides a standalone tqdm bar (e.g. a single batch); a run's display still counts
    the work, because its ETA is built from it.
    """
    return (_SINK.get() or _DEFAULT).open(total, desc, unit, initial, disable)


def track(items: Iterable[T], desc: str, unit: str = "it", total: int | None = None,
          disable: bool = False) -> Iterator[T]:
    """Iterate over `items` with a progress bar (one unit per item)."""
    bar = progress_bar(total if total is not None else (len(items) if isinstance(items, Sized) else None),
                       desc, unit, disable=disable)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


@contextmanager
def use_sink(sink: Sink) -> Iterator[Sink]:
    """Send every progress_bar opened inside the block (in this thread) to `sink`."""
    token = _SINK.set(sink)
    try:
        yield sink
    finally:
        _SINK.reset(token)
