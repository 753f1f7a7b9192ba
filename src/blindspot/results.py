"""The tidy results table of a run: one row per condition x seed x evaluation set x slice.

    blindspot report RUN_DIR          # collects, writes RUN_DIR/results/results.{csv,parquet}

The grid runner writes RUN_DIR/results/index.json (schema: `RunIndex`) naming every finished
condition and its evaluation directory; everything here reads only files. The starting point
itself is source "start" with aug_size 0; `synthetic_fraction` is the share of synthetic data in a
condition's augmentation (blindspot.mixture: f of a mixture `mixF:SOURCE`, 0 for original data, 1 for
synthetic and filtered synthetic sources, empty for the starting point).

Seeds are aggregated as a mean whose interval adds the
evaluation's sampling error (the seeds' own intervals) and seed-to-seed variation
(blindspot.stats.seed_interval, interval "eval+seeds"; the t-interval over seeds alone is kept in
`t_low` / `t_high`) or, for a single seed, the interval of that run.

Rows have `metric` "accuracy" (correct of n, Wilson interval) or "reliance" (blindspot.reliance:
slice `reliance:heuristic=H` of the challenge set, `accuracy` holds the measure in [-1, 1],
`correct` of `n` = entailment answers on H's gold non-entailment pairs, `baseline_k` of
`baseline_n` = the same on `baseline_set`'s non-entailment pairs without lexical overlap under
`overlap_rule`; the interval is Newcombe's for two independent proportions).

`round` is the round of repeated generations (blindspot.rounds) whose synthetic data a condition
was augmented with: 1 for `synthetic`, t for `synthetic-rT-MODE`, empty for other sources.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blindspot.errors import BlindspotError, DataError
from blindspot.mixture import synthetic_fraction
from blindspot.stats import seed_interval
from blindspot.storage import DONE, atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

START = "start"  # source name of the starting point itself (aug_size 0)
INDEX = "results/index.json"
RESULTS_CSV = "results/results.csv"
RESULTS_PARQUET = "results/results.parquet"
AGGREGATED_CSV = "results/results_aggregated.csv"
COLUMNS = ["start_size", "source", "aug_size", "synthetic_fraction", "seed", "eval_set", "slice", "correct", "n",
           "accuracy", "ci_low", "ci_high", "predictions", "metric", "baseline_set", "baseline_k", "baseline_n",
           "overlap_rule", "round"]
# columns a table written before the reliance measure (or repeated generations) lacks, with what they
# mean for its rows
OPTIONAL_COLUMNS = {"metric": "accuracy", "baseline_set": None, "baseline_k": None, "baseline_n": None,
                    "overlap_rule": None, "round": None}
CONDITION = ["start_size", "source", "aug_size"]
AGG_KEYS = CONDITION + ["eval_set", "slice", "metric"]


class ResultEntry(BaseModel):
    """One finished evaluation of one trained condition."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    start_size: int = Field(ge=0, description="MNLI examples the starting point was trained on.")
    source: str = Field(min_length=1, description='Augmentation source; "start" for the starting point itself.')
    aug_size: int = Field(ge=0, description="Augmentation examples added (0 for the starting point).")
    seed: int = Field(description="Seed of the whole condition (sampling and training).")
    round: int | None = Field(None, ge=1, description="Round of repeated generations whose synthetic data it "
                              "was augmented with (blindspot.rounds: 1 = the paper's 'synthetic'); None: no "
                              "synthetic source.")
    eval_dir: str = Field(description="Evaluation output directory, relative to the run directory.")


