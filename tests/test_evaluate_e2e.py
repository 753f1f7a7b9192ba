"""End to end: train (tiny-llama) -> save -> load_classifier -> evaluate -> compare, through the CLI too."""

from __future__ import annotations

import json

import numpy as np
import pytest

from blindspot.cli import main as cli_main
from blindspot.compare import compare_predictions
from blindspot.data.example import MNLI_LABELS, NLIExample
from blindspot.evaluate import evaluate, predict_proba
from blindspot.training.loop import LoraSpec
from blindspot.models.resolve import build_tiny_llama
from blindspot.storage import atomic_write_jsonl
from blindspot.training.classifier import ClassifierSpec, OptimSpec, load_classifier, train_classifier

SUBJECTS = ["The doctor", "A lawyer", "The cat", "Some students", "The artist", "A banker"]
EXAMPLES = [NLIExample(f"ex{i}", f"{SUBJECTS[i % 6]} saw the {['actor', 'judge', 'dog'][i % 3]} near the park.",
                       f"{SUBJECTS[(i + i // 3) % 6]} saw {['someone', 'nobody', 'the judge'][i % 3]}.",
                       MNLI_LABELS[i % 3]) for i in range(24)]
SUBCASES = [("lexical_overlap", "ln_subject/object_swap", "non-entailment"),
            ("lexical_overlap", "le_relative_clause", "entailment"),
            ("subsequence", "sn_NP/S", "non-entailment"),
            ("constituent", "ce_after_since_clause", "entailment")]


def write_sets(tmp_path):
    """An MNLI-format and a HANS-format JSONL file in the official field names."""
    mnli = tmp_path / "multinli_1.0_dev_matched.jsonl"
    atomic_write_jsonl(mnli, [{"pairID": f"m{i}", "genre": ["fiction", "travel"][i % 2], "gold_label": e.label,
                               "sentence1": e.premise, "sentence2": e.hypothesis} for i, e in enumerate(EXAMPLES)])
    hans = tmp_path / "heuristics_evaluation_set.jsonl"
    atomic_write_jsonl(hans, [{"pairID": f"h{i}", "gold_label": lab, "heuristic": h, "subcase": sc, "template": "t",
                               "sentence1": EXAMPLES[i].premise, "sentence2": EXAMPLES[i].hypothesis}
                              for i, (h, sc, lab) in enumerate(SUBCASES * 3)])
    return mnli, hans


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    """An untrained and a trained classifier on one tiny-llama base."""
    root = tmp_path_factory.mktemp("e2e")
    base = build_tiny_llama(root / "base", [f"{e.premise} {e.hypothesis}" for e in EXAMPLES])
    spec = ClassifierSpec(model=str(base), template="paper", lora=LoraSpec(r=4), device="cpu",
                          optim=OptimSpec(batch_size=4, lr=2e-3, warmup_ratio=0.1))
    untrained = train_classifier(spec, [], root / "untrained")
    trained = train_classifier(spec, EXAMPLES, root / "trained")
    return untrained, trained


