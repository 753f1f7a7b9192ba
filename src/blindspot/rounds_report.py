"""The report's section on repeated generations (blindspot.rounds): a figure against the round, two tables.

Reads RUN_DIR/results/rounds.json (written by the grid runner when `generations.rounds` > 1) and
the results table. The figure has a row per (start size, augmentation size) and a column per
number: the general set's accuracy, the paper's blindspot number and the reliance measure
(blindspot.reliance), each the mean over seeds with the results table's interval
(stats.seed_interval), one line per mode, x = the round whose synthetic data was added; the
starting point (dashed) and the same amount of original data (dotted) are drawn as references.
The audit table has a row per round's synthetic data (and, where it is a set of its own, per
round's data for the next round's generator), with the real pool first.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from blindspot.results import START
from blindspot.rounds import ROUNDS_JSON, source_name
from blindspot.stats import wilson_interval

FEATURE = "lexical_overlap"


def _series(agg: pd.DataFrame, info: dict, mode: str, start: int, m: int, eval_set: str, slice_name: str):
    """(rounds, rows of agg) of one mode's line: round 1 is the shared 'synthetic' source."""
    xs, rows = [], []
    for t in range(1, info["rounds"] + 1):
        sel = agg[(agg["source"] == source_name(t, mode)) & (agg["start_size"] == start) & (agg["aug_size"] == m)
                  & (agg["eval_set"] == eval_set) & (agg["slice"] == slice_name)]
        if len(sel):
            xs.append(t)
            rows.append(sel.iloc[0])
    return xs, pd.DataFrame(rows)


def _reference(ax, agg: pd.DataFrame, source: str, start: int, m: int, eval_set: str, slice_name: str,
               style: str) -> None:
    sel = agg[(agg["source"] == source) & (agg["start_size"] == start) & (agg["aug_size"] == (0 if source == START else m))
              & (agg["eval_set"] == eval_set) & (agg["slice"] == slice_name)]
    if len(sel):
        ax.axhline(float(sel["accuracy"].iloc[0]), color="0.35", linestyle=style, linewidth=1.0, zorder=0)


def round_panels(info: dict, agg: pd.DataFrame) -> list[tuple[int, int]]:
    """(start size, augmentation size) pairs that have a round >= 2 condition."""
    later = {s["source"] for s in info["sets"] if s["round"] > 1}
    sel = agg[agg["source"].isin(later)]
    return sorted(set(zip(sel["start_size"], sel["aug_size"])))


def build_rounds_figure(info: dict, agg: pd.DataFrame, lines: list[tuple[str, str, str]]) -> Figure:
    """A row per (start, m), a column per evaluation line: mean over seeds [95 %] against the round."""
    panels, modes = round_panels(info, agg), info["modes"]
    fig, axes = plt.subplots(len(panels), len(lines), figsize=(3.6 * len(lines), 2.9 * len(panels) + 1.0),
                             squeeze=False, layout="constrained")
    for r, (start, m) in enumerate(panels):
        for c, (eval_set, slice_name, label) in enumerate(lines):
            ax = axes[r, c]
            for k, mode in enumerate(modes):
                xs, s = _series(agg, info, mode, start, m, eval_set, slice_name)
                if not xs:
                    continue
                x = [t + (k - (len(modes) - 1) / 2) * 0.08 for t in xs]
                below, above = (s["accuracy"] - s["ci_low"]).clip(lower=0), (s["ci_high"] - s["accuracy"]).clip(lower=0)
                ax.errorbar(x, s["accuracy"], yerr=[below, above], color=f"C{k}", marker="o", markersize=4,
                            capsize=2, linewidth=1.3, elinewidth=0.8)
            _reference(ax, agg, START, start, m, eval_set, slice_name, "--")
            _reference(ax, agg, "original", start, m, eval_set, slice_name, ":")
            ax.set_xticks(range(1, info["rounds"] + 1))
            ax.grid(axis="y", alpha=0.3)
            if slice_name.startswith("reliance:"):
                ax.axhline(0.0, color="0.7", linewidth=0.6, zorder=0)
            else:
                ax.set_ylim(0, 1)
            ax.set_title(f"{label}\nstart {start:,}, +{m:,} per condition" if r == 0 else f"start {start:,}, +{m:,}",
                         fontsize=8)
            if r == len(panels) - 1:
                ax.set_xlabel("round of the synthetic data (1 = the paper's)", fontsize=8)
    fig.suptitle("Repeated generations: the classifier after training on each round's synthetic data", fontsize=10)
    handles = [Line2D([], [], color=f"C{k}", marker="o", label=mode) for k, mode in enumerate(modes)]
    handles += [Line2D([], [], color="0.35", linestyle="--", label="starting point"),
                Line2D([], [], color="0.35", linestyle=":", label="+ the same amount of original data")]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    return fig


def rounds_table(info: dict, agg: pd.DataFrame, lines: list[tuple[str, str, str]]) -> pd.DataFrame:
    """A row per (start, m, mode, round): each evaluation line's mean [interval]."""
    rows = []
    for start, m in round_panels(info, agg):
        for mode in info["modes"]:
            for t in range(1, info["rounds"] + 1):
                row = {"start_size": start, "aug_size": m, "mode": mode, "round": t}
                for eval_set, slice_name, label in lines:
                    xs, s = _series(agg, info, mode, start, m, eval_set, slice_name)
                    if t in xs:
                        v = s.iloc[xs.index(t)]
                        row["n_seeds"] = int(v["n_seeds"])
                        row[label] = f"{v['accuracy']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
                if len(row) > 4:
                    rows.append(row)
    return pd.DataFrame(rows)