class RunIndex(BaseModel):
    """RUN_DIR/results/index.json: what the run is and where each evaluation lives."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(description="Experiment name.")
    config: dict[str, Any] = Field(default_factory=dict, description="The experiment config as run (JSON).")
    conditions: list[ResultEntry] = Field(description="Every evaluated condition x seed.")
    missing: list[str] = Field(default_factory=list, description="Conditions of the grid that did not finish "
                               "(a stage failed or was skipped); the report lists them.")


def write_index(run_dir: str | Path, index: RunIndex) -> Path:
    """Write RUN_DIR/results/index.json atomically (called by the grid runner)."""
    return atomic_write_json(Path(run_dir) / INDEX, index.model_dump(mode="json"))


def load_index(run_dir: str | Path) -> RunIndex:
    """Read and validate RUN_DIR/results/index.json."""
    path = Path(run_dir) / INDEX
    try:
        return RunIndex.model_validate(json.loads(path.read_text()))
    except FileNotFoundError:
        raise BlindspotError(f"{path}: not found; is {run_dir} a run directory of `blindspot run`?") from None
    except json.JSONDecodeError as e:
        raise BlindspotError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        raise BlindspotError(f"{path}: field {field!r}: {err['msg']}") from None


def general_and_challenge(sets: dict) -> tuple[str | None, str | None]:
    """From a metrics.json `sets` block: the general set (3-way; *matched* preferred) and the challenge
    set (scored per heuristic); None where the evaluation has no such set."""
    challenge = sorted(n for n, b in sets.items() if b.get("kind") == "hans")
    general = sorted(n for n, b in sets.items() if not b.get("two_way") and n not in challenge)
    matched = [n for n in general if "matched" in n.lower() and "mismatched" not in n.lower()]
    return ((matched or general or [None])[0], (challenge or [None])[0])


def _reliance_rows(entry: ResultEntry, run_dir: Path, sets: dict, rule: str) -> list[dict]:
    """The reliance rows of one evaluation (none unless it has a general and a challenge set)."""
    from blindspot.reliance import read_rows, reliance_all

    general, challenge = general_and_challenge(sets)
    if general is None or challenge is None:
        return []
    pred = {n: run_dir / entry.eval_dir / "predictions" / f"{n}.jsonl" for n in (general, challenge)}
    try:
        found = reliance_all(read_rows(pred[challenge]), read_rows(pred[general]), rule, str(pred[general]))
    except DataError as e:  # e.g. an evaluation written before the overlap flags: accuracies still count
        log.warning("no reliance rows for %s: %s", entry.eval_dir, e)
        return []
    rows = []
    for r in found:
        rows.append({**entry.model_dump(exclude={"eval_dir"}), "eval_set": challenge, "slice": r["slice"],
                     "correct": r["challenge_entailment"], "n": r["challenge_n"], "accuracy": r["value"],
                     "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                     "predictions": str(pred[challenge].relative_to(run_dir)), "metric": "reliance",
                     "baseline_set": general, "baseline_k": r["baseline_entailment"], "baseline_n": r["baseline_n"],
                     "overlap_rule": rule})
    return rows


def _metric_rows(entry: ResultEntry, run_dir: Path, rule: str = "words") -> list[dict]:
    """The table rows of one evaluation directory (checked to be finished and complete)."""
    eval_dir = run_dir / entry.eval_dir
    if not (eval_dir / DONE).exists():
        raise BlindspotError(f"{eval_dir}: evaluation not finished (no {DONE} marker); rerun `blindspot run`")
    path = eval_dir / "metrics.json"
    try:
        sets = json.loads(path.read_text())["sets"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise BlindspotError(f"{path}: expected an evaluation metrics.json with a 'sets' object ({e})") from None
    rows = []
    for set_name, block in sets.items():
        pred = eval_dir / "predictions" / f"{set_name}.jsonl"
        if not pred.exists():
            raise BlindspotError(f"{pred}: predictions of set {set_name!r} missing")
        for m in block["metrics"]:
            rows.append({**entry.model_dump(exclude={"eval_dir"}), "eval_set": set_name,
                         "slice": m["slice"], "correct": int(m["correct"]), "n": int(m["n"]),
                         "accuracy": float(m["accuracy"]), "ci_low": float(m["ci_low"]),
                         "ci_high": float(m["ci_high"]), "predictions": str(pred.relative_to(run_dir)),
                         "metric": "accuracy"})
    return rows + _reliance_rows(entry, run_dir, sets, rule)


def collect_results(entries: Iterable[ResultEntry], run_dir: str | Path, rule: str = "words") -> pd.DataFrame:
    """One tidy row per (condition, seed, eval set, slice) from the evaluations' metrics.json and, for
    the reliance rows, their predictions (general-set overlap under `rule`)."""
    run_dir = Path(run_dir)
    rows = [r for e in entries for r in _metric_rows(e, run_dir, rule)]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["synthetic_fraction"] = df["source"].map(synthetic_fraction).astype(float)
    dup = df.duplicated(["start_size", "source", "aug_size", "seed", "eval_set", "slice"])
    if dup.any():
        first = df[dup].iloc[0]
        raise BlindspotError(f"{run_dir / INDEX}: condition {first[CONDITION + ['seed']].to_dict()} "
                             "listed more than once")
    df = df.astype({"start_size": int, "aug_size": int, "seed": int, "correct": int, "n": int, "round": "Int64"})
    return df.sort_values(["start_size", "source", "aug_size", "seed", "eval_set", "slice"],
                          ignore_index=True)


def _seed_interval(group: pd.DataFrame) -> pd.Series:
    """Mean over seeds with stats.seed_interval; a single seed keeps its own interval."""
    acc = group["accuracy"].to_numpy(dtype=float)
    k = len(acc)
    reliance = group.name[-1] == "reliance"
    if k == 1:
        row = group.iloc[0]
        lo, hi, sd = float(row["ci_low"]), float(row["ci_high"]), float("nan")
        method, t_lo, t_hi = ("newcombe" if reliance else "wilson"), float("nan"), float("nan")
    else:
        # clipped to the metric's range: the reliance measure lies in [-1, 1], accuracies in [0, 1]
        c = seed_interval(acc, group["ci_low"], group["ci_high"], bounds=(-1.0 if reliance else 0.0, 1.0))
        lo, hi, sd, method, t_lo, t_hi = c["low"], c["high"], c["sd"], "eval+seeds", c["t_low"], c["t_high"]
    return pd.Series({"n_seeds": k, "n": int(group["n"].max()), "accuracy": float(acc.mean()),
                      "sd": sd, "ci_low": lo, "ci_high": hi, "interval": method, "t_low": t_lo, "t_high": t_hi})


def aggregate_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Per (start_size, source, aug_size, eval_set, slice): n_seeds, mean accuracy and interval."""
    cols = AGG_KEYS + ["n_seeds", "n", "accuracy", "sd", "ci_low", "ci_high", "interval", "t_low", "t_high"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    out = df.groupby(AGG_KEYS, sort=True).apply(_seed_interval, include_groups=False).reset_index()
    return out.astype({"n_seeds": int, "n": int})[cols]


def write_results(df: pd.DataFrame, run_dir: str | Path) -> dict[str, Path]:
    """Write results.csv, results.parquet and results_aggregated.csv under RUN_DIR/results/."""
    run_dir = Path(run_dir)
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    paths = {"csv": atomic_write_text(run_dir / RESULTS_CSV, df.to_csv(index=False)),
             "parquet": atomic_write_bytes(run_dir / RESULTS_PARQUET, buf.getvalue()),
             "aggregated": atomic_write_text(run_dir / AGGREGATED_CSV,
                                             aggregate_seeds(df).to_csv(index=False))}
    log.info("results: %d rows, %d conditions -> %s", len(df),
             len(df.drop_duplicates(CONDITION + ["seed"])), run_dir / RESULTS_CSV)
    return paths


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """The run's table: collected afresh from index.json if present, else the saved results table."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BlindspotError(f"{run_dir}: {'not a directory' if run_dir.exists() else 'no such directory'}: "
                             "expected a run directory written by `blindspot run`")
    if (run_dir / INDEX).exists():
        index = load_index(run_dir)
        df = collect_results(index.conditions, run_dir, overlap_rule(index.config))
        write_results(df, run_dir)
        return df
    for rel, read in ((RESULTS_PARQUET, pd.read_parquet), (RESULTS_CSV, pd.read_csv)):
        if (run_dir / rel).exists():
            df = read(run_dir / rel)
            df = df.assign(**{c: v for c, v in OPTIONAL_COLUMNS.items() if c not in df.columns})
            if "synthetic_fraction" not in df.columns and "source" in df.columns:  # before mixtures: from the source
                df["synthetic_fraction"] = df["source"].map(synthetic_fraction).astype(float)
            missing = set(COLUMNS) - set(df.columns)
            if missing:
                raise BlindspotError(f"{run_dir / rel}: missing columns {sorted(missing)}")
            return df[COLUMNS]
    raise BlindspotError(f"{run_dir}: no results found: expected {INDEX} (written by `blindspot run`) "
                         f"or {RESULTS_CSV}")


def overlap_rule(config: dict) -> str:
    """The lexical-overlap rule a run's config names (the reliance baseline uses it); "words" if none."""
    from blindspot.reliance import DEFAULT_RULE

    heur = config.get("heuristics") if isinstance(config.get("heuristics"), dict) else {}
    return str(config.get("overlap_rule") or heur.get("overlap_rule") or heur.get("lexical_overlap") or DEFAULT_RULE)


def _slice_filter(slice_name: str):
    """A row predicate for a slice of key=value filters ("label" is the gold label); "all" keeps all."""
    if slice_name == "all":
        return lambda row: True
    try:
        conds = [tuple(part.split("=", 1)) for part in slice_name.split(",")]
        conds = [("gold" if k == "label" else k, v) for k, v in conds]
    except ValueError:
        raise BlindspotError(f"slice {slice_name!r}: expected 'all' or comma-joined key=value") from None
    return lambda row: all(_slice_value(row.get(k)) == v for k, v in conds)


def _slice_value(value) -> str:
    """A prediction field as slice names spell it: booleans (lexical_overlap) as yes / no."""
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def _sliced_copy(src: Path, slice_name: str, tmp_dir: Path) -> Path:
    """The predictions file itself for "all", else a temporary copy holding only the slice's rows."""
    if slice_name == "all":
        return src
    keep = _slice_filter(slice_name)
    lines = [ln for ln in src.read_text().splitlines() if ln.strip() and keep(json.loads(ln))]
    out = tmp_dir / f"{len(list(tmp_dir.iterdir()))}.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


def _compare_slices(path_a: Path, path_b: Path, slices: list[str], tmp_dir: Path) -> dict[str, dict]:
    """compare_predictions per slice: one call on the whole files (which also reports per-slice
    results), and a call on sliced copies only for slices that call did not cover."""
    from blindspot.compare import compare_predictions

    whole = compare_predictions(path_a, path_b)
    found = {"all": whole, **{r["slice"]: r for r in whole.get("slices", [])}}
    return {s: found[s] if s in found else compare_predictions(_sliced_copy(path_a, s, tmp_dir),
                                                                _sliced_copy(path_b, s, tmp_dir))
            for s in slices}


def comparison_pairs(sources: Iterable[str]) -> list[tuple[str, str]]:
    """(a, b) pairs to test: synthetic vs original, every biased-* source vs synthetic, every later
    round's synthetic-rT-MODE vs synthetic (round 1; blindspot.rounds), and every original+FILTER
    source (the original pool through a filter) vs original."""
    sources = set(sources)
    pairs = [("synthetic", "original")] if {"synthetic", "original"} <= sources else []
    if "synthetic" in sources:
        pairs += [(s, "synthetic") for s in sorted(sources) if s.startswith("biased")]
        pairs += [(s, "synthetic") for s in sorted(sources) if s.startswith("synthetic-r")]
    if "original" in sources:
        pairs += [(s, "original") for s in sorted(sources) if s.startswith("original+")]
    return pairs


def _reliance_tests(df: pd.DataFrame, run_dir: Path, targets: list[tuple[str, str]],
                    pairs: list[tuple[str, str]] | None = None) -> list[dict]:
    """Paired bootstrap of reliance(a) - reliance(b) for the reliance slices among `targets`."""
    import zlib

    from blindspot.compare import compare_reliance
    from blindspot.reliance import SLICE_PREFIX, read_rows

    rel = df[(df["metric"] == "reliance")
             & df[["eval_set", "slice"]].apply(tuple, axis=1).isin(targets)] if len(df) else df
    key = CONDITION + ["seed", "slice"]
    found = {tuple(r[k] for k in key): r for r in rel.to_dict("records")}
    rows, cache = [], {}

    def rows_of(path: Path) -> list[dict]:
        if path not in cache:
            cache[path] = read_rows(path)
        return cache[path]

    for a, b in comparison_pairs(df["source"].unique()) if pairs is None else pairs:
        for (start, source, aug, seed, slice_name), ra in sorted(found.items(), key=str):
            rb = found.get((start, b, aug, seed, slice_name))
            if source != a or rb is None:
                continue
            files = [run_dir / r["predictions"] for r in (ra, rb)]
            general = [f.parent / f"{r['baseline_set']}.jsonl" for f, r in zip(files, (ra, rb))]
            h = slice_name.removeprefix(SLICE_PREFIX)
            boot_seed = zlib.crc32(f"{start}:{aug}:{seed}:{a}:{b}:{h}".encode())
            r = compare_reliance(rows_of(files[0]), rows_of(general[0]), rows_of(files[1]), rows_of(general[1]),
                                 h, ra["overlap_rule"], seed=boot_seed)
            rows.append({"start_size": start, "aug_size": aug, "source_a": a, "source_b": b,
                         "eval_set": ra["eval_set"], "slice": slice_name, "seed": seed, "n": r["n"],
                         "acc_a": r["reliance_a"], "acc_b": r["reliance_b"], "diff": r["diff"],
                         "diff_low": r["diff_ci"][0], "diff_high": r["diff_ci"][1], "b": None, "c": None,
                         "p_mcnemar": None, "p_bootstrap": r["p_bootstrap"], "test": "paired bootstrap"})
    return rows


def paired_tests(df: pd.DataFrame, run_dir: str | Path, targets: list[tuple[str, str]],
                 pairs: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """McNemar test and paired difference acc(a) - acc(b), per start x aug size x pair x target x seed;
    for reliance targets, a paired bootstrap of reliance(a) - reliance(b) (blindspot.compare).

    `pairs` (source a, source b) default to comparison_pairs of the table's sources.
    """
    import tempfile

    run_dir = Path(run_dir)
    keys = CONDITION + ["seed", "eval_set"]
    pred = {tuple(r[:-1]): r[-1] for r in df.drop_duplicates(keys)[keys + ["predictions"]].itertuples(index=False)}
    present = set(zip(df["eval_set"], df["slice"]))
    targets = [t for t in targets if t in present]
    reliance_targets = [t for t in targets if t[1].startswith("reliance:")]
    targets = [t for t in targets if t not in reliance_targets]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for a, b in comparison_pairs(df["source"].unique()) if pairs is None else pairs:
            for (start, source, aug, seed, eval_set), path_a in pred.items():
                path_b = pred.get((start, b, aug, seed, eval_set))
                if source != a or path_b is None:
                    continue
                wanted = [s for e, s in targets if e == eval_set]
                compared = _compare_slices(run_dir / path_a, run_dir / path_b, wanted, Path(tmp)) if wanted else {}
                for slice_name, r in compared.items():
                    rows.append({"start_size": start, "aug_size": aug, "source_a": a, "source_b": b,
                                 "eval_set": eval_set, "slice": slice_name, "seed": seed, "n": r["n"],
                                 "acc_a": r["acc_a"], "acc_b": r["acc_b"], "diff": r["diff"],
                                 "diff_low": r["diff_ci"][0], "diff_high": r["diff_ci"][1],
                                 "b": r["b"], "c": r["c"], "p_mcnemar": r["p_mcnemar"], "p_bootstrap": None,
                                 "test": "McNemar"})
    rows += _reliance_tests(df, run_dir, reliance_targets, pairs)
    cols = ["start_size", "aug_size", "source_a", "source_b", "eval_set", "slice", "seed", "n", "acc_a",
            "acc_b", "diff", "diff_low", "diff_high", "b", "c", "p_mcnemar", "p_bootstrap", "test"]
    return pd.DataFrame(rows, columns=cols).sort_values(
        ["source_a", "source_b", "start_size", "aug_size", "eval_set", "slice", "seed"], ignore_index=True)
