"""The report's figures: the paper's figure (accuracy and the blindspot against augmentation size,
a panel per starting point, with the reliance measure below when the run has it) and the challenge
set per heuristic x gold label; and which evaluation sets and lines they show.

The report (blindspot.report) writes them; the repeated generations' and the mixtures' figures are
in blindspot.rounds_report and blindspot.mixture_report.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from blindspot.errors import BlindspotError  # noqa: E402
from blindspot.mixture import parse_mixture  # noqa: E402
from blindspot.results import START, aggregate_seeds  # noqa: E402
from blindspot.storage import atomic_write_bytes  # noqa: E402

BLINDSPOT_SLICE = "heuristic=lexical_overlap,label=non-entailment"
RELIANCE_SLICE = "reliance:heuristic=lexical_overlap"  # blindspot.reliance, beside the paper's number
SOURCE_NAMES = {"original": "original data", "synthetic": "synthetic data",
                "biased-lexical-overlap": "synthetic, filtered: overlap always means entailment",
                "original+biased-lexical-overlap": "original, filtered: overlap always means entailment"}
HEURISTIC_SLICE = re.compile(r"^heuristic=([^,]+),label=([^,]+)$")
# line style and marker per evaluation line of the main figure: (general all, challenge all, blindspot)
EVAL_STYLES = [("-", "o"), (":", "s"), ("-.", "^")]
SOURCE_ORDER = ["original", "synthetic"]


def pick_eval_sets(df: pd.DataFrame, mnli_set: str | None = None, hans_set: str | None = None) -> tuple[str, str]:
    """The general (MNLI-matched) and challenge (HANS) set names: given, or found by name."""
    names = sorted(df["eval_set"].unique())

    def choose(given: str | None, found: list[str], what: str, option: str) -> str:
        if given is not None and given not in names:
            raise BlindspotError(f"{option} {given!r}: not an evaluation set of this run (have {names})")
        if given is None and len(found) != 1:
            raise BlindspotError(f"cannot tell which set is {what} among {names}; name it with {option}")
        return given or found[0]

    # the challenge set is the one scored per heuristic (evaluation does that for HANS-like sets)
    by_heuristic = sorted(df.loc[df["slice"].str.startswith("heuristic="), "eval_set"].unique())
    hans = choose(hans_set, by_heuristic or [n for n in names if "hans" in n.lower()],
                  "the challenge set (HANS)", "--hans-set")
    general = [n for n in names if n != hans]
    matched = [n for n in general if "matched" in n.lower() and "mismatched" not in n.lower()]
    return choose(mnli_set, matched or general, "the general set (MNLI matched)", "--mnli-set"), hans


def main_lines(general: str, challenge: str) -> list[tuple[str, str, str]]:
    """(eval_set, slice, label) of the main figure's three evaluation lines."""
    return [(general, "all", f"{general} (all)"), (challenge, "all", f"{challenge} (all)"),
            (challenge, BLINDSPOT_SLICE, f"{challenge} lexical overlap, non-entailment (the blindspot)")]


def table_lines(df: pd.DataFrame, general: str, challenge: str) -> list[tuple[str, str, str]]:
    """The results table's columns: the main figure's lines, then the reliance measure if present."""
    lines = main_lines(general, challenge)
    if ((df["eval_set"] == challenge) & (df["slice"] == RELIANCE_SLICE)).any():
        lines.append((challenge, RELIANCE_SLICE, "reliance on lexical overlap (0 = none, 1 = full)"))
    return lines


def _sources(agg: pd.DataFrame) -> list[str]:
    """Augmentation sources in display order: original, synthetic, then the rest sorted."""
    found = {s for s in agg["source"] if s != START and parse_mixture(s) is None}  # mixtures: their own figure
    return [s for s in SOURCE_ORDER if s in found] + sorted(found - set(SOURCE_ORDER))


def display_order(df: pd.DataFrame) -> pd.DataFrame:
    """Rows by start size, aug size, then start / original / synthetic / the rest."""
    rank = {s: i for i, s in enumerate([START] + SOURCE_ORDER)}
    key = df["source"].map(lambda s: (rank.get(s, len(rank)), s))
    return df.assign(_k=key).sort_values(["start_size", "aug_size", "_k"]).drop(columns="_k").reset_index(drop=True)


