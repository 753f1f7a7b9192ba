"""Figures, tables and paired tests of a finished run, as Markdown and self-contained HTML.

    blindspot report RUN_DIR [--out DIR] [--mnli-set NAME] [--hans-set NAME]

Reads only files: RUN_DIR/results/index.json (or the saved results table), the evaluations'
metrics.json and predictions, RUN_DIR/audit.md when present, and the generate and filter stages'
directories (samples to browse: blindspot.report_samples). Writes into RUN_DIR/report/:
figure_main.png (the paper's figure), figure_heuristics.png, figure_rounds.png (repeated
generations, blindspot.rounds_report, when the run has them), figure_mixtures.png (with
augment.synthetic_fraction; blindspot.mixture_report), paired_tests.csv, report.md,
report.html (one file that loads nothing: see CSP) and a DONE marker.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot (rounds_report does): the report draws headless
import pandas as pd  # noqa: E402

from blindspot.costs import cost_table  # noqa: E402
from blindspot.crossmodel import generator_column, models_line  # noqa: E402
from blindspot.errors import BlindspotError  # noqa: E402
from blindspot.findings import findings_blocks  # noqa: E402
from blindspot.mixture_report import mixture_blocks  # noqa: E402
from blindspot.rounds_report import rounds_blocks  # noqa: E402
from blindspot.results import (AGGREGATED_CSV, RESULTS_CSV, RESULTS_PARQUET, aggregate_seeds,  # noqa: E402
                               comparison_pairs, load_index, load_results, paired_tests)
from blindspot.report_figures import (BLINDSPOT_SLICE, RELIANCE_SLICE, build_heuristic_figure,  # noqa: E402
                                      build_main_figure, display_order, heuristic_slices, pick_eval_sets,
                                      save_png, table_lines)
from blindspot.report_samples import STYLE as SAMPLES_STYLE, sample_blocks  # noqa: E402
from blindspot.storage import DONE, atomic_write_text, mark_done  # noqa: E402

log = logging.getLogger(__name__)

# report.html loads nothing and runs nothing: figures are data: URLs, the one stylesheet is inline
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


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
    return display_order(out)


def heuristic_table(agg: pd.DataFrame, challenge: str, slices: list[str]) -> pd.DataFrame:
    """Mean challenge-set accuracy per condition (rows) and heuristic x label (columns)."""
    sel = agg[(agg["eval_set"] == challenge) & agg["slice"].isin(slices)]
    wide = sel.pivot_table(index=["start_size", "source", "aug_size"], columns="slice", values="accuracy")
    wide.columns = [c.replace("heuristic=", "").replace(",label=", " / ") for c in wide.columns]
    return display_order(wide.reset_index().round(3))


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
            ("table", display_order(wide))]


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
    save_png(build_main_figure(df, general, challenge), out_dir / "figure_main.png")
    blocks: list[tuple] = [
        ("h1", f"blindspot report: {index.name if index else run_dir.name}"),
        *([("p", models_line(index.config))] if index else []),
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
        ("table", generator_column(results_table(agg, lines), index.config if index else {}))]
    paired, tests = _paired_blocks(df, run_dir, lines)
    blocks += findings_blocks(tests, agg, general, challenge, BLINDSPOT_SLICE)
    blocks += _reliance_blocks(agg, challenge)
    blocks += rounds_blocks(run_dir, agg, lines, out_dir, save_png)  # repeated generations, if any
    blocks += mixture_blocks(agg, index.config if index else {}, lines,
                             lambda fig, name: save_png(fig, out_dir / name))
    slices = heuristic_slices(df, challenge)
    if slices:
        save_png(build_heuristic_figure(df, challenge), out_dir / "figure_heuristics.png")
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
