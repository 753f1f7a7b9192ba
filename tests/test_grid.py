"""The grid end to end: configs/smoke.yaml on tiny-llama with the real data in ../shared/data.

One full run through the CLI with stdout a pipe (module fixture), then: its screen is one line
per stage and a short summary whose numbers are the results table's, with no library bars,
banners or warnings; run.log holds the library messages; no deprecation warning comes from our
calls; --quiet prints nothing; a rerun does no work; --dry-run says everything is cached; a run
killed mid-grid resumes to the same results table; a changed value reruns only what depends on it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from blindspot.config import load_config
from blindspot.errors import BlindspotError
from blindspot.grid import build_plan, print_plan, run

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "configs" / "smoke.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_env():
    root = Path(os.environ.get("BLINDSPOT_DATA", REPO.parent / "shared" / "data"))
    if not (root / "mnli-subset").is_dir():
        pytest.skip(f"real data not found at {root} (set BLINDSPOT_DATA)")
    old = os.environ.get("BLINDSPOT_DATA")
    os.environ["BLINDSPOT_DATA"] = str(root)
    yield root
    if old is None:
        os.environ.pop("BLINDSPOT_DATA", None)
    else:
        os.environ["BLINDSPOT_DATA"] = old


@pytest.fixture(scope="module")
def smoke_cli(data_env, tmp_path_factory):
    """`blindspot run configs/smoke.yaml` as a user runs it, stdout a pipe (not a terminal), with
    every deprecation warning raised under our code recorded (tests/strict_warnings.py)."""
    out = tmp_path_factory.mktemp("smoke") / "run"
    warned = out.parent / "warnings.json"
    t0 = time.time()
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "strict_warnings.py"), str(warned), "run",
                           str(SMOKE), "--out", str(out)], capture_output=True, text=True, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"out": out, "seconds": time.time() - t0, "stdout": proc.stdout, "stderr": proc.stderr,
            "warnings": json.loads(warned.read_text())}


@pytest.fixture(scope="module")
def smoke_run(smoke_cli):
    return smoke_cli["out"], smoke_cli["seconds"]


def _stage_dirs(run_dir: Path) -> dict[str, float]:
    return {p.name: (p / "DONE").stat().st_mtime for p in (run_dir / "stages").iterdir() if (p / "DONE").exists()}


def test_smoke_grid_writes_results_and_report(smoke_run):
    out, _ = smoke_run
    df = pd.read_csv(out / "results" / "results.csv")
    cfg = load_config(SMOKE)
    rounds = (cfg.generations.rounds - 1) * len(cfg.generations.modes())  # each later round is a source
    conditions = len(cfg.start_sizes) * (1 + (len(cfg.augment.sources) + rounds) * len(cfg.augment.sizes))
    assert df.groupby(["start_size", "source", "aug_size", "seed"]).ngroups == conditions
    assert set(df["eval_set"]) == set(cfg.data.eval)
    blind = df[(df.eval_set == "hans") & (df.slice == "heuristic=lexical_overlap,label=non-entailment")]
    assert len(blind) == conditions and (blind["n"] == 5 * cfg.data.eval_per_subcase).all()
    assert ((df.ci_low <= df.accuracy) & (df.accuracy <= df.ci_high)).all()
    assert set(df.loc[df["source"] == "synthetic-r2-accumulate", "round"]) == {2}
    assert set(df.loc[df["source"] == "synthetic", "round"]) == {1} and df.loc[df["source"] == "original", "round"].isna().all()
    rounds_json = json.loads((out / "results" / "rounds.json").read_text())
    assert [(r["round"], r["mode"]) for r in rounds_json["sets"]] == [(1, None), (2, "replace"), (2, "accumulate")]
    assert all(r["audit"]["n"] == 3 * cfg.generation.per_label for r in rounds_json["sets"])
    assert "Audit of each round's synthetic data" in (out / "report" / "report.md").read_text()
    for name in ("figure_main.png", "figure_heuristics.png", "figure_rounds.png", "report.md", "report.html", "DONE"):
        assert (out / "report" / name).is_file(), name
    assert (out / "report" / "figure_main.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "biased-lexical-overlap" in (out / "audit.md").read_text()
    page = (out / "report" / "report.html").read_text(encoding="utf-8")  # the samples of the real generation
    browse = page.split("<h2>Browse the synthetic data</h2>")[1]
    assert "Accepted pairs: 20 random per label (of 60 accepted)" in browse and "Filter biased-lexical-overlap" in browse


def test_rerun_does_no_work_and_dry_run_says_cached(smoke_run, capsys):
    out, _ = smoke_run
    before = _stage_dirs(out)
    run(SMOKE, out=out)
    assert _stage_dirs(out) == before  # no stage rewritten (DONE markers untouched)
    plan = build_plan(load_config(SMOKE))
    assert print_plan(plan, out / "stages") == 0
    assert "0 to run" in capsys.readouterr().out


def test_changed_value_reruns_only_dependants(data_env):
    base = build_plan(load_config(SMOKE))
    names = lambda plan: {s.dirname for s in plan.stages}  # noqa: E731
    kinds = lambda dirnames: sorted({d.rsplit("-", 1)[0] for d in dirnames})  # noqa: E731

    more = build_plan(load_config(SMOKE, ["augment.sizes=[6,12,18]"]))
    assert kinds(names(more) - names(base)) == ["augment", "evaluate"]
    assert names(base) <= names(more)

    lr = build_plan(load_config(SMOKE, ["classifier.optim.lr=0.001"]))
    assert kinds(names(lr) - names(base)) == ["augment", "evaluate", "start"]
    unchanged = {d.rsplit("-", 1)[0] for d in names(base) & names(lr)}
    assert unchanged == {"prepare", "base", "generator", "generate", "filter", "audit"}

    rule = build_plan(load_config(SMOKE, ["overlap_rule=words"]))  # filters, audit and evaluation slices use it
    assert kinds(names(rule) - names(base)) == ["audit", "evaluate", "filter"]  # smoke augments from no filter
    assert {s.spec["overlap_rule"] for s in rule.stages if s.stage in ("filter", "audit", "evaluate")} == {"words"}

    gen = build_plan(load_config(SMOKE, ["generation.temperature=0.5"]))  # round 2's generators train on round 1's data
    assert kinds(names(gen) - names(base)) == ["audit", "augment", "evaluate", "filter", "generate", "generator"]

    more_rounds = build_plan(load_config(SMOKE, ["generations.rounds=3"]))
    assert names(base) <= names(more_rounds)
    assert kinds(names(more_rounds) - names(base)) == ["audit", "augment", "evaluate", "generate", "generator"]


def test_augmentations_are_trained_together_and_match_alone(smoke_run, tmp_path):
    """Each start's augmentation stages ran as one job (classifier.group_augmentations, default on),
    into the directories a one-by-one run uses, each with its own records written by the store; a
    member rerun alone gives the same adapter."""
    from safetensors.torch import load_file

    from blindspot.stages import augment
    from blindspot.grid.store import read_status, resolve_runtime

    out, _ = smoke_run
    store = out / "stages"
    plan = build_plan(load_config(SMOKE))
    cfg = load_config(SMOKE)
    sources = len(cfg.augment.sources) + (cfg.generations.rounds - 1) * len(cfg.generations.modes())  # + later rounds
    assert [len(g) for g in plan.groups] == [sources * len(cfg.augment.sizes)] * len(cfg.start_sizes)
    alone = build_plan(load_config(SMOKE, ["classifier.group_augmentations=false"]))
    assert alone.groups == [] and [s.dirname for s in alone.stages] == [s.dirname for s in plan.stages]
    assert all("group_augmentations" not in s.spec.get("classifier", {}) for s in plan.stages)  # not hashed
    group = plan.groups[-1]
    for st in group:
        meta = json.loads((st.path(store) / "meta.json").read_text())
        assert meta["group"]["size"] == len(group) and meta["mfu"]["mfu"] is not None
        assert json.loads((st.path(store) / "timing.json").read_text())["grouped_with"] == len(group) - 1
        events = read_status(st.path(store))
        running = [e for e in events if e["event"] == "running"]
        assert len(running) == 1 and sorted(running[0]["group"]) == sorted(m.dirname for m in group)
        assert [e["event"] for e in events][-1] == "success" and (st.path(store) / "DONE").exists()
    for st in (group[0], group[-1]):  # shortest and longest run
        ref = tmp_path / st.dirname
        ref.mkdir()
        spec = augment.Spec.model_validate(st.spec)
        augment.run(spec, {k: v.path(store) for k, v in st.inputs.items()}, ref, resolve_runtime(spec))
        wg, wa = load_file(st.path(store) / "adapter_model.safetensors"), load_file(ref / "adapter_model.safetensors")
        for key in wa:
            torch.testing.assert_close(wg[key], wa[key], rtol=1e-4, atol=1e-6)


def test_killed_run_resumes_to_the_same_results(smoke_run, tmp_path):
    out, _ = smoke_run
    resumed = tmp_path / "resumed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "blindspot.cli", "run", str(SMOKE), "--out", str(resumed)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    # Kill it once a few stages are done, in the middle of the grid.
    while time.time() < deadline and proc.poll() is None:
        stages = resumed / "stages"
        if stages.is_dir() and sum((p / "DONE").exists() for p in stages.iterdir()) >= 6:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "results" / "results.csv").exists()
    done_before = _stage_dirs(resumed)
    run(SMOKE, out=resumed)
    assert {k: v for k, v in _stage_dirs(resumed).items() if k in done_before} == done_before  # not redone
    cols = ["start_size", "source", "aug_size", "seed", "eval_set", "slice", "correct", "n"]
    a = pd.read_csv(out / "results" / "results.csv")[cols].sort_values(cols).reset_index(drop=True)
    b = pd.read_csv(resumed / "results" / "results.csv")[cols].sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_a_failing_stage_skips_its_dependants_and_the_rest_still_runs(smoke_run, tmp_path, capsys):
    out, _ = smoke_run
    # tiny-llama writes no entailment pair with full lexical overlap, so augmenting from the
    # biased source cannot be label balanced: those stages fail; everything else is cached.
    run_dir = tmp_path / "partial"
    with pytest.raises(BlindspotError) as e:
        run(SMOKE, out=run_dir, store=out / "stages",
            overrides=["augment.sources=[original, biased-lexical-overlap]", "generations.rounds=1"])
    msg = str(e.value)
    assert "4 stage(s) failed and 4 were skipped" in msg and "labelled 'entailment'" in msg
    index = json.loads((run_dir / "results" / "index.json").read_text())
    assert len(index["conditions"]) == 2 + 4  # two starting points, original +6 / +12 from each
    assert len(index["missing"]) == 4 and all("biased-lexical-overlap" in m for m in index["missing"])
    assert "Incomplete run" in (run_dir / "report" / "report.md").read_text()
    df = pd.read_csv(run_dir / "results" / "results.csv")
    assert set(df["source"]) == {"start", "original"}
    screen = capsys.readouterr().out.splitlines()
    assert sum(ln.startswith("[") and " FAILED augment " in ln for ln in screen) == 4
    assert sum(ln.startswith("[") and " skipped evaluate " in ln for ln in screen) == 4
    assert screen[-1].startswith("4 condition(s) did not finish: ") and "and 1 more (see the report)" in screen[-1]


# --- what the run shows (stdout a pipe), what it logs, what it warns -------------------------

NOISE = ("Loading weights", "LOAD REPORT", "Warning", "warning", "it/s]", "%|", "deprecated", "Traceback")


def _normalised(line: str) -> str:
    """A screen line with its measurements (times, rates, accuracies, ETA) replaced by placeholders."""
    line = re.sub(r"\s+\(ETA [^)]*\)$", " (ETA)", line)
    line = re.sub(r"\b\d+(h\d+m|m\d+s|s)\b", "T", line)
    line = re.sub(r"-?\d+\.\d+%?", "X", line)
    return re.sub(r"\s+", " ", line).strip()


def test_screen_is_one_line_per_stage_and_a_summary(smoke_cli):
    out, stdout = smoke_cli["out"], smoke_cli["stdout"]
    assert smoke_cli["stderr"] == ""  # no library message, bar or warning reached the screen
    lines = stdout.splitlines()
    assert not [ln for ln in lines if any(n in ln for n in NOISE)]
    plan = build_plan(load_config(SMOKE))
    n = len(plan.stages)
    assert lines[0] == f"{n} stages: 0 cached, {n} to run"
    stage_lines = lines[1:1 + n]
    # one line per stage, numbered in the order they finished (a start's augmentations train as a
    # group, so that is not the plan's order)
    by_label = {st.label: st for st in plan.stages}
    seen = []
    for i, line in enumerate(stage_lines, 1):
        label = next((lab for lab in sorted(by_label, key=len, reverse=True)
                      if line.startswith(f"[{i:>2}/{n}] {lab} ")), None)
        assert label is not None, line
        assert _normalised(line).startswith(f"[{i:>2}/{n}] {label} T"), line
        assert line.endswith(")") == (i < n), line  # the ETA on every line but the last
        seen.append(label)
    assert sorted(seen) == sorted(by_label)
    evaluate = [ln for ln, lab in zip(stage_lines, seen) if by_label[lab].stage == "evaluate"]
    assert all(re.search(r"predict ex/s · hans \d+\.\d% \(lexical-overlap non-entailment \d+\.\d%\) · "
                         r"mnli-matched \d+\.\d%", ln) for ln in evaluate), evaluate
    summary = lines[1 + n:]
    assert 3 <= len(summary) <= 6, summary
    assert summary[-2] == (f"report: {out / 'report' / 'report.html'} · table: {out / 'results' / 'results.csv'} "
                           f"· log: {out / 'run.log'}")
    assert summary[-1] == "every condition finished"


def test_summary_numbers_are_the_results_table(smoke_cli):
    out, lines = smoke_cli["out"], smoke_cli["stdout"].splitlines()
    agg = pd.read_csv(out / "results" / "results_aggregated.csv")
    cfg = load_config(SMOKE)
    top = max(cfg.augment.sizes)
    pct = lambda r: f"{100 * r.accuracy:.1f} [{100 * r.ci_low:.1f}-{100 * r.ci_high:.1f}]"  # noqa: E731
    for start in cfg.start_sizes:
        line = next(ln for ln in lines if ln.startswith(f"  start {start}: "))
        expected = []
        found = set(agg.source) - {"start"}  # original, synthetic, then the rest (later rounds) sorted
        shown = [s for s in ("original", "synthetic") if s in found] + sorted(found - {"original", "synthetic"})
        for source, aug in [("start", 0)] + [(s, top) for s in shown]:
            rows = agg[(agg.start_size == start) & (agg.source == source) & (agg.aug_size == aug)]
            blind = rows[(rows.eval_set == "hans") & (rows.slice == "heuristic=lexical_overlap,label=non-entailment")]
            general = rows[(rows.eval_set == "mnli-matched") & (rows.slice == "all")]
            expected.append(f"{'before' if source == 'start' else source} {pct(blind.iloc[0])} | "
                            f"{pct(general.iloc[0])}")
        assert line == f"  start {start}: " + " · ".join(expected)
    tests = pd.read_csv(out / "report" / "paired_tests.csv")
    key = tests[(tests.source_a == "synthetic") & (tests.source_b == "original") & (tests.aug_size == top)
                & (tests.slice == "heuristic=lexical_overlap,label=non-entailment")]
    paired = next(ln for ln in lines if ln.startswith("paired test, synthetic vs original"))
    for r in key.itertuples():
        assert f"start {r.start_size}: {100 * r.diff:+.1f} pts [{100 * r.diff_low:+.1f}, {100 * r.diff_high:+.1f}], " \
               f"p={r.p_mcnemar:.3g}" in paired


def test_run_log_holds_the_library_messages(smoke_cli):
    text = (smoke_cli["out"] / "run.log").read_text()
    assert "LOAD REPORT" in text and "score.weight" in text  # transformers' banner, routed here
    assert re.search(r" INFO transformers\.", text)  # transformers' INFO messages
    assert re.search(r" DEBUG blindspot\.", text) and re.search(r" INFO blindspot\.grid\.display: \[ 1/", text)
    assert "Loading weights" not in text  # bars are off, not logged


def test_no_deprecation_warning_from_our_calls(smoke_cli):
    found = [(w["category"], w["message"][:200], w["where"], w["our_frames"][:2]) for w in smoke_cli["warnings"]]
    assert found == []


def test_quiet_prints_nothing_on_success(smoke_run):
    out, _ = smoke_run
    proc = subprocess.run([sys.executable, "-m", "blindspot.cli", "run", str(SMOKE), "--out", str(out), "-q"],
                          capture_output=True, text=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_base_stage_killed_after_building_its_model_builds_it_again(tmp_path):
    """A run killed while the base stage pretrained left its model directory: the rerun starts that stage
    over (build_tiny_llama refused the non-empty directory) and ends with the uninterrupted model."""
    from blindspot.data.example import save_examples
    from blindspot.models.checkpoints import base_fingerprint
    from blindspot.models.resolve import TINY_LLAMA_SHAPE
    from blindspot.stages import base as base_stage
    from blindspot.stages.common import Runtime
    from test_generator import fixture_examples

    prepare = tmp_path / "prepare"
    prepare.mkdir()
    save_examples(prepare / "pool.jsonl", fixture_examples())
    (prepare / "sets.json").write_text(json.dumps({"pool": {"labels": ["entailment", "neutral", "contradiction"]}}))
    spec = base_stage.Spec(model="tiny-llama", vocab_size=300, shape=dict(TINY_LLAMA_SHAPE), seed=0,
                           pretrain_examples=6, epochs=1, max_length=160)
    base_stage.run(spec, {"prepare": prepare}, tmp_path / "clean", Runtime())
    killed = tmp_path / "killed"
    (killed / "model").mkdir(parents=True)
    (killed / "model" / "config.json").write_text("{}")  # what a kill mid-stage leaves: a built, unfinished model
    base_stage.run(spec, {"prepare": prepare}, killed, Runtime())
    assert base_fingerprint(killed / "model") == base_fingerprint(tmp_path / "clean" / "model")