def _colours(sources: list[str]) -> dict[str, str]:
    return {s: f"C{i}" for i, s in enumerate(sources)}


def _series(agg: pd.DataFrame, start: int, source: str, eval_set: str, slice_name: str) -> pd.DataFrame:
    """x = aug size (0 = the starting point shared by every source), y = mean accuracy, interval."""
    sel = agg[(agg["start_size"] == start) & (agg["eval_set"] == eval_set) & (agg["slice"] == slice_name)
              & ((agg["source"] == source) | (agg["source"] == START))]
    return sel.sort_values("aug_size")[["aug_size", "accuracy", "ci_low", "ci_high"]]


def _errorbar(ax, s: pd.DataFrame, x, colour: str, marker: str, **kw) -> None:
    """Markers with 95 % interval bars, no connecting line."""
    below, above = (s["accuracy"] - s["ci_low"]).clip(lower=0), (s["ci_high"] - s["accuracy"]).clip(lower=0)
    ax.errorbar(x, s["accuracy"], yerr=[below, above],
                color=colour, linestyle="none", marker=marker, markersize=4, capsize=2, elinewidth=0.8, **kw)


def _plot_sources(ax, agg: pd.DataFrame, start: int, sources: list[str], eval_set: str, slice_name: str,
                  style: tuple[str, str], dodge: float) -> None:
    """One errorbar line per source from the shared starting point (black, at x=0) on `ax`.

    Augmented points are nudged sideways per source so that their intervals do not overlap.
    """
    colours = _colours(sources)
    for i, source in enumerate(sources):
        s = _series(agg, start, source, eval_set, slice_name)
        x = s["aug_size"] + (s["aug_size"] > 0) * (i - (len(sources) - 1) / 2) * dodge
        ax.plot(x, s["accuracy"], color=colours[source], linestyle=style[0], linewidth=1.3)
        aug = s["aug_size"] > 0
        _errorbar(ax, s[aug], x[aug], colours[source], style[1])
    s = _series(agg, start, START, eval_set, slice_name)
    _errorbar(ax, s, s["aug_size"], "k", style[1], zorder=3)