def _share_cell(a: dict, group: str) -> str:
    """'4.2% [1.6, 10.5] (3/72)': the feature's share in a label group with its Wilson interval."""
    f, n = a["features"][FEATURE], a["groups"].get(group, 0)
    share = f["share"].get(group)
    if share is None or not n:
        return "–"
    k = round(share * n)
    lo, hi = wilson_interval(k, n)
    return f"{100 * share:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] ({k}/{n})"


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def audit_table(info: dict) -> pd.DataFrame:
    """The audit of each round's synthetic data (and the real pool first), one row per set."""
    rows = []
    pool = next((s["pool_audit"] for s in info["sets"] if s["pool_audit"]), None)
    sets = []
    for s in info["sets"]:  # each round's own set, then its data for the next round (a larger sample)
        sets.append(s)
        nxt = s.get("next_round_data")
        if nxt is not None:
            sets.append({"round": s["round"], "mode": s["mode"], "for_round": nxt["for_round"], "audit": nxt["audit"],
                         "generation": nxt["generation"], "generator_train": s["generator_train"]})
    for s in ([{"round": 0, "mode": None, "audit": pool, "generation": None, "generator_train": None}] if pool else []) \
            + sets:
        a = s["audit"]
        if a is None:
            continue
        gen, trained = s["generation"], s["generator_train"]
        labels = a["labels"]
        feats = a["features"][FEATURE]
        name = f"round {s['round']}" + (f" ({s['mode']})" if s["mode"] else "") + \
            (f", for round {s['for_round']}" if s.get("for_round") else "")
        row = {"data": "MNLI pool (real)" if s["round"] == 0 else name,
               "generator trained on": "" if trained is None else f"{trained['examples']:,}",
               "pairs": f"{a['n']:,}", "labels (" + " / ".join(lab[:3] for lab in labels) + ")":
               " / ".join(str(a["label_counts"][lab]) for lab in labels),
               "parse failures": "" if gen is None else f"{100 * gen['parse_failure_rate']:.1f}% of {gen['attempts']:,}"}
        row |= {f"overlap % of {lab}": _share_cell(a, lab) for lab in labels}
        with_n = feats["n_with"]
        row["entailment % among overlap pairs"] = ("–" if not with_n else
                                                   f"{100 * feats['entailment_share_with']:.1f}% (n={with_n})")
        div, lengths = a["diversity"]["full"]["hypothesis"], a["lengths"]
        row["distinct-1 / -2 hyp."] = f"{_num(div['distinct_1'], 3)} / {_num(div['distinct_2'], 3)}"
        row["premise / hyp. words"] = f"{_num(lengths['premise_words'], 1)} / {_num(lengths['hypothesis_words'], 1)}"
        rows.append(row)
    return pd.DataFrame(rows)


def rounds_blocks(run_dir: Path, agg: pd.DataFrame, lines: list[tuple[str, str, str]], out_dir: Path,
                  save_png) -> list[tuple]:
    """The report blocks of repeated generations; [] when the run has a single round."""
    path = Path(run_dir) / ROUNDS_JSON
    if not path.is_file():
        return []
    info = json.loads(path.read_text())
    lines = [ln for i, ln in enumerate(lines) if i == 0 or ln[1] != "all"]  # general set, blindspot, reliance
    rule = next((s["overlap_rule"] for s in info["sets"] if s["overlap_rule"]), "?")
    blocks: list[tuple] = [
        ("h2", "Repeated generations"),
        ("p", f"{info['rounds']} rounds, mode(s) {', '.join(info['modes'])} (blindspot.rounds): round 1 is the "
              "paper's generator and its synthetic data; in round t+1 a fresh LoRA on the same base model is "
              "trained on round t's data (`replace`) or on round 1's real training sample plus every round's data "
              f"so far (`accumulate`). Each round contributes {info['train_size']:,} examples to the next "
              f"round's training set, {100 * info['real_fraction']:.0f} % of them real pool pairs. Each round's "
              "synthetic data augments the starting points exactly as the paper's synthetic source does "
              "(source `synthetic-rT-MODE`; `round` in the results table).")]
    if round_panels(info, agg):
        save_png(build_rounds_figure(info, agg, lines), out_dir / "figure_rounds.png")
        blocks += [("img", "figure_rounds.png", "accuracy, blindspot and reliance against the round"),
                   ("p", "Mean over seeds with the results table's 95 % interval (the seeds' own intervals plus "
                         "seed-to-seed variation); one line per mode, which share round 1; dashed: the starting "
                         "point; dotted: the same amount of original data."),
                   ("table", rounds_table(info, agg, lines))]
    audit = audit_table(info)
    if not audit.empty:
        blocks += [("h3", "Audit of each round's synthetic data"),
                   ("p", f"Lexical overlap (every hypothesis word in the premise, rule `{rule}`) per label with a "
                         "Wilson 95 % interval; the entailment share among the pairs that have it; parse failures: "
                         "samples that did not parse into a pair, of all samples drawn (duplicates and leaks not "
                         "counted as failures); distinct-n of hypotheses over all pairs; mean lengths in words. "
                         "`generator trained on`: the examples of the generator that wrote the set. A row "
                         "`round t, for round t+1` is the larger set round t writes for the next round's "
                         "generator to learn from (a superset of the round's own set: the same batch seeds)."),
                   ("table", audit)]
    return blocks
