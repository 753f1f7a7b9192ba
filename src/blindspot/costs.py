"""What each stage of a run cost: wall time, throughput and model FLOPs utilisation (MFU).

    python -m blindspot.costs RUN_DIR        # a Markdown table (the report has the same one)

Reads only files: RUN_DIR/results/timings.json (written by `blindspot run`; each entry names its
stage directory) or, failing that, every finished stage directory under RUN_DIR/stages, and each
stage's timing.json and meta.json. Throughput is the stage's own examples/s (training, evaluation,
valid synthetic examples); MFU is `meta.json["mfu"]` (blindspot.mfu), blank where a stage does no
model compute or its device's peak is unknown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _stage_dirs(run_dir: Path) -> list[Path]:
    """Stage directories in run order: from timings.json if it names them, else the store's, by time."""
    timings = _read(run_dir / "results" / "timings.json")
    named = [run_dir / t["dir"] for t in timings if isinstance(t, dict) and t.get("dir")] \
        if isinstance(timings, list) else []
    named = [d for d in named if (d / "DONE").exists()]  # a partial run lists stages not run yet
    if named:
        return named
    found = [d for d in (run_dir / "stages").glob("*") if (d / "DONE").exists()]
    return sorted(found, key=lambda d: (d / "DONE").stat().st_mtime)


def stage_costs(run_dir: str | Path) -> pd.DataFrame:
    """One row per finished stage: label, kind, wall s, examples/s, MFU, model TFLOPs, dtype."""
    rows = []
    for d in _stage_dirs(Path(run_dir)):
        timing, meta = _read(d / "timing.json"), _read(d / "meta.json")
        mfu = meta.get("mfu") or {}
        rate = meta.get("train_examples_per_s", meta.get("examples_per_s"))
        rows.append({"stage": timing.get("label", d.name), "kind": d.name.rsplit("-", 1)[0],
                     "wall_s": timing.get("wall_s", meta.get("wall_s")),
                     "examples_per_s": round(rate, 2) if isinstance(rate, (int, float)) else None,
                     "mfu": mfu.get("mfu"), "model_tflop": (mfu.get("model_flops") or 0) / 1e12 or None,
                     "dtype": meta.get("dtype")})
    return pd.DataFrame(rows, columns=["stage", "kind", "wall_s", "examples_per_s", "mfu", "model_tflop", "dtype"])


def by_kind(costs: pd.DataFrame) -> pd.DataFrame:
    """Stages summed by kind: count, wall s, mean examples/s and MFU."""
    if costs.empty:
        return costs
    g = costs.groupby("kind", sort=False)
    return pd.DataFrame({"stages": g.size(), "wall_s": g["wall_s"].sum().round(1),
                         "examples_per_s": g["examples_per_s"].mean().round(2),
                         "mfu": g["mfu"].mean()}).reset_index()


def format_mfu(v) -> str:
    return "" if v is None or pd.isna(v) else f"{100 * v:.1f} %"


def cost_table(run_dir: str | Path) -> pd.DataFrame:
    """The report's table: per stage, wall s, examples/s, MFU as a percentage."""
    costs = stage_costs(run_dir)
    costs["mfu"] = costs["mfu"].map(format_mfu)
    costs["model_tflop"] = costs["model_tflop"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.1f}")
    return costs.drop(columns="kind")


def main(argv: list[str] | None = None) -> int:
    from blindspot.report import md_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    print(md_table(cost_table(args.run_dir)))
    summary = by_kind(stage_costs(args.run_dir))
    summary["mfu"] = summary["mfu"].map(format_mfu)
    print("\n" + md_table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