def _panel_axes(ax, aug_sizes: list[int], title: str, reliance: bool = False) -> None:
    ax.axhline(0.0 if reliance else 0.5, color="0.5", linestyle="--", linewidth=0.8, zorder=0)
    if not reliance:
        ax.set_ylim(0, 1)
    ax.set_xticks(aug_sizes)
    ax.set_xticklabels([f"{a:,}" for a in aug_sizes], rotation=30, fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _start_title(start: int) -> str:
    return "start: untrained (0 examples)" if start == 0 else f"start: {start:,} examples"


def _reliance_panel(ax, agg: pd.DataFrame, start: int, sources: list[str], challenge: str, aug_sizes: list[int],
                    dodge: float) -> None:
    """The reliance measure of one starting point: a line per source, 0 = no reliance."""
    _plot_sources(ax, agg, start, sources, challenge, RELIANCE_SLICE, ("-", "D"), dodge)
    _panel_axes(ax, aug_sizes, f"{_start_title(start)}: reliance on lexical overlap", reliance=True)
    sel = agg[(agg["slice"] == RELIANCE_SLICE) & (agg["eval_set"] == challenge)]
    ax.set_ylim(min(-0.1, float(sel["ci_low"].min()) - 0.05), max(1.0, float(sel["ci_high"].max())) + 0.05)


def build_main_figure(df: pd.DataFrame, general: str | None = None, challenge: str | None = None) -> Figure:
    """The paper's figure: a panel per starting point, accuracy against augmentation size; below each,
    when the results carry it, a panel of the reliance measure (blindspot.reliance)."""
    agg = aggregate_seeds(df)
    if general is None or challenge is None:
        general, challenge = pick_eval_sets(df, general, challenge)
    starts, sources = sorted(agg["start_size"].unique()), _sources(agg)
    aug_sizes = sorted(agg["aug_size"].unique())
    dodge = 0.02 * max(aug_sizes + [1])
    ncols = min(len(starts), 3)
    nrows = -(-len(starts) // ncols)
    reliance = ((agg["slice"] == RELIANCE_SLICE) & (agg["eval_set"] == challenge)).any()
    per = 2 if reliance else 1  # figure rows per row of starting points
    fig, axes = plt.subplots(nrows * per, ncols, figsize=(max(4.4 * ncols, 9.0), (3.4 + 2.6 * (per - 1)) * nrows + 1.6),
                             squeeze=False, layout="constrained", height_ratios=[1.3, 1] * nrows if reliance else None)
    lines = main_lines(general, challenge)
    for i, start in enumerate(starts):
        ax = axes[(i // ncols) * per, i % ncols]
        for (eval_set, slice_name, _), style in zip(lines, EVAL_STYLES):
            _plot_sources(ax, agg, start, sources, eval_set, slice_name, style, dodge)
        _panel_axes(ax, aug_sizes, f"{_start_title(start)}: accuracy")
        if i % ncols == 0:
            ax.set_ylabel("accuracy (mean over seeds, 95 % interval)", fontsize=8)
        if reliance:
            ax = axes[(i // ncols) * per + 1, i % ncols]
            _reliance_panel(ax, agg, start, sources, challenge, aug_sizes, dodge)
            if i % ncols == 0:
                ax.set_ylabel("reliance: P(says entailment | overlap)\n- P(says entailment | no overlap)", fontsize=7)
        ax.set_xlabel("augmentation examples added (0 = starting point)", fontsize=8)
    for i in range(len(starts), nrows * ncols):
        for r in range(per):
            fig.delaxes(axes[(i // ncols) * per + r, i % ncols])
    fig.suptitle("Accuracy and the lexical-overlap blindspot after training on more data from each source",
                 fontsize=10)
    handles = [Line2D([], [], color=c, linewidth=2, label=SOURCE_NAMES.get(s, s)) for s, c in _colours(sources).items()]
    handles.append(Line2D([], [], color="k", marker="o", linestyle="none", label="starting point"))
    handles += [Line2D([], [], color="k", linestyle=ls, marker=m, label=lab)
                for (_, _, lab), (ls, m) in zip(lines, EVAL_STYLES)]
    handles.append(Line2D([], [], color="0.5", linestyle="--", linewidth=0.8,
                          label="chance on HANS (0.5); no reliance (0)" if reliance else "chance (HANS)"))
    if reliance:
        handles.append(Line2D([], [], color="k", linestyle="-", marker="D", label="reliance on lexical overlap"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), fontsize=8,
               frameon=False)
    return fig


def heuristic_slices(df: pd.DataFrame, challenge: str) -> list[str]:
    """The challenge set's heuristic x gold-label slices, e.g. heuristic=subsequence,label=entailment."""
    found = {s for s in df.loc[df["eval_set"] == challenge, "slice"] if HEURISTIC_SLICE.match(s)}
    return sorted(found)


def build_heuristic_figure(df: pd.DataFrame, challenge: str) -> Figure:
    """Challenge-set accuracy per heuristic x gold label: a row per starting point, a column per slice."""
    agg = aggregate_seeds(df[df["eval_set"] == challenge])
    slices, starts, sources = heuristic_slices(df, challenge), sorted(agg["start_size"].unique()), _sources(agg)
    if not slices:
        raise BlindspotError(f"set {challenge!r} has no heuristic=...,label=... slices to plot")
    aug_sizes = sorted(agg["aug_size"].unique())
    fig, axes = plt.subplots(len(starts), len(slices), figsize=(2.5 * len(slices), 2.3 * len(starts) + 0.8),
                             sharey=True, squeeze=False, layout="constrained")
    for r, start in enumerate(starts):
        for c, slice_name in enumerate(slices):
            ax = axes[r, c]
            _plot_sources(ax, agg, start, sources, challenge, slice_name, ("-", "o"), 0.02 * max(aug_sizes + [1]))
            h, lab = HEURISTIC_SLICE.match(slice_name).groups()
            _panel_axes(ax, aug_sizes, f"{h.replace('_', ' ')}\n{lab}" if r == 0 else "")
        axes[r, 0].set_ylabel(f"{_start_title(start)}\naccuracy", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("augmentation examples", fontsize=7)
    handles = [Line2D([], [], color=c, marker="o", label=s) for s, c in _colours(sources).items()]
    handles.append(Line2D([], [], color="k", marker="o", linestyle="none", label="starting point"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """The figure as a PNG at `path` (written atomically), closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