@pytest.mark.slow
def test_train_save_load_evaluate_compare(classifiers, tmp_path, capsys):
    untrained, trained = classifiers
    mnli, hans = write_sets(tmp_path)
    outs = []
    for clf_dir in (untrained, trained):
        out = tmp_path / f"eval-{clf_dir.name}"
        assert cli_main(["evaluate", str(clf_dir), "--set", f"mnli_m={mnli}", "--set", f"hans={hans}",
                         "--out", str(out), "--batch-size", "5"]) == 0
        outs.append(out)
    metrics = json.loads((outs[1] / "metrics.json").read_text())
    assert metrics["sets"]["hans"]["kind"] == "hans" and metrics["sets"]["mnli_m"]["kind"] == "mnli"
    slices = {m["slice"]: m for m in metrics["sets"]["hans"]["metrics"]}
    assert slices["heuristic=lexical_overlap,label=non-entailment"]["n"] == 3
    assert slices["subcase=sn_NP/S"]["n"] == 3
    assert {m["slice"] for m in metrics["sets"]["mnli_m"]["metrics"]} >= {"all", "2way", "genre=fiction"}
    meta = json.loads((outs[1] / "meta.json").read_text())
    assert meta["model"] == str(classifiers[0].parent / "base") and meta["max_length"] == 512
    assert meta["mfu"]["mfu"] > 0 and meta["mfu"]["tokens"] > 0 and meta["mfu"]["formula"].startswith("2*P")

    # the probabilities in the file are the loaded classifier's, computed without the prefix cache too
    clf = load_classifier(trained, device="cpu")
    rows = [json.loads(line) for line in (outs[1] / "predictions" / "mnli_m.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"m{i}" for i in range(len(EXAMPLES))]
    assert all(set(r["overlap"]) >= {"words"} for r in rows)  # the reliance measure's baseline needs it
    probs = predict_proba(clf.model, clf.tokenizer, clf.template, EXAMPLES, batch_size=1)
    np.testing.assert_allclose(np.array([r["probs"] for r in rows]), probs, atol=1e-5)

    capsys.readouterr()
    a, b = (o / "predictions" / "hans.jsonl" for o in outs)
    assert cli_main(["compare", str(a), str(b), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 12 and result["b"] + result["c"] + result["both_correct"] + result["neither"] == 12
    assert result == compare_predictions(a, b)


@pytest.mark.slow
def test_evaluate_follows_the_asked_dtype(classifiers, tmp_path):
    _, trained = classifiers
    mnli, _ = write_sets(tmp_path)
    runs = {dt: evaluate(trained, {"mnli_m": str(mnli)}, tmp_path / dt, per_label=2, dtype=dt)
            for dt in ("float32", "bfloat16")}
    meta = {dt: json.loads((out / "meta.json").read_text()) for dt, out in runs.items()}
    assert meta["float32"]["dtype"] == "float32" and meta["bfloat16"]["dtype"] == "bfloat16"
    assert meta["bfloat16"]["spec"]["dtype"] == "bfloat16"
    preds = {dt: [json.loads(x)["pred"] for x in (out / "predictions" / "mnli_m.jsonl").read_text().splitlines()]
             for dt, out in runs.items()}
    assert len(preds["float32"]) == len(preds["bfloat16"]) == 6


@pytest.mark.slow
def test_subsampling_is_recorded_and_seeded(classifiers, tmp_path):
    _, trained = classifiers
    mnli, hans = write_sets(tmp_path)
    out = evaluate(trained, {"hans": str(hans), "mnli_m": str(mnli)}, tmp_path / "quick",
                   per_subcase=2, per_label=3, seed=1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["sets"]["hans"]["n"] == 8 and metrics["sets"]["mnli_m"]["n"] == 9
    assert metrics["sets"]["hans"]["subsample"] == {"key": "subcase", "per_group": 2, "seed": 1, "n_full": 12}
    assert metrics["subsample"] == {"per_subcase": 2, "per_label": 3, "seed": 1}
    again = evaluate(trained, {"hans": str(hans), "mnli_m": str(mnli)}, tmp_path / "quick2",
                     per_subcase=2, per_label=3, seed=1)
    ids = [(d / "predictions" / "hans.jsonl").read_text() for d in (out, again)]
    assert ids[0] == ids[1]


def test_cli_unmappable_labels_is_one_clear_error(classifiers, tmp_path, capsys):
    _, trained = classifiers
    odd = tmp_path / "odd.jsonl"
    atomic_write_jsonl(odd, [{"id": "1", "premise": "p", "hypothesis": "h", "label": "maybe"}])
    assert cli_main(["evaluate", str(trained), "--set", f"odd={odd}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "maybe" in err[0] and err[0].startswith("blindspot evaluate: error:")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_real_data_quick_eval(classifiers, shared_data, tmp_path):
    _, trained = classifiers
    out = evaluate(trained, {"hans": str(shared_data / "hans-regen" / "heuristics_evaluation_set.jsonl.gz"),
                             "mnli_mm": str(shared_data / "mnli-subset" / "multinli_1.0_dev_mismatched.jsonl.gz")},
                   tmp_path / "real", per_subcase=1, per_label=2)
    metrics = json.loads((out / "metrics.json").read_text())
    hans = {m["slice"]: m for m in metrics["sets"]["hans"]["metrics"]}
    assert hans["all"]["n"] == 30 and hans["heuristic=lexical_overlap,label=non-entailment"]["n"] == 5
    assert metrics["sets"]["mnli_mm"]["n"] == 6
