"""The generate stage end to end on a tiny trained generator: counts, determinism, resumption, leakage, errors."""

from __future__ import annotations

import json
from collections import Counter
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from blindspot.data.example import load_examples, save_examples
from blindspot.errors import BlindspotError, ConfigError
from blindspot.generation.sample import GenerateSpec, generate
from blindspot.training.generator import load_generator
from test_generator import make_tiny_generator

LABELS = ("entailment", "neutral", "contradiction")


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    """(generator dir, training examples, loaded generator) for the whole module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared CPU
    gen_dir, examples = make_tiny_generator(tmp_path_factory.mktemp("gen"))
    yield gen_dir, examples, load_generator(gen_dir, device="cpu")
    torch.set_num_threads(threads)


def _spec(gen_dir, **kw) -> GenerateSpec:
    return GenerateSpec(generator=str(gen_dir), **{"n_per_label": 10, "batch_size": 4, "max_new_tokens": 40,
                                                   "device": "cpu", **kw})


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def test_end_to_end_exactly_n_valid_records_per_label(gen, tmp_path):
    gen_dir, _, g = gen
    out = generate(_spec(gen_dir), tmp_path / "out", generator=g)
    assert (out / "DONE").exists()
    assert {"synthetic.jsonl", "rejects.jsonl", "report.json", "meta.json", "spec.json"} <= {p.name for p in out.iterdir()}
    mfu = json.loads((out / "meta.json").read_text())["mfu"]
    assert mfu["mfu"] > 0 and mfu["tokens"] > 0 and mfu["model_flops"] > 2 * mfu["shape"]["params"] * mfu["tokens"]
    rows = [json.loads(line) for line in _lines(out / "synthetic.jsonl")]
    assert [sum(r["label"] == lab for r in rows) for lab in LABELS] == [10, 10, 10]
    assert all(set(r) == {"id", "premise", "hypothesis", "label", "generator", "seed"} for r in rows)
    assert len({r["id"] for r in rows}) == 30 and len({(r["premise"], r["hypothesis"]) for r in rows}) == 30
    assert all(r["generator"] == gen_dir.name and r["premise"] and r["hypothesis"] for r in rows)
    assert [e.id for e in load_examples(out / "synthetic.jsonl", labels=LABELS)] == [r["id"] for r in rows]
    report = json.loads((out / "report.json").read_text())
    assert report["complete"] and report["valid"] == 30
    rejects = [json.loads(line) for line in _lines(out / "rejects.jsonl")]
    assert sum(report["rejected"].values()) == len(rejects)
    assert report["attempts"] == 30 + len(rejects) + sum(v["surplus"] for v in report["labels"].values())
    assert all(r["reason"] and "text" in r for r in rejects)
    before = (out / "synthetic.jsonl").read_bytes()
    generate(_spec(gen_dir), out, generator=g)  # done: a no-op
    assert (out / "synthetic.jsonl").read_bytes() == before


def test_same_spec_same_records_other_seed_other_records(gen, tmp_path):
    gen_dir, _, g = gen
    a = generate(_spec(gen_dir), tmp_path / "a", generator=g)
    b = generate(_spec(gen_dir), tmp_path / "b", generator=g)
    c = generate(_spec(gen_dir, seed=1), tmp_path / "c", generator=g)
    assert (a / "synthetic.jsonl").read_bytes() == (b / "synthetic.jsonl").read_bytes()
    assert (a / "rejects.jsonl").read_bytes() == (b / "rejects.jsonl").read_bytes()
    pairs = lambda d: [(r["premise"], r["hypothesis"]) for r in map(json.loads, _lines(d / "synthetic.jsonl"))]
    assert pairs(a) != pairs(c)


def test_resume_from_torn_line_and_uncommitted_batch(gen, tmp_path):
    """Simulate kills at awkward moments: rows of an uncommitted batch, a half-written line."""
    gen_dir, _, g = gen
    ref = generate(_spec(gen_dir), tmp_path / "ref", generator=g)
    done = json.loads((ref / "progress.json").read_text())
    for cut_batches in (0, 1, 2):
        out = tmp_path / f"cut{cut_batches}"
        out.mkdir()
        for name in ("spec.json", "synthetic.jsonl", "rejects.jsonl"):
            (out / name).write_bytes((ref / name).read_bytes())
        # killed during neutral's batch `cut_batches`: rows of later batches are on disk but never committed
        committed = {"entailment": done["entailment"], "neutral": {"batches": cut_batches, "surplus": 0},
                     "contradiction": {"batches": 0, "surplus": 0}}
        assert cut_batches < done["neutral"]["batches"]
        (out / "progress.json").write_text(json.dumps(committed))
        with (out / "synthetic.jsonl").open("a") as f:
            f.write('{"id": "torn", "premise": "half a li')
        generate(_spec(gen_dir), out, generator=g)
        assert (out / "synthetic.jsonl").read_bytes() == (ref / "synthetic.jsonl").read_bytes()
        assert (out / "rejects.jsonl").read_bytes() == (ref / "rejects.jsonl").read_bytes()
        assert json.loads((out / "report.json").read_text()) == json.loads((ref / "report.json").read_text())


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_matches_an_uninterrupted_run(gen, tmp_path):
    gen_dir, _, g = gen
    argv = [sys.executable, "-m", "blindspot.cli", "generate", "--generator", str(gen_dir), "--n-per-label", "120",
            "--batch-size", "2", "--max-new-tokens", "40", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "killed"
    proc = subprocess.Popen(argv + ["--out", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (out / "progress.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "DONE").exists(), "run ended before it was killed"
    rerun = subprocess.run(argv + ["--out", str(out), "-v"], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from" in rerun.stderr
    full = tmp_path / "full"
    assert subprocess.run(argv + ["--out", str(full)], env=env, capture_output=True, timeout=300).returncode == 0
    lines = _lines(out / "synthetic.jsonl")
    assert all(line.endswith("\n") for line in lines) and len(lines) == 360
    assert [sum(json.loads(x)["label"] == lab for x in lines) for lab in LABELS] == [120] * 3
    assert (out / "synthetic.jsonl").read_bytes() == (full / "synthetic.jsonl").read_bytes()
    assert (out / "rejects.jsonl").read_bytes() == (full / "rejects.jsonl").read_bytes()


def test_leaked_pairs_are_dropped_and_reported_or_kept(gen, tmp_path):
    gen_dir, examples, g = gen
    save_examples(tmp_path / "eval.jsonl", examples)  # the generator reproduces its training pairs
    out = generate(_spec(gen_dir, eval_sets=(str(tmp_path / "eval.jsonl"),)), tmp_path / "drop", generator=g)
    report = json.loads((out / "report.json").read_text())
    leaks = report["leakage"]["leak_pair"] + report["leakage"]["leak_hypothesis"]
    assert leaks > 0 and report["leakage"]["dropped"] and report["complete"]
    train_pairs = {(e.premise.lower(), e.hypothesis.lower()) for e in examples}
    rows = [json.loads(x) for x in _lines(out / "synthetic.jsonl")]
    assert not any((r["premise"].lower(), r["hypothesis"].lower()) in train_pairs for r in rows)
    kept = generate(_spec(gen_dir, eval_sets=(str(tmp_path / "eval.jsonl"),), keep_leaked=True), tmp_path / "keep",
                    generator=g)
    kept_report = json.loads((kept / "report.json").read_text())
    assert not kept_report["leakage"]["dropped"] and kept_report["leakage"]["leak_pair"] > 0
    assert "leak_pair" not in kept_report["rejected"]


def test_too_few_valid_examples_is_a_clear_error(gen, tmp_path):
    gen_dir, _, g = gen
    with pytest.raises(BlindspotError, match=r"too few valid examples after 2x as many attempts \(\{.entailment.: .0 of 10."):
        generate(_spec(gen_dir, max_new_tokens=3, max_attempts_factor=2), tmp_path / "out", generator=g)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert not report["complete"] and report["rejected"] == {"no_marker": 60}
    assert not (tmp_path / "out" / "DONE").exists()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())  # standalone: how the short run went
    assert meta["new_records"] == 0 and meta["engine"] == "native" and meta["threads"] >= 1


def test_another_spec_in_the_same_directory_is_refused(gen, tmp_path):
    gen_dir, _, g = gen
    generate(_spec(gen_dir, n_per_label=2), tmp_path / "out", generator=g)
    (tmp_path / "out" / "DONE").unlink()
    with pytest.raises(ConfigError, match="differs in n_per_label, temperature"):
        generate(_spec(gen_dir, n_per_label=3, temperature=0.5), tmp_path / "out", generator=g)


def test_a_resume_in_another_dtype_is_refused(gen, tmp_path):
    """spec.json records the dtype that ran ("auto" resolved), so that records sampled in two dtypes are never
    mixed (issue 11: a run killed in bf16, "auto" on a CPU with AMX, resumed in fp32 differed by a sampled token)."""
    gen_dir, _, _ = gen
    g32, g16 = (load_generator(gen_dir, device="cpu", dtype=d) for d in ("float32", "bfloat16"))
    out = tmp_path / "out"
    generate(_spec(gen_dir, n_per_label=2), out, generator=g32)
    assert json.loads((out / "spec.json").read_text())["dtype"] == "float32"
    (out / "DONE").unlink()
    with pytest.raises(ConfigError, match=r"holds a run sampled in float32, this one would sample in bfloat16 "
                                          r"\(records of two dtypes differ\): pass --dtype float32"):
        generate(_spec(gen_dir, n_per_label=2), out, generator=g16)
    with pytest.raises(ConfigError, match="dtype: the spec asks for bfloat16 but the generator passed in runs float32"):
        generate(_spec(gen_dir, n_per_label=2, dtype="bfloat16"), tmp_path / "other", generator=g32)
    # a run started before spec.json recorded the dtype ("auto") is resumed as before
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps({**json.loads(spec_file.read_text()), "dtype": "auto"}))
    generate(_spec(gen_dir, n_per_label=2), out, generator=g32)
    assert (out / "DONE").exists()


def test_cli_rejects_bad_options(gen, tmp_path, capsys):
    from blindspot.cli import main

    gen_dir, _, _ = gen
    rc = main(["generate", "--generator", str(gen_dir), "--out", str(tmp_path / "o"), "--n-per-label", "5",
               "--top-p", "1.5"])
    assert rc == 2 and "--top-p" in capsys.readouterr().err
    rc = main(["generate", "--generator", str(tmp_path / "missing"), "--out", str(tmp_path / "o2"),
               "--n-per-label", "5"])
    assert rc == 2 and "no such generator directory" in capsys.readouterr().err


def test_counts_per_label(gen, tmp_path):
    gen_dir, _, g = gen
    generate(_spec(gen_dir, n_per_label={"entailment": 3, "neutral": 1, "contradiction": 2}), tmp_path / "out",
             generator=g)
    rows = [json.loads(line) for line in (tmp_path / "out" / "synthetic.jsonl").read_text().splitlines()]
    assert Counter(r["label"] for r in rows) == {"entailment": 3, "neutral": 1, "contradiction": 2}
    with pytest.raises(ConfigError, match="no count for label 'neutral'"):
        generate(_spec(gen_dir, n_per_label={"entailment": 3}), tmp_path / "out2", generator=g)
