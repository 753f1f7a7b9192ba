"""Figures, tables and paired tests of a finished run, as Markdown and self-contained HTML.

    blindspot report RUN_DIR [--out DIR] [--mnli-set NAME] [--hans-set NAME]

Reads only files: RUN_DIR/results/index.json (or the saved results table), the evaluations'
metrics.json and predictions, RUN_DIR/audit.md when present, and the generate and filter stages'
directories (samples to browse: blindspot.report_samples). Writes into RUN_DIR/report/:
figure_main.png (the paper's figure), figure_heuristics.png, figure_rounds.png (repeated
generations, blindspot.rounds_report, when the run has them), paired_tests.csv, report.md,
report.html (one file that loads nothing: see CSP) and a DONE marker.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from blindspot.costs import cost_table  # noqa: E402
from blindspot.errors import BlindspotError  # noqa: E402
from blindspot.findings import findings_blocks  # noqa: E402
from blindspot.rounds_report import rounds_blocks  # noqa: E402
from blindspot.results import (AGGREGATED_CSV, RESULTS_CSV, RESULTS_PARQUET, START, aggregate_seeds,  # noqa: E402
                               comparison_pairs, load_index, load_results, paired_tests)
from blindspot.report_samples import STYLE as SAMPLES_STYLE, sample_blocks  # noqa: E402
from blindspot.storage import DONE, atomic_write_bytes, atomic_write_text, mark_done  # noqa: E402

log = logging.getLogger(__name__)

BLINDSPOT_SLICE = "heuristic=lexical_overlap,label=non-entailment"
RELIANCE_SLICE = "reliance:heuristic=lexical_overlap"  # blindspot.reliance, beside the paper's number
# report.html loads nothing and runs nothing: figures are data: URLs, the one stylesheet is inline
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
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
    found = set(agg["source"]) - {START}
    return [s for s in SOURCE_ORDER if s in found] + sorted(found - set(SOURCE_ORDER))


def _display_order(df: pd.DataFrame) -> pd.DataFrame:
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


def _save_png(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _fmt_interval(row: pd.Series) -> str:
    return f"{row['accuracy']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def results_table(agg: pd.DataFrame, lines: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Wide table: a row per condition, a column per evaluation line: mean [interval]."""
    out = None
    for eval_set, slice_name, label in lines:
        sel = agg[(agg["eval_set"] == eval_set) & (agg["slice"] == slice_name)].copy()
        sel[label] = sel.apply(_fmt_interval, axis=1) if len(sel) else []
        sel = sel[["start_size", "source", "aug_size", "n_seeds", label]]
        out = sel if out is None else out.merge(sel, on=["start_size", "source", "aug_size", "n_seeds"], how="outer")
    return _display_order(out)


def heuristic_table(agg: pd.DataFrame, challenge: str, slices: list[str]) -> pd.DataFrame:
    """Mean challenge-set accuracy per condition (rows) and heuristic x label (columns)."""
    sel = agg[(agg["eval_set"] == challenge) & agg["slice"].isin(slices)]
    wide = sel.pivot_table(index=["start_size", "source", "aug_size"], columns="slice", values="accuracy")
    wide.columns = [c.replace("heuristic=", "").replace(",label=", " / ") for c in wide.columns]
    return _display_order(wide.reset_index().round(3))


def paired_table(tests: pd.DataFrame) -> pd.DataFrame:
    """The paired tests for display: difference with interval, discordant counts, p and its test."""
    t = tests.copy()
    t["comparison"] = t["source_a"] + " vs " + t["source_b"]
    t["diff [95 % CI]"] = t.apply(lambda r: f"{r['diff']:+.3f} [{r['diff_low']:+.3f}, {r['diff_high']:+.3f}]", axis=1)
    p = t["p_mcnemar"].where(t["p_mcnemar"].notna(), t["p_bootstrap"]) if "p_bootstrap" in t else t["p_mcnemar"]
    t["p"] = p.map(lambda v: f"{v:.3g}")
    t["test"] = t["test"] if "test" in t else "McNemar"
    t[["acc_a", "acc_b"]] = t[["acc_a", "acc_b"]].astype(float).round(3)
    for col in ("b", "c"):
        t[col] = t[col].map(lambda v: "" if pd.isna(v) else str(int(v)))
    return t[["comparison", "start_size", "aug_size", "eval_set", "slice", "seed", "n", "acc_a", "acc_b",
              "diff [95 % CI]", "b", "c", "p", "test"]]


