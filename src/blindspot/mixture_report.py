"""The report's mixtures section: accuracy and the blindspot against the synthetic fraction (blindspot.mixture).

A figure (a column per starting point; top: general-set accuracy and the paper's blindspot number,
HANS lexical overlap non-entailment; below, when the results carry it, the reliance measure of
blindspot.reliance), x = the share f of the augmentation that is synthetic, a line per mixture
source x size, bars = 95 % intervals over seeds (results.aggregate_seeds: stats.seed_interval), and
a table of the same numbers. f = 0 is the `original` condition and f = 1 the mixture source's own,
at the same size. Nothing here when the run's config has no `augment.synthetic_fraction`.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from blindspot.mixture import mixture_name
from blindspot.results import START

FIGURE = "figure_mixtures.png"


def mixture_axis(config: dict) -> tuple[list[float], list[str], list[int]] | None:
    """(fractions, mixture sources, sizes) of a run's config (JSON), None without mixtures."""
    aug = config.get("augment") or {}
    if not aug.get("synthetic_fraction"):
        return None
    return (sorted(aug["synthetic_fraction"]), list(aug.get("mixture_sources") or ["synthetic"]),
            list(aug.get("mixture_sizes") or aug.get("sizes") or []))


def condition_source(source: str, fraction: float) -> str:
    """The results table's source of the mixture of `source` at `fraction` (f = 0 / 1: the pure sources)."""
    return "original" if fraction == 0 else source if fraction == 1 else mixture_name(source, fraction)


def mixture_points(agg: pd.DataFrame, axis, eval_set: str, slice_name: str) -> pd.DataFrame:
    """start_size, mixture_source, aug_size, fraction, n_seeds, accuracy, ci_low, ci_high of each point."""
    fractions, sources, sizes = axis
    sel = agg[(agg["eval_set"] == eval_set) & (agg["slice"] == slice_name)]
    rows = []
    for source in sources:
        for f in fractions:
            got = sel[(sel["source"] == condition_source(source, f)) & sel["aug_size"].isin(sizes)]
            for r in got.to_dict("records"):
                rows.append({"start_size": r["start_size"], "mixture_source": source, "aug_size": r["aug_size"],
                             "fraction": f, **{k: r[k] for k in ("n_seeds", "accuracy", "ci_low", "ci_high")}})
    cols = ["start_size", "mixture_source", "aug_size", "fraction", "n_seeds", "accuracy", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols).sort_values(cols[:4], ignore_index=True)


