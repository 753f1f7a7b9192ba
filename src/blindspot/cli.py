"""The `blindspot` command: one subcommand per stage, each a thin shell over a plain function.

    blindspot --help
    blindspot data describe ../shared/data/mnli-subset/multinli_1.0_train.jsonl.gz
    blindspot SUBCOMMAND --help

Each subcommand lives in the module named below, which defines `add_arguments(parser)` and
`main(args) -> int`; modules are imported only when their subcommand runs, so `--help` is
fast and a torch-free command never imports torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import sys
from pathlib import Path

from blindspot import __version__
from blindspot.errors import BlindspotError
from blindspot.logsetup import log_to_file
from blindspot.progress import NullSink, use_sink

# subcommand -> (module, one-line help). Multi-word commands ("data describe") are keyed
# with a space and typed as two words.
COMMANDS: dict[str, tuple[str, str]] = {
    "data describe": ("blindspot.data.describe", "Count labels, cleaning and heuristic prevalence of NLI sets."),
    "train-classifier": ("blindspot.training.classifier", "Train (or continue training) an LLM + LoRA NLI classifier."),
    "evaluate": ("blindspot.evaluate", "Evaluate a classifier on NLI sets: accuracies with intervals, predictions."),
    "compare": ("blindspot.compare", "Paired comparison (exact McNemar) of two prediction files on one set."),
    "train-generator": ("blindspot.training.generator", "Train the LLM as a label-first generator of NLI examples."),
    "generate": ("blindspot.generation.sample", "Sample labelled synthetic NLI examples from a trained generator."),
    "filter": ("blindspot.filters", "Keep synthetic pairs on which a heuristic always (or never) works."),
    "audit": ("blindspot.audit", "Heuristic features, lengths and diversity of NLI sets, side by side."),
    "run": ("blindspot.grid", "Run a whole experiment grid from a YAML config (cached, resumable)."),
    "report": ("blindspot.report", "Write the results table, figures and report of a finished run."),
}

log = logging.getLogger("blindspot")
VERBOSITY_FLAGS = {"-v": 1, "--verbose": 1, "-q": -1, "--quiet": -1}


def setup_logging(verbosity: int) -> None:
    """Screen: our warnings and errors (-v: our INFO/DEBUG and library messages too, -q: errors
    only); see blindspot.logsetup."""
    from blindspot.logsetup import configure

    configure(verbosity)


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    """-v / -q after the subcommand too (they may also come before it)."""
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="show library messages (load reports, banners, warnings) and debug lines")
    group.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    group.add_argument("--log", metavar="FILE", default=None,
                       help="append everything logged (DEBUG, library messages included) to FILE")


def _available() -> dict[str, tuple[str, str]]:
    """Commands whose module is present in this installation."""
    return {k: v for k, v in COMMANDS.items() if importlib.util.find_spec(v[0]) is not None}


def _top_help(commands: dict[str, tuple[str, str]]) -> str:
    width = max((len(k) for k in commands), default=10)
    lines = [f"usage: blindspot [-v|-q] SUBCOMMAND [options]   (blindspot {__version__})", "",
             "Does fine-tuning an LLM on synthetic data reinforce its heuristics?", "", "subcommands:"]
    lines += [f"  {k:<{width}}  {h}" for k, (_, h) in commands.items()]
    lines += ["", "Run `blindspot SUBCOMMAND --help` for its options. -v: our info/debug lines and library "
              "messages on screen; -q: errors only (before or after the subcommand); --log FILE: everything "
              "to FILE."]
    return "\n".join(lines)


def _split_command(argv: list[str], commands: dict) -> tuple[str | None, list[str]]:
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in commands:
        return f"{argv[0]} {argv[1]}", argv[2:]
    if argv and argv[0] in commands:
        return argv[0], argv[1:]
    return None, argv


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one to show (not None, not already in the help)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, [], argparse.SUPPRESS) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbosity = 0
    while argv and argv[0] in VERBOSITY_FLAGS:
        verbosity += VERBOSITY_FLAGS[argv.pop(0)]
    commands = _available()
    name, rest = _split_command(argv, commands)
    if name is None:
        if argv and argv[0] in ("--version",):
            print(__version__)
            return 0
        print(_top_help(commands), file=sys.stdout if not argv or argv[0] in ("-h", "--help") else sys.stderr)
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nblindspot: error: unknown subcommand {' '.join(argv[:1])!r}", file=sys.stderr)
            return 2
        return 0
    module_name, help_line = commands[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"blindspot {name}", description=help_line,
                                     formatter_class=_DefaultsFormatter)
    module.add_arguments(parser)
    _add_verbosity(parser)
    args = parser.parse_args(rest)
    verbosity += args.verbose
    if args.quiet:
        verbosity = -1
    args.verbosity = verbosity
    setup_logging(verbosity)
    try:
        with contextlib.ExitStack() as stack:
            if args.log:
                stack.enter_context(log_to_file(Path(args.log)))
            if verbosity < 0:
                stack.enter_context(use_sink(NullSink()))
            return int(module.main(args) or 0)
    except BlindspotError as e:
        print(f"blindspot {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"blindspot {name}: interrupted; finished work is kept, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