def md_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    cell = lambda v: "" if pd.isna(v) else str(v).replace("|", "\\|")  # noqa: E731
    rows = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    rows += ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(rows)


def _inline_html(text: str) -> str:
    """Escape, then render Markdown `code` and **bold** spans."""
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def render(blocks: list[tuple], out_dir: Path) -> tuple[str, str]:
    """Markdown and self-contained HTML (figures embedded as base64) from the same blocks."""
    md, body = [], []
    for kind, *val in blocks:
        if kind in ("h1", "h2", "h3"):
            md.append("#" * int(kind[1]) + " " + val[0])
            body.append(f"<{kind}>{_inline_html(val[0])}</{kind}>")
        elif kind == "p":
            md.append(val[0])
            body.append(f"<p>{_inline_html(val[0])}</p>")
        elif kind == "table":
            md.append(md_table(val[0]))
            body.append(val[0].to_html(index=False, na_rep="", border=0))
        elif kind == "img":
            md.append(f"![{val[1]}]({val[0]})")
            data = base64.b64encode((out_dir / val[0]).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(val[1])}" src="data:image/png;base64,{data}"></p>')
        elif kind == "raw":  # Markdown from another stage: verbatim in report.md, preformatted in HTML
            md.append(val[0].rstrip())
            body.append(f"<pre>{html.escape(val[0])}</pre>")
        elif kind == "pre":
            md.append("```\n" + val[0].rstrip() + "\n```")
            body.append(f"<pre>{html.escape(val[0])}</pre>")
        elif kind == "html":  # (HTML built as inert text by blindspot.report_samples, its Markdown)
            md.append(val[1])
            body.append(val[0])
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
             "pre{background:#f4f4f4;padding:0.5em;overflow-x:auto}" + SAMPLES_STYLE)
    page = (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><meta http-equiv='Content-Security-Policy' "
            f"content=\"{CSP}\"><title>blindspot report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    return "\n\n".join(md) + "\n", page


QUESTION = (
    "Does fine-tuning a model on synthetic data generated by the same kind of model reinforce the "
    "heuristics it already relies on (Zhang & Pavlick 2025, arXiv 2502.07164)? Each starting point "
    "(a classifier trained on n general-task examples) is trained further on m examples from one source: "
    "original data, synthetic data from the generator, or synthetic data filtered so that a heuristic "
    "always works (biased). If synthetic data reinforces the blindspot, the synthetic line falls below the "
    "original line on the blindspot number; the biased line shows what a reinforcing source looks like.")


def _blindspot_text(challenge: str) -> str:
    return (f"**The blindspot number** is accuracy on `{challenge}`, slice `{BLINDSPOT_SLICE}`: pairs whose "
            "hypothesis words all occur in the premise but which are not entailed. A model that follows the "
            "lexical-overlap heuristic answers entailment on them and scores near 0; the dashed line at 0.5 is "
            "chance on the two-way challenge set.")


RELIANCE_TEXT = (
    "**Reliance on a heuristic** (an addition to the paper) separates \"relies on the heuristic\" from \"says "
    "entailment more often\": on gold non-entailment pairs, the rate of entailment answers where the heuristic "
    "holds (the challenge set) minus the rate where the hypothesis' words do not all occur in the premise "
    "(the general set). A model that always gives the same answer scores 0; one that answers entailment "
    "exactly when the words overlap scores 1. The paper's number, by contrast, also falls when a model "
    "simply answers entailment to everything.")


def _reliance_blocks(agg: pd.DataFrame, challenge: str) -> list[tuple]:
    """A table of the reliance measure for every heuristic (mean over seeds [95 % interval])."""
    from blindspot.reliance import SLICE_PREFIX

    sel = agg[(agg["eval_set"] == challenge) & agg["slice"].str.startswith(SLICE_PREFIX)].copy()
    if sel.empty:
        return []
    sel["value"] = sel.apply(_fmt_interval, axis=1)
    sel["heuristic"] = sel["slice"].str.removeprefix(SLICE_PREFIX)
    wide = sel.pivot_table(index=["start_size", "source", "aug_size", "n_seeds"], columns="heuristic",
                           values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    return [("h2", "Reliance on each heuristic"),
            ("p", "Reliance per heuristic, mean over seeds [95 % interval: with one seed, Newcombe's interval "
                  "for two independent proportions; with more, those intervals plus seed-to-seed variation, "
                  "as in the results table]. 0 = no reliance; 1 = "
                  "entailment exactly when the heuristic holds. The baseline (no lexical overlap) is shared by "
                  "all three heuristics."),
            ("table", _display_order(wide))]


def _paired_blocks(df: pd.DataFrame, run_dir: Path, lines: list[tuple[str, str, str]]) -> tuple[list, pd.DataFrame]:
    """Report blocks and the raw table of the paired tests (same seed, same examples)."""
    tests = paired_tests(df, run_dir, [(e, s) for e, s, _ in lines])
    blocks: list[tuple] = [("h2", "Paired tests"), ("p", (
        "For every start size x augmentation size, two conditions trained with the same seed are compared "
        "on the same examples: `diff` = accuracy(a) - accuracy(b) with a 95 % interval for a paired "
        "difference, `b` = examples only a gets right, `c` = examples only b gets right, `p` = exact "
        "McNemar test. For the reliance measure, `acc_a` / `acc_b` are the two reliances and `diff` their "
        "difference, with a seeded paired bootstrap over examples (2,000 replicates, challenge and baseline "
        "pairs resampled independently, the same draws for both conditions; percentile interval, p = twice "
        "the smaller tail). No correction for multiple comparisons is applied."))]
    if tests.empty:
        pairs = comparison_pairs(df["source"].unique())
        blocks.append(("p", f"No paired tests: source pairs found {pairs or 'none'} (needs synthetic and "
                            "original, or synthetic and a biased-* source)."))
    for a, b in comparison_pairs(df["source"].unique()):
        part = tests[(tests["source_a"] == a) & (tests["source_b"] == b)]
        blocks += [("h3", f"{a} vs {b}"), ("table", paired_table(part))]
    return blocks, tests


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, mnli_set: str | None = None,
                 hans_set: str | None = None) -> Path:
    """Write the figures, paired tests and report.md / report.html of a finished run; returns out_dir."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    (out_dir / DONE).unlink(missing_ok=True)  # an older report here is no longer complete
    df = load_results(run_dir)
    if df.empty:
        raise BlindspotError(f"{run_dir}: the results index lists no finished evaluations")
    index = load_index(run_dir) if (run_dir / "results" / "index.json").exists() else None
    general, challenge = pick_eval_sets(df, mnli_set, hans_set)
    lines, agg = table_lines(df, general, challenge), aggregate_seeds(df)
    _save_png(build_main_figure(df, general, challenge), out_dir / "figure_main.png")
    blocks: list[tuple] = [
        ("h1", f"blindspot report: {index.name if index else run_dir.name}"),
        *([("h2", "Incomplete run"), ("p", f"{len(index.missing)} condition(s) of the grid did not finish and are "
                                            "not in the tables or figures (see the run's log for why; rerun "
                                            "`blindspot run` to resume): " + "; ".join(index.missing) + ".")]
          if index and index.missing else []),
        ("h2", "The question"), ("p", QUESTION), ("p", _blindspot_text(challenge)),
        *([("p", RELIANCE_TEXT)] if any(sl == RELIANCE_SLICE for _, sl, _ in lines) else []),
        ("h2", "Main figure"), ("img", "figure_main.png", "accuracy against augmentation size"),
        ("p", "One panel per starting point; x = augmentation examples (0 = the starting point itself, black, "
              "shared by every source); colour = source; line style = evaluation; bars = 95 % intervals. "
              "Points of different sources are nudged sideways so that their intervals do not overlap. "
              "Lower panels (when present): the reliance measure, where 0 (dashed) means the model answers "
              "entailment no more often on overlapping non-entailment pairs than on non-overlapping ones."),
        ("h2", "Results"),
        ("p", "Mean accuracy over seeds [95 % interval]. With one seed: that run's Wilson interval (which "
              "examples were drawn). With 2 or more seeds, both sources of error: the seeds' own intervals "
              "(they share the evaluation examples, so these do not shrink with more seeds) and seed-to-seed "
              "variation (z x sd / sqrt(seeds)), added in quadrature. With 2 or 3 seeds the seed-to-seed part is "
              "itself poorly estimated; the t-interval over seeds alone (very wide with 2 seeds) is in "
              f"`{AGGREGATED_CSV}` as `t_low` / `t_high`. Full tables: `{RESULTS_CSV}`, "
              f"`{RESULTS_PARQUET}` (one row per seed and slice), `{AGGREGATED_CSV}` (mean over seeds)."),
        ("table", results_table(agg, lines))]
    paired, tests = _paired_blocks(df, run_dir, lines)
    blocks += findings_blocks(tests, agg, general, challenge, BLINDSPOT_SLICE)
    blocks += _reliance_blocks(agg, challenge)
    blocks += rounds_blocks(run_dir, agg, lines, out_dir, _save_png)  # repeated generations, if any
    slices = heuristic_slices(df, challenge)
    if slices:
        _save_png(build_heuristic_figure(df, challenge), out_dir / "figure_heuristics.png")
        blocks += [("h2", f"{challenge} by heuristic and gold label"),
                   ("img", "figure_heuristics.png", "accuracy per heuristic and gold label"),
                   ("table", heuristic_table(agg, challenge, slices))]
    atomic_write_text(out_dir / "paired_tests.csv", tests.to_csv(index=False))
    blocks += paired
    if (run_dir / "audit.md").exists():
        audit = re.sub(r"^(#+) ", r"##\1 ", (run_dir / "audit.md").read_text(), flags=re.M)  # below our h2
        blocks += [("h2", "Data audit"), ("raw", audit)]
    blocks += sample_blocks(run_dir)
    costs = cost_table(run_dir)
    if not costs.empty:
        blocks += [("h2", "What each stage cost"),
                   ("p", "Wall time, throughput (examples/s of the stage's own work) and MFU: model FLOPs per "
                         "second over the device's peak (on CPU a matmul rate measured on this machine; see "
                         "blindspot.mfu for the FLOP count)."), ("table", costs)]
    if index is not None:
        blocks += [("h2", "Configuration"), ("pre", json.dumps(index.config, indent=2, sort_keys=True))]
    md, page = render(blocks, out_dir)
    atomic_write_text(out_dir / "report.md", md)
    atomic_write_text(out_dir / "report.html", page)
    mark_done(out_dir)
    log.info("report: %d conditions, %d paired tests -> %s", len(agg.drop_duplicates(["start_size", "source",
             "aug_size"])), len(tests), out_dir / "report.html")
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="Run directory written by `blindspot run`.")
    parser.add_argument("--out", type=Path, default=None, help="Output directory; None means RUN_DIR/report.")
    parser.add_argument("--mnli-set", default=None,
                        help="Evaluation set drawn as the general task; None picks the one named *matched*.")
    parser.add_argument("--hans-set", default=None,
                        help="Evaluation set drawn as the challenge set; None picks the one scored per heuristic.")


def main(args: argparse.Namespace) -> int:
    out = write_report(args.run_dir, args.out, args.mnli_set, args.hans_set)
    print(out / "report.html")
    return 0
