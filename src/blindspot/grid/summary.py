"""The few lines that end `blindspot run`: what the run found, where the report is, what failed.

    python -c "from blindspot.grid.summary import run_summary; print('\\n'.join(run_summary('runs/smoke')))"

Computed from the run's files only (results/results_aggregated.csv, the predictions named in
results/results.csv, results/index.json), like the report. One line per starting point: the
blindspot number (the challenge set's lexical-overlap non-entailment slice) and the general
set's accuracy (MNLI matched), before augmentation ("before") and for each source at the
largest augmentation size, as mean [95 % interval]; then the paired test that matters (the
biased source against original data, else synthetic against original) on the blindspot slice,
exact McNemar p per seed; where the report and the log are; which conditions did not finish.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from blindspot.errors import BlindspotError
from blindspot.mixture import parse_mixture
from blindspot.results import AGGREGATED_CSV, INDEX, RESULTS_CSV, START, load_index, paired_tests


def _cell(agg: pd.DataFrame, start: int, source: str, aug: int, eval_set: str, slice_name: str) -> str:
    """'20.0 [8.1-41.6]' (percent) for one condition, or '-' if it is not in the table."""
    sel = agg[(agg["start_size"] == start) & (agg["source"] == source) & (agg["aug_size"] == aug)
              & (agg["eval_set"] == eval_set) & (agg["slice"] == slice_name)]
    if sel.empty:
        return "-"
    r = sel.iloc[0]
    return f"{100 * r['accuracy']:.1f} [{100 * r['ci_low']:.1f}-{100 * r['ci_high']:.1f}]"


def key_pair(sources: list[str]) -> tuple[str, str] | None:
    """The paired comparison that matters: a biased source vs original, else synthetic vs original."""
    biased = sorted(s for s in sources if s.startswith("biased"))
    if "original" in sources and biased:
        return biased[0], "original"
    if {"synthetic", "original"} <= set(sources):
        return "synthetic", "original"
    return None


def _paired_line(df: pd.DataFrame, run_dir: Path, challenge: str, aug: int) -> str | None:
    """'<a> vs <b> on the blindspot at +m: start 0: -10.0 pts [-30.1, 12.4], p=0.62 · ...'."""
    from blindspot.report_figures import BLINDSPOT_SLICE

    pair = key_pair(sorted(set(df["source"]) - {START}))
    if pair is None:
        return None
    tests = paired_tests(df[df["aug_size"].isin([0, aug])], run_dir, [(challenge, BLINDSPOT_SLICE)], [pair])
    tests = tests[tests["aug_size"] == aug]
    if tests.empty:
        return None
    parts = []
    for start, rows in tests.groupby("start_size", sort=True):
        rows = rows.sort_values("seed")
        r = rows.iloc[0]
        p = "/".join(f"{v:.3g}" for v in rows["p_mcnemar"])
        seeds = f" (seeds {'/'.join(map(str, rows['seed']))})" if len(rows) > 1 else ""
        parts.append(f"start {start}: {100 * r['diff']:+.1f} pts [{100 * r['diff_low']:+.1f}, "
                     f"{100 * r['diff_high']:+.1f}], p={p}{seeds}")
    return f"paired test, {pair[0]} vs {pair[1]} on the blindspot at +{aug:,} (exact McNemar): " + " · ".join(parts)


def run_summary(run_dir: str | Path, log_name: str = "run.log") -> list[str]:
    """The closing lines of a run, from its results files."""
    from blindspot.report_figures import BLINDSPOT_SLICE, SOURCE_ORDER, pick_eval_sets

    run_dir = Path(run_dir)
    try:
        df = pd.read_csv(run_dir / RESULTS_CSV)
        agg = pd.read_csv(run_dir / AGGREGATED_CSV)
    except OSError as e:
        raise BlindspotError(f"{run_dir}: no results table to summarise ({e})") from None
    general, challenge = pick_eval_sets(df)
    found = {s for s in agg["source"] if s != START and parse_mixture(s) is None}  # mixtures: in the report
    sources = [s for s in SOURCE_ORDER if s in found] + sorted(found - set(SOURCE_ORDER))
    aug = int(agg["aug_size"].max())
    lines = [f"at +{aug:,} examples: {challenge} lexical-overlap non-entailment (the blindspot) | {general}, "
             f"accuracy % [95 % interval]"]
    for start in sorted(agg["start_size"].unique()):
        cells = [f"{name} {_cell(agg, start, src, a, challenge, BLINDSPOT_SLICE)} | "
                 f"{_cell(agg, start, src, a, general, 'all')}"
                 for name, src, a in [("before", START, 0)] + [(s, s, aug) for s in sources]]
        lines.append(f"  start {start}: " + " · ".join(cells))
    paired = _paired_line(df, run_dir, challenge, aug)
    if paired:
        lines.append(paired)
    lines.append(f"report: {run_dir / 'report' / 'report.html'} · table: {run_dir / RESULTS_CSV} · "
                 f"log: {run_dir / log_name}")
    missing = load_index(run_dir).missing if (run_dir / INDEX).exists() else []
    shown = "; ".join(missing[:3]) + (f"; and {len(missing) - 3} more (see the report)" if len(missing) > 3 else "")
    lines.append(f"{len(missing)} condition(s) did not finish: {shown}" if missing else "every condition finished")
    return lines