def build_mixture_figure(agg: pd.DataFrame, axis, lines: list[tuple[str, str, str]],
                         reliance: tuple[str, str, str] | None) -> Figure:
    """`lines`: (eval_set, slice, label) of the top panels (general all, the blindspot); `reliance`: the
    reliance line of the lower panels, or None."""
    import matplotlib.pyplot as plt

    fractions, sources, sizes = axis
    starts = sorted(agg["start_size"].unique())
    rows = 2 if reliance else 1
    fig, axes = plt.subplots(rows, len(starts), figsize=(max(4.4 * len(starts), 6.5), 3.4 * rows + 1.4),
                             squeeze=False, layout="constrained")
    keys = [(s, m) for s in sources for m in sizes]
    colours = {k: f"C{i}" for i, k in enumerate(keys)}
    styles = [("-", "o"), ("-.", "^")]
    dodge = 0.012 * (len(keys) - 1)
    panels = [(0, lines, styles)] + ([(1, [reliance], [("-", "D")])] if reliance else [])
    for c, start in enumerate(starts):
        for r, panel_lines, panel_styles in panels:
            ax = axes[r, c]
            for (eval_set, slice_name, _), (ls, marker) in zip(panel_lines, panel_styles):
                pts = mixture_points(agg[agg["start_size"] == start], axis, eval_set, slice_name)
                for i, key in enumerate(keys):
                    p = pts[(pts["mixture_source"] == key[0]) & (pts["aug_size"] == key[1])]
                    if p.empty:  # an incomplete run: the report lists what is missing
                        continue
                    x = p["fraction"] + (i - (len(keys) - 1) / 2) * dodge
                    below = (p["accuracy"] - p["ci_low"]).clip(lower=0)
                    above = (p["ci_high"] - p["accuracy"]).clip(lower=0)
                    ax.errorbar(x, p["accuracy"], yerr=[below, above], color=colours[key], linestyle=ls,
                                marker=marker, markersize=4, capsize=2, elinewidth=0.8, linewidth=1.2)
                base = agg[(agg["start_size"] == start) & (agg["source"] == START) & (agg["eval_set"] == eval_set)
                           & (agg["slice"] == slice_name)]
                if len(base):
                    ax.axhline(float(base["accuracy"].iloc[0]), color="k", linestyle=ls, linewidth=0.7, alpha=0.5)
            ax.axhline(0.0 if r else 0.5, color="0.5", linestyle="--", linewidth=0.8, zorder=0)
            if not r:
                ax.set_ylim(0, 1)
            ax.set_xticks(fractions)
            ax.set_xticklabels([f"{f:g}" for f in fractions], fontsize=7)
            what = "reliance on lexical overlap" if r else "accuracy"
            start_text = "untrained start" if start == 0 else f"start: {start:,} examples"
            ax.set_title(f"{start_text}: {what}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            ax.set_xlabel("synthetic share of the augmentation (f)", fontsize=8)
    axes[0, 0].set_ylabel("accuracy (mean over seeds, 95 % interval)", fontsize=8)
    if reliance:
        axes[1, 0].set_ylabel("reliance (0 = none)", fontsize=8)
    fig.suptitle("Mixtures: a fixed-size augmentation, a share f synthetic and the rest original", fontsize=10)
    handles = [Line2D([], [], color=colours[k], linewidth=2, label=f"{k[0]} with original, m = {k[1]:,}")
               for k in keys]
    handles += [Line2D([], [], color="k", linestyle=ls, marker=mk, label=lab)
                for (_, _, lab), (ls, mk) in zip(lines + ([reliance] if reliance else []), styles + [("-", "D")])]
    handles.append(Line2D([], [], color="k", linewidth=0.7, alpha=0.5, label="the starting point (same line style)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3), fontsize=8, frameon=False)
    return fig


def mixture_table(agg: pd.DataFrame, axis, lines: list[tuple[str, str, str]]) -> pd.DataFrame:
    """A row per starting point x mixture source x size x fraction, a column per line: mean [interval]."""
    out = None
    for eval_set, slice_name, label in lines:
        p = mixture_points(agg, axis, eval_set, slice_name)
        p[label] = [f"{a:.3f} [{lo:.3f}, {hi:.3f}]" for a, lo, hi in zip(p["accuracy"], p["ci_low"], p["ci_high"])]
        p = p[["start_size", "mixture_source", "aug_size", "fraction", "n_seeds", label]]
        out = p if out is None else out.merge(p, on=list(p.columns[:5]), how="outer")
    return out.sort_values(["start_size", "mixture_source", "aug_size", "fraction"], ignore_index=True)


def mixture_blocks(agg: pd.DataFrame, config: dict, lines: list[tuple[str, str, str]], save_png) -> list[tuple]:
    """The report blocks of the mixtures section ([] without mixtures); `lines` are the results table's
    (general all, challenge all, the blindspot[, reliance]); `save_png(fig, name)` writes a figure."""
    axis = mixture_axis(config)
    if axis is None:
        return []
    general, blindspot = lines[0], lines[2]
    reliance = next((ln for ln in lines[3:] if ln[1].startswith("reliance:")), None)
    save_png(build_mixture_figure(agg, axis, [general, blindspot], reliance), FIGURE)
    fractions, sources, sizes = axis
    return [("h2", "Mixtures of synthetic and original data"),
            ("p", f"Each starting point trained further on m label-balanced examples (m = "
                  f"{', '.join(f'{m:,}' for m in sizes)}), of which a share f is from "
                  f"{' / '.join(f'`{s}`' for s in sources)} and the rest original (f = "
                  f"{', '.join(f'{f:g}' for f in fractions)}; f = 0 is the `original` condition, f = 1 the "
                  "synthetic source's own; the results table names a mixture `mixF:SOURCE`). Per label, "
                  "round(f x m_label) synthetic examples, kept exact by largest remainder (blindspot.mixture). "
                  "Mean over seeds, 95 % intervals as in the results table; thin black lines: the starting "
                  "point."),
            ("img", FIGURE, "accuracy and the blindspot against the synthetic fraction"),
            ("table", mixture_table(agg, axis, [general, blindspot] + ([reliance] if reliance else [])))]
