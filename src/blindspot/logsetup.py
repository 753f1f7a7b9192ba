"""Where log messages go: our lines on the screen, everything (libraries included) in a log file.

    blindspot run configs/smoke.yaml        # screen: our lines, warnings, errors; RUN/run.log: all
    blindspot run configs/smoke.yaml -v     # library messages (load reports, banners) on screen too
    blindspot run configs/smoke.yaml -q     # errors only
    blindspot evaluate CLF --set ... --out DIR --log eval.log   # any subcommand: everything to a file

`configure(verbosity)` is called once by the CLI. The screen shows what the commands print
(results, a run's display), records of the `blindspot` loggers from WARNING (all of them with
-v) and third-party records (transformers, peft, datasets, Python warnings via
logging.captureWarnings) only from ERROR (INFO with -v); `-q` leaves errors only. Our INFO
lines (devices, throughput, per-set accuracies) go to the log file, except those logged with
`extra=SCREEN` (a stage resuming from a checkpoint), which the screen shows too: RUN/run.log for a run,
`--log FILE` for any subcommand. transformers' own stderr handler is removed so that its messages
(the LOAD REPORT of every classifier it builds, among them) propagate here, and the weight
loading bars of transformers and the hub are turned off unless -v. `log_to_file(path)` adds a
file handler that receives everything at DEBUG (noisy libraries at INFO): `blindspot run`
writes RUN/run.log with it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OURS = "blindspot"
QUIET, NORMAL, VERBOSE = -1, 0, 1
# verbosity -> (lowest level of our records, lowest level of third-party records) on screen
SCREEN_LEVELS = {QUIET: (logging.ERROR, logging.ERROR), NORMAL: (logging.WARNING, logging.ERROR),
                 VERBOSE: (logging.DEBUG, logging.INFO)}
# libraries whose DEBUG records flood a log file (font lookups, HTTP, locks): INFO at most
NOISY = ("matplotlib", "PIL", "urllib3", "filelock", "fsspec", "httpx", "httpcore", "asyncio")
SCREEN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# `extra=` of one of our INFO records that the screen shows as well (unless -q): what a person must see
# without -v, e.g. that a killed stage resumed from a checkpoint
SCREEN = {"screen": True}
FILE_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"


class PlainFormatter(logging.Formatter):
    """The file's format, without the terminal colour codes some libraries put in messages."""

    ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def format(self, record: logging.LogRecord) -> str:
        return self.ANSI.sub("", super().format(record))


def is_ours(record: logging.LogRecord) -> bool:
    return record.name == OURS or record.name.startswith(OURS + ".")


class ScreenFilter(logging.Filter):
    """Passes our records from `ours` up and third-party records from `libs` up."""

    def __init__(self, ours: int, libs: int) -> None:
        super().__init__()
        self.ours, self.libs = ours, libs

    def filter(self, record: logging.LogRecord) -> bool:
        if is_ours(record) and getattr(record, "screen", False) and self.ours <= logging.WARNING:
            return record.levelno >= logging.INFO
        return record.levelno >= (self.ours if is_ours(record) else self.libs)


class ScreenHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is at each record, so that a live display or a test capture
    that replaces sys.stderr receives the lines."""

    def __init__(self, ours: int, libs: int) -> None:
        super().__init__()
        self.screen = ScreenFilter(ours, libs)
        self.addFilter(self.screen)
        self.setFormatter(logging.Formatter(SCREEN_FORMAT, datefmt="%H:%M:%S"))

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it; the live value is used
        pass


def screen_handler() -> ScreenHandler | None:
    """The screen handler `configure` installed, if any."""
    return next((h for h in logging.getLogger().handlers if isinstance(h, ScreenHandler)), None)


def configure(verbosity: int = NORMAL) -> None:
    """Set up the screen handler and route library logging and warnings through it (idempotent)."""
    verbosity = max(QUIET, min(VERBOSE, verbosity))
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, ScreenHandler)]:
        root.removeHandler(h)
    root.addHandler(ScreenHandler(*SCREEN_LEVELS[verbosity]))
    root.setLevel(logging.DEBUG)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.INFO)
    route_libraries(show_bars=verbosity >= VERBOSE)


def route_libraries(show_bars: bool = False) -> None:
    """Send transformers' messages and Python warnings to the root logger; bars off unless asked."""
    logging.captureWarnings(False)  # and on again: reinstalls the hook if something replaced it since
    logging.captureWarnings(True)
    warnings.filterwarnings("default", category=DeprecationWarning)  # logged once per place, not dropped
    if not show_bars:
        for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(var, "1")
    if importlib.util.find_spec("transformers") is None:
        return
    # transformers.utils.logging imports neither torch nor the models (about 1 s)
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    hf_logging.set_verbosity_info()
    if not show_bars:  # with -v the libraries keep their own defaults
        hf_logging.disable_progress_bar()
        disable_progress_bars()


@contextmanager
def gguf_bar_hidden() -> Iterator[None]:
    """Hide transformers' GGUF conversion bar (a bare tqdm that its progress-bar switch misses)
    unless the libraries' bars are on (-v)."""
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    shown = gguf_utils.tqdm
    if are_progress_bars_disabled():
        gguf_utils.tqdm = functools.partial(shown, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = shown


@contextmanager
def log_to_file(path: Path) -> Iterator[Path]:
    """Append every record (DEBUG and up, libraries included) to `path` inside the block.

    Without `configure` (run() called from Python) library routing is set up here too, and
    warnings and errors still reach stderr for the duration.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(PlainFormatter(FILE_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.DEBUG)
    temporary: list[logging.Handler] = []
    if screen_handler() is None:
        route_libraries()
        if not root.handlers:  # nothing would print warnings once a handler exists
            temporary.append(ScreenHandler(logging.WARNING, logging.ERROR))
    level = root.level
    root.setLevel(logging.DEBUG)
    for name in NOISY:  # also when configure() did not run (a Ray worker, run() from Python)
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.INFO)
    for h in [handler, *temporary]:
        root.addHandler(h)
    try:
        yield path
    finally:
        for h in [handler, *temporary]:
            root.removeHandler(h)
        handler.close()
        root.setLevel(level)
