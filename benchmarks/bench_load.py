"""Time loading the 30,000-row HANS evaluation file and the 9,815-row MNLI dev-matched file (target < 5 s each).

    python benchmarks/bench_load.py            # data from ../shared/data, or $BLINDSPOT_DATA
    python benchmarks/bench_load.py --repeat 5

Prints seconds (best of --repeat) and rows per second for each file, and with --features
also the time to compute the HANS heuristic features of every pair.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from blindspot import heuristics
from blindspot.data import load_source

TARGET_S = 5.0
FILES = ("hans-regen/heuristics_evaluation_set.jsonl.gz", "mnli-subset/multinli_1.0_dev_matched.jsonl.gz")


def data_root() -> Path:
    """$BLINDSPOT_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("BLINDSPOT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def time_load(path: Path, repeat: int) -> tuple[float, int]:
    """Best wall-clock seconds of `repeat` loads, and the row count."""
    best, rows = float("inf"), 0
    for _ in range(repeat):
        t = time.perf_counter()
        rows = len(load_source(str(path)))
        best = min(best, time.perf_counter() - t)
    return best, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="loads per file; the best time is reported")
    ap.add_argument("--features", action="store_true", help="also time the heuristic features of every pair")
    args = ap.parse_args()
    root = data_root()
    slow = False
    for rel in FILES:
        path = root / rel
        if not path.is_file():
            print(f"missing {path} (set BLINDSPOT_DATA)", file=sys.stderr)
            return 2
        secs, rows = time_load(path, args.repeat)
        slow |= secs >= TARGET_S
        print(f"{rel}: {rows:,} rows in {secs:.3f} s ({rows / secs:,.0f} rows/s; target < {TARGET_S:.0f} s)")
        if args.features:
            s = load_source(str(path))
            t = time.perf_counter()
            for e in s:
                heuristics.features(e.premise, e.hypothesis)
            dt = time.perf_counter() - t
            print(f"  heuristic features: {dt:.3f} s ({len(s) / dt:,.0f} pairs/s)")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
